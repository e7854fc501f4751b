-- The event log. Append-only: rows are never updated or deleted, and a trigger makes sure of it.
CREATE SCHEMA event_store;

CREATE TABLE event_store.events (
    global_position bigint      PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor           text        NOT NULL,
    trace_id        text        NOT NULL,
    payload         jsonb       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_positions_positive CHECK (global_position > 0 AND stream_version > 0)
);

CREATE FUNCTION event_store.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_store.events is append-only';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON event_store.events
    FOR EACH ROW EXECUTE FUNCTION event_store.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.refuse_change();

-- Appends a batch of requests in one transaction. Request i appends the events whose
-- ev_request is i, to req_streams[i], if that stream holds exactly req_expected[i] events
-- (-1: no check). Returns one row per request: whether it was applied, the stream's version
-- afterwards (or its actual version on a conflict), and the global position of its last event.
--
-- Ordering guarantee: the transaction-scoped advisory lock is taken before any position is
-- chosen and released only at commit, so appending transactions commit in position order and a
-- reader can never see position N before everything below N is visible. Positions are dense
-- (max + 1) because only the lock holder numbers events.
CREATE FUNCTION event_store.append_batch(
    req_streams        text[],
    req_expected       bigint[],
    ev_request         integer[],
    ev_ids             uuid[],
    ev_types           text[],
    ev_schema_versions integer[],
    ev_occurred_at     timestamptz[],
    ev_actors          text[],
    ev_trace_ids       text[],
    ev_payloads        jsonb[]
) RETURNS TABLE (out_request integer, out_ok boolean, out_version bigint, out_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    head     bigint;
    current  bigint;
    appended integer;
    total    integer := 0;
BEGIN
    -- 'event_store.append' as a number: the one lock every appender takes.
    PERFORM pg_advisory_xact_lock(4207311969);
    SELECT coalesce(max(e.global_position), 0) INTO head FROM event_store.events e;
    FOR i IN 1 .. coalesce(array_length(req_streams, 1), 0) LOOP
        SELECT coalesce(max(e.stream_version), 0) INTO current
          FROM event_store.events e WHERE e.stream_id = req_streams[i];
        out_request := i;
        IF req_expected[i] >= 0 AND req_expected[i] <> current THEN
            out_ok := false;
            out_version := current;
            out_position := head;
            RETURN NEXT;
            CONTINUE;
        END IF;
        appended := 0;
        FOR j IN 1 .. coalesce(array_length(ev_request, 1), 0) LOOP
            CONTINUE WHEN ev_request[j] <> i;
            appended := appended + 1;
            INSERT INTO event_store.events (global_position, stream_id, stream_version, event_id,
                event_type, schema_version, occurred_at, actor, trace_id, payload)
            VALUES (head + appended, req_streams[i], current + appended, ev_ids[j],
                ev_types[j], ev_schema_versions[j], ev_occurred_at[j], ev_actors[j],
                ev_trace_ids[j], ev_payloads[j]);
        END LOOP;
        head := head + appended;
        total := total + appended;
        out_ok := true;
        out_version := current + appended;
        out_position := head;
        RETURN NEXT;
    END LOOP;
    IF total > 0 THEN
        PERFORM pg_notify('event_store_appended', head::text);
    END IF;
END
$$;
