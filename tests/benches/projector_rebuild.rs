//! The projector's benchmark: the rebuild rate over a synthetic log (1M events by default,
//! `MS_BENCH_EVENTS` to change; `PROJECTOR_REBUILD_BATCH_SIZE` is passed on), beside PostgreSQL's own `COPY` ingest of the same rows measured
//! in the same run, and the change-notice latency from commit to receipt.
//!
//! `cargo bench -p tests --bench projector_rebuild` (needs PostgreSQL and NATS, like the tests;
//! uses a scratch database that is dropped at the end). The goal is a rebuild of at least
//! 100 000 events/s. Never run in CI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::event::TargetType;
use events::licence::LicenceClass;
use events::store::postgres::PostgresEventStore;
use events::EventStore;
use futures::{StreamExt, TryStreamExt};
use sqlx::{PgConnection, PgPool};
use tests::db::TestDb;
use tests::log::{self, at};
use tests::process::{Bin, Service, ServiceEnv};

const GOAL: f64 = 100_000.0;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = setting("MS_BENCH_EVENTS", 1_000_000);
    let samples = setting("MS_BENCH_NOTICES", 1_000);
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = ServiceEnv::new(&db, &tests::nats::shared_url(), dir.path());
    // The rebuild's batch size, when the caller tries another than the default.
    if let Ok(size) = std::env::var("PROJECTOR_REBUILD_BATCH_SIZE") {
        env.set("PROJECTOR_REBUILD_BATCH_SIZE", size);
    }

    eprintln!("writing {events} synthetic events ...");
    let mut stream = log::synthetic_stream(1);
    let mut written = 0;
    while written < events {
        let chunk: Vec<_> = stream
            .by_ref()
            .take((events - written).min(100_000))
            .collect();
        written += chunk.len();
        log::copy_into_log(&pool, &chunk)
            .await
            .expect("write the log");
    }
    sqlx::query("ANALYZE event_store.events")
        .execute(&pool)
        .await
        .expect("analyze");

    eprintln!("rebuilding ...");
    let started = Instant::now();
    let output = env.run(Bin::Projector, &["rebuild"]).await;
    let rebuild_wall = started.elapsed();
    assert!(
        output.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let reported = summary
        .split(" events/s")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN);

    eprintln!("measuring COPY ...");
    let mut conn = pool.acquire().await.expect("connection");
    let log_copy = copy_log_rows(&mut conn).await;
    let model_copy = copy_read_model_rows(&mut conn).await;
    drop(conn);

    eprintln!("measuring notice latency ...");
    let latencies = notice_latency(&db, &env, &pool, dir.path(), samples).await;

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let rebuild_rate = rate(rebuild_wall);
    println!();
    println!("projector rebuild, {events} synthetic events (all nine event types)");
    println!("| what | time | events/s | rebuild ÷ this |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `projector rebuild`, whole command (start-up, catch-up, swap) | {:.2} s | {:.0} | 1.00 |",
        rebuild_wall.as_secs_f64(),
        rebuild_rate
    );
    println!(
        "| `projector rebuild`, its own report (catch-up and swap) | | {reported:.0} | {:.2} |",
        rebuild_rate / reported
    );
    println!(
        "| PostgreSQL COPY of the {events} log rows into an events-shaped table | {:.2} s | {:.0} | {:.2} |",
        log_copy.as_secs_f64(),
        rate(log_copy),
        rebuild_rate / rate(log_copy)
    );
    println!(
        "| PostgreSQL COPY of the rebuilt read-model rows into the same tables and indexes | {:.2} s | {:.0} | {:.2} |",
        model_copy.as_secs_f64(),
        rate(model_copy),
        rebuild_rate / rate(model_copy)
    );
    println!(
        "goal ≥ {GOAL:.0} events/s: {} ({rebuild_rate:.0} events/s)",
        if rebuild_rate >= GOAL {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("rebuild said: {summary}");
    // The line `scripts/bench` gathers into the system's table.
    println!(
        "BENCH|projector rebuild ÷ COPY of the same {events} log rows|{:.2}|≥ 1.0",
        rebuild_rate / rate(log_copy)
    );
    println!();
    println!(
        "change notice latency, commit → receipt (revoke, live projector, {} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}

/// COPY of the log's rows (exported first, so only ingest is timed) into a table shaped like
/// `event_store.events`, with its keys and indexes.
async fn copy_log_rows(conn: &mut PgConnection) -> Duration {
    let rows = export(conn, "COPY event_store.events TO STDOUT (FORMAT csv)").await;
    sqlx::raw_sql(
        "CREATE SCHEMA bench_copy; \
         CREATE TABLE bench_copy.events (LIKE event_store.events INCLUDING ALL);",
    )
    .execute(&mut *conn)
    .await
    .expect("scratch table");
    let started = Instant::now();
    import(conn, "COPY bench_copy.events FROM STDIN (FORMAT csv)", rows).await;
    started.elapsed()
}

/// COPY of every read-model row the rebuild produced into a fresh schema with the same tables
/// and indexes: what merely writing the end result costs.
async fn copy_read_model_rows(conn: &mut PgConnection) -> Duration {
    migrations::create_read_model(conn, "bench_read_model")
        .await
        .expect("scratch read models");
    sqlx::query("DELETE FROM bench_read_model.checkpoint")
        .execute(&mut *conn)
        .await
        .expect("empty checkpoint");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'read_model'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("tables");
    let mut exported = Vec::new();
    for table in &tables {
        let rows = export(conn, &format!("COPY read_model.{table} TO STDOUT")).await;
        exported.push((table.clone(), rows));
    }
    let started = Instant::now();
    for (table, rows) in exported {
        import(
            conn,
            &format!("COPY bench_read_model.{table} FROM STDIN"),
            rows,
        )
        .await;
    }
    started.elapsed()
}

async fn export(conn: &mut PgConnection, statement: &str) -> Vec<Vec<u8>> {
    conn.copy_out_raw(statement)
        .await
        .expect("copy out")
        .map_ok(|chunk| chunk.to_vec())
        .try_collect()
        .await
        .expect("copy out rows")
}

async fn import(conn: &mut PgConnection, statement: &str, rows: Vec<Vec<u8>>) {
    let mut copy = conn.copy_in_raw(statement).await.expect("copy in");
    for chunk in rows {
        copy.send(chunk).await.expect("copy in rows");
    }
    copy.finish().await.expect("finish copy in");
}

/// Milliseconds from a revoke's commit (the append returning) to its change notice arriving.
async fn notice_latency(
    db: &TestDb,
    env: &ServiceEnv,
    pool: &PgPool,
    dir: &std::path::Path,
    samples: usize,
) -> Vec<f64> {
    let _projector = Service::start(Bin::Projector, env, &dir.join("logs"), &[]).await;
    let store: Arc<dyn EventStore> = Arc::new(PostgresEventStore::new(pool.clone()));
    let nats = async_nats::connect(tests::nats::shared_url())
        .await
        .expect("NATS");
    let mut notices = nats
        .subscribe(events::notice::subject(&db.name))
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");

    let track = log::track("Latency", LicenceClass::Unclear);
    log::append(store.as_ref(), track.clone(), at(0)).await;
    let mut shares = Vec::with_capacity(samples);
    for i in 0..samples {
        let share = log::share(TargetType::Track, track.track_id.as_str());
        log::append(store.as_ref(), share.clone(), at(i as i64)).await;
        shares.push(share);
    }
    let head = store.head().await.expect("head");
    tests::read_model::wait_for_checkpoint(pool, head, Duration::from_secs(600)).await;

    let mut latencies = Vec::with_capacity(samples);
    for share in shares {
        let revoke = log::revoked(&share.share_id);
        log::append(store.as_ref(), revoke, at(0)).await;
        let committed = Instant::now();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), notices.next())
                .await
                .expect("a notice within 10 s")
                .expect("subscription open");
            let notice: events::notice::ChangeNotice =
                serde_json::from_slice(&message.payload).expect("notice");
            if notice.share_ids.contains(&share.share_id) {
                latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
