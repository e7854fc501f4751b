//! `projector analytics rebuild`: the analytics model again, from where this database started
//! counting, beside the live one, then swapped in with no gap for readers.
//!
//! It fills `analytics_rebuild` (tables created `LIKE` the live ones, so migration 0008 stays
//! their one definition) through an ordered consumer of its own that starts after the recorded
//! start sequence, with the live consumer's writer and fold. Its position lives in that schema,
//! so a killed rebuild resumes when run again (`--fresh` starts over). Once it has reached the
//! end of the stream it swaps, in one transaction holding both schemas' locks, `analytics` →
//! `analytics_retired` and `analytics_rebuild` → `analytics`, provided it is at least as far as
//! the live model (so the statistics never go back); otherwise it keeps folding and tries
//! again. The live consumer simply carries on in the new tables: its next batch skips what the
//! rebuild already folded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self};
use futures::StreamExt;
use migrations::quote_ident;
use sqlx::{Connection, PgPool};

use super::visitor::VisitorKey;
use super::writer::{self, Durability, Position, LIVE, REBUILD, RETIRED};
use super::{stream_last_sequence, STREAM, SUBJECT};

/// The model's tables, as migration 0008 creates them in `analytics`.
const TABLES: &[&str] = &[
    "position",
    "links",
    "link_days",
    "link_visitors",
    "day_visitors",
];

/// The same knobs as the read models' rebuild: here a batch is of audit messages, and `fresh`
/// starts over from the sequence where this database started counting.
pub use crate::rebuild::Settings;

#[derive(Clone, Debug)]
pub struct Summary {
    /// Where this database started counting.
    pub start: u64,
    /// Where an interrupted rebuild was resumed from (the start for a fresh one).
    pub resumed_from: u64,
    /// The folded position of the new live model.
    pub position: u64,
    /// Messages folded by this run.
    pub messages: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilt the analytics from stream sequence {} to {}: {} messages in {:.2} s ({:.0} messages/s)",
            self.start + 1,
            self.position,
            self.messages,
            self.elapsed.as_secs_f64(),
            self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )?;
        if self.resumed_from > self.start {
            write!(f, ", resumed after sequence {}", self.resumed_from)?;
        }
        Ok(())
    }
}

pub async fn run(
    pool: &PgPool,
    nats_url: &str,
    key: Arc<VisitorKey>,
    settings: &Settings,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    crate::rebuild::drop_schema(pool, RETIRED).await?;
    if settings.fresh {
        crate::rebuild::drop_schema(pool, REBUILD).await?;
    }
    let mut conn = pool.acquire().await?;
    let Some(live) = writer::read_position(&mut conn, LIVE).await? else {
        anyhow::bail!(
            "this database has not started counting the audit stream yet: run the projector first"
        );
    };
    let rebuilt = match writer::read_position(&mut conn, REBUILD).await? {
        Some(p) => p,
        None => create_rebuild_schema(pool, live.start).await?,
    };
    drop(conn);

    let servers = service_kit::nats::servers(nats_url).map_err(anyhow::Error::msg)?;
    let client = service_kit::nats::options("projector-analytics-rebuild")
        .connect(servers)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach NATS at {nats_url}: {e}"))?;
    let js = jetstream::new(client);
    let target = stream_last_sequence(&js).await?.unwrap_or(0);
    tracing::info!(
        start = rebuilt.start,
        resumed_from = rebuilt.folded,
        target,
        "rebuilding the analytics"
    );
    let bar = crate::rebuild::progress_bar(
        settings.progress,
        " analytics",
        " messages",
        target.saturating_sub(rebuilt.start),
        rebuilt.folded.saturating_sub(rebuilt.start),
    );

    let mut folded = rebuilt.folded;
    let mut messages_folded = 0u64;
    let mut conn = pool.acquire().await?;
    // Ordered and ephemeral: nothing to clean up, and nothing shared with the live consumer.
    let stream = js.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: SUBJECT.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: folded + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut batch = Vec::with_capacity(settings.batch_size);
    loop {
        // Fold whatever is there, up to a batch; a quiet stream means caught up.
        let mut caught_up = false;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => {
                    let message = message?;
                    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let last = info.pending == 0;
                    batch.push((info.stream_sequence, message.payload.clone()));
                    if last {
                        caught_up = true;
                        break;
                    }
                }
                Ok(None) => anyhow::bail!("the rebuild's message stream ended"),
                Err(_) => {
                    caught_up = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let sequenced: Vec<(u64, &[u8])> =
                batch.iter().map(|(s, p)| (*s, p.as_ref())).collect();
            let committed =
                writer::commit_batch(&mut conn, REBUILD, Durability::Relaxed, &sequenced, &key)
                    .await?;
            messages_folded += committed.messages;
            folded = committed.folded;
            batch.clear();
            if folded > target {
                bar.set_length(folded - rebuilt.start);
            }
            bar.set_position(folded.saturating_sub(rebuilt.start));
        }
        if caught_up {
            bar.set_message("swapping");
            match swap(pool, folded).await? {
                None => break,
                Some(live) => {
                    tracing::info!(
                        rebuilt = folded,
                        live,
                        "the live model is ahead; catching up"
                    );
                    bar.set_message("");
                }
            }
        }
    }
    bar.finish_and_clear();
    tracing::info!(position = folded, "swapped the rebuilt analytics in");
    if let Err(e) = crate::rebuild::drop_schema(pool, RETIRED).await {
        tracing::warn!(error = %e, "could not drop the retired analytics yet; the next rebuild will");
    }
    Ok(Summary {
        start: rebuilt.start,
        resumed_from: rebuilt.folded,
        position: folded,
        messages: messages_folded,
        elapsed: started.elapsed(),
    })
}

/// `analytics_rebuild` with the live tables' structure (columns, keys, indexes), empty, at the
/// start sequence.
async fn create_rebuild_schema(pool: &PgPool, start: u64) -> anyhow::Result<Position> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut ddl = format!("CREATE SCHEMA {};", quote_ident(REBUILD));
    for table in TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE {rebuild}.{t} (LIKE {live}.{t} INCLUDING ALL);",
            rebuild = quote_ident(REBUILD),
            live = quote_ident(LIVE),
            t = quote_ident(table),
        ));
    }
    sqlx::raw_sql(&ddl).execute(&mut *tx).await?;
    sqlx::query(&format!(
        "INSERT INTO {}.position (singleton, start_sequence, folded_sequence) VALUES (true, $1, $1)",
        quote_ident(REBUILD)
    ))
    .bind(writer::to_db(start))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Position {
        start,
        folded: start,
    })
}

/// Swaps the rebuilt model in if it is at least as far as the live one; otherwise returns the
/// live position to catch up with.
async fn swap(pool: &PgPool, rebuilt: u64) -> Result<Option<u64>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // Always in this order (the live consumer takes only the live lock): no deadlock.
    writer::lock(&mut tx, REBUILD).await?;
    writer::lock(&mut tx, LIVE).await?;
    let live: i64 = sqlx::query_scalar(&format!(
        "SELECT folded_sequence FROM {}.position",
        quote_ident(LIVE)
    ))
    .fetch_one(&mut *tx)
    .await?;
    let live = writer::from_db(live);
    if live > rebuilt {
        return Ok(Some(live));
    }
    crate::schema::rename_into_place(&mut tx, REBUILD, LIVE, RETIRED).await?;
    tx.commit().await?;
    Ok(None)
}
