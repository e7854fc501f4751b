//! The load–decide–append loop every command runs.
//!
//! A command reads the streams it decides from, decides, and appends to one stream with the
//! version it read ([`ExpectedVersion::after`]). If someone else appended in between, the store
//! answers `Conflict`; the command then reads again and decides again, because the decision may
//! now be different (the track was already added, the share was revoked meanwhile). After a few
//! lost races it gives up with a 503: nothing was changed, and the client may retry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use events::ids::UserId;
use events::{
    AppendOutcome, EventMetadata, EventStore, ExpectedVersion, MusicEvent, NewEvent, StoreError,
    StreamId,
};
use service_kit::auth::Caller;
use service_kit::ApiError;

use crate::app::AppState;

/// Attempts before a command gives up on a contended stream.
pub const MAX_ATTEMPTS: u32 = 5;

/// One event of a stream, decoded, with the envelope facts aggregates need.
pub struct Recorded {
    pub event: MusicEvent,
    pub occurred_at: DateTime<Utc>,
}

/// A stream as read: its events and its version (0 for a stream that does not exist).
pub struct History {
    pub version: u64,
    pub events: Vec<Recorded>,
}

impl History {
    pub fn expected(&self) -> ExpectedVersion {
        ExpectedVersion::after(self.version)
    }
}

/// Reads and decodes a whole stream. An event this build cannot decode is a 500: deciding while
/// ignoring part of an aggregate's history could contradict it.
pub async fn read(store: &dyn EventStore, stream: &StreamId) -> Result<History, ApiError> {
    let recorded = store.read_stream(stream).await?;
    let version = recorded.last().map_or(0, |e| e.stream_version);
    let events = recorded
        .iter()
        .map(|r| {
            r.decode().map(|event| Recorded {
                event,
                occurred_at: r.occurred_at,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    Ok(History { version, events })
}

/// Why one attempt of a command did not finish.
#[derive(Debug)]
pub enum Attempt {
    /// Someone appended first: read again and decide again.
    Conflict,
    /// A final answer for the client.
    Failed(ApiError),
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Attempt::Conflict,
            other => Attempt::Failed(other.into()),
        }
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

/// Runs a command that creates a new stream (under a fresh random id, so the only conflict it
/// can meet is an id collision, which `attempt` answers by drawing a new id).
pub async fn new_stream<T, F, Fut>(
    state: &AppState,
    ctx: &CommandContext,
    attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let decided = with_retries(attempt).await;
    read_your_writes(state, ctx).await;
    decided
}

/// Runs a command on an existing stream. Commands of this process on the same stream take turns
/// (a stream lock), so they do not race each other into conflicts; conflicts with other
/// processes are still caught by the expected version and retried.
pub async fn on_stream<T, F, Fut>(
    state: &AppState,
    ctx: &CommandContext,
    stream: &StreamId,
    attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let decided = {
        let _turn = state.stream_locks.lock(stream).await;
        with_retries(attempt).await
    };
    // Outside the lock: the next command on this stream need not wait for the projector.
    read_your_writes(state, ctx).await;
    decided
}

/// Waits until the projector has seen what this command appended, if it appended anything.
async fn read_your_writes(state: &AppState, ctx: &CommandContext) {
    let position = ctx.appended_up_to.load(Ordering::Acquire);
    if position > 0 {
        state.projector.wait_for(position).await;
    }
}

/// Runs `attempt` until it does not conflict, at most [`MAX_ATTEMPTS`] times.
async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    for round in 1..=MAX_ATTEMPTS {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Conflict) => {
                metrics::counter!("command_conflicts_total").increment(1);
                tracing::debug!(round, "lost a race for a stream; deciding again");
                // A little jitter so that racers do not collide again in lockstep.
                let jitter = rand::random_range(0..=5 * u64::from(round));
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
        }
    }
    Err(ApiError::unavailable(
        "Too many concurrent changes to the same resource; nothing was changed",
    ))
}

/// One async mutex per stream that has a command in flight in this process.
#[derive(Clone, Default)]
pub struct StreamLocks {
    inner: Arc<std::sync::Mutex<LockTable>>,
}

#[derive(Default)]
struct LockTable {
    locks: HashMap<String, Weak<tokio::sync::Mutex<()>>>,
    /// Forgotten locks are swept when the table reaches this size.
    sweep_at: usize,
}

impl StreamLocks {
    pub async fn lock(&self, stream: &StreamId) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            match table.locks.get(stream.as_str()).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    if table.locks.len() >= table.sweep_at {
                        table.locks.retain(|_, lock| lock.strong_count() > 0);
                        table.sweep_at = (table.locks.len() * 2).max(1024);
                    }
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    table
                        .locks
                        .insert(stream.as_str().to_owned(), Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}

/// Who runs a command and when: one instant and one request id for every event it appends, and
/// for the timestamps its response shows.
#[derive(Debug)]
pub struct CommandContext {
    pub actor: UserId,
    pub meta: EventMetadata,
    /// The global position of the last event this command appended (0: none yet).
    appended_up_to: AtomicU64,
}

impl CommandContext {
    pub fn new(caller: &Caller) -> Self {
        let trace_id =
            service_kit::current_request_id().unwrap_or_else(service_kit::request_id::generate);
        CommandContext {
            actor: caller.user_id.clone(),
            meta: EventMetadata {
                actor: caller.user_id.to_string(),
                trace_id,
                // Whole seconds: the contract's timestamps have no fractions, and the instant a
                // response shows must be the one the events carry.
                occurred_at: Utc::now().trunc_subsecs(0),
            },
            appended_up_to: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.meta.occurred_at
    }
}

/// Appends `events` to `stream` if it is still at `expected`. Once the command is decided,
/// [`new_stream`] and [`on_stream`] wait (bounded) until the projector has seen them, so the
/// caller's next read finds what it just wrote.
pub async fn append(
    state: &AppState,
    ctx: &CommandContext,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[MusicEvent],
) -> Result<AppendOutcome, Attempt> {
    let new = events.iter().map(|e| NewEvent::new(e, &ctx.meta)).collect();
    let outcome = state.store.append(stream, expected, new).await?;
    for event in events {
        metrics::counter!("events_appended_total", "type" => event.event_type()).increment(1);
    }
    ctx.appended_up_to
        .fetch_max(outcome.last_position, Ordering::AcqRel);
    Ok(outcome)
}

/// RFC 3339, whole seconds, `Z`: the contract's one timestamp format.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
