//! Determinism and the swap: `projector rebuild` on a live system yields read models identical,
//! table by table, to the ones the live projector built in small batches as the log grew; the
//! swap costs readers nothing; and the live projector carries on in the swapped-in tables.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::event::{
    ShareSettingsChanged, ShareTokenRotated, TargetType, TrackImported, Visibility,
};
use events::ids::UserId;
use events::licence::LicenceClass;
use events::password::PasswordHash;
use events::share_token::ShareToken;
use events::EventStore;
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

/// `p` (logged) or `u` (unlogged) for every table of `schema`.
async fn persistence(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, c.relpersistence::text FROM pg_class AS c \
             JOIN pg_namespace AS n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("list the tables")
}

fn all(tables: &[(String, String)], persistence: &str) -> bool {
    !tables.is_empty() && tables.iter().all(|(_, p)| p == persistence)
}

/// Appends every kind of change the synthetic log lacks or rarely has: settings changes and
/// token rotations (of links created just before and long before), repeated creations (right
/// after the first and many events later), changes that come before the creation of what they
/// change, removals and revocations repeated, membership reordered, emptied and refilled, saves
/// repeated.
async fn varied_log(store: &dyn EventStore) {
    let mut clock = 0;
    let mut next = || {
        clock += 1;
        at(clock)
    };
    macro_rules! append {
        ($event:expr) => {
            log::append(store, $event, next()).await
        };
    }
    let tracks: Vec<TrackImported> = (0..6)
        .map(|i| log::track(&format!("Track {i}"), LicenceClass::ALL[i % 4]))
        .collect();
    for t in &tracks[..4] {
        append!(t.clone());
    }
    let t = |i: usize| &tracks[i].track_id;

    // Membership: appended, reordered, removed, added back; one change before the collection
    // exists; the collection removed, then changed again.
    let c1 = log::collection("First");
    append!(c1.clone());
    for i in 0..4 {
        append!(log::added(&c1.collection_id, t(i)));
    }
    append!(log::reordered(&c1.collection_id, &[t(3), t(1), t(0), t(2)]));
    append!(log::removed_from(&c1.collection_id, t(1)));
    append!(log::added(&c1.collection_id, t(1)));
    append!(log::added(&c1.collection_id, t(0)));
    let c2 = log::collection("Second");
    append!(log::added(&c2.collection_id, t(2)));
    append!(c2.clone());
    append!(log::added(&c2.collection_id, t(3)));
    append!(log::content_removed(
        TargetType::Collection,
        c1.collection_id.as_str()
    ));
    append!(log::removed_from(&c1.collection_id, t(3)));
    append!(log::content_removed(
        TargetType::Collection,
        c1.collection_id.as_str()
    ));

    // A removal before the import (it stamps nothing), then after it (first wins).
    append!(log::content_removed(TargetType::Track, t(4).as_str()));
    append!(tracks[4].clone());
    append!(log::content_removed(TargetType::Track, t(4).as_str()));
    append!(log::content_removed(TargetType::Track, t(4).as_str()));

    // Links: settings changed field by field and back, rotated, revoked twice.
    let s1 = log::share(TargetType::Track, t(0).as_str());
    append!(s1.clone());
    let mut change = ShareSettingsChanged::of(s1.share_id.clone());
    change.visibility = Some(Visibility::Public);
    change.expires_at = Some(Some(at(86_400)));
    change.max_views = Some(Some(5));
    change.password_hash = Some(Some(PasswordHash::from_phc("$argon2id$v=19$x".to_owned())));
    change.label = Some(Some("For the band".to_owned()));
    append!(change);
    let mut change = ShareSettingsChanged::of(s1.share_id.clone());
    change.max_views = Some(None);
    change.label = Some(None);
    append!(change);
    append!(ShareTokenRotated {
        share_id: s1.share_id.clone(),
        token_hash: ShareToken::generate().hash(),
    });
    append!(log::revoked(&s1.share_id));
    append!(log::revoked(&s1.share_id));
    let s2 = log::share(TargetType::Collection, c2.collection_id.as_str());
    append!(s2.clone());
    for _ in 0..2 {
        append!(ShareTokenRotated {
            share_id: s2.share_id.clone(),
            token_hash: ShareToken::generate().hash(),
        });
    }
    // Changes before the link exists change nothing; the ones after it do.
    let mut s3 = log::share(TargetType::Track, t(2).as_str());
    s3.max_views = Some(3);
    s3.label = Some("Early".to_owned());
    let mut early = ShareSettingsChanged::of(s3.share_id.clone());
    early.visibility = Some(Visibility::Public);
    append!(early);
    append!(log::revoked(&s3.share_id));
    append!(s3.clone());
    let mut change = ShareSettingsChanged::of(s3.share_id.clone());
    change.expires_at = Some(Some(at(7_200)));
    append!(change);

    // Saves, one repeated by the same user through another link (first wins).
    let (u1, u2) = (UserId::generate(), UserId::generate());
    append!(log::saved(&u1, t(0), &s1.share_id));
    append!(log::saved(&u2, t(0), &s1.share_id));
    append!(log::saved(&u1, t(0), &s3.share_id));

    // Repeated creations: right after the first, and many events after it (another batch
    // of a rebuild that commits every few events). The first wins.
    append!(tracks[5].clone());
    let mut impostor = tracks[5].clone();
    impostor.title = "Impostor".to_owned();
    append!(impostor);
    let mut impostor = tracks[0].clone();
    impostor.title = "Impostor too".to_owned();
    append!(impostor);
    let mut again = s1.clone();
    again.token_hash = ShareToken::generate().hash();
    append!(again);
    let mut again = c2.clone();
    again.name = "Impostor collection".to_owned();
    append!(again);
    append!(log::added(&c2.collection_id, t(5)));
}

/// A rebuild fills its tables with `COPY`, folding later changes into the rows it creates, and
/// falls back to statements when a creation repeats a row already written: over a log with every
/// kind of change, each way gives the tables the live projector built one small batch at a time,
/// and the swapped-in tables are logged like any others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_by_copy_reproduces_every_kind_of_change() {
    let mut app = TestApp::builder()
        .env("PROJECTOR_BATCH_SIZE", "3")
        .build()
        .await;
    let projector = app.spawn(Bin::Projector).await;
    varied_log(app.store.as_ref()).await;
    // And a synthetic stretch after it.
    let head = log::copy_into_log(&app.pool, &log::synthetic(tests::scale(3_000), 5))
        .await
        .expect("copy the synthetic log");
    wait_for_checkpoint(&app.pool, head, Duration::from_secs(120)).await;
    drop(projector);
    let live = checksums(&app.pool, "read_model").await;
    let titles: Vec<String> =
        sqlx::query_scalar("SELECT title FROM read_model.tracks WHERE title LIKE 'Impostor%'")
            .fetch_all(&app.pool)
            .await
            .expect("titles");
    assert!(titles.is_empty(), "a repeated creation won: {titles:?}");

    // Everything in one batch (changes folded into the new rows), then batches of 4 (the
    // repeated creations land in a later batch than the first ones).
    for (batch_size, falls_back) in [("1000000", false), ("4", true)] {
        app.env.set("PROJECTOR_REBUILD_BATCH_SIZE", batch_size);
        let output = app.env.run(Bin::Projector, &["rebuild"]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rebuild failed: {stderr}");
        assert_eq!(
            stderr.contains("applying the batch again by statements"),
            falls_back,
            "batches of {batch_size}: {stderr}"
        );
        assert_eq!(
            checksums(&app.pool, "read_model").await,
            live,
            "batches of {batch_size}"
        );
        let tables = persistence(&app.pool, "read_model").await;
        assert!(all(&tables, "p"), "unlogged tables swapped in: {tables:?}");
    }
}

/// The rebuild's tables are unlogged while it fills. A database crash empties unlogged tables
/// (crash recovery resets them, as `TRUNCATE` does here), checkpoint included: the next rebuild
/// starts over and reaches the same tables. Both stop at an event this build cannot project,
/// like the live projector, which leaves the rebuild's tables in place to compare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_emptied_by_a_database_crash_starts_over() {
    let mut app = TestApp::builder().build().await;
    app.env.set("PROJECTOR_REBUILD_BATCH_SIZE", "500");
    let good = log::copy_into_log(&app.pool, &log::synthetic(tests::scale(2_000), 9))
        .await
        .expect("copy the synthetic log");
    let mut future = log::track("From the future", LicenceClass::Unclear);
    future.licence_version = "2999-01".to_owned();
    log::append(app.store.as_ref(), future, at(0)).await;
    let mut projector = app.spawn(Bin::Projector).await;
    let status = projector
        .wait(Duration::from_secs(60))
        .await
        .expect("the projector stops at the event it cannot project");
    assert!(!status.success());
    assert_eq!(checkpoint(&app.pool, "read_model").await, good);
    let live = checksums(&app.pool, "read_model").await;

    let output = app.env.run(Bin::Projector, &["rebuild"]).await;
    assert!(!output.status.success(), "the rebuild stops there too");
    assert_eq!(checkpoint(&app.pool, "read_model_rebuild").await, good);
    let tables = persistence(&app.pool, "read_model_rebuild").await;
    assert!(all(&tables, "u"), "the fill is logged: {tables:?}");
    assert_eq!(checksums(&app.pool, "read_model_rebuild").await, live);

    let names: Vec<String> = tables.into_iter().map(|(name, _)| name).collect();
    sqlx::raw_sql(&format!(
        "TRUNCATE {}",
        names
            .iter()
            .map(|t| format!("read_model_rebuild.{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .execute(&app.pool)
    .await
    .expect("empty the rebuild's tables");
    let output = app.env.run(Bin::Projector, &["rebuild"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("starting over"), "{stderr}");
    assert_eq!(checkpoint(&app.pool, "read_model_rebuild").await, good);
    assert_eq!(checksums(&app.pool, "read_model_rebuild").await, live);
    let tables = persistence(&app.pool, "read_model").await;
    assert!(all(&tables, "p"), "the live tables: {tables:?}");
}
