//! The audit publisher: one task that moves audit events from the request path's channel to
//! JetStream, and through the spool when JetStream cannot take them.
//!
//! Order is kept by one rule: while the spool holds anything, new events go behind it in the
//! spool, and the spool is delivered oldest first. Fresh events are published in batches whose
//! acks are awaited together; the unacknowledged tail of a failed batch goes to the spool.
//!
//! **Each once.** An event is removed from the spool only when acknowledged. An event published
//! when NATS failed may have been stored without its ack reaching us ("in doubt"); it is resent
//! with the same `Nats-Msg-Id`, which JetStream drops as a duplicate within the stream's
//! duplicate window. If more time than that has passed, the publisher first reads the stream
//! after the last sequence it had acknowledged and skips whatever in-doubt event it finds there.
//! The in-doubt range is kept on disk beside the spool, so a restart keeps the guarantee.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::batch::BatchPublisher;
use super::spool::Spool;
use super::{AuditEvent, STREAM, STREAM_SUBJECTS, SUBJECT};

const BATCH: usize = 512;
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a stopping publisher waits for an unreachable NATS before it leaves the spool to the
/// next start. Below the app's own shutdown bound (`App::shutdown`).
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long before the duplicate window closes we stop trusting it.
const WINDOW_MARGIN: Duration = Duration::from_secs(30);
/// How long a batch waits for the read models to name rate-limited attempts' shares.
const MATCH_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Publisher {
    client: Client,
    /// The read models, to name the shares of rate-limited attempts.
    pool: PgPool,
    js: jetstream::Context,
    batches: BatchPublisher,
    spool: Spool,
    /// The stream's duplicate window, once we have seen the stream.
    window: Option<Duration>,
    /// The highest stream sequence we know to be before any in-doubt event of ours.
    floor_seq: u64,
    in_doubt: Option<InDoubt>,
    /// In-doubt events found stored in the stream: delivered, not to be sent again.
    found: HashSet<Uuid>,
    /// `AUDIT_STREAM_REPLICAS`: the copies of the stream if we create it.
    replicas: usize,
    /// Whether the stream's replica count has been checked against `replicas` yet.
    replicas_reported: bool,
}

/// Spool sequences `from..=to` were sent when NATS failed, `at` (unix ms); `floor_seq` is the
/// stream sequence they must come after if they were stored.
#[derive(Clone, Copy, Debug)]
struct InDoubt {
    from: u64,
    to: u64,
    at_ms: i64,
    floor_seq: u64,
}

impl Publisher {
    pub fn new(client: Client, spool: Spool, pool: PgPool, replicas: usize) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let in_doubt = read_in_doubt(&spool);
        Publisher {
            batches: BatchPublisher::new(client.clone(), ACK_TIMEOUT),
            client,
            pool,
            js,
            floor_seq: in_doubt.map_or(0, |d| d.floor_seq),
            in_doubt,
            spool,
            window: None,
            found: HashSet::new(),
            replicas,
            replicas_reported: false,
        }
    }

    /// Runs until `stop` is cancelled, then returns once the channel is drained and the spool
    /// delivered. With NATS unreachable it waits up to [`STOP_GRACE`] for it to return, then
    /// leaves the rest in the spool (on disk, for the next instance on this slot).
    pub async fn run(mut self, mut rx: mpsc::Receiver<AuditEvent>, stop: CancellationToken) {
        // Meet the stream at start (and say if its replica count is not the configured one),
        // not only with the first event; NATS may take a moment, or be down (then later).
        for _ in 0..20 {
            if self.client.connection_state() == State::Connected {
                self.is_up().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut fresh: Vec<AuditEvent> = Vec::with_capacity(BATCH);
        // Set once stopping: past it, an unreachable NATS is not waited for any longer.
        let mut give_up_at: Option<tokio::time::Instant> = None;
        loop {
            // Idle: wait for an event or the stop. Once stopping, never wait on the channel
            // alone (its senders live as long as the app), only drain it.
            if fresh.is_empty() && self.spool.pending() == 0 && give_up_at.is_none() {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(e) => fresh.push(e),
                        None => break,
                    },
                    _ = stop.cancelled() => {
                        give_up_at = Some(tokio::time::Instant::now() + STOP_GRACE);
                    }
                }
            }
            while fresh.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => fresh.push(e),
                    Err(_) => break,
                }
            }
            self.match_shares(&mut fresh).await;
            let up = self.is_up().await;
            if let Some(deadline) = give_up_at {
                let drained = fresh.is_empty() && rx.is_empty();
                let given_up = !up && tokio::time::Instant::now() >= deadline;
                if drained && (self.spool.pending() == 0 || given_up) {
                    break;
                }
                if given_up {
                    self.spool_events(std::mem::take(&mut fresh));
                    continue;
                }
            }
            if self.spool.pending() > 0 || !up {
                self.spool_events(std::mem::take(&mut fresh));
                if up {
                    self.deliver_spool_batch().await;
                } else {
                    // Wait for NATS, still taking events off the channel into the spool.
                    if let Ok(Some(e)) = tokio::time::timeout(RETRY_EVERY, rx.recv()).await {
                        fresh.push(e);
                    }
                }
            } else {
                let batch = std::mem::take(&mut fresh);
                let acked = self.publish(&batch).await;
                if acked < batch.len() {
                    let failed = &batch[acked..];
                    let from = self.spool.next_seq();
                    self.spool_events(failed.to_vec());
                    self.mark_in_doubt(from, from + failed.len() as u64 - 1);
                }
            }
        }
        tracing::info!(
            spooled = self.spool.pending(),
            "audit publisher stopped; undelivered events wait in the spool"
        );
    }

    async fn is_up(&mut self) -> bool {
        if self.client.connection_state() != State::Connected {
            return false;
        }
        if self.window.is_some() {
            return true;
        }
        match ensure_stream(&self.js, self.replicas).await {
            Ok(info) => {
                if !self.replicas_reported {
                    self.replicas_reported = true;
                    report_replicas(&info, self.replicas);
                }
                self.window = Some(info.config.duplicate_window);
                self.floor_seq = self.floor_seq.max(info.state.last_sequence);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit stream not reachable yet");
                false
            }
        }
    }

    /// Names the share each rate-limited attempt's token matched, as every other attempt's
    /// event does: one read-model query per batch, here rather than on the request path, so a
    /// flood the limiter refuses never reaches the database. If the read models do not answer
    /// within [`MATCH_TIMEOUT`], the events go out without a share.
    async fn match_shares(&self, events: &mut [AuditEvent]) {
        let hashes: Vec<String> = events.iter().filter_map(|e| e.unmatched.clone()).collect();
        if hashes.is_empty() {
            return;
        }
        let query = sqlx::query_as::<_, (String, String, String, String)>(
            "SELECT token_hash, share_id, target_type, target_id \
             FROM read_model.share_links WHERE token_hash = ANY($1)",
        )
        .bind(&hashes)
        .fetch_all(&self.pool);
        let rows = match tokio::time::timeout(MATCH_TIMEOUT, query).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot name the shares of rate-limited attempts");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("cannot name the shares of rate-limited attempts: timed out");
                Vec::new()
            }
        };
        let shares: HashMap<String, (String, String, String)> = rows
            .into_iter()
            .map(|(hash, share, kind, target)| (hash, (share, kind, target)))
            .collect();
        for event in events.iter_mut() {
            let Some(hash) = event.unmatched.take() else {
                continue;
            };
            if let Some((share, kind, target)) = shares.get(&hash) {
                event.share_id = Some(share.clone());
                event.target_type = Some(kind.clone());
                event.target_id = Some(target.clone());
            }
        }
    }

    fn spool_events(&mut self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.spool.append(&events) {
            metrics::counter!("audit_dropped_total", "reason" => "spool_io")
                .increment(events.len() as u64);
            tracing::error!(
                error = %e,
                lost = events.len(),
                "AUDIT EVENTS LOST: cannot write the audit spool"
            );
        }
    }

    /// Publishes `events` in order; returns how many, from the start, were acknowledged.
    async fn publish(&mut self, events: &[AuditEvent]) -> usize {
        // An event that cannot be serialised (none can) ends the batch like a failed publish.
        let messages = events.iter().map_while(message);
        let published = self
            .batches
            .publish(Subject::from_static(SUBJECT), messages)
            .await;
        self.floor_seq = self.floor_seq.max(published.last_sequence);
        let acked = published.acked;
        metrics::counter!("audit_published_total").increment(acked as u64);
        if acked < events.len() {
            let reason = published.failure.as_deref().unwrap_or("not serialisable");
            tracing::warn!(error = reason, "audit publish not acknowledged");
            metrics::counter!("audit_publish_failures_total").increment(1);
            // Look the stream up again before the next attempt (it may have been recreated).
            self.window = None;
        }
        acked
    }

    async fn deliver_spool_batch(&mut self) {
        if self.needs_reconciliation() {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "could not check the audit stream for in-doubt events");
                tokio::time::sleep(RETRY_EVERY).await;
                return;
            }
        }
        let batch = match self.spool.peek(BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit spool");
                tokio::time::sleep(RETRY_EVERY).await;
                return;
            }
        };
        let Some(batch_last) = batch.last().map(|(seq, _)| *seq) else {
            return;
        };
        // Events found already stored count as delivered without being sent again.
        let (seqs, to_send): (Vec<u64>, Vec<AuditEvent>) = batch
            .into_iter()
            .filter(|(_, event)| !self.found.contains(&event.event_id))
            .unzip();
        let acked = self.publish(&to_send).await;
        // Everything before the first unacknowledged event is delivered.
        let through = match seqs.get(acked) {
            None => batch_last,
            Some(first_failed) => first_failed - 1,
        };
        if let Err(e) = self.spool.ack(through) {
            tracing::error!(error = %e, "cannot record audit acknowledgements");
        }
        if acked < to_send.len() {
            self.mark_in_doubt(seqs[acked], *seqs.last().unwrap_or(&seqs[acked]));
            tokio::time::sleep(RETRY_EVERY).await;
        } else if self.in_doubt.is_some_and(|d| self.spool.acked() >= d.to) {
            self.clear_in_doubt();
        }
        if self.spool.pending() == 0 {
            self.found.clear();
        }
    }

    fn needs_reconciliation(&self) -> bool {
        let Some(doubt) = self.in_doubt else {
            return false;
        };
        let window = self.window.unwrap_or(Duration::from_secs(120));
        let elapsed_ms = chrono::Utc::now().timestamp_millis() - doubt.at_ms;
        elapsed_ms < 0 || Duration::from_millis(elapsed_ms as u64) + WINDOW_MARGIN >= window
    }

    /// Reads the stream after `floor_seq` and notes which in-doubt events are already there.
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let Some(doubt) = self.in_doubt else {
            return Ok(());
        };
        let mut wanted = HashSet::new();
        let pending = self.spool.peek(usize::MAX)?;
        for (seq, event) in pending {
            if (doubt.from..=doubt.to).contains(&seq) {
                wanted.insert(event.event_id);
            }
        }
        let mut stream = self.js.get_stream(STREAM).await?;
        let last = stream.info().await?.state.last_sequence;
        let mut found = HashSet::new();
        if last > doubt.floor_seq && !wanted.is_empty() {
            let consumer = stream
                .create_consumer(push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    filter_subject: SUBJECT.to_owned(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: doubt.floor_seq + 1,
                    },
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(message) = tokio::time::timeout(ACK_TIMEOUT, messages.next())
                .await?
                .transpose()?
            {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .and_then(|v| v.as_str().parse::<Uuid>().ok());
                if let Some(id) = id.filter(|id| wanted.contains(id)) {
                    found.insert(id);
                }
                let seq = message.info().map(|i| i.stream_sequence).unwrap_or(last);
                if seq >= last {
                    break;
                }
            }
        }
        tracing::info!(
            in_doubt = wanted.len(),
            already_stored = found.len(),
            "checked the audit stream for events sent when NATS failed"
        );
        self.found.extend(found);
        self.clear_in_doubt();
        Ok(())
    }

    fn mark_in_doubt(&mut self, from: u64, to: u64) {
        let doubt = match self.in_doubt {
            // The older doubt is still undelivered: widen it, keep its (earlier) floor and time.
            Some(d) if self.spool.acked() < d.to => InDoubt {
                from: d.from.min(from),
                to: d.to.max(to),
                ..d
            },
            _ => InDoubt {
                from,
                to,
                at_ms: chrono::Utc::now().timestamp_millis(),
                floor_seq: self.floor_seq,
            },
        };
        self.in_doubt = Some(doubt);
        let text = format!(
            "{} {} {} {}",
            doubt.from, doubt.to, doubt.at_ms, doubt.floor_seq
        );
        let path = self.spool.dir().join("in-doubt");
        if let Err(e) = std::fs::write(&path, text) {
            tracing::error!(error = %e, "cannot record in-doubt audit events");
        }
    }

    fn clear_in_doubt(&mut self) {
        self.in_doubt = None;
        let _ = std::fs::remove_file(self.spool.dir().join("in-doubt"));
    }
}

/// An event as a JetStream message: its `Nats-Msg-Id` (the event id, so a resent event is
/// dropped as a duplicate) and its JSON.
fn message(event: &AuditEvent) -> Option<(String, Bytes)> {
    let payload = serde_json::to_vec(event).ok()?;
    Some((event.event_id.to_string(), Bytes::from(payload)))
}

fn read_in_doubt(spool: &Spool) -> Option<InDoubt> {
    let text = std::fs::read_to_string(spool.dir().join("in-doubt")).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>().ok());
    let (from, to, at_ms, floor) = (
        parts.next()??,
        parts.next()??,
        parts.next()??,
        parts.next()??,
    );
    Some(InDoubt {
        from: from as u64,
        to: to as u64,
        at_ms,
        floor_seq: floor as u64,
    })
}

/// The audit stream, created with `replicas` copies if missing (only 2.9 features: a plain
/// file-backed stream). An existing stream is used as it is, whatever its replica count.
pub async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> anyhow::Result<stream::Info> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![STREAM_SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the audit stream {STREAM} with {replicas} replica(s): {e}"
            )
        })?;
    Ok(stream.info().await?.clone())
}

/// Says at start when the audit stream's replica count is not the configured one: the stream
/// is kept as it is (changing it is an operator's decision), but never silently.
pub fn report_replicas(info: &stream::Info, wanted: usize) {
    let actual = info.config.num_replicas.max(1);
    if actual != wanted.max(1) {
        tracing::warn!(
            stream = STREAM,
            replicas = actual,
            configured = wanted,
            "the audit stream exists with another replica count than AUDIT_STREAM_REPLICAS; \
             it is kept as it is (change it with `nats stream edit`)"
        );
    } else {
        tracing::info!(stream = STREAM, replicas = actual, "audit stream ready");
    }
}
