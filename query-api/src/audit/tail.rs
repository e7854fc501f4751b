//! `query-api audit tail`: the audit stream as JSON lines on stdout, as they arrive.
//!
//! The example consumer for analytics: an ephemeral ordered consumer (nothing to clean up, no
//! acknowledgements), starting with new messages, or with the whole stream given `--from-start`.

use std::io::Write;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures::StreamExt;

use super::publisher::ensure_stream;
use super::SUBJECT;

pub async fn run(
    nats_url: &str,
    replicas: usize,
    from_start: bool,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let servers = service_kit::nats::servers(nats_url).map_err(anyhow::Error::msg)?;
    let client = service_kit::nats::options("query-api audit tail")
        .connect(servers)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach NATS at {nats_url}: {e}"))?;
    let js = jetstream::new(client.clone());
    ensure_stream(&js, replicas).await?;
    let stream = js.get_stream(super::STREAM).await?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: SUBJECT.to_owned(),
            deliver_policy: if from_start {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ..Default::default()
        })
        .await?;
    // Ready: a caller (or a test) may start producing now.
    tracing::info!("tailing the audit stream");
    let mut messages = consumer.messages().await?;
    let mut printed = 0u64;
    while let Some(message) = messages.next().await {
        let message = message?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&message.payload)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        printed += 1;
        if limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    Ok(())
}
