//! Determinism and the swap: `projector rebuild` on a live system yields read models identical,
//! table by table, to the ones the live projector built in small batches as the log grew; the
//! swap costs readers nothing; and the live projector carries on in the swapped-in tables.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::event::TargetType;
use events::licence::LicenceClass;
use sqlx::{Connection, PgConnection};
use tests::app::TestApp;
use tests::log::{self, at};
use tests::process::Bin;
use tests::read_model::{checkpoint, checksums, indexes, wait_for_checkpoint};

async fn oid(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT 'read_model.share_links'::regclass::oid::bigint")
        .fetch_one(pool)
        .await
        .expect("the live share_links table")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_on_a_live_system_reproduces_the_live_read_models() {
    // Batches of 7 live, against 10 000 in the rebuild: different cuts, same result.
    let app = TestApp::builder()
        .env("PROJECTOR_BATCH_SIZE", "7")
        .build()
        .await;
    let _projector = app.spawn(Bin::Projector).await;
    let (pool, store) = (app.pool.clone(), app.store.clone());

    // The log grows while the projector runs: synthetic chunks, and appends through the store.
    let synthetic = log::synthetic(tests::scale(8_000), 11);
    for chunk in synthetic.chunks(synthetic.len().div_ceil(4)) {
        log::copy_into_log(&pool, chunk)
            .await
            .expect("copy a chunk");
        let t = log::track("Appended live", LicenceClass::CommercialEnterprise);
        log::append(store.as_ref(), t.clone(), at(0)).await;
        let s = log::share(TargetType::Track, t.track_id.as_str());
        log::append(store.as_ref(), s.clone(), at(1)).await;
        log::append(store.as_ref(), log::revoked(&s.share_id), at(2)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let head = store.head().await.expect("head");
    wait_for_checkpoint(&pool, head, Duration::from_secs(300)).await;
    let live = checksums(&pool, "read_model").await;
    let live_oid = oid(&pool).await;
    let live_indexes = indexes(&pool, "read_model").await;
    assert!(live_indexes.len() >= 8, "{live_indexes:?}");

    // A reader on one connection (so its prepared statements are reused across the swap).
    let reading = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (url, reading, reads) = (app.db.url.clone(), reading.clone(), reads.clone());
        let token_hash: String =
            sqlx::query_scalar("SELECT token_hash FROM read_model.share_links LIMIT 1")
                .fetch_one(&pool)
                .await
                .expect("some share link");
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            let mut errors = Vec::new();
            while reading.load(Ordering::SeqCst) {
                let found = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM read_model.share_links AS s \
                     LEFT JOIN read_model.tracks AS t ON t.track_id = s.target_id \
                     WHERE s.token_hash = $1",
                )
                .bind(&token_hash)
                .fetch_one(&mut conn)
                .await;
                match found {
                    Ok(1) => {}
                    other => errors.push(format!("{other:?}")),
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
            errors
        })
    };

    let output = app.env.run(Bin::Projector, &["rebuild"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("events/s"), "the rate is printed: {stdout}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    reading.store(false, Ordering::SeqCst);
    let errors = reader.await.expect("reader");
    assert!(reads.load(Ordering::SeqCst) > 10, "the reader hardly read");
    assert!(errors.is_empty(), "readers saw the swap: {errors:?}");

    assert_ne!(
        oid(&pool).await,
        live_oid,
        "the rebuilt tables were swapped in"
    );
    assert_eq!(checksums(&pool, "read_model").await, live);
    assert_eq!(
        indexes(&pool, "read_model").await,
        live_indexes,
        "every index readers use is back"
    );
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'read_model%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("schemas");
    assert_eq!(leftovers, vec!["read_model".to_owned()]);

    // The live projector goes on, in the new tables.
    let t = log::track("After the swap", LicenceClass::Unclear);
    let after = log::append(store.as_ref(), t.clone(), at(3)).await;
    wait_for_checkpoint(&pool, after.last_position, Duration::from_secs(30)).await;
    let found: i64 =
        sqlx::query_scalar("SELECT count(*) FROM read_model.tracks WHERE track_id = $1")
            .bind(t.track_id.as_str())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(found, 1);
    assert_eq!(checkpoint(&pool, "read_model").await, after.last_position);
}
