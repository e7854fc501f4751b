//! The runner: load → decide → append, and again on a conflict.
//!
//! A command reads the stream it appends to, decides (a pure function of `domain`), and appends
//! with the version it read ([`ExpectedVersion::after`]). If someone else appended in between,
//! the store answers `Conflict`; the runner then reads again and decides again, because the
//! decision may now be different (the track was already added, the link was revoked
//! meanwhile). After a few lost races it gives up with a 503: nothing was changed, and the
//! client may retry. Once decided, it waits (bounded) until the projector has seen what was
//! appended, so the caller's next read finds it.
//!
//! It stands alone: it holds only the event store, this process's per-stream turns and the
//! projector's progress, and knows nothing of HTTP routes or the application's state.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use events::ids::UserId;
use events::{
    Claim, EventMetadata, EventStore, ExpectedVersion, MusicEvent, NewEvent, Position, StoreError,
    StreamId,
};
use service_kit::auth::Caller;
use service_kit::ApiError;

use crate::domain::{Context, Recorded, Rejection};
use crate::read_your_writes::ProjectorProgress;

/// Attempts before a command gives up on a contended stream.
pub const MAX_ATTEMPTS: u32 = 5;

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

/// What one attempt decided: append `events` to `stream` if it is still at `expected` (nothing
/// to append: nothing to change), with `claim` written in the same transaction if there is one,
/// then answer `answer`.
pub struct Decision<T> {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<MusicEvent>,
    /// A row of the command side's own index that must be new (see [`Claim`]); it rides with
    /// `events`, so an attempt that appends nothing writes none.
    pub claim: Option<Claim>,
    pub answer: T,
}

/// Why one attempt did not finish.
#[derive(Debug)]
pub enum Attempt {
    /// Someone appended first (or a fresh id was taken): read again and decide again.
    Conflict,
    /// A final answer for the client.
    Failed(ApiError),
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<Rejection> for Attempt {
    fn from(r: Rejection) -> Self {
        Attempt::Failed(r.into())
    }
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } | StoreError::ClaimTaken { .. } => Attempt::Conflict,
            other => Attempt::Failed(other.into()),
        }
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

/// Runs commands against the event store (see the module docs).
#[derive(Clone)]
pub struct Runner {
    store: Arc<dyn EventStore>,
    locks: StreamLocks,
    projector: ProjectorProgress,
}

impl Runner {
    pub fn new(store: Arc<dyn EventStore>, projector: ProjectorProgress) -> Self {
        Runner {
            store,
            locks: StreamLocks::default(),
            projector,
        }
    }

    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    /// Reads and decodes a whole stream. An event this build cannot decode is a 500: deciding
    /// while ignoring part of an aggregate's history could contradict it.
    pub async fn read(&self, stream: &StreamId) -> Result<History, ApiError> {
        let recorded = self.store.read_stream(stream).await?;
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

    /// Runs a command on an existing stream: reads it, lets `decide` answer the events and the
    /// response from its history, appends them. Commands of this process on the same stream
    /// take turns (a stream lock), so they do not race each other into conflicts; conflicts
    /// with other processes are still caught by the expected version and decided again.
    pub async fn on_stream<T>(
        &self,
        ctx: &CommandContext,
        stream: &StreamId,
        decide: impl Fn(&History) -> Result<(Vec<MusicEvent>, T), Rejection>,
    ) -> Result<T, ApiError> {
        let decide = &decide;
        let decided = {
            let _turn = self.locks.lock(stream).await;
            self.with_retries(ctx, move || async move {
                let history = self.read(stream).await?;
                let (events, answer) = decide(&history)?;
                Ok(Decision {
                    stream: stream.clone(),
                    expected: history.expected(),
                    events,
                    claim: None,
                    answer,
                })
            })
            .await
        };
        // Outside the lock: the next command on this stream need not wait for the projector.
        self.settle(decided).await
    }

    /// Runs a command that creates a new stream, under a fresh random id per attempt, so the
    /// only conflict it can meet is an id collision, which the next attempt answers with a new
    /// id. `attempt` may do its own I/O first (index a token) and answer [`Attempt::Conflict`].
    pub async fn new_stream<T, F, Fut>(
        &self,
        ctx: &CommandContext,
        attempt: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision<T>, Attempt>>,
    {
        let decided = self.with_retries(ctx, attempt).await;
        self.settle(decided).await
    }

    /// Waits until the projector has seen what was appended, if anything was.
    async fn settle<T>(&self, decided: Result<(T, Position), ApiError>) -> Result<T, ApiError> {
        let (answer, position) = decided?;
        if position > 0 {
            self.projector.wait_for(position).await;
        }
        Ok(answer)
    }

    /// Runs `attempt` and appends what it decided, until it does not conflict, at most
    /// [`MAX_ATTEMPTS`] times. Answers the position of the last event appended (0: none).
    async fn with_retries<T, F, Fut>(
        &self,
        ctx: &CommandContext,
        mut attempt: F,
    ) -> Result<(T, Position), ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision<T>, Attempt>>,
    {
        for round in 1..=MAX_ATTEMPTS {
            let appended = match attempt().await {
                Ok(decision) => self.append(ctx, decision).await,
                Err(e) => Err(e),
            };
            match appended {
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

    async fn append<T>(
        &self,
        ctx: &CommandContext,
        decision: Decision<T>,
    ) -> Result<(T, Position), Attempt> {
        if decision.events.is_empty() {
            return Ok((decision.answer, 0));
        }
        let new = decision
            .events
            .iter()
            .map(|e| NewEvent::new(e, &ctx.meta))
            .collect();
        let outcome = match decision.claim {
            Some(claim) => {
                self.store
                    .append_claiming(&decision.stream, decision.expected, new, claim)
                    .await?
            }
            None => {
                self.store
                    .append(&decision.stream, decision.expected, new)
                    .await?
            }
        };
        for event in &decision.events {
            metrics::counter!("events_appended_total", "type" => event.event_type()).increment(1);
        }
        Ok((decision.answer, outcome.last_position))
    }
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
    pub meta: EventMetadata,
    actor: UserId,
}

impl CommandContext {
    pub fn new(caller: &Caller) -> Self {
        let trace_id =
            service_kit::current_request_id().unwrap_or_else(service_kit::request_id::generate);
        CommandContext {
            meta: EventMetadata {
                actor: caller.user_id.to_string(),
                trace_id,
                // Whole seconds: the contract's timestamps have no fractions, and the instant a
                // response shows must be the one the events carry.
                occurred_at: Utc::now().trunc_subsecs(0),
            },
            actor: caller.user_id.clone(),
        }
    }

    /// What the decisions see: who, and when.
    pub fn decider(&self) -> Context {
        Context {
            actor: self.actor.clone(),
            now: self.meta.occurred_at,
        }
    }

    /// `events` as the stream will hold them, to fold into the state a response shows.
    pub fn recorded(&self, events: &[MusicEvent]) -> Vec<Recorded> {
        events
            .iter()
            .map(|event| Recorded {
                event: event.clone(),
                occurred_at: self.meta.occurred_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use events::event::ShareRevoked;
    use events::ids::ShareLinkId;
    use events::store::memory::MemoryEventStore;
    use events::MusicEvent;

    use super::*;

    fn runner() -> Runner {
        Runner::new(
            Arc::new(MemoryEventStore::new()),
            ProjectorProgress::disabled(),
        )
    }

    fn ctx() -> CommandContext {
        CommandContext {
            meta: EventMetadata {
                actor: "usr_0000000000a1".into(),
                trace_id: "req_runnertest00000000".into(),
                occurred_at: Utc::now().trunc_subsecs(0),
            },
            actor: UserId::parse("usr_0000000000a1").expect("an id"),
        }
    }

    fn revoked() -> MusicEvent {
        MusicEvent::ShareRevoked(ShareRevoked {
            share_id: ShareLinkId::parse("mslink_000000000055").expect("an id"),
        })
    }

    #[tokio::test]
    async fn a_decision_is_appended_at_the_version_read_and_nothing_when_it_changes_nothing() {
        let runner = runner();
        let stream = StreamId::new("share-mslink_000000000055");
        for _ in 0..3 {
            runner
                .on_stream(&ctx(), &stream, |history| {
                    // Decide from the history: append only to an empty stream.
                    let events = if history.events.is_empty() {
                        vec![revoked()]
                    } else {
                        Vec::new()
                    };
                    Ok((events, ()))
                })
                .await
                .expect("decided");
        }
        let history = runner.read(&stream).await.expect("read");
        assert_eq!(history.version, 1);
        assert_eq!(history.events[0].event, revoked());
    }

    #[tokio::test]
    async fn a_rejection_is_the_answer_and_appends_nothing() {
        let runner = runner();
        let stream = StreamId::new("track-mtrack_00000000000a");
        let refused = runner
            .on_stream(&ctx(), &stream, |_| -> Result<(Vec<MusicEvent>, ()), _> {
                Err(Rejection::not_found("track_id", "mtrack_00000000000a"))
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.status().as_u16(), 404);
        assert_eq!(runner.read(&stream).await.expect("read").version, 0);
    }

    #[tokio::test]
    async fn a_lost_race_is_decided_again_and_a_stream_that_keeps_changing_is_a_503() {
        let runner = runner();
        let stream = StreamId::new("share-mslink_000000000055");
        runner
            .store()
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new(&revoked(), &ctx().meta)],
            )
            .await
            .expect("someone else's event");
        // The first attempt decides from a stale view (an empty stream), the second from the
        // stream as it is.
        let attempts = AtomicU32::new(0);
        let (runner_ref, stream_ref, attempts_ref) = (&runner, &stream, &attempts);
        let answer = runner
            .new_stream(&ctx(), move || async move {
                let round = attempts_ref.fetch_add(1, Ordering::SeqCst);
                let history = runner_ref.read(stream_ref).await?;
                let version = if round == 0 { 0 } else { history.version };
                Ok(Decision {
                    stream: stream_ref.clone(),
                    expected: ExpectedVersion::after(version),
                    events: vec![revoked()],
                    claim: None,
                    answer: round,
                })
            })
            .await
            .expect("decided again");
        assert_eq!(answer, 1);
        assert_eq!(runner.read(&stream).await.expect("read").version, 2);

        let always_stale = runner
            .new_stream(&ctx(), || async {
                Ok(Decision {
                    stream: StreamId::new("share-mslink_000000000055"),
                    expected: ExpectedVersion::NoStream,
                    events: vec![revoked()],
                    claim: None,
                    answer: (),
                })
            })
            .await
            .expect_err("gives up");
        assert_eq!(always_stale.status().as_u16(), 503);
    }
}
