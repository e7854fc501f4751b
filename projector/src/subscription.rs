//! The catch-up subscription that keeps the live read models current.
//!
//! From the stored checkpoint it reads the global log in batches, applies each batch with its
//! checkpoint in one transaction ([`crate::batch`]), then publishes the batch's change notice.
//! When the log is drained it waits for the store's wake-up or a short poll, publishing a
//! heartbeat about every second so listeners know a projector is alive and how far it got.
//! Several projector processes may run at once: the schema lock and the checkpoint check make
//! each batch apply exactly once, whichever process gets it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::notice::ChangeNotice;
use events::store::postgres::is_unavailable;
use events::{EventStore, Position};
use service_kit::telemetry::Metric;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::batch::{self, Mode, Outcome};
use crate::decode::Batch;
use crate::notices::Notifier;
use crate::schema;

/// What the live projector reports on `/metrics` (its admin address).
pub const METRICS: &[Metric] = &[
    Metric::gauge(
        "projector_checkpoint_position",
        "Global position of the last event applied to the live read models",
    ),
    Metric::gauge(
        "projector_head_position",
        "Global position of the last event in the log, as last seen",
    ),
    Metric::gauge(
        "projector_lag_positions",
        "Head minus checkpoint: how far the read models are behind the log",
    ),
    Metric::counter(
        "projector_events_applied_total",
        "Events applied to the read models",
    ),
    Metric::histogram(
        "projector_batch_duration_seconds",
        "Time to apply one batch and its checkpoint",
    ),
    Metric::counter(
        "projector_notices_dropped_total",
        "Change notices not published (NATS down or the queue full); caches rely on their TTL",
    ),
];

/// How often an idle projector says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Events per batch (and per transaction).
    pub batch_size: usize,
    /// How long to wait for a wake-up before looking at the log anyway.
    pub poll: Duration,
}

/// Projects until `stop` turns true. Returns an error only for what retrying cannot cure: an
/// event this build cannot project, or a database error that is not an outage.
pub async fn run(
    pool: PgPool,
    store: Arc<dyn EventStore>,
    notifier: &Notifier,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut wake = store.wake_ups();
    let mut backoff = Backoff::default();
    let mut checkpoint = loop {
        match schema::read_checkpoint(&pool, schema::LIVE).await {
            Ok(checkpoint) => break checkpoint.unwrap_or(0),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "cannot read the checkpoint; retrying");
                if backoff.wait(&mut stop).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(checkpoint, "projecting");
    let mut head = checkpoint;
    let mut last_notice: Option<Instant> = None;

    while !*stop.borrow() {
        let events = match store.read_all(checkpoint, settings.batch_size).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "reading the event log failed; retrying");
                if backoff.wait(&mut stop).await {
                    break;
                }
                continue;
            }
        };

        if events.is_empty() {
            // Idle: refresh what the gauges and heartbeats report (another process may have
            // moved the checkpoint, a rebuild may have swapped the tables), then wait.
            if let Ok(h) = store.head().await {
                head = h;
            }
            match schema::read_checkpoint(&pool, schema::LIVE).await {
                Ok(Some(stored)) if stored != checkpoint => {
                    checkpoint = stored;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the checkpoint"),
            }
            report(checkpoint, head);
            if last_notice.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
                notifier.publish(ChangeNotice::heartbeat(checkpoint));
                last_notice = Some(Instant::now());
            }
            let until_heartbeat =
                last_notice.map_or(Duration::ZERO, |at| HEARTBEAT.saturating_sub(at.elapsed()));
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The store stopped sending wake-ups: polling alone still works.
                        tokio::time::sleep(settings.poll).await;
                    }
                }
                _ = tokio::time::sleep(settings.poll.min(until_heartbeat)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }

        let batch = Batch::decode(checkpoint, events);
        if batch.events.is_empty() {
            if let Some(unprojectable) = batch.stop {
                return Err(unprojectable.into());
            }
        }
        match batch::apply(&pool, schema::LIVE, Mode::Live, batch).await {
            Ok(Outcome::Moved(stored)) => {
                tracing::debug!(
                    from = checkpoint,
                    to = stored,
                    "another process moved the checkpoint"
                );
                checkpoint = stored;
            }
            Ok(Outcome::Applied(applied)) => {
                backoff = Backoff::default();
                checkpoint = applied.position;
                head = head.max(checkpoint);
                report(checkpoint, head);
                if let Some(notice) = applied.notice {
                    notifier.publish(notice);
                    last_notice = Some(Instant::now());
                }
                if let Some(unprojectable) = applied.stop {
                    return Err(unprojectable.into());
                }
            }
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "PostgreSQL is unavailable; retrying the batch");
                if backoff.wait(&mut stop).await {
                    break;
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("applying a batch failed")),
        }
    }
    tracing::info!(checkpoint, "projection stopped");
    Ok(())
}

/// Updates the gauges on `/metrics`.
fn report(checkpoint: Position, head: Position) {
    metrics::gauge!("projector_checkpoint_position").set(checkpoint as f64);
    metrics::gauge!("projector_head_position").set(head as f64);
    metrics::gauge!("projector_lag_positions").set(head.saturating_sub(checkpoint) as f64);
}

/// Waits between retries: 100 ms, doubling up to 5 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// Sleeps; returns true if `stop` turned true meanwhile.
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay =
            Duration::from_millis(100 * 2u64.pow(self.attempts.min(6))).min(Duration::from_secs(5));
        self.attempts += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
        *stop.borrow()
    }
}
