//! Audit publishing to a replicated stream: `cargo bench -p tests --bench audit_replicas`
//! (release build; never run in CI). Prints one table.
//!
//! The query API's own publisher (batches, acks awaited together) drives a 3-node JetStream
//! cluster started here; the audit stream is made with 1 replica, then with 3, in interleaved
//! rounds, and each round times how long N events take from the publisher's channel to
//! acknowledged in the stream.

use std::time::{Duration, Instant};

use query_api::audit::publisher::Publisher;
use query_api::audit::spool::Spool;
use query_api::audit::{AuditEvent, Format, Outcome};
use tests::db::TestDb;
use tests::nats_cluster::NatsCluster;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EVENTS: u64 = 20_000;
const ROUNDS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let cluster = NatsCluster::start(3);
    cluster.wait_for_jetstream(Duration::from_secs(30)).await;
    let db = TestDb::new().await;
    let pool = migrations::prepare(&db.url, 4).await.expect("database");
    let dir = tempfile::tempdir().expect("temp dir");
    let client = cluster.client().await;
    let js = async_nats::jetstream::new(client.clone());

    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (i, replicas) in [1usize, 3].into_iter().enumerate() {
            let _ = js.delete_stream("MUSIC_AUDIT").await;
            let spool = Spool::open(
                &dir.path().join(format!("spool-{round}-{replicas}")),
                1 << 30,
            )
            .expect("spool");
            let publisher = Publisher::new(client.clone(), spool, pool.clone(), replicas);
            let (tx, rx) = mpsc::channel(query_api::audit::CHANNEL_CAPACITY);
            let stop = CancellationToken::new();
            let task = tokio::spawn(publisher.run(rx, stop.clone()));
            // The stream exists (made by the publisher at start) before the clock starts.
            while js.get_stream("MUSIC_AUDIT").await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let started = Instant::now();
            let feeder = tokio::spawn(async move {
                for n in 0..EVENTS {
                    let ip = std::net::IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
                    let event = AuditEvent::new(Outcome::Ok, Format::Json, ip, chrono::Utc::now())
                        .user_agent(Some("audit-bench"));
                    if tx.send(event).await.is_err() {
                        break;
                    }
                }
            });
            loop {
                let stored = match js.get_stream("MUSIC_AUDIT").await {
                    Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                    Err(_) => 0,
                };
                if stored >= EVENTS {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "{stored} of {EVENTS} stored"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
            eprintln!("round {round}: {replicas} replica(s): {rate:.0} events/s");
            rates[i].push(rate);
            let _ = feeder.await;
            stop.cancel();
            let _ = task.await;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (r1, r3) = (mean(&rates[0]), mean(&rates[1]));
    println!();
    println!("{:<36} {:<28} comparison", "measurement", "value");
    println!("{}", "-".repeat(100));
    println!(
        "{:<36} {:<28} baseline",
        "audit publish, 1 replica",
        format!("{r1:.0} events/s")
    );
    println!(
        "{:<36} {:<28} R3 ÷ R1 = {:.2}",
        "audit publish, 3 replicas",
        format!("{r3:.0} events/s"),
        r3 / r1
    );
}
