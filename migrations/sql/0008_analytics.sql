-- Per-link statistics, folded from the audit stream (MUSIC_AUDIT) by the projector's analytics
-- consumer, its only writer. Not a read model of the event log: a projector rebuild never
-- touches it. `projector analytics rebuild` builds a copy beside it (tables created LIKE these)
-- and swaps the schemas, so this file is the one definition of the model.
CREATE SCHEMA analytics;

-- Where this database counts from, and how far it has counted: the last stream sequence
-- folded, updated in the same transaction as the counts it folded. One row, written when the
-- database first starts counting (start = the stream's last sequence at that moment: messages
-- after it are counted, those before it belong to no one here).
CREATE TABLE analytics.position (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    start_sequence  bigint  NOT NULL,
    folded_sequence bigint  NOT NULL
);

-- All-time totals per link since counting began.
CREATE TABLE analytics.links (
    share_id        text        PRIMARY KEY,
    views           bigint      NOT NULL,
    previews        bigint      NOT NULL,
    denied          bigint      NOT NULL,
    unique_visitors bigint      NOT NULL,
    last_viewed_at  timestamptz
);

-- One row per link and UTC day with at least one counted attempt.
CREATE TABLE analytics.link_days (
    share_id        text   NOT NULL,
    day             date   NOT NULL,
    views           bigint NOT NULL,
    previews        bigint NOT NULL,
    denied          bigint NOT NULL,
    unique_visitors bigint NOT NULL,
    PRIMARY KEY (share_id, day)
);

-- Visitors are 16 bytes of HMAC-SHA256(ANALYTICS_VISITOR_KEY, share_id, client IP): exact
-- distinct counts without the IP. Keyed per link, so one visitor cannot be followed across
-- links, and without the key (never in this database) not reversible by trying every IPv4.
CREATE TABLE analytics.link_visitors (
    share_id text  NOT NULL,
    visitor  bytea NOT NULL,
    PRIMARY KEY (share_id, visitor)
);

CREATE TABLE analytics.day_visitors (
    share_id text  NOT NULL,
    day      date  NOT NULL,
    visitor  bytea NOT NULL,
    PRIMARY KEY (share_id, day, visitor)
);
