//! Create-share commands per second at concurrency 1, 8 and 32, over HTTP against the real
//! command API binary (built with the bench profile, i.e. release), beside pgbench's single-row
//! insert TPS at the same concurrency on a scratch database, measured in the same run. The goal
//! is a ratio of at least 0.5 at 32.
//!
//! A share command reads the track's stream, inserts the token index row and appends
//! `ShareCreated`: two writes and a read per command, against pgbench's one insert. No projector
//! runs, so no command waits for one.
//!
//! The last column is the command API's own CPU time per share (user + system, from `/proc`),
//! which stays meaningful when other work shares the machine.
//!
//! `BENCH_SECONDS` (default 10) sets the length of each measurement, `BENCH_POOL` (default 10,
//! the production default) the command API's connection pool. Needs PostgreSQL on
//! 127.0.0.1:5432 (as the tests) and `pgbench` on the PATH.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::db::TestDb;
use tests::process::{Bin, Service, ServiceEnv};

const CONCURRENCY: [usize; 3] = [1, 8, 32];

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(seconds));
}

async fn run(seconds: u64) {
    let db = TestDb::new().await;
    let scratch = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = ServiceEnv::new(&db, &tests::nats::shared_url(), dir.path());
    // The production default pool (not the tests' small one), or `BENCH_POOL`.
    let pool = std::env::var("BENCH_POOL").unwrap_or_else(|_| "10".to_owned());
    env.set("DATABASE_MAX_CONNECTIONS", pool.clone());
    let logs = dir.path().join("logs");
    let service = Service::start(Bin::CommandApi, &env, &logs, &[]).await;
    let org = "org_bench";
    let key = tests::stack::create_api_key(&env, "usr_0000000bec00", &[org]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let upload = reqwest::multipart::Form::new()
        .text("title", "Bench")
        .text("engine", "studio")
        .text("mode", "creation")
        .text("licence_class", "unclear")
        .part(
            "audio",
            reqwest::multipart::Part::bytes(tests::audio::wav_tone_ms(100)).file_name("b.wav"),
        );
    let track: Value = http
        .post(service.url(&format!("/v1/music/{org}/tracks")))
        .header("x-api-key", &key)
        .multipart(upload)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let track_id = track["id"].as_str().expect("track id").to_owned();
    let share_url = service.url(&format!("/v1/music/{org}/tracks/{track_id}/share"));

    prepare_pgbench(&scratch).await;
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_insert (payload) VALUES ('a single row, like one share');\n",
    )
    .expect("script");

    // Warm up: connections, caches, the JIT of the planner.
    measure_shares(&http, &share_url, &key, 8, Duration::from_secs(2)).await;

    println!();
    println!(
        "create-share over HTTP (release command-api, pool {pool}) vs pgbench single-row INSERT"
    );
    println!("each measured for {seconds} s; same machine, same PostgreSQL, same run");
    println!();
    println!(
        "{:>11} | {:>10} | {:>18} | {:>6} | {:>7} | {:>18}",
        "concurrency", "shares/s", "pgbench insert TPS", "ratio", "p50 ms", "api CPU ms/share"
    );
    println!("{}", "-".repeat(86));
    let mut ratio_at_32 = 0.0;
    for c in CONCURRENCY {
        let cpu_before = cpu_seconds(service.pid());
        let (rate, p50) =
            measure_shares(&http, &share_url, &key, c, Duration::from_secs(seconds)).await;
        let cpu = cpu_seconds(service.pid()) - cpu_before;
        let cpu_per_share = cpu * 1000.0 / (rate * seconds as f64);
        let tps = pgbench(&scratch, &script, c, seconds);
        let ratio = rate / tps;
        if c == 32 {
            ratio_at_32 = ratio;
        }
        println!(
            "{c:>11} | {rate:>10.0} | {tps:>18.0} | {ratio:>6.2} | {:>7.1} | {cpu_per_share:>18.2}",
            p50.as_secs_f64() * 1000.0
        );
    }
    // For scale: the same HTTP stack answering `/healthz` (no database), at 32.
    let health = service.url("/healthz");
    let (health_rate, _) = measure(
        &http,
        &health,
        &key,
        32,
        Duration::from_secs(seconds),
        200,
        false,
    )
    .await;
    // And a share refused after reading the (absent) track's stream: auth plus one read.
    let absent = service.url(&format!("/v1/music/{org}/tracks/mtrack_000000000000/share"));
    let (read_rate, _) = measure(
        &http,
        &absent,
        &key,
        32,
        Duration::from_secs(seconds),
        404,
        true,
    )
    .await;
    println!();
    println!("for scale, at 32: GET /healthz (HTTP only) {health_rate:.0} requests/s; a share refused after one stream read {read_rate:.0} requests/s");
    println!();
    println!(
        "goal: ratio >= 0.5 at concurrency 32: {}",
        if ratio_at_32 >= 0.5 { "met" } else { "NOT met" }
    );
    // The line `scripts/bench` gathers into the system's table.
    println!("BENCH|create-share ÷ pgbench single-row insert, c=32|{ratio_at_32:.2}|≥ 0.5");
    service.terminate();
}

/// CPU time (user + system) a process has used, from `/proc` (0 where there is none).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `concurrency` clients creating shares for `length`; returns shares per second and the
/// median latency.
async fn measure_shares(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    concurrency: usize,
    length: Duration,
) -> (f64, Duration) {
    measure(http, url, key, concurrency, length, 201, true).await
}

/// Runs `concurrency` clients sending `POST` (or `GET`) to `url` for `length`, each answer
/// expected to be `expected`; returns requests per second and the median latency.
async fn measure(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    concurrency: usize,
    length: Duration,
    expected: u16,
    post: bool,
) -> (f64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, key) = (http.clone(), url.to_owned(), key.to_owned());
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let request = if post {
                        http.post(&url)
                    } else {
                        http.get(&url)
                    };
                    let response = request
                        .header("x-api-key", &key)
                        .send()
                        .await
                        .expect("send");
                    let status = response.status();
                    let _ = response.bytes().await;
                    assert_eq!(status, expected, "request failed");
                    latencies.push(sent.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    (done.load(Ordering::Relaxed) as f64 / elapsed, p50)
}

async fn prepare_pgbench(scratch: &TestDb) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.url)
        .await
        .expect("scratch database");
    sqlx::query(
        "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, payload text NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .expect("table");
    pool.close().await;
}

/// pgbench's TPS (without initial connection time) for the insert script.
fn pgbench(scratch: &TestDb, script: &std::path::Path, clients: usize, seconds: u64) -> f64 {
    let output = Command::new("pgbench")
        .args(["-n", "-f"])
        .arg(script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            &scratch.url,
        ])
        .output()
        .expect("run pgbench (is it installed?)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}
