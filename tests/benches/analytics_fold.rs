//! The analytics consumer's benchmark: `cargo bench -p tests --bench analytics_fold` (release
//! build; never run in CI). Prints one table.
//!
//! On a private NATS server (the shared one holds other stacks' history) and a fresh database:
//! 1. the projector binary starts once, so the database starts counting at the empty stream;
//! 2. a backlog of audit messages (1M by default, `ANALYTICS_BENCH_MESSAGES`) is published over
//!    a few hundred links and tens of thousands of client IPs, the mix the rules distinguish;
//! 3. beside it, an ordered consumer reads the whole backlog and does nothing else: what NATS
//!    delivers to one reader on this machine, the ceiling of any fold;
//! 4. the projector starts again and folds the backlog (messages folded per second), then
//!    `projector analytics rebuild` folds it all again beside the live model;
//! 5. the query API binary serves resolves at half its hot rate while the consumer's lag
//!    (stream last sequence − folded, and the age of the oldest unfolded message) is sampled.

#[path = "../tests/query_fixture/mod.rs"]
mod query_fixture;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use query_fixture::{audio_bytes, QueryEnv, ShareOpts};
use rand::Rng;
use sqlx::PgPool;
use tests::nats::PrivateNats;
use tests::process::{Bin, Service};

const LINKS: usize = 300;
const CLIENT_IPS: u32 = 50_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

struct Row(String, String, String);

fn record(rows: &mut Vec<Row>, row: Row) {
    eprintln!("{} | {} | {}", row.0, row.1, row.2);
    rows.push(row);
}

async fn run() {
    let messages: u64 = std::env::var("ANALYTICS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let nats = PrivateNats::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    js.create_stream(stream::Config {
        name: "MUSIC_AUDIT".to_owned(),
        subjects: vec!["music.audit.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    let q = QueryEnv::new(&nats.url()).await;
    let track = q.track("Bench", &audio_bytes(1000)).await;
    let mut links = Vec::with_capacity(LINKS);
    for _ in 0..LINKS {
        links.push(q.share("track", &track, ShareOpts::default()).await);
    }
    let mut env = q.env.clone();
    env.set("RUST_LOG", "warn,service_kit::server=info");
    env.set("ANALYTICS_VISITOR_KEY", "00112233445566778899aabbccddeeff");
    let logs = q.dir.path().join("logs");
    let mut rows = Vec::new();

    // 1. Counting starts at the empty stream.
    let projector = Service::start(Bin::Projector, &env, &logs, &[]).await;
    wait_until(|| async { position(&q.pool).await.is_some() }).await;
    projector.terminate();
    drop(projector);

    // 2. The backlog.
    let started = Instant::now();
    let counted = publish_backlog(&js, &links, messages).await;
    let publish = started.elapsed();
    record(
        &mut rows,
        Row(
            format!("publish {}k audit messages", messages / 1000),
            format!("{:.0} msg/s", messages as f64 / publish.as_secs_f64()),
            "JetStream, acks pipelined (how the backlog was made)".into(),
        ),
    );

    // 3. What one reader gets from NATS, doing nothing with it.
    let read = read_all(&js, messages).await;
    let read_rate = messages as f64 / read.as_secs_f64();
    record(
        &mut rows,
        Row(
            "read the backlog, no fold".into(),
            format!("{read_rate:.0} msg/s"),
            "ordered consumer: the ceiling".into(),
        ),
    );

    // 4. The live consumer folds the backlog; then a rebuild folds it again.
    let started = Instant::now();
    let projector = Service::start(Bin::Projector, &env, &logs, &[]).await;
    let mut first_fold = None;
    loop {
        let folded = position(&q.pool).await.map_or(0, |p| p.1);
        if folded > 0 && first_fold.is_none() {
            first_fold = Some(Instant::now());
        }
        if folded as u64 >= messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let folding = first_fold.map_or(wall, |at| at.elapsed());
    let fold_rate = messages as f64 / wall.as_secs_f64();
    record(
        &mut rows,
        Row(
            format!("live fold of {}k backlog", messages / 1000),
            format!("{fold_rate:.0} msg/s"),
            format!(
                "goal ≥ 50000; ÷ read = {:.2}; {:.1} s from process start ({:.1} s folding)",
                fold_rate / read_rate,
                wall.as_secs_f64(),
                folding.as_secs_f64()
            ),
        ),
    );
    let views: i64 =
        sqlx::query_scalar("SELECT sum(views + previews + denied)::bigint FROM analytics.links")
            .fetch_one(&q.pool)
            .await
            .expect("total");
    assert_eq!(
        views as u64, counted,
        "every attempt but media fetches counted once"
    );

    let started = Instant::now();
    let rebuilt = env.run(Bin::Projector, &["analytics", "rebuild"]).await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let rebuild = started.elapsed();
    let rebuild_rate = messages as f64 / rebuild.as_secs_f64();
    record(
        &mut rows,
        Row(
            "analytics rebuild (same backlog)".into(),
            format!("{rebuild_rate:.0} msg/s"),
            format!("÷ live fold = {:.2}", rebuild_rate / fold_rate),
        ),
    );

    // 5. Lag while resolves run at half the hot rate.
    let mut query_env = env.clone();
    query_env.set("RESOLVE_BURST", "1000000000");
    query_env.set("RESOLVE_RATE_PER_MINUTE", "1000000000");
    let query = Service::start(Bin::QueryApi, &query_env, &logs, &[]).await;
    let (token, _) = q.share("track", &track, ShareOpts::default()).await;
    let url = query.url(&format!("/v1/music/shared/{token}"));
    let hot = load(&url, Duration::from_secs(5), None).await;
    let half = hot / 2.0;
    let sampler = tokio::spawn(sample_lag(
        q.pool.clone(),
        js.clone(),
        Duration::from_secs(15),
    ));
    let achieved = load(&url, Duration::from_secs(15), Some(half)).await;
    let (lag_messages, lag_age) = sampler.await.expect("samples");
    record(
        &mut rows,
        Row(
            format!("lag at {achieved:.0} resolves/s"),
            format!(
                "p50 {:.0} / p99 {:.0} msg",
                percentile(&lag_messages, 0.50),
                percentile(&lag_messages, 0.99)
            ),
            format!(
                "oldest unfolded message p50 {:.0} ms / p99 {:.0} ms (hot rate {hot:.0}/s; contract: stats within 5 s)",
                percentile(&lag_age, 0.50),
                percentile(&lag_age, 0.99)
            ),
        ),
    );
    drop(query);
    drop(projector);

    println!();
    println!("{:<36} {:<28} comparison", "measurement", "value");
    println!("{}", "-".repeat(110));
    for Row(a, b, c) in &rows {
        println!("{a:<36} {b:<28} {c}");
    }
}

async fn wait_until<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn position(pool: &PgPool) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT start_sequence, folded_sequence FROM analytics.position")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Publishes `count` attempts: 70 % views (JSON and HTML), 10 % previews, 15 % denied of every
/// kind, 5 % media fetches; many IPs per link.
/// Returns how many of them count (all but the media fetches).
async fn publish_backlog(js: &jetstream::Context, links: &[(String, String)], count: u64) -> u64 {
    let mut counted = 0;
    let mut rng = rand::rng();
    let mut acks = futures::stream::FuturesOrdered::new();
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    for i in 0..count {
        let (_, share_id) = &links[rng.random_range(0..links.len())];
        let roll: u32 = rng.random_range(0..100);
        let (outcome, format) = match roll {
            0..=59 => ("ok", "json"),
            60..=69 => ("ok", "html"),
            70..=79 => ("preview", "json"),
            80..=84 => ("rate_limited", "json"),
            85..=89 => ("over_limit", "json"),
            90..=94 => ("password_invalid", "html"),
            _ => ("ok", "media"),
        };
        if format != "media" {
            counted += 1;
        }
        let ip = rng.random_range(0..CLIENT_IPS);
        let payload = serde_json::json!({
            "event_id": uuid::Uuid::now_v7(),
            "occurred_at": at,
            "outcome": outcome,
            "client_ip": format!("10.{}.{}.{}", ip >> 16, (ip >> 8) & 255, ip & 255),
            "user_agent": "bench/1.0",
            "share_id": share_id,
            "target_type": "track",
            "target_id": "mtrack_000000000000",
            "format": format,
            "trace_id": format!("req_{i:016}"),
        })
        .to_string();
        let ack = js
            .publish("music.audit.share.resolve", payload.into())
            .await
            .expect("publish");
        acks.push_back(std::future::IntoFuture::into_future(ack));
        if acks.len() >= 4096 {
            acks.next().await.expect("ack").expect("acked");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("acked");
    }
    counted
}

async fn read_all(js: &jetstream::Context, count: u64) -> Duration {
    let stream = js.get_stream("MUSIC_AUDIT").await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "music.audit.share.resolve".to_owned(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut messages = consumer.messages().await.expect("messages");
    let mut n = 0u64;
    while n < count {
        messages.next().await.expect("more").expect("message");
        n += 1;
    }
    started.elapsed()
}

/// Resolves per second achieved over `duration` (paced to `rate` if given), 32 connections.
async fn load(url: &str, duration: Duration, rate: Option<f64>) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, done) = (client.clone(), url.to_owned(), done.clone());
            tokio::spawn(async move {
                let mut pace = rate.map(|r| {
                    let mut i = tokio::time::interval(Duration::from_secs_f64(32.0 / r));
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    i
                });
                while Instant::now() < end {
                    if let Some(pace) = &mut pace {
                        pace.tick().await;
                    }
                    if let Ok(response) = client.get(&url).send().await {
                        let _ = response.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

/// Samples every 50 ms: stream last sequence − folded, and how long ago the oldest message
/// not yet folded was published (0 when none is waiting).
async fn sample_lag(
    pool: PgPool,
    js: jetstream::Context,
    duration: Duration,
) -> (Vec<f64>, Vec<f64>) {
    let end = Instant::now() + duration;
    // When each sequence was first seen in the stream.
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let (mut lags, mut ages) = (Vec::new(), Vec::new());
    while Instant::now() < end {
        let last = match js.get_stream("MUSIC_AUDIT").await {
            Ok(stream) => stream.cached_info().state.last_sequence,
            Err(_) => continue,
        };
        let now = Instant::now();
        if seen.last().is_none_or(|(s, _)| *s < last) {
            seen.push((last, now));
        }
        let folded = position(&pool).await.map_or(0, |p| p.1) as u64;
        lags.push(last.saturating_sub(folded) as f64);
        // The oldest unfolded message arrived no earlier than the first sample that saw a
        // sequence past `folded`.
        let age = seen
            .iter()
            .find(|(s, _)| *s > folded)
            .map_or(0.0, |(_, at)| {
                now.duration_since(*at).as_secs_f64() * 1000.0
            });
        ages.push(age);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (lags, ages)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
