-- An append may carry a claim: a row of its caller's own unique index (a share token's hash ->
-- its share), inserted by the same statement that calls append_batch, so the row and the events
-- commit together in one round trip. The caller's statement tells append_batch which requests'
-- claims were taken (req_refused, request numbers as in ev_request); those append nothing and
-- answer out_claim_taken. Otherwise as in 0001_event_store.sql, which this replaces.
DROP FUNCTION event_store.append_batch(text[], bigint[], integer[], uuid[], text[], integer[],
    timestamptz[], text[], text[], jsonb[]);

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
    ev_payloads        jsonb[],
    req_refused        integer[] DEFAULT '{}'
) RETURNS TABLE (out_request integer, out_ok boolean, out_claim_taken boolean,
                 out_version bigint, out_position bigint)
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
        out_claim_taken := i = ANY(req_refused);
        IF out_claim_taken OR (req_expected[i] >= 0 AND req_expected[i] <> current) THEN
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
