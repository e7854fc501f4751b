//! One batch, one transaction: the effects and the checkpoint move together or not at all.
//!
//! Events are read from the store outside the transaction (the store may be KurrentDB). The
//! transaction then takes the schema's lock, checks that the checkpoint is still the one the
//! batch was read after (another projector process may have moved it: then nothing is applied
//! and the caller reads again from the new checkpoint), applies, advances the checkpoint and
//! commits. A crash at any instant leaves either the whole batch or none of it.

use std::time::Instant;

use events::notice::ChangeNotice;
use events::Position;
use sqlx::PgPool;

use crate::apply::{Changed, Effects, Writes};
use crate::decode::{Batch, Unprojectable};
use crate::schema;

/// How the batch is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The live tables: durable commits, and a change notice for every batch.
    Live,
    /// A rebuild's tables, which nobody reads yet: no notice, commits that do not wait for the
    /// disk (a database crash loses the last few batches and their checkpoint together, so they
    /// are simply applied again), and new rows sent with `COPY` ([`Writes::Copy`]). Should a
    /// creation repeat a row already written, the `COPY` fails and the batch is applied again,
    /// in a new transaction, by statements: the same result, more slowly.
    Rebuild,
}

#[derive(Debug)]
pub enum Outcome {
    Applied(Applied),
    /// Another process had moved the checkpoint to this position; nothing was applied.
    Moved(Position),
}

#[derive(Debug)]
pub struct Applied {
    /// The checkpoint after the batch.
    pub position: Position,
    pub events: usize,
    /// What changed (only in [`Mode::Live`]).
    pub notice: Option<ChangeNotice>,
    /// The batch was cut before this event, which the caller must stop at.
    pub stop: Option<Unprojectable>,
}

/// Applies `batch` to `schema` in one transaction, if the checkpoint is still `batch.after`.
pub async fn apply(
    pool: &PgPool,
    schema: &str,
    mode: Mode,
    batch: Batch,
) -> Result<Outcome, sqlx::Error> {
    if mode == Mode::Rebuild {
        match apply_with(pool, schema, mode, &batch, Writes::Copy).await {
            Err(e) if is_unique_violation(&e) => {
                tracing::info!(
                    after = batch.after,
                    "a creation in this batch repeats a row already written; applying the \
                     batch again by statements"
                );
            }
            done => return done,
        }
    }
    apply_with(pool, schema, mode, &batch, Writes::Statements).await
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

async fn apply_with(
    pool: &PgPool,
    schema: &str,
    mode: Mode,
    batch: &Batch,
    how: Writes,
) -> Result<Outcome, sqlx::Error> {
    let started = Instant::now();
    let Batch {
        after,
        ref events,
        ref stop,
    } = *batch;
    let mut stop = stop.clone();

    let mut tx = pool.begin().await?;
    schema::enter(&mut tx, schema).await?;
    if mode == Mode::Rebuild {
        sqlx::raw_sql("SET LOCAL synchronous_commit TO off")
            .execute(&mut *tx)
            .await?;
    }
    schema::lock(&mut tx, schema).await?;
    let checkpoint = schema::checkpoint(&mut tx).await?;
    if checkpoint != after {
        return Ok(Outcome::Moved(checkpoint));
    }

    let mut changed = Changed::default();
    let mut effects = Effects::default();
    let mut position = after;
    let mut count = 0;
    for event in events {
        if effects.must_write_before(event) {
            count += effects.len();
            changed.merge(std::mem::take(&mut effects).write(&mut tx, how).await?);
        }
        if let Err(cut) = effects.add(event) {
            stop = Some(cut);
            break;
        }
        position = event.position;
    }
    count += effects.len();
    changed.merge(effects.write(&mut tx, how).await?);
    if count == 0 {
        // Nothing applicable (the first event stops the projector): leave the checkpoint.
        return Ok(Outcome::Applied(Applied {
            position: after,
            events: 0,
            notice: None,
            stop,
        }));
    }
    schema::set_checkpoint(&mut tx, position).await?;
    let notice = match mode {
        Mode::Live => Some(changed.notice(&mut tx, position).await?),
        Mode::Rebuild => None,
    };
    tx.commit().await?;

    metrics::counter!("projector_events_applied_total").increment(count as u64);
    metrics::histogram!("projector_batch_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(Outcome::Applied(Applied {
        position,
        events: count,
        notice,
        stop,
    }))
}
