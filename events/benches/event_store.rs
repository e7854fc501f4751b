//! The PostgreSQL event store against PostgreSQL itself, measured in the same run on the same
//! scratch database (`ms_bench_<random>`, dropped at the end):
//! - one-event appends at 1, 8 and 32 concurrent writers (each on its own stream, with the
//!   correct expected version), beside `pgbench` inserting one row into a `bigserial` table at
//!   the same concurrency;
//! - `read_all` in batches over everything appended, beside one plain `SELECT` of the same rows.
//!
//! The ratio is what matters (goal: appends at ≥ 0.5 of pgbench). A shared machine's fsync
//! latency and CPU drift from one second to the next, so each append measurement alternates with
//! its baseline for several rounds and the medians are compared; read throughput is compared
//! the same way.
//!
//! `cargo bench -p events --bench event_store`. Environment: `MS_BENCH_SECS` (seconds per run,
//! default 5), `MS_BENCH_ROUNDS` (default 3), `MS_BENCH_READ_BATCH` (default 1000),
//! `BENCH_DATABASE_URL` (the server's admin database, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use events::store::postgres::PostgresEventStore;
use events::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// What a service gets (`DATABASE_MAX_CONNECTIONS` in the tests).
const POOL_SIZE: u32 = 4;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let secs: u64 = env_or("MS_BENCH_SECS", 5)?;
    let rounds: usize = env_or("MS_BENCH_ROUNDS", 3)?.max(1);
    let batch: usize = env_or("MS_BENCH_READ_BATCH", 1000)?;
    let admin_url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scratch = runtime.block_on(ScratchDb::create(&admin_url))?;
    let result = runtime.block_on(run(&scratch, Duration::from_secs(secs), rounds, batch));
    drop(scratch);
    let lines = result?;

    println!();
    println!(
        "event store (PostgreSQL backend, pool of {POOL_SIZE}) vs PostgreSQL: medians of {rounds} \
         alternating runs of {secs} s"
    );
    println!(
        "{:<36} {:>18} {:>18} {:>6}",
        "workload", "event store", "baseline", "ratio"
    );
    for line in lines {
        println!(
            "{:<36} {:>13.0} ev/s {:>11.0} {:<6} {:>6.2}",
            line.workload,
            line.ours,
            line.baseline,
            line.baseline_unit,
            line.ours / line.baseline
        );
    }
    Ok(())
}

struct Line {
    workload: String,
    ours: f64,
    baseline: f64,
    baseline_unit: &'static str,
}

async fn run(
    scratch: &ScratchDb,
    duration: Duration,
    rounds: usize,
    batch: usize,
) -> Result<Vec<Line>, Error> {
    let pool = migrations::prepare(&scratch.url, POOL_SIZE).await?;
    let store: Arc<dyn EventStore> = Arc::new(PostgresEventStore::new(pool.clone()));
    sqlx::query("CREATE TABLE bench_insert (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(&pool)
        .await?;
    let script = tempfile_with(
        "INSERT INTO bench_insert (payload) VALUES ('{\"n\": 1, \"track\": \"trk_0123456789ab\"}');\n",
    )?;

    let mut lines = Vec::new();
    for clients in CONCURRENCY {
        let (mut ours, mut pgbench) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(append_throughput(&store, clients, duration).await?);
            pgbench.push(pgbench_tps(scratch, &script, clients, duration)?);
            eprintln!(
                "appends, concurrency {clients}: {:.0} events/s; pgbench {:.0} tps",
                ours[ours.len() - 1],
                pgbench[pgbench.len() - 1]
            );
        }
        let (ours, pgbench) = (median(ours), median(pgbench));
        lines.push(Line {
            workload: format!("append 1 event, concurrency {clients}"),
            ours,
            baseline: pgbench,
            baseline_unit: "tps",
        });
    }

    let (mut ours, mut select) = (Vec::new(), Vec::new());
    let mut total = 0;
    for _ in 0..rounds {
        let (throughput, read) = read_all_throughput(&store, batch).await?;
        ours.push(throughput);
        select.push(select_throughput(&pool, read).await?);
        total = read;
        eprintln!(
            "global read of {read} events: {throughput:.0} events/s; SELECT {:.0} rows/s",
            select[select.len() - 1]
        );
    }
    let (ours, select) = (median(ours), median(select));
    lines.push(Line {
        workload: format!("read_all of {total}, batches of {batch}"),
        ours,
        baseline: select,
        baseline_unit: "rows/s",
    });
    pool.close().await;
    let _ = std::fs::remove_file(&script);
    Ok(lines)
}

/// `clients` writers, each appending one event at a time to its own stream, for `duration`.
async fn append_throughput(
    store: &Arc<dyn EventStore>,
    clients: usize,
    duration: Duration,
) -> Result<f64, Error> {
    let started = Instant::now();
    let deadline = started + duration;
    let writers = (0..clients).map(|w| {
        let store = store.clone();
        let stream = StreamId::new(format!("bench-{clients}-{w}-{}", Uuid::new_v4().simple()));
        tokio::spawn(async move {
            let mut version = 0;
            while Instant::now() < deadline {
                let outcome = store
                    .append(
                        &stream,
                        ExpectedVersion::after(version),
                        vec![event(version)],
                    )
                    .await?;
                version = outcome.stream_version;
            }
            Ok::<u64, events::StoreError>(version)
        })
    });
    let mut appended = 0;
    for writer in futures::future::join_all(writers).await {
        appended += writer??;
    }
    Ok(appended as f64 / started.elapsed().as_secs_f64())
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "BenchmarkAppended".to_owned(),
        schema_version: 1,
        payload: json!({ "n": n, "track": "trk_0123456789ab" }),
        occurred_at: Utc::now(),
        actor: "usr_0123456789ab".to_owned(),
        trace_id: "req_benchmark0000000".to_owned(),
    }
}

/// The whole log through `read_all`, `batch` events at a time, as a projector reads it.
async fn read_all_throughput(
    store: &Arc<dyn EventStore>,
    batch: usize,
) -> Result<(f64, usize), Error> {
    let started = Instant::now();
    let (mut after, mut total) = (0, 0);
    loop {
        let page: Vec<RecordedEvent> = store.read_all(after, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        total += page.len();
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), total))
}

/// The same rows and columns in one plain query, decoded by the same driver: what reading the
/// table costs without the store.
async fn select_throughput(pool: &PgPool, expected: usize) -> Result<f64, Error> {
    let started = Instant::now();
    let rows = sqlx::query(
        "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
         occurred_at, actor, trace_id, payload FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(pool)
    .await?;
    let mut decoded = Vec::with_capacity(rows.len());
    for row in &rows {
        decoded.push(RecordedEvent {
            global_position: row.try_get::<i64, _>("global_position")? as u64,
            stream_id: StreamId::new(row.try_get::<String, _>("stream_id")?),
            stream_version: row.try_get::<i64, _>("stream_version")? as u64,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            occurred_at: row.try_get("occurred_at")?,
            actor: row.try_get("actor")?,
            trace_id: row.try_get("trace_id")?,
            payload: row.try_get("payload")?,
        });
    }
    let decoded = decoded.len();
    if decoded != expected {
        return Err(format!("SELECT saw {decoded} rows, read_all {expected}").into());
    }
    Ok(decoded as f64 / started.elapsed().as_secs_f64())
}

/// pgbench's transactions per second for `clients` connections each inserting one row per
/// transaction.
fn pgbench_tps(
    scratch: &ScratchDb,
    script: &std::path::Path,
    clients: usize,
    duration: Duration,
) -> Result<f64, Error> {
    let output = Command::new("pgbench")
        .args(["-n", "-j", "2"])
        .arg("-h")
        .arg(&scratch.host)
        .arg("-p")
        .arg(scratch.port.to_string())
        .arg("-U")
        .arg(&scratch.user)
        .arg("-f")
        .arg(script)
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(duration.as_secs().max(1).to_string())
        .arg(&scratch.name)
        .output()
        .map_err(|e| format!("cannot run pgbench (is it installed?): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    parse_tps(&stdout)
        .ok_or_else(|| format!("no `tps = ` line in pgbench's output:\n{stdout}").into())
}

/// `tps = 1234.567890 (without initial connection time)` → 1234.57.
fn parse_tps(pgbench_output: &str) -> Option<f64> {
    pgbench_output
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn tempfile_with(contents: &str) -> Result<std::path::PathBuf, Error> {
    let path = std::env::temp_dir().join(format!("ms_bench_{}.sql", Uuid::new_v4().simple()));
    std::fs::write(&path, contents)?;
    Ok(path)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Error> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        Err(_) => Ok(default),
    }
}

/// A database of its own on the server, dropped (with its connections) when this is dropped.
struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
    host: String,
    port: u16,
    user: String,
}

impl ScratchDb {
    async fn create(admin_url: &str) -> Result<Self, Error> {
        let name = format!("ms_bench_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let options: PgConnectOptions = admin_url.parse()?;
        let url = match admin_url.rfind('/') {
            Some(slash) => format!("{}/{name}", &admin_url[..slash]),
            None => return Err(format!("{admin_url} names no database").into()),
        };
        Ok(Self {
            admin_url: admin_url.to_owned(),
            host: options.get_host().to_owned(),
            port: options.get_port(),
            user: options.get_username().to_owned(),
            name,
            url,
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Drop may run inside the runtime; a private thread and runtime do the async work.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                match PgConnection::connect(&admin_url).await {
                    Ok(mut admin) => {
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        if let Err(e) = sqlx::query(&drop).execute(&mut admin).await {
                            eprintln!("could not drop the scratch database {name}: {e}");
                        }
                    }
                    Err(e) => eprintln!("could not drop the scratch database {name}: {e}"),
                }
            });
        })
        .join();
    }
}
