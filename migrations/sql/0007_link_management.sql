-- Token rotation: a share link may have had several tokens. Each row still names one token's
-- hash; the share's own stream says which of them is current (the last `ShareCreated` or
-- `ShareTokenRotated`), so an old token found here is refused as a dead link. Rows are written
-- before the event that makes them current, as at creation.
ALTER TABLE command_side.share_tokens DROP CONSTRAINT IF EXISTS share_tokens_share_id_key;
CREATE INDEX IF NOT EXISTS share_tokens_by_share ON command_side.share_tokens (share_id);
