//! Ordering under concurrency: 32 writers append while a transaction appends and stays open
//! for seconds (the late commit), and two projector processes compete for the same read
//! models. Every event must be applied exactly once: none skipped (the late one included), none
//! applied by both projectors.

use std::time::Duration;

use events::event::TargetType;
use events::licence::LicenceClass;
use events::MusicEvent;
use sqlx::{Connection, PgConnection};
use tests::app::TestApp;
use tests::log::{self, at};
use tests::process::Bin;
use tests::read_model::{checksums, metric, wait_for_checkpoint};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_applied_exactly_once_under_32_writers_and_a_late_commit() {
    let app = TestApp::builder()
        .env("PROJECTOR_BATCH_SIZE", "50")
        .build()
        .await;
    let projectors = [
        app.spawn(Bin::Projector).await,
        app.spawn(Bin::Projector).await,
    ];
    let (pool, store) = (app.pool.clone(), app.store.clone());

    let writers = 32;
    let per_writer = tests::scale(100);
    let writer_tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let store = store.as_ref();
                let collection = log::collection(&format!("Writer {w}"));
                log::append(store, collection.clone(), at(0)).await;
                let mut tracks = Vec::new();
                let mut revoked = 0;
                for i in 0..per_writer {
                    let t = log::track(&format!("W{w} T{i}"), LicenceClass::CommercialCleared);
                    log::append(store, t.clone(), at(i as i64)).await;
                    log::append(
                        store,
                        log::added(&collection.collection_id, &t.track_id),
                        at(i as i64),
                    )
                    .await;
                    let s = log::share(TargetType::Track, t.track_id.as_str());
                    log::append(store, s.clone(), at(i as i64)).await;
                    if i % 5 == 0 {
                        log::append(store, log::revoked(&s.share_id), at(i as i64)).await;
                        revoked += 1;
                    }
                    tracks.push(t.track_id.to_string());
                }
                (collection.collection_id.to_string(), tracks, revoked)
            })
        })
        .collect();

    // The late committer: a share appended through the store's own function, in a transaction
    // that stays open while the writers and both projectors race past it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = log::share(TargetType::Track, "mtrack_0123456789ab");
    let late_event = MusicEvent::ShareCreated(late.clone());
    let mut conn = PgConnection::connect(&app.db.url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "SELECT * FROM event_store.append_batch(ARRAY[$1], ARRAY[-1::bigint], ARRAY[1], \
         ARRAY[$2::uuid], ARRAY['ShareCreated'], ARRAY[2], ARRAY[now()], \
         ARRAY['usr_0123456789ab'], ARRAY['req_latecommit0000000'], ARRAY[$3::jsonb])",
    )
    .bind(format!("share-{}", late.share_id))
    .bind(Uuid::now_v7())
    .bind(late_event.to_payload())
    .fetch_all(&mut *tx)
    .await
    .expect("late append");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.commit().await.expect("late commit");

    let mut expected_revoked = 0;
    let mut memberships = Vec::new();
    for task in writer_tasks {
        let (collection, tracks, revoked) = task.await.expect("writer");
        expected_revoked += revoked;
        memberships.push((collection, tracks));
    }
    let head = store.head().await.expect("head");
    wait_for_checkpoint(&pool, head, Duration::from_secs(300)).await;

    // None skipped.
    let shares: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model.share_links")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(shares as usize, writers * per_writer + 1);
    let late_found: i64 =
        sqlx::query_scalar("SELECT count(*) FROM read_model.share_links WHERE share_id = $1")
            .bind(late.share_id.as_str())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(late_found, 1, "the late-committed share was skipped");
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read_model.share_links WHERE revoked_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(revoked as usize, expected_revoked);
    for (collection, tracks) in memberships {
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT track_id FROM read_model.collection_tracks WHERE collection_id = $1 \
             ORDER BY position",
        )
        .bind(&collection)
        .fetch_all(&pool)
        .await
        .expect("membership");
        assert_eq!(stored, tracks, "membership of {collection} in append order");
    }

    // None applied twice: the two projectors' counters add up to the log, exactly.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await
        .expect("count");
    let http = reqwest::Client::new();
    let mut applied = 0.0;
    for projector in &projectors {
        // Its gauges catch up with the shared checkpoint within a poll interval.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exposition = loop {
            let exposition = http
                .get(projector.url("/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            if metric(&exposition, "projector_checkpoint_position") == head as f64 {
                break exposition;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a projector does not report the checkpoint {head}:\n{exposition}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        applied += metric(&exposition, "projector_events_applied_total");
    }
    assert_eq!(
        applied, events as f64,
        "events applied by both projectors together"
    );

    // And the whole is what one pass over the log builds.
    let live = checksums(&pool, "read_model").await;
    let output = app.env.run(Bin::Projector, &["rebuild"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(checksums(&pool, "read_model").await, live);
}
