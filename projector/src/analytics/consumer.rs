//! The durable JetStream consumer of `MUSIC_AUDIT` that keeps the live analytics model current.
//!
//! **One folder at a time.** A process folds only while it holds a session advisory lock in
//! PostgreSQL, on the connection its batches are written on: if the process dies, its
//! connection and lock go with it and a standby process takes over within a second or two; if
//! only the connection dies, its batches cannot commit either.
//!
//! **Exactly once.** Each session (re)creates the durable consumer (named after
//! `NOTICE_NAMESPACE`) to deliver from the first sequence after the folded position stored in
//! PostgreSQL, so the database, not the consumer's acknowledgement state, says where counting
//! resumes; acks only keep the server from redelivering. A batch commits its counts with the
//! new position in one transaction, and skips what the position already covers (a
//! redelivery). A crash, a restart, a second process or a lost ack therefore never counts a
//! message twice or skips one, however long ago the stream's duplicate window closed. Any error
//! ends the session; the next one starts again from the database.
//!
//! **Where counting starts.** The first time a database counts, it records the stream's last
//! sequence and counts what comes after (the shared NATS server holds other stacks' history).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, stream::Stream as JsStream};
use futures::StreamExt;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::watch;

use super::visitor::VisitorKey;
use super::writer::{self, Durability, LIVE};
use super::{stream_last_sequence, SUBJECT};

#[derive(Clone)]
pub struct Settings {
    /// `NOTICE_NAMESPACE`: names the durable consumer, so stacks sharing a server never share it.
    pub namespace: String,
    pub key: Arc<VisitorKey>,
    /// Messages per batch (and transaction) at most.
    pub batch_size: usize,
    /// How long a batch waits for more messages once it has one.
    pub linger: Duration,
}

/// The durable consumer's name for `namespace` (JetStream names take no dots or wildcards).
pub fn consumer_name(namespace: &str) -> String {
    let safe: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("music-share-analytics-{safe}")
}

/// Folds the audit stream into the live model until `stop` turns true. Never returns an error:
/// NATS or PostgreSQL being away only delays the counts.
pub async fn run(
    pool: PgPool,
    nats: async_nats::Client,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let js = jetstream::new(nats);
    let reporter = tokio::spawn(report_lag(pool.clone(), js.clone()));
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        match session(&pool, &js, &settings, &mut stop).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                metrics::gauge!("analytics_leader").set(0.0);
                tracing::warn!(error = %e, "analytics consumer session ended; starting again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    metrics::gauge!("analytics_leader").set(0.0);
    reporter.abort();
    tracing::info!("analytics consumer stopped");
}

/// The key of the session lock that makes one process the folder.
const LEADER_LOCK: &str = "music-share analytics folder";

/// One leadership: wait for the lock, start counting if this database never has, recreate the
/// consumer at the stored position, fold until stopped or until something fails.
async fn session(
    pool: &PgPool,
    js: &jetstream::Context,
    settings: &Settings,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut conn: PgConnection = pool.connect_options().connect().await?;
    let mut said_standby = false;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            break;
        }
        if !said_standby {
            tracing::info!("another process folds the audit stream; standing by");
            said_standby = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return Ok(()),
        }
        if *stop.borrow() {
            return Ok(());
        }
    }

    let position = match writer::read_position(&mut conn, LIVE).await? {
        Some(position) => position,
        None => start_counting(pool, js).await?,
    };
    let stream = js.get_stream(super::STREAM).await?;
    let last = stream.cached_info().state.last_sequence;
    if last < position.folded {
        tracing::error!(
            last_sequence = last,
            folded_sequence = position.folded,
            "the audit stream ends before the folded position: was it deleted and created again? \
             Nothing is counted until it passes that position (or analytics.position is reset)"
        );
    }
    let consumer = recreate_consumer(&stream, &settings.namespace, position.folded).await?;
    metrics::gauge!("analytics_leader").set(1.0);
    tracing::info!(
        folded_sequence = position.folded,
        consumer = %consumer_name(&settings.namespace),
        "folding the audit stream"
    );

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.batch_size.clamp(1, 10_000))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let mut batch: Vec<jetstream::Message> = Vec::with_capacity(settings.batch_size);
    loop {
        let first = tokio::select! {
            next = messages.next() => next,
            _ = stop.changed() => return Ok(()),
        };
        match first {
            Some(message) => batch.push(message?),
            None => anyhow::bail!("the consumer's message stream ended"),
        }
        let deadline = tokio::time::Instant::now() + settings.linger;
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => batch.push(message?),
                Ok(None) => anyhow::bail!("the consumer's message stream ended"),
                Err(_) => break,
            }
        }
        commit(&mut conn, &batch, &settings.key).await?;
        if let Some(last) = batch.last() {
            // Acks everything up to it (AckPolicy::All). Losing it only means redelivery, which
            // the stored position skips.
            if let Err(e) = last.ack().await {
                tracing::debug!(error = %e, "ack not sent");
            }
        }
        batch.clear();
        if *stop.borrow() {
            return Ok(());
        }
    }
}

/// Where this database counts from: recorded now, at the stream's last sequence, if it never
/// has been (a stream that does not exist yet has no messages to leave out).
pub async fn start_counting(
    pool: &PgPool,
    js: &jetstream::Context,
) -> anyhow::Result<writer::Position> {
    let mut conn = pool.acquire().await?;
    if let Some(position) = writer::read_position(&mut conn, LIVE).await? {
        return Ok(position);
    }
    let last = stream_last_sequence(js).await?.unwrap_or(0);
    let position = writer::start_counting(pool, last).await?;
    tracing::info!(
        start_sequence = position.start,
        "this database counts the audit messages after this sequence"
    );
    Ok(position)
}

async fn commit(
    conn: &mut PgConnection,
    batch: &[jetstream::Message],
    key: &VisitorKey,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sequenced = Vec::with_capacity(batch.len());
    for message in batch {
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        sequenced.push((info.stream_sequence, message.payload.as_ref()));
    }
    let committed = writer::commit_batch(conn, LIVE, Durability::Durable, &sequenced, key).await?;
    metrics::counter!("analytics_messages_folded_total").increment(committed.messages);
    if committed.unreadable > 0 {
        metrics::counter!("analytics_messages_unreadable_total").increment(committed.unreadable);
        tracing::warn!(
            unreadable = committed.unreadable,
            "audit messages that are not attempts this build can read were not counted"
        );
    }
    metrics::gauge!("analytics_folded_sequence").set(committed.folded as f64);
    metrics::histogram!("analytics_batch_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Deletes the durable consumer, whatever state it was left in, and creates it again to deliver
/// from the first message after `folded`.
async fn recreate_consumer(
    stream: &JsStream,
    namespace: &str,
    folded: u64,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let name = consumer_name(namespace);
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!(error = %e, "no consumer to delete");
    }
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name),
            description: Some(format!(
                "music-share per-link statistics of {namespace} (the position in PostgreSQL rules)"
            )),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: folded + 1,
            },
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
            filter_subject: SUBJECT.to_owned(),
            // A database that stops counting (a finished test, a dropped stack) does not leave
            // its consumer on a shared server for ever; a returning folder recreates it anyway.
            inactive_threshold: Duration::from_secs(3600),
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Every second: the stream's last sequence, the folded one, and the lag between them, for
/// `/metrics` (on every projector process, folder or standby).
async fn report_lag(pool: PgPool, js: jetstream::Context) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = stream_last_sequence(&js).await.ok().flatten();
        let folded = match pool.acquire().await {
            Ok(mut conn) => writer::read_position(&mut conn, LIVE).await.ok().flatten(),
            Err(_) => None,
        };
        if let Some(last) = last {
            metrics::gauge!("analytics_stream_last_sequence").set(last as f64);
        }
        if let Some(position) = folded {
            metrics::gauge!("analytics_folded_sequence").set(position.folded as f64);
            if let Some(last) = last {
                metrics::gauge!("analytics_lag_messages")
                    .set(last.saturating_sub(position.folded) as f64);
            }
        }
    }
}
