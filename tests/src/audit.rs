//! Reading the audit stream (`MUSIC_AUDIT`) from outside, as an analytics consumer would.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Bin, ServiceEnv};

/// How many messages the stream holds, or `None` while NATS or the stream is not there.
pub async fn stream_count(nats_url: &str) -> Option<u64> {
    let client = async_nats::connect(nats_url).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("MUSIC_AUDIT").await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// The stream's last sequence (0 while NATS or the stream is not there).
pub async fn stream_last_sequence(nats_url: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream("MUSIC_AUDIT").await {
        Ok(stream) => stream.cached_info().state.last_sequence,
        Err(_) => 0,
    }
}

/// Polls until the stream holds at least `want` messages or `deadline` passes; the last count.
pub async fn wait_for_count(nats_url: &str, want: u64, deadline: Duration) -> u64 {
    let end = Instant::now() + deadline;
    loop {
        let n = stream_count(nats_url).await.unwrap_or(0);
        if n >= want || Instant::now() > end {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first `count` messages of the stream, through the product's own consumer
/// (`query-api audit tail --from-start`), run with `env` pointed at `nats_url`.
pub async fn tail(env: &ServiceEnv, nats_url: &str, count: u64) -> Vec<Value> {
    let mut env = env.clone();
    env.set("NATS_URL", nats_url);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        env.run(
            Bin::QueryApi,
            &[
                "audit",
                "tail",
                "--from-start",
                "--limit",
                &count.to_string(),
            ],
        ),
    )
    .await
    .expect("audit tail finishes");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON message per line"))
        .collect()
}
