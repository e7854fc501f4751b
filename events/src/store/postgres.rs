//! The PostgreSQL event store (the default backend).
//!
//! # Why readers can trust positions
//! A plain `bigserial` is not enough: two transactions take positions 7 and 8, the one holding 8
//! commits first, a reader sees 8 and moves its checkpoint past 7, which then commits and is never
//! read. Here every append takes a transaction-scoped advisory lock before it numbers its events
//! and holds it until commit, so transactions that append commit in position order, and a
//! committed transaction is visible before the lock passes to the next writer. A reader that sees
//! position N has therefore already been able to see everything below N. The numbering and the
//! check of the expected version happen inside `event_store.append_batch` (see the migrations).
//!
//! # Why appends are batched
//! A lock held across each commit would cap the log at one fsync per append. Instead, one task per
//! process collects the appends that arrive while the previous batch commits and sends them as one
//! call: each request is still checked and applied on its own (one conflict does not fail its
//! neighbours), but a batch shares one lock and one commit. This is group commit, done where the
//! lock would otherwise prevent PostgreSQL from doing it.
//!
//! # Claims
//! An append may carry a [`Claim`], a row of the caller's own unique index. The batch's claims
//! are inserted by the same statement that calls `append_batch` (a data-modifying CTE ahead of
//! it), so a claim costs no round trip and no commit of its own, and the row and its events
//! commit together. A request whose row was not inserted (its key was taken) appends nothing.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{validate, AppendOutcome, Claim, EventStore, ExpectedVersion, Position, StoreError};
use crate::envelope::{NewEvent, RecordedEvent, StreamId};

/// The channel `append_batch` notifies with the new head position.
pub const WAKE_UP_CHANNEL: &str = "event_store_appended";

/// Appends waiting beyond this many make new callers wait for room: back-pressure, not memory.
const QUEUE_DEPTH: usize = 4096;
/// The most appends one transaction carries. Large enough to amortize a commit, small enough
/// that the lock is never held for long.
const MAX_BATCH: usize = 256;

/// The columns every read selects, as a macro so the queries' text is fixed at compile time.
macro_rules! event_columns {
    () => {
        "global_position, stream_id, stream_version, event_id, event_type, schema_version, \
         occurred_at, actor, trace_id, payload"
    };
}

/// The results of `append_batch`, one row per request in request order.
const APPEND_RESULTS: &str = "out_request, out_ok, out_claim_taken, out_version, out_position";

pub struct PostgresEventStore {
    pool: PgPool,
    appends: mpsc::Sender<PendingAppend>,
    wake_ups: OnceLock<watch::Receiver<Position>>,
}

struct PendingAppend {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    claim: Option<Claim>,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

impl PostgresEventStore {
    /// A store over an already migrated database. Must be called inside a Tokio runtime: it
    /// starts the task that batches appends.
    pub fn new(pool: PgPool) -> Self {
        let (appends, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run_appender(pool.clone(), queue));
        Self {
            pool,
            appends,
            wake_ups: OnceLock::new(),
        }
    }
}

impl PostgresEventStore {
    /// Queues an append for the appender task and waits for its answer.
    async fn queue(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claim: Option<Claim>,
    ) -> Result<AppendOutcome, StoreError> {
        validate(stream, expected, &events)?;
        let (reply, answer) = oneshot::channel();
        let pending = PendingAppend {
            stream: stream.clone(),
            expected,
            events,
            claim,
            reply,
        };
        self.appends
            .send(pending)
            .await
            .map_err(|_| StoreError::Unavailable("the append task has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the append task has stopped".to_owned()))?
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.queue(stream, expected, events, None).await
    }

    async fn append_claiming(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claim: Claim,
    ) -> Result<AppendOutcome, StoreError> {
        self.queue(stream, expected, events, Some(claim)).await
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM event_store.events WHERE stream_id = $1 ORDER BY stream_version"
        );
        let rows = sqlx::query(SQL)
            .bind(stream.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(recorded_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM event_store.events WHERE global_position > $1 ORDER BY global_position LIMIT $2"
        );
        let rows = sqlx::query(SQL)
            .bind(to_i64(after)?)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(recorded_event).collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 =
            sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM event_store.events")
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(head.max(0) as u64)
    }

    fn wake_ups(&self) -> watch::Receiver<Position> {
        let pool = self.pool.clone();
        super::wake_ups_following(&self.wake_ups, |tx| listen_for_appends(pool, tx))
    }
}

/// The one task that writes: collects whatever appends are waiting and commits them together.
async fn run_appender(pool: PgPool, mut queue: mpsc::Receiver<PendingAppend>) {
    let mut statements = Statements::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Appends whose claim needs another statement than the batch's: they go first next round.
    let mut deferred = Vec::new();
    loop {
        if deferred.is_empty() {
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            std::mem::swap(&mut batch, &mut deferred);
        }
        defer_other_claims(&mut batch, &mut deferred);
        match append_batch(&pool, &mut statements, &batch).await {
            Ok(results) => reply_all(batch.drain(..), results),
            Err(e) if batch.len() > 1 && !is_unavailable(&e) => {
                // One request can poison a batch (say, a payload PostgreSQL refuses). Retry each
                // on its own so only that one fails.
                for pending in batch.drain(..) {
                    let one = std::slice::from_ref(&pending);
                    let result = match append_batch(&pool, &mut statements, one).await {
                        Ok(mut results) => results.pop().unwrap_or_else(|| Err(missing_result())),
                        Err(e) => Err(store_error(e)),
                    };
                    let _ = pending.reply.send(result);
                }
            }
            Err(e) => {
                let unavailable = is_unavailable(&e);
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let error = if unavailable {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::Backend(message.clone())
                    };
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }
}

/// One statement inserts the claims of one `insert`: moves the appends that claim with another
/// (none today: every claim is a share token's) from `batch` to `deferred`.
fn defer_other_claims(batch: &mut Vec<PendingAppend>, deferred: &mut Vec<PendingAppend>) {
    let Some(insert) = batch
        .iter()
        .find_map(|p| p.claim.as_ref().map(|c| c.insert))
    else {
        return;
    };
    let other = |p: &PendingAppend| p.claim.as_ref().is_some_and(|c| c.insert != insert);
    if batch.iter().any(other) {
        let (others, same): (Vec<_>, Vec<_>) = batch.drain(..).partition(other);
        *batch = same;
        *deferred = others;
    }
}

/// The text of the statement that appends a batch whose claims use `insert`, composed once per
/// `insert` and then the same string every time, so each connection prepares it once.
#[derive(Default)]
struct Statements {
    claiming: HashMap<&'static str, String>,
}

impl Statements {
    /// A batch without claims.
    const PLAIN: &'static str = "SELECT out_request, out_ok, out_claim_taken, out_version, \
         out_position FROM event_store.append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

    /// A batch with claims: `$1`/`$2` the claims' keys and owners (what `insert` inserts), `$3`
    /// to `$12` as in [`Self::PLAIN`], `$13` the request each claim belongs to. `refused` names
    /// the requests whose row `insert` did not insert, for `append_batch` to refuse; the CTE
    /// runs before the function is called (its argument needs it), so before the append lock.
    fn claiming(&mut self, insert: &'static str) -> &str {
        self.claiming.entry(insert).or_insert_with(|| {
            format!(
                "WITH claimed(key, owner) AS ({insert}), \
                 refused AS ( \
                   SELECT coalesce(array_agg(c.request), '{{}}') AS requests \
                     FROM unnest($13::integer[], $1::text[], $2::text[]) AS c(request, key, owner) \
                    WHERE NOT EXISTS \
                      (SELECT 1 FROM claimed k WHERE k.key = c.key AND k.owner = c.owner)) \
                 SELECT {APPEND_RESULTS} FROM refused, event_store.append_batch( \
                   $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, refused.requests)"
            )
        })
    }
}

fn reply_all(
    batch: impl Iterator<Item = PendingAppend>,
    results: Vec<Result<AppendOutcome, StoreError>>,
) {
    let mut results = results.into_iter();
    for pending in batch {
        let result = results.next().unwrap_or_else(|| Err(missing_result()));
        let _ = pending.reply.send(result);
    }
}

fn missing_result() -> StoreError {
    StoreError::Backend("append_batch returned fewer results than requests".to_owned())
}

/// One call of `event_store.append_batch`, with the batch's claims inserted by the same
/// statement: one round trip, one transaction, one lock, one commit. The claims of a batch all
/// use one `insert` (see [`defer_other_claims`]).
async fn append_batch(
    pool: &PgPool,
    statements: &mut Statements,
    batch: &[PendingAppend],
) -> Result<Vec<Result<AppendOutcome, StoreError>>, sqlx::Error> {
    let mut req_streams = Vec::with_capacity(batch.len());
    let mut req_expected = Vec::with_capacity(batch.len());
    let total: usize = batch.iter().map(|p| p.events.len()).sum();
    let mut ev_request = Vec::with_capacity(total);
    let mut ev_ids: Vec<Uuid> = Vec::with_capacity(total);
    let mut ev_types = Vec::with_capacity(total);
    let mut ev_schema_versions = Vec::with_capacity(total);
    let mut ev_occurred_at: Vec<DateTime<Utc>> = Vec::with_capacity(total);
    let mut ev_actors = Vec::with_capacity(total);
    let mut ev_trace_ids = Vec::with_capacity(total);
    let mut ev_payloads = Vec::with_capacity(total);
    let mut claim_insert = None;
    let mut claim_keys = Vec::new();
    let mut claim_owners = Vec::new();
    let mut claim_requests = Vec::new();
    for (i, pending) in batch.iter().enumerate() {
        let request = i as i32 + 1;
        req_streams.push(pending.stream.as_str());
        req_expected.push(match pending.expected {
            ExpectedVersion::Any => -1i64,
            ExpectedVersion::NoStream => 0,
            // Checked by `validate` before queueing.
            ExpectedVersion::Exact(v) => i64::try_from(v).unwrap_or(i64::MAX),
        });
        for e in &pending.events {
            ev_request.push(request);
            ev_ids.push(e.event_id);
            ev_types.push(e.event_type.as_str());
            ev_schema_versions.push(e.schema_version);
            ev_occurred_at.push(e.occurred_at);
            ev_actors.push(e.actor.as_str());
            ev_trace_ids.push(e.trace_id.as_str());
            ev_payloads.push(&e.payload);
        }
        if let Some(claim) = &pending.claim {
            claim_insert = Some(claim.insert);
            claim_keys.push(claim.key.as_str());
            claim_owners.push(claim.owner.as_str());
            claim_requests.push(request);
        }
    }
    let query = match claim_insert {
        None => sqlx::query(Statements::PLAIN),
        Some(insert) => sqlx::query(statements.claiming(insert))
            .bind(&claim_keys)
            .bind(&claim_owners),
    };
    let query = query
        .bind(&req_streams)
        .bind(&req_expected)
        .bind(&ev_request)
        .bind(&ev_ids)
        .bind(&ev_types)
        .bind(&ev_schema_versions)
        .bind(&ev_occurred_at)
        .bind(&ev_actors)
        .bind(&ev_trace_ids)
        .bind(&ev_payloads);
    let query = match claim_insert {
        None => query,
        Some(_) => query.bind(&claim_requests),
    };
    let rows = query.fetch_all(pool).await?;

    let mut results = Vec::with_capacity(batch.len());
    for (pending, row) in batch.iter().zip(rows) {
        let ok: bool = row.try_get("out_ok")?;
        let claim_taken: bool = row.try_get("out_claim_taken")?;
        let version: i64 = row.try_get("out_version")?;
        let position: i64 = row.try_get("out_position")?;
        results.push(if ok {
            Ok(AppendOutcome {
                stream_version: version.max(0) as u64,
                last_position: position.max(0) as u64,
            })
        } else if claim_taken {
            Err(StoreError::ClaimTaken {
                stream: pending.stream.clone(),
            })
        } else {
            Err(StoreError::Conflict {
                stream: pending.stream.clone(),
                expected: pending.expected,
                actual: version.max(0) as u64,
            })
        });
    }
    Ok(results)
}

/// Turns PostgreSQL notifications into wake-ups. Reconnects forever; after a reconnect it wakes
/// readers once, since notifications sent while it was away are lost.
async fn listen_for_appends(pool: PgPool, wake: watch::Sender<Position>) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(WAKE_UP_CHANNEL).await?;
            wake.send_modify(|_| {});
            loop {
                match listener.try_recv().await? {
                    Some(notification) => {
                        if let Ok(head) = notification.payload().parse::<Position>() {
                            wake.send_if_modified(|seen| {
                                let newer = head > *seen;
                                if newer {
                                    *seen = head;
                                }
                                newer
                            });
                        }
                    }
                    // The connection dropped and will be re-established by the next call.
                    None => wake.send_modify(|_| {}),
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            result = listener => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "event store wake-up listener lost its connection; retrying");
                }
            }
            _ = wake.closed() => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let read = || -> Result<RecordedEvent, sqlx::Error> {
        Ok(RecordedEvent {
            global_position: row.try_get::<i64, _>("global_position")?.max(0) as u64,
            stream_id: StreamId::new(row.try_get::<String, _>("stream_id")?),
            stream_version: row.try_get::<i64, _>("stream_version")?.max(0) as u64,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            occurred_at: row.try_get("occurred_at")?,
            actor: row.try_get("actor")?,
            trace_id: row.try_get("trace_id")?,
            payload: row.try_get("payload")?,
        })
    };
    read().map_err(store_error)
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Rejected(format!("{v} is beyond the log's range")))
}

fn store_error(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Whether a database error means "PostgreSQL cannot be reached or is going away" (retry later,
/// HTTP 503) rather than "this request is wrong". Shared by every crate that talks to PostgreSQL.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..57P03: admin shutdown, crash shutdown, cannot
            // connect now; 53300: too many connections; 40001/40P01 are retryable too.
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}
