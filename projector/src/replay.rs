//! `projector replay --stream ID`: one stream's events as JSON lines, upcast to the current
//! schema, so an operator sees exactly what the projector would apply.

use std::io::Write;
use std::sync::Arc;

use events::{EventStore, StreamId};

/// Writes every event of `stream` to `out`, one envelope per line (`event_type` at the top
/// level, the payload under `payload`). An event this build cannot upcast is printed as stored
/// and reported: the command then fails, so it is never passed over silently.
pub async fn run(
    store: &Arc<dyn EventStore>,
    stream: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if stream.is_empty() {
        anyhow::bail!("--stream needs a stream id, e.g. share-mslink_8c4e2a9f1b73");
    }
    let events = store.read_stream(&StreamId::new(stream)).await?;
    if events.is_empty() {
        tracing::warn!(stream, "the stream has no events");
    }
    let mut unreadable = Vec::new();
    for event in events {
        let line = match event.upcast() {
            Ok(current) => serde_json::to_string(&current)?,
            Err(e) => {
                tracing::error!(error = %e, "printing an event as stored: this build cannot upcast it");
                unreadable.push(e.to_string());
                serde_json::to_string(&event)?
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    match unreadable.len() {
        0 => Ok(()),
        n => anyhow::bail!(
            "{n} event(s) could not be upcast and were printed as stored: {}",
            unreadable.join("; ")
        ),
    }
}
