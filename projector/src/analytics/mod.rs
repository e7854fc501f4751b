//! Per-link statistics, folded from the audit stream (`MUSIC_AUDIT`) into the `analytics`
//! schema: daily views, previews, denied attempts and unique visitors per share link.
//!
//! It lives in the projector because the projector is the process that builds models for the
//! query API to read: it already runs one ordered, checkpointed fold (of the event log) with an
//! advisory lock, a rebuild beside the live tables and `status`; analytics is a second fold of
//! the same kind over a second log. The audit stream is not the event log, though: nothing here
//! touches `read_model` (it only reads which links exist) and a projector rebuild never touches
//! `analytics`.
//!
//! - [`fold`]: the counting rules, a pure function of the messages;
//! - [`writer`]: one transaction per batch, counts and folded position together;
//! - [`consumer`]: the durable JetStream consumer that keeps the live model current;
//! - [`rebuild`]: `projector analytics rebuild`, from where this database started counting;
//! - [`visitor`]: the keyed hash that stands for a client IP.

pub mod consumer;
pub mod fold;
pub mod rebuild;
pub mod visitor;
pub mod writer;

use std::time::Duration;

use async_nats::jetstream;
pub use events::audit::{STREAM, SUBJECT};
use service_kit::telemetry::Metric;
use sqlx::PgPool;

/// What the analytics consumer reports on the projector's `/metrics`.
pub const METRICS: &[Metric] = &[
    Metric::gauge(
        "analytics_folded_sequence",
        "Last audit stream sequence folded into the per-link statistics",
    ),
    Metric::gauge(
        "analytics_stream_last_sequence",
        "Last sequence of the audit stream, as last seen",
    ),
    Metric::gauge(
        "analytics_lag_messages",
        "Audit stream last sequence minus the folded sequence",
    ),
    Metric::gauge(
        "analytics_leader",
        "1 while this process is the one folding the audit stream",
    ),
    Metric::counter(
        "analytics_messages_folded_total",
        "Audit messages folded (counted or not) by this process",
    ),
    Metric::counter(
        "analytics_messages_unreadable_total",
        "Audit messages folded past without counting: not an attempt this build can read",
    ),
    Metric::histogram(
        "analytics_batch_duration_seconds",
        "Time to fold and commit one batch of audit messages",
    ),
];

/// The audit stream's last sequence; `None` if the stream does not exist (yet).
pub async fn stream_last_sequence(js: &jetstream::Context) -> anyhow::Result<Option<u64>> {
    match js.get_stream(STREAM).await {
        Ok(stream) => Ok(Some(stream.cached_info().state.last_sequence)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(e.into()),
        },
    }
}

/// The lines `projector status` adds: where counting started, how far it is, and the lag.
pub async fn status(pool: &PgPool, nats_url: &str) -> anyhow::Result<String> {
    let mut conn = pool.acquire().await?;
    let position = writer::read_position(&mut conn, writer::LIVE).await?;
    let rebuild = writer::read_position(&mut conn, writer::REBUILD).await?;
    let last = async {
        let servers = service_kit::nats::servers(nats_url).ok()?;
        let client = service_kit::nats::options("projector-status")
            .connect(servers)
            .await
            .ok()?;
        stream_last_sequence(&jetstream::new(client)).await.ok()
    };
    let last = tokio::time::timeout(Duration::from_secs(3), last)
        .await
        .ok()
        .flatten();
    let mut out = String::new();
    match position {
        None => out.push_str("analytics: not counting yet (starts with the projector)\n"),
        Some(p) => {
            out.push_str(&format!("analytics start sequence: {}\n", p.start));
            out.push_str(&format!("analytics folded sequence: {}\n", p.folded));
            match last {
                Some(Some(last)) => {
                    out.push_str(&format!("audit stream last sequence: {last}\n"));
                    out.push_str(&format!(
                        "analytics lag: {}\n",
                        last.saturating_sub(p.folded)
                    ));
                }
                Some(None) => out.push_str("audit stream last sequence: no stream yet\n"),
                None => out.push_str("audit stream last sequence: NATS unreachable\n"),
            }
        }
    }
    if let Some(r) = rebuild {
        out.push_str(&format!(
            "analytics rebuild folded sequence: {}\n",
            r.folded
        ));
    }
    Ok(out)
}
