//! The event store: the conformance suite on every backend (the in-memory one included),
//! PostgreSQL's ordering guarantee under the late-commit case, and its claims.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::store::postgres::PostgresEventStore;
use events::{Claim, EventStore, ExpectedVersion, Position, StoreError, StreamId};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tests::conformance::{self, test_event};
use tests::db::TestDb;
use uuid::Uuid;

async fn postgres() -> (TestDb, Arc<dyn EventStore>) {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(PostgresEventStore::new(db.pool().await));
    (db, store)
}

macro_rules! conformance_on_postgres {
    ($($case:ident),* $(,)?) => {
        mod postgres_conformance {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (_db, store) = postgres().await;
                    conformance::$case(store).await;
                }
            )*
        }
    };
}

conformance_on_postgres!(
    optimistic_concurrency,
    multi_event_append_is_all_or_nothing,
    stream_reads_in_order,
    global_reads_each_event_once_in_order,
    wake_ups_follow_appends,
);

/// The same suite on KurrentDB. No server can run on our machines, so the cases are ignored by
/// default and run where `KURRENTDB_URL` points at one:
/// `KURRENTDB_URL=... cargo test -p tests --test system kurrentdb_conformance -- --ignored`.
/// They are compiled (and linted) on every build: the services always have the backend.
mod kurrentdb_conformance {
    use super::*;

    async fn kurrentdb() -> Arc<dyn EventStore> {
        let url = std::env::var("KURRENTDB_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("KURRENTDB_URL must point at a KurrentDB server for these cases");
        let store = events::store::kurrentdb::KurrentDbEventStore::connect(&url)
            .await
            .expect("connect to KurrentDB");
        Arc::new(store)
    }

    macro_rules! conformance_on_kurrentdb {
        ($($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs a KurrentDB server at KURRENTDB_URL"]
                async fn $case() {
                    conformance::$case(kurrentdb().await).await;
                }
            )*
        };
    }

    conformance_on_kurrentdb!(
        optimistic_concurrency,
        multi_event_append_is_all_or_nothing,
        stream_reads_in_order,
        global_reads_each_event_once_in_order,
        wake_ups_follow_appends,
    );
}

/// The same suite on the in-memory store (`events` feature `memory`), so the store that fast
/// tests use instead of PostgreSQL is held to the same contract.
mod memory_conformance {
    use super::*;

    macro_rules! conformance_in_memory {
        ($($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store: Arc<dyn EventStore> =
                        Arc::new(events::store::memory::MemoryEventStore::new());
                    conformance::$case(store).await;
                }
            )*
        };
    }

    conformance_in_memory!(
        optimistic_concurrency,
        multi_event_append_is_all_or_nothing,
        stream_reads_in_order,
        global_reads_each_event_once_in_order,
        wake_ups_follow_appends,
    );
}

/// The bigserial problem, provoked: 32 writers append while another transaction appends and
/// then stays open for seconds. A reader polling the log the whole time must end with every
/// event exactly once, positions strictly increasing in the order read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_never_hides_an_event_from_a_reader() {
    let (db, store) = postgres().await;
    let writers = 32usize;
    let per_writer = tests::scale(1000);
    let expected_total = writers * per_writer + 1;
    let writing = Arc::new(AtomicBool::new(true));

    // The reader: polls from its checkpoint until writing is over and the log is drained.
    let reader = {
        let store = store.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut after: Position = 0;
            let mut seen = HashSet::new();
            loop {
                let page = store.read_all(after, 500).await.expect("read_all");
                for e in &page {
                    assert!(
                        e.global_position > after,
                        "read position {} after {after}",
                        e.global_position
                    );
                    after = e.global_position;
                    assert!(seen.insert(e.event_id), "event {} read twice", e.event_id);
                }
                if page.is_empty() {
                    if !writing.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            seen
        })
    };

    let writer_tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = StreamId::new(format!("late-commit-writer-{w}"));
                let mut ids = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let e = test_event(i as u64);
                    ids.push(e.event_id);
                    store
                        .append(&s, ExpectedVersion::after(i as u64), vec![e])
                        .await
                        .expect("append");
                }
                ids
            })
        })
        .collect();

    // The late committer: appends through the same function, inside a transaction it holds open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late_id = Uuid::now_v7();
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "SELECT * FROM event_store.append_batch(ARRAY['late-commit-slow'], ARRAY[-1::bigint], ARRAY[1], \
         ARRAY[$1::uuid], ARRAY['ConformanceChecked'], ARRAY[1], ARRAY[now()], ARRAY['usr_0123456789ab'], \
         ARRAY['req_latecommit0000000'], ARRAY['{\"n\": 0}'::jsonb])",
    )
    .bind(late_id)
    .fetch_all(&mut *tx)
    .await
    .expect("late append");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.commit().await.expect("late commit");

    let mut expected: HashSet<Uuid> = HashSet::from([late_id]);
    for task in writer_tasks {
        expected.extend(task.await.expect("writer"));
    }
    writing.store(false, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    assert_eq!(seen.len(), expected_total);
    assert_eq!(seen, expected);
}

/// One request that PostgreSQL refuses (a NUL character jsonb cannot hold) fails alone, whole:
/// it leaves none of its events behind and does not fail the appends batched with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poisoned_append_fails_alone_and_whole() {
    let (_db, store) = postgres().await;
    let poisoned = StreamId::new("poisoned");
    let mut bad = test_event(2);
    bad.payload = json!({ "n": 2, "text": "nul \u{0000} inside" });
    let appends = (0..20u64).map(|i| {
        let store = store.clone();
        let poisoned = poisoned.clone();
        let bad = bad.clone();
        tokio::spawn(async move {
            if i == 10 {
                store
                    .append(
                        &poisoned,
                        ExpectedVersion::NoStream,
                        vec![test_event(1), bad, test_event(3)],
                    )
                    .await
            } else {
                store
                    .append(
                        &StreamId::new(format!("healthy-{i}")),
                        ExpectedVersion::NoStream,
                        vec![test_event(i)],
                    )
                    .await
            }
        })
    });
    let results = futures::future::join_all(appends).await;
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().expect("task");
        if i == 10 {
            assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
        } else {
            assert!(r.is_ok(), "healthy append {i} failed: {r:?}");
        }
    }
    assert!(store.read_stream(&poisoned).await.expect("read").is_empty());
    assert_eq!(store.read_all(0, 1000).await.expect("read_all").len(), 19);
}

/// A test's own unique index, as a caller's would be.
const CLAIM_KEYS: &str = "INSERT INTO claimed_keys (key, stream) \
     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING RETURNING key, stream";

fn claim(key: &str, stream: &StreamId) -> Claim {
    Claim {
        insert: CLAIM_KEYS,
        key: key.to_owned(),
        owner: stream.as_str().to_owned(),
    }
}

/// Claims ride with their appends, batched: each row commits with its events, a taken key
/// appends nothing and fails alone (not its neighbours in the batch), and a stale version with a
/// claim is still a version conflict. Plain appends batched with claiming ones are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_commits_with_its_append_and_a_taken_key_appends_nothing() {
    let (db, store) = postgres().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE claimed_keys (key text PRIMARY KEY, stream text NOT NULL)")
        .execute(&pool)
        .await
        .expect("the caller's table");
    sqlx::query("INSERT INTO claimed_keys VALUES ('key-10', 'someone-else')")
        .execute(&pool)
        .await
        .expect("a key taken before");
    let existing = StreamId::new("claiming-existing");
    store
        .append(&existing, ExpectedVersion::NoStream, vec![test_event(0)])
        .await
        .expect("an existing stream");

    let appends = (0..30u64).map(|i| {
        let store = store.clone();
        let existing = existing.clone();
        tokio::spawn(async move {
            let stream = StreamId::new(format!("claiming-{i}"));
            match i {
                // Plain appends among the claiming ones.
                20.. => {
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![test_event(i)])
                        .await
                }
                // A stale version, claiming a free key.
                15 => {
                    store
                        .append_claiming(
                            &existing,
                            ExpectedVersion::NoStream,
                            vec![test_event(i)],
                            claim("key-15", &existing),
                        )
                        .await
                }
                _ => {
                    store
                        .append_claiming(
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![test_event(i), test_event(100 + i)],
                            claim(&format!("key-{i}"), &stream),
                        )
                        .await
                }
            }
        })
    });
    let results = futures::future::join_all(appends).await;
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().expect("task");
        match i {
            10 => assert!(matches!(r, Err(StoreError::ClaimTaken { .. })), "{r:?}"),
            15 => assert!(
                matches!(r, Err(StoreError::Conflict { actual: 1, .. })),
                "{r:?}"
            ),
            _ => assert!(r.is_ok(), "append {i} failed: {r:?}"),
        }
    }
    let taken = StreamId::new("claiming-10");
    assert!(store.read_stream(&taken).await.expect("read").is_empty());
    assert_eq!(store.read_stream(&existing).await.expect("read").len(), 1);
    // 1 existing + 2 for each of the 18 successful claimers + 10 plain appends.
    assert_eq!(store.read_all(0, 1000).await.expect("read_all").len(), 47);
    for i in (0..20u64).filter(|i| *i != 10 && *i != 15) {
        let owner: String = sqlx::query_scalar("SELECT stream FROM claimed_keys WHERE key = $1")
            .bind(format!("key-{i}"))
            .fetch_one(&pool)
            .await
            .expect("the claim committed with its append");
        assert_eq!(owner, format!("claiming-{i}"));
        assert_eq!(
            store
                .read_stream(&StreamId::new(format!("claiming-{i}")))
                .await
                .expect("read")
                .len(),
            2
        );
    }
    let owner: String = sqlx::query_scalar("SELECT stream FROM claimed_keys WHERE key = 'key-10'")
        .fetch_one(&pool)
        .await
        .expect("the taken key");
    assert_eq!(owner, "someone-else");
}

/// A stored payload that does not decode gives an error naming the event's id and type.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_payload_names_its_event() {
    let (_db, store) = postgres().await;
    let mut e = test_event(1);
    e.event_type = "ShareRevoked".to_owned();
    e.payload = json!({ "share_id": "not-a-share-id" });
    let id = e.event_id;
    store
        .append(
            &StreamId::new("share-broken"),
            ExpectedVersion::NoStream,
            vec![e],
        )
        .await
        .expect("append");
    let read = store
        .read_stream(&StreamId::new("share-broken"))
        .await
        .expect("read");
    let error = read[0].decode().expect_err("must not decode").to_string();
    assert!(
        error.contains(&id.to_string()) && error.contains("ShareRevoked"),
        "{error}"
    );
}
