//! The event store: one abstraction, two backends for operators (PostgreSQL, KurrentDB) and one
//! in memory for tests (feature `memory`).
//!
//! The contract every backend keeps (and `tests/tests/event_store.rs` checks):
//! - an append to a stream names the version it expects; a stale expectation is
//!   [`StoreError::Conflict`], never a silent overwrite;
//! - a multi-event append is all-or-nothing;
//! - the global log is read in [`Position`] order, and a reader that has seen position N never
//!   later finds an event below N appear (readers may keep a checkpoint and trust it);
//! - wake-ups are only a hint that something was committed; readers still poll.
//!
//! The PostgreSQL backend also takes a [`Claim`] with an append: a row of its caller's own
//! unique index written in the append's transaction (see [`EventStore::append_claiming`]).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::envelope::{NewEvent, RecordedEvent, StreamId};

pub mod postgres;

#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;

#[cfg(feature = "memory")]
pub mod memory;

/// A place in the global log. 0 is before the first event; positions grow strictly along the log
/// but need not be dense (KurrentDB's are byte offsets).
pub type Position = u64;

/// What the writer believes the stream looks like before its append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check. For tools and tests only: commands always state what they decided from.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must hold exactly this many events.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation that matches a stream of which `version` events were read (0 = none).
    pub fn after(version: u64) -> Self {
        if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        }
    }
}

impl ExpectedVersion {
    /// `Ok` if a stream of `actual` events meets this expectation, else the conflict, for the
    /// backends that check it themselves.
    pub fn check(self, stream: &StreamId, actual: u64) -> Result<(), StoreError> {
        let met = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(version) => actual == version,
        };
        if met {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                stream: stream.clone(),
                expected: self,
                actual,
            })
        }
    }
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append.
    pub stream_version: u64,
    /// Global position of the last event appended (of the stream's head, for an empty append).
    pub last_position: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version: someone else appended first. Reload, decide
    /// again, retry.
    #[error("stream {stream} is at version {actual}, not at the expected {expected:?}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// The backend cannot be reached right now; nothing was appended. Retry later (HTTP 503).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is unacceptable (an empty stream name, a payload that is not a JSON
    /// object); retrying will not help.
    #[error("event store refused the request: {0}")]
    Rejected(String),
    /// Anything else the backend reported.
    #[error("event store error: {0}")]
    Backend(String),
    /// The append's [`Claim`] names a key that is already taken; nothing was appended. Decide
    /// again with a new key.
    #[error("the key claimed with an append to {stream} is already taken")]
    ClaimTaken { stream: StreamId },
}

/// A row of the caller's own unique index (a share token's hash → its share) that an append
/// writes in its own transaction, so that the row and the events are committed together, in one
/// statement. The append is made only if the row is new: a taken key is
/// [`StoreError::ClaimTaken`] and appends nothing. A row whose append is refused for a stale
/// version stays, as a row written before a failed append would (the caller's index must
/// already allow that: its stream does not name the key). The table stays the caller's: the
/// store runs the caller's `insert` and knows nothing of its columns.
#[derive(Clone, Debug)]
pub struct Claim {
    /// Inserts the batch's rows, keys `$1` and owners `$2` (two `text[]` of equal length, e.g.
    /// `SELECT * FROM unnest($1::text[], $2::text[])`), `ON CONFLICT DO NOTHING`, `RETURNING`
    /// the key and the owner of each row it inserted. Fixed text, so that PostgreSQL prepares
    /// the statement once per connection.
    pub insert: &'static str,
    pub key: String,
    pub owner: String,
}

/// An append-only log of streams of events. The one trait in the system that exists before its
/// second implementation: operators choose the backend at start-up.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if the stream is at `expected`, all or nothing.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// [`append`](Self::append), with `claim` written in the same transaction (see [`Claim`]).
    /// Only a backend that keeps its log in the caller's own PostgreSQL database can; the others
    /// refuse, and their callers write their index on their own.
    async fn append_claiming(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claim: Claim,
    ) -> Result<AppendOutcome, StoreError> {
        let _ = (stream, expected, events, claim);
        Err(StoreError::Rejected(
            "this event store cannot write a claim with an append".to_owned(),
        ))
    }

    /// Every event of one stream, in stream order. An absent stream is empty.
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `max` events of the global log after `after`, in order.
    async fn read_all(&self, after: Position, max: usize)
        -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last committed event (0 when the log is empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// A receiver that changes (to a recent head position) when new events are committed.
    /// Only a hint: wake-ups may be lost or coalesced, so readers also poll.
    fn wake_ups(&self) -> watch::Receiver<Position>;
}

/// What every backend refuses before it touches the log: stream names it cannot hold, versions
/// beyond the log's range (both backends count in signed 64 bits), payloads that are not objects.
fn validate(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if stream.as_str().is_empty() || stream.as_str().len() > 200 {
        return Err(StoreError::Rejected(
            "a stream name must be 1 to 200 bytes".to_owned(),
        ));
    }
    if let ExpectedVersion::Exact(v) = expected {
        if i64::try_from(v).is_err() {
            return Err(StoreError::Rejected(format!(
                "{v} is beyond the log's range"
            )));
        }
    }
    if let Some(bad) = events.iter().find(|e| !e.payload.is_object()) {
        return Err(StoreError::Rejected(format!(
            "event {} ({}) has a payload that is not a JSON object",
            bad.event_id, bad.event_type
        )));
    }
    Ok(())
}

/// Which backend to use, from `EVENT_STORE` and `KURRENTDB_URL`.
#[derive(Clone, Debug)]
pub enum Backend {
    Postgres,
    KurrentDb { url: String },
}

impl Backend {
    /// `EVENT_STORE` is `postgres` (default) or `kurrentdb`, which needs `KURRENTDB_URL`.
    pub fn from_settings(event_store: &str, kurrentdb_url: Option<&str>) -> Result<Self, String> {
        match event_store {
            "" | "postgres" => Ok(Backend::Postgres),
            "kurrentdb" => match kurrentdb_url {
                Some(url) if !url.is_empty() => Ok(Backend::KurrentDb {
                    url: url.to_owned(),
                }),
                _ => Err("EVENT_STORE=kurrentdb needs KURRENTDB_URL".to_owned()),
            },
            other => Err(format!(
                "EVENT_STORE must be `postgres` or `kurrentdb`, not {other:?}"
            )),
        }
    }
}

/// Opens the chosen backend. `pool` is the service's PostgreSQL pool (already migrated); the
/// PostgreSQL backend keeps its log there.
pub async fn open(
    backend: &Backend,
    pool: sqlx::PgPool,
) -> Result<Arc<dyn EventStore>, StoreError> {
    match backend {
        Backend::Postgres => Ok(Arc::new(postgres::PostgresEventStore::new(pool))),
        #[cfg(feature = "kurrentdb")]
        Backend::KurrentDb { url } => Ok(Arc::new(
            kurrentdb::KurrentDbEventStore::connect(url).await?,
        )),
        #[cfg(not(feature = "kurrentdb"))]
        Backend::KurrentDb { .. } => {
            let _ = pool;
            Err(StoreError::Rejected(
                "this build has no KurrentDB backend; rebuild with `--features kurrentdb`"
                    .to_owned(),
            ))
        }
    }
}

/// Wake-ups from a backend that must follow its appends in a task of its own: the task starts
/// on the first call, once per store, and every caller gets a receiver of the same channel.
pub(crate) fn wake_ups_following<F>(
    started: &std::sync::OnceLock<tokio::sync::watch::Receiver<Position>>,
    follow: impl FnOnce(tokio::sync::watch::Sender<Position>) -> F,
) -> tokio::sync::watch::Receiver<Position>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    started
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(0);
            tokio::spawn(follow(tx));
            rx
        })
        .clone()
}
