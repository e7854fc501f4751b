-- Indexes the command side owns so it can decide without the projector's tables.
CREATE SCHEMA command_side;

-- Finds a share link by its token's hash (save a shared track). Written before the share's
-- `ShareCreated` is appended: a row whose append then failed points at an empty stream, which
-- reads as "no such share".
CREATE TABLE command_side.share_tokens (
    token_hash text        PRIMARY KEY,
    share_id   text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
