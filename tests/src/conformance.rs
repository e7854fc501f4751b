//! The event-store conformance suite: what every backend must do, written once against the
//! trait. `tests/tests/event_store.rs` runs it on PostgreSQL always, and on KurrentDB when
//! `KURRENTDB_URL` is set. Stream names are unique per run, so a shared server is fine.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use events::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use serde_json::json;
use uuid::Uuid;

/// A stream no other test uses.
pub fn unique_stream(purpose: &str) -> StreamId {
    StreamId::new(format!("conformance_{purpose}-{}", Uuid::new_v4().simple()))
}

/// An event the store carries but no projector would decode (the store never looks inside).
pub fn test_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ConformanceChecked".to_owned(),
        schema_version: 1,
        payload: json!({ "n": n }),
        occurred_at: Utc
            .with_ymd_and_hms(2026, 6, 28, 10, 30, 0)
            .single()
            .expect("valid date"),
        actor: "usr_0123456789ab".to_owned(),
        trace_id: "req_conformance000000".to_owned(),
    }
}

fn ns(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.payload["n"].as_u64().expect("n"))
        .collect()
}

/// A stale expectation is a `Conflict`, never an overwrite; under contention exactly one writer
/// wins each version.
pub async fn optimistic_concurrency(store: Arc<dyn EventStore>) {
    let s = unique_stream("occ");
    let first = store
        .append(&s, ExpectedVersion::NoStream, vec![test_event(1)])
        .await
        .expect("first append");
    assert_eq!(first.stream_version, 1);

    match store
        .append(&s, ExpectedVersion::NoStream, vec![test_event(99)])
        .await
    {
        Err(StoreError::Conflict { actual: 1, .. }) => {}
        other => panic!("NoStream on an existing stream must conflict, got {other:?}"),
    }
    let second = store
        .append(&s, ExpectedVersion::Exact(1), vec![test_event(2)])
        .await
        .expect("second append");
    assert_eq!(second.stream_version, 2);
    assert!(second.last_position > first.last_position);
    for stale in [ExpectedVersion::Exact(1), ExpectedVersion::Exact(5)] {
        match store.append(&s, stale, vec![test_event(99)]).await {
            Err(StoreError::Conflict { actual: 2, .. }) => {}
            other => panic!("{stale:?} on a stream at 2 must conflict, got {other:?}"),
        }
    }
    assert_eq!(ns(&store.read_stream(&s).await.expect("read")), vec![1, 2]);

    // Ten writers race for version 3: exactly one wins, the rest conflict.
    let racers = (0..10u64).map(|i| {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            store
                .append(&s, ExpectedVersion::Exact(2), vec![test_event(100 + i)])
                .await
        })
    });
    let results = futures::future::join_all(racers).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::Conflict { .. }))))
        .count();
    assert_eq!((wins, conflicts), (1, 9), "{results:?}");
    assert_eq!(store.read_stream(&s).await.expect("read").len(), 3);
}

/// A multi-event append lands whole or not at all, also when several race for one stream.
pub async fn multi_event_append_is_all_or_nothing(store: Arc<dyn EventStore>) {
    let s = unique_stream("atomic");
    store
        .append(&s, ExpectedVersion::NoStream, vec![test_event(1)])
        .await
        .expect("seed");
    let stale = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            (10..13).map(test_event).collect(),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(
        ns(&store.read_stream(&s).await.expect("read")),
        vec![1],
        "a refused append left events behind"
    );

    // Eight writers each try to create one stream with five events: one wins, whole.
    let s = unique_stream("atomic_race");
    let writers = (0..8u64).map(|w| {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let events = (0..5).map(|i| test_event(w * 10 + i)).collect();
            store.append(&s, ExpectedVersion::NoStream, events).await
        })
    });
    let results = futures::future::join_all(writers).await;
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count(),
        1,
        "{results:?}"
    );
    let stream = store.read_stream(&s).await.expect("read");
    let got = ns(&stream);
    assert_eq!(got.len(), 5, "{got:?}");
    let writer = got[0] / 10;
    assert_eq!(
        got,
        (0..5).map(|i| writer * 10 + i).collect::<Vec<_>>(),
        "events of different writers interleaved"
    );
    assert_eq!(
        stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

/// A stream reads back in order, with every envelope field as written.
pub async fn stream_reads_in_order(store: Arc<dyn EventStore>) {
    let s = unique_stream("order");
    assert!(store.read_stream(&s).await.expect("read absent").is_empty());
    let written: Vec<NewEvent> = (1..=7).map(test_event).collect();
    let mut version = 0;
    for chunk in written.chunks(3) {
        version = store
            .append(&s, ExpectedVersion::after(version), chunk.to_vec())
            .await
            .expect("append")
            .stream_version;
    }
    let read = store.read_stream(&s).await.expect("read");
    assert_eq!(read.len(), written.len());
    for (i, (r, w)) in read.iter().zip(&written).enumerate() {
        assert_eq!(r.stream_version, i as u64 + 1);
        assert_eq!(r.stream_id, s);
        assert_eq!(r.event_id, w.event_id);
        assert_eq!(r.event_type, w.event_type);
        assert_eq!(r.schema_version, w.schema_version);
        assert_eq!(r.payload, w.payload);
        assert_eq!(r.occurred_at, w.occurred_at);
        assert_eq!(r.actor, w.actor);
        assert_eq!(r.trace_id, w.trace_id);
    }
    assert!(read
        .windows(2)
        .all(|p| p[0].global_position < p[1].global_position));
}

/// Concurrent writers; a reader paging through the global log sees each of their events exactly
/// once, in strictly increasing position order.
pub async fn global_reads_each_event_once_in_order(store: Arc<dyn EventStore>) {
    let start = store.head().await.expect("head");
    let prefix = format!("conformance_global_{}", Uuid::new_v4().simple());
    let (writers, appends) = (8u64, crate::scale(25) as u64);
    let tasks = (0..writers).map(|w| {
        let store = store.clone();
        let s = StreamId::new(format!("{prefix}-{w}"));
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..appends {
                let e = test_event(w * 1000 + i);
                ids.push(e.event_id);
                store
                    .append(&s, ExpectedVersion::after(i), vec![e])
                    .await
                    .expect("append");
            }
            ids
        })
    });
    let expected: HashSet<Uuid> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("writer task"))
        .collect();

    let mut seen = HashSet::new();
    let mut after: Position = start;
    loop {
        let page = store.read_all(after, 7).await.expect("read_all");
        if page.is_empty() {
            break;
        }
        for e in &page {
            assert!(
                e.global_position > after,
                "position {} after {after}",
                e.global_position
            );
            after = e.global_position;
            if e.stream_id.as_str().starts_with(&prefix) {
                assert!(seen.insert(e.event_id), "event {} read twice", e.event_id);
            }
        }
    }
    assert_eq!(seen, expected, "the global log lost or invented events");
    assert!(store.head().await.expect("head") >= after);
}

/// An append wakes a waiting reader (a hint, but one that works when nothing is failing).
pub async fn wake_ups_follow_appends(store: Arc<dyn EventStore>) {
    let mut wake = store.wake_ups();
    // The listener starts on first use; give it a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = unique_stream("wake");
    let appended = store
        .append(&s, ExpectedVersion::NoStream, vec![test_event(1)])
        .await
        .expect("append");
    tokio::time::timeout(
        Duration::from_secs(5),
        wake.wait_for(|head| *head >= appended.last_position),
    )
    .await
    .expect("a wake-up within 5 s")
    .expect("the store is alive");
}
