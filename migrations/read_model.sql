-- The read models, written only by the projector. Names are unqualified: the projector runs
-- this in the live schema (`read_model`) and, for a rebuild, in a fresh schema beside it, then
-- swaps the two. Every statement is idempotent: a rebuild drops the non-unique indexes (they
-- only serve readers) while it writes, and runs this file again to put them back before the swap.
-- Unique indexes decide which of two creations of one id wins, so they stay.

-- How far into the event log these tables reflect. Lives with the tables it describes, so a
-- rebuild swaps both at once and they can never disagree.
CREATE TABLE IF NOT EXISTS checkpoint (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL
);
INSERT INTO checkpoint (singleton, position) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Everything a resolved track view shows, plus what the media route needs.
CREATE TABLE IF NOT EXISTS tracks (
    track_id             text        PRIMARY KEY,
    organization_id      text        NOT NULL,
    owner_id             text        NOT NULL,
    title                text        NOT NULL,
    engine               text        NOT NULL,
    mode                 text        NOT NULL,
    measured_duration_ms bigint      NOT NULL,
    instrumental         boolean     NOT NULL,
    licence_class        text        NOT NULL,
    licence_version      text        NOT NULL,
    commercial_use       boolean     NOT NULL,
    requires_attribution boolean     NOT NULL,
    media_sha256         text        NOT NULL,
    media_content_type   text        NOT NULL,
    media_bytes          bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    removed_at           timestamptz
);

CREATE TABLE IF NOT EXISTS collections (
    collection_id   text        PRIMARY KEY,
    organization_id text        NOT NULL,
    owner_id        text        NOT NULL,
    name            text        NOT NULL,
    description     text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    removed_at      timestamptz
);

-- A collection's tracks in the owner's order (positions 0, 1, 2, ... without gaps). Removed
-- tracks stay listed; the query side leaves them out of the view.
CREATE TABLE IF NOT EXISTS collection_tracks (
    collection_id text    NOT NULL,
    position      integer NOT NULL,
    track_id      text    NOT NULL,
    PRIMARY KEY (collection_id, position)
);
CREATE INDEX IF NOT EXISTS collection_tracks_by_track ON collection_tracks (track_id);

-- Keyed by the token's hash: a resolve is one primary-key lookup.
CREATE TABLE IF NOT EXISTS share_links (
    token_hash      text        PRIMARY KEY,
    share_id        text        NOT NULL UNIQUE,
    target_type     text        NOT NULL,
    target_id       text        NOT NULL,
    organization_id text        NOT NULL,
    owner_id        text        NOT NULL,
    visibility      text        NOT NULL,
    expires_at      timestamptz,
    max_views       integer,
    created_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    -- The ShareCreated event's place in the log: orders links created within one second
    -- (`created_at` has whole seconds).
    created_position bigint     NOT NULL DEFAULT 0
);
ALTER TABLE share_links ADD COLUMN IF NOT EXISTS created_position bigint NOT NULL DEFAULT 0;
-- Link management: the password only as its Argon2id PHC string (the query side verifies it),
-- the owner's label (shown only to the owner), and the last change of settings or token (null
-- on rows projected before it existed: read as `created_at`). A rotation re-keys the row under
-- the new token's hash.
ALTER TABLE share_links ADD COLUMN IF NOT EXISTS password_hash text;
ALTER TABLE share_links ADD COLUMN IF NOT EXISTS label text;
ALTER TABLE share_links ADD COLUMN IF NOT EXISTS updated_at timestamptz;
-- The owner's share list, newest first, with a (created_at, created_position, share_id) cursor.
CREATE INDEX IF NOT EXISTS share_links_by_owner
    ON share_links (organization_id, owner_id, created_at DESC, created_position DESC,
                    share_id DESC);
-- Which links to evict when a track or collection changes.
CREATE INDEX IF NOT EXISTS share_links_by_target ON share_links (target_id);

CREATE TABLE IF NOT EXISTS library_items (
    library_item_id text        PRIMARY KEY,
    user_id         text        NOT NULL,
    track_id        text        NOT NULL,
    share_link_id   text        NOT NULL,
    created_at      timestamptz NOT NULL,
    UNIQUE (user_id, track_id)
);
