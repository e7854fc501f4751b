//! `projector rebuild`: every read model again from the first event, beside the live ones,
//! then swapped in with no downtime for readers.
//!
//! The rebuild fills `read_model_rebuild` with the same effects code as the live projector, made
//! for bulk: larger batches, the next batch read and decoded while the current one is written,
//! new rows sent with binary `COPY` ([`crate::apply::Writes::Copy`]), no indexes but the unique
//! ones while it fills (the others are built once at the end), and unlogged tables (no WAL for
//! every change of the fill; the finished tables are made logged, in bulk, before the swap).
//! Its checkpoint lives in that schema, so a rebuild that is killed resumes where it stopped
//! when run again (`--fresh` starts over); a database crash empties unlogged tables, checkpoint
//! included, and the next run starts over. The live read models are never touched until the
//! swap. Once caught up it swaps, in one transaction holding both schemas' locks,
//! `read_model` → `read_model_retired` and `read_model_rebuild` → `read_model`, provided its
//! checkpoint is at least the live one (so readers never go back in the log); otherwise it
//! catches up again. Readers' queries name `read_model.*`, so they simply start reading the new
//! tables. The retired schema is dropped afterwards (or at the next rebuild, after a crash).

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::notice::ChangeNotice;
use events::{EventStore, Position, StoreError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use migrations::quote_ident;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::batch::{self, Mode, Outcome};
use crate::decode::Batch;
use crate::notices::Notifier;
use crate::schema::{self, LIVE, REBUILD, RETIRED};

#[derive(Clone, Debug)]
pub struct Settings {
    /// Events (or, for the analytics rebuild, audit messages) per batch and per transaction.
    pub batch_size: usize,
    /// Drop an interrupted rebuild and start from the beginning.
    pub fresh: bool,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What a finished rebuild did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Where an interrupted rebuild was resumed from (0 for a fresh one).
    pub resumed_from: Position,
    /// The checkpoint of the new live tables.
    pub position: Position,
    /// Events applied by this run.
    pub events: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilt the read models up to position {}: {} events in {:.2} s ({:.0} events/s)",
            self.position,
            self.events,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        if self.resumed_from > 0 {
            write!(f, ", resumed from position {}", self.resumed_from)?;
        }
        Ok(())
    }
}

pub async fn run(
    pool: &PgPool,
    store: Arc<dyn EventStore>,
    notifier: Option<&Notifier>,
    settings: &Settings,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // A crash between the swap and the drop leaves the old tables behind.
    drop_schema(pool, RETIRED).await?;
    if settings.fresh {
        drop_schema(pool, REBUILD).await?;
    }
    let resumed_from = match schema::read_checkpoint(pool, REBUILD).await? {
        Some(position) => position,
        None => {
            if schema::exists(pool, REBUILD).await? {
                // Unlogged tables come back empty after a database crash, the checkpoint with
                // the rest: nothing to resume.
                tracing::warn!("the interrupted rebuild's tables were emptied; starting over");
                drop_schema(pool, REBUILD).await?;
            }
            migrations::create_read_model(&mut *pool.acquire().await?, REBUILD).await?;
            set_persistence(pool, REBUILD, Persistence::Unlogged).await?;
            0
        }
    };
    drop_lookup_indexes(pool, REBUILD).await?;
    let head = store.head().await?;
    tracing::info!(resumed_from, head, "rebuilding the read models");
    let bar = progress_bar(settings.progress, "", "", head, resumed_from);

    let mut checkpoint = resumed_from;
    let mut events = 0u64;
    let mut last_log = Instant::now();
    let position = 'rebuild: loop {
        bar.set_message("");
        let (reader, mut batches) = spawn_reader(store.clone(), checkpoint, settings.batch_size);
        while let Some(batch) = batches.recv().await {
            match batch::apply(pool, REBUILD, Mode::Rebuild, batch?).await? {
                Outcome::Moved(stored) => {
                    // Another rebuild process is at work too: follow its checkpoint.
                    reader.abort();
                    checkpoint = stored;
                    continue 'rebuild;
                }
                Outcome::Applied(applied) => {
                    events += applied.events as u64;
                    checkpoint = applied.position;
                    if checkpoint > bar.length().unwrap_or(0) {
                        bar.set_length(checkpoint);
                    }
                    bar.set_position(checkpoint);
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::info!(checkpoint, events, "rebuilding");
                        last_log = Instant::now();
                    }
                    if let Some(unprojectable) = applied.stop {
                        bar.abandon();
                        return Err(unprojectable.into());
                    }
                }
            }
        }
        // The reader found the end of the log: make the tables crash-safe, index, then swap if
        // the live tables are not ahead.
        bar.set_message("indexing");
        set_persistence(pool, REBUILD, Persistence::Logged).await?;
        {
            let mut conn = pool.acquire().await?;
            migrations::create_read_model(&mut conn, REBUILD).await?;
        }
        match swap(pool, checkpoint).await? {
            Swap::Done => break checkpoint,
            Swap::LiveAhead(live) => {
                tracing::info!(
                    rebuilt = checkpoint,
                    live,
                    "the live projector is ahead; catching up"
                );
            }
            Swap::Moved(stored) => checkpoint = stored,
        }
    };
    bar.finish_and_clear();
    tracing::info!(position, "swapped the rebuilt read models in");

    if let Some(notifier) = notifier {
        notifier.publish(ChangeNotice {
            rebuilt: true,
            ..ChangeNotice::heartbeat(position)
        });
    }
    if let Err(e) = drop_schema(pool, RETIRED).await {
        tracing::warn!(error = %e, "could not drop the retired read models yet; the next rebuild will");
    }
    Ok(Summary {
        resumed_from,
        position,
        events,
        elapsed: started.elapsed(),
    })
}

/// Reads batches ahead of the writer, so reading and decoding the next batch overlaps writing
/// this one. Ends after the first empty read (the end of the log) or an unprojectable event.
fn spawn_reader(
    store: Arc<dyn EventStore>,
    mut after: Position,
    batch_size: usize,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<Result<Batch, StoreError>>,
) {
    let (sender, batches) = mpsc::channel(2);
    let reader = tokio::spawn(async move {
        loop {
            let events = match store.read_all(after, batch_size).await {
                Ok(events) => events,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            let batch = Batch::decode(after, events);
            after = batch.last_position();
            let last = batch.stop.is_some();
            if sender.send(Ok(batch)).await.is_err() || last {
                return;
            }
        }
    });
    (reader, batches)
}

enum Swap {
    Done,
    /// The live tables are further along the log than the rebuilt ones.
    LiveAhead(Position),
    /// Another process moved the rebuild's checkpoint.
    Moved(Position),
}

async fn swap(pool: &PgPool, rebuilt: Position) -> Result<Swap, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Always in this order (the live projector takes only the live lock): no deadlock.
    schema::lock(&mut tx, REBUILD).await?;
    schema::lock(&mut tx, LIVE).await?;
    schema::enter(&mut tx, REBUILD).await?;
    let stored = schema::checkpoint(&mut tx).await?;
    if stored != rebuilt {
        return Ok(Swap::Moved(stored));
    }
    schema::enter(&mut tx, LIVE).await?;
    let live = schema::checkpoint(&mut tx).await?;
    if live > rebuilt {
        return Ok(Swap::LiveAhead(live));
    }
    schema::rename_into_place(&mut tx, REBUILD, LIVE, RETIRED).await?;
    tx.commit().await?;
    Ok(Swap::Done)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persistence {
    /// Written without WAL: far cheaper to fill, but emptied by a database crash.
    Unlogged,
    /// Like every other table: what the live read models must be.
    Logged,
}

/// Makes every table of `schema` logged or unlogged, all in one transaction, so that a crash can
/// never leave the checkpoint logged and the rows it counts unlogged (or the reverse). Making
/// them logged writes each table to the WAL once, in bulk, instead of every change of the fill.
async fn set_persistence(
    pool: &PgPool,
    schema: &str,
    persistence: Persistence,
) -> Result<(), sqlx::Error> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
            .bind(schema)
            .fetch_all(pool)
            .await?;
    let to = match persistence {
        Persistence::Unlogged => "UNLOGGED",
        Persistence::Logged => "LOGGED",
    };
    let statements: String = tables
        .iter()
        .map(|table| {
            format!(
                "ALTER TABLE {}.{} SET {to};",
                quote_ident(schema),
                quote_ident(table)
            )
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(&statements).execute(&mut *tx).await?;
    tx.commit().await
}

/// Drops the indexes of `schema` that only readers use (those that are not unique: the unique
/// ones decide which creation wins). Built once at the end, by sorting, they cost far less than
/// kept up to date row by row; [`migrations::create_read_model`] puts them back.
async fn drop_lookup_indexes(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index AS i \
             JOIN pg_class AS c ON c.oid = i.indexrelid \
             JOIN pg_namespace AS n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND NOT i.indisunique",
    )
    .bind(schema)
    .fetch_all(pool)
    .await?;
    for index in indexes {
        sqlx::raw_sql(&format!(
            "DROP INDEX IF EXISTS {}.{}",
            quote_ident(schema),
            quote_ident(&index)
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Drops `schema` and its tables, waiting at most a few seconds for readers of them to finish.
/// Both rebuilds (read models and analytics) retire their old schema this way.
pub(crate) async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(&format!(
        "SET LOCAL lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE;",
        quote_ident(schema)
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The progress bar of a rebuild on stderr (hidden when `enabled` is false): `what` names the
/// rebuild, `unit` what it counts, `length` the whole and `at` what is already done.
pub(crate) fn progress_bar(
    enabled: bool,
    what: &str,
    unit: &str,
    length: u64,
    at: u64,
) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length.max(1)), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} rebuilding{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}}{unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar.set_position(at);
    bar
}
