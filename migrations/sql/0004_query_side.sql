-- Counters the query side keeps for itself. Not read models: a projector rebuild never touches
-- them, because they record what happened on the read path, not in the event log.
CREATE SCHEMA query_side;

-- Successful resolves of links that have a `max_views`, counted atomically so the limit is
-- exact across any number of query-API instances. Unlimited links have no row.
CREATE TABLE query_side.share_usage (
    share_id text   PRIMARY KEY,
    used     bigint NOT NULL
);

-- View statistics for the owner's share list, flushed from memory every few seconds.
CREATE TABLE query_side.share_views (
    share_id       text        PRIMARY KEY,
    view_count     bigint      NOT NULL,
    last_viewed_at timestamptz
);
