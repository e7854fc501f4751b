//! The KurrentDB (EventStoreDB) backend, behind the `kurrentdb` feature.
//!
//! Each stream of ours is a KurrentDB stream of the same name; an event keeps its id and type,
//! its payload is the event's JSON data, and the rest of the envelope (`schema_version`,
//! `occurred_at`, `actor`, `trace_id`) is the event's custom metadata, as JSON. Our stream
//! versions count events (1 for the first), KurrentDB's revisions count from 0.
//!
//! # Why an event's position is its log position
//! `$all` orders events by a (commit, prepare) pair of byte offsets in the transaction log; our
//! readers keep one `u64`. The server writes each append as consecutive records, one per event,
//! each flagged as committed on its own, from a single writer; `$all` reports such an event at
//! (p, p), p being the offset of its own record, so even the events of one multi-event append
//! have distinct, increasing positions (KurrentDB's `AllReader` and `StorageWriterService`).
//! Only explicit transactions of the retired TCP protocol gave several events one commit
//! position with prepare positions that need not grow along `$all`; this client cannot write
//! them, and an event whose two positions differ is refused loudly rather than mis-ordered.
//! So the `u64` is p. Reading `$all` forward from (p, p) starts at that event's record
//! (inclusive), which [`read_all`](KurrentDbEventStore::read_all) drops; the first record of a
//! log is always an epoch record, never an event, so 0 can stand for "before everything".
//!
//! A reader may trust a position as it trusts PostgreSQL's: the server serves `$all` only up to
//! its last indexed position, and indexing advances in log order, so once position p is visible
//! everything below it is too. An append's result carries the commit position of its last
//! record, which is that last event's p.
//!
//! # Why the client is rebuilt
//! The crate's connection task gives up for good once a (re)connection fails (after a few quick
//! attempts), and every later call then fails with `ConnectionClosed`. A client that
//! fails that way is replaced by a fresh one, so an outage of any length ends with the server's
//! return. Only a client whose task has given up is replaced: a live one keeps a handle to its
//! own task, which would then never end.
//!
//! # Wake-ups
//! One task per store follows a filtered `$all` subscription from its end and reconnects
//! forever. Like PostgreSQL's notifications it is only a hint: it wakes readers once on every
//! (re)subscription, since appends made while it was away are not replayed.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData,
    Position as LogPosition, ReadAllOptions, ReadStreamOptions, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{validate, AppendOutcome, EventStore, ExpectedVersion, Position, StoreError};
use crate::envelope::{NewEvent, RecordedEvent, StreamId};

/// The crate sets no deadline on reads (their answers are streamed); a server that stops
/// answering must not hold a caller forever.
const READ_DEADLINE: Duration = Duration::from_secs(30);

pub struct KurrentDbEventStore {
    connection: Arc<Connection>,
    wake_ups: OnceLock<watch::Receiver<Position>>,
}

/// The envelope fields KurrentDB has no place for, kept as the event's custom metadata.
#[derive(Serialize, Deserialize)]
struct EnvelopeMetadata {
    schema_version: i32,
    occurred_at: DateTime<Utc>,
    actor: String,
    trace_id: String,
}

impl KurrentDbEventStore {
    /// Connects to the server in `url` (`kurrentdb://host:2113?tls=false`, or with
    /// `user:password@` and TLS on a secure server) and checks that the log can be read: the user
    /// must be allowed to read `$all`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let settings = connection_settings(url)?;
        let client = Client::new(settings.clone()).map_err(|e| {
            StoreError::Rejected(format!(
                "cannot set up a KurrentDB client from KURRENTDB_URL: {e}"
            ))
        })?;
        let store = Self {
            connection: Arc::new(Connection {
                settings,
                current: Mutex::new((0, client)),
            }),
            wake_ups: OnceLock::new(),
        };
        store.head().await.map_err(|e| match e {
            StoreError::Unavailable(cause) => {
                StoreError::Unavailable(format!("cannot reach KurrentDB: {cause}"))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// An empty append writes nothing (KurrentDB would log an empty record): it only checks the
    /// expectation against the stream's last event.
    async fn check_without_appending(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendOutcome, StoreError> {
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .max_count(1)
            .deadline(READ_DEADLINE);
        let (generation, client) = self.connection.client();
        let last = async {
            let mut read = client.read_stream(stream.as_str(), &options).await?;
            read.next().await
        }
        .await;
        let last = match last {
            Ok(last) => last,
            Err(kurrentdb::Error::ResourceNotFound) => None,
            Err(e) => return Err(self.connection.failed(generation, e)),
        };
        let (version, position) = match last.as_ref().and_then(|e| e.event.as_ref()) {
            Some(event) => (event.revision + 1, position_of(event)?),
            None => (0, 0),
        };
        expected.check(stream, version)?;
        Ok(AppendOutcome {
            stream_version: version,
            last_position: position,
        })
    }
}

#[async_trait]
impl EventStore for KurrentDbEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        validate(stream, expected, &events)?;
        if stream.as_str().starts_with('$') {
            return Err(StoreError::Rejected(format!(
                "stream {stream}: names starting with `$` are KurrentDB's system streams"
            )));
        }
        if events.is_empty() {
            return self.check_without_appending(stream, expected).await;
        }
        let data = events
            .iter()
            .map(event_data)
            .collect::<Result<Vec<_>, _>>()?;
        let options = AppendToStreamOptions::default().stream_state(stream_state(expected));
        let (generation, client) = self.connection.client();
        match client
            .append_to_stream(stream.as_str(), &options, data)
            .await
        {
            Ok(written) => Ok(AppendOutcome {
                stream_version: written.next_expected_version + 1,
                last_position: written.position.commit,
            }),
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: stream_version(current),
                })
            }
            Err(e) => Err(self.connection.failed(generation, e)),
        }
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Start)
            .deadline(READ_DEADLINE);
        let (generation, client) = self.connection.client();
        let read = async {
            let mut read = client.read_stream(stream.as_str(), &options).await?;
            let mut events = Vec::new();
            while let Some(resolved) = read.next().await? {
                events.push(resolved);
            }
            Ok(events)
        }
        .await;
        let resolved = match read {
            Ok(resolved) => resolved,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(kurrentdb::Error::ResourceDeleted) => {
                return Err(StoreError::Backend(format!(
                    "stream {stream} was deleted in KurrentDB; this system never deletes streams"
                )))
            }
            Err(e) => return Err(self.connection.failed(generation, e)),
        };
        resolved
            .iter()
            .filter_map(|r| r.event.as_ref())
            .map(recorded_event)
            .collect()
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // The read starts at `after`'s own event, hence one more than asked.
        let options = ReadAllOptions::default()
            .forwards()
            .position(resume_from(after))
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(max.saturating_add(1))
            .deadline(READ_DEADLINE);
        let (generation, client) = self.connection.client();
        let read = async {
            let mut read = client.read_all(&options).await?;
            let mut resolved = Vec::new();
            while let Some(event) = read.next().await? {
                resolved.push(event);
            }
            Ok(resolved)
        }
        .await;
        let resolved = read.map_err(|e| self.connection.failed(generation, e))?;
        let mut events: Vec<RecordedEvent> = Vec::with_capacity(resolved.len());
        for event in resolved.iter().filter_map(|r| r.event.as_ref()) {
            let event = recorded_event(event)?;
            let last = events.last().map_or(after, |e| e.global_position);
            if events.is_empty() && event.global_position == after {
                continue;
            }
            if event.global_position <= last {
                return Err(StoreError::Backend(format!(
                    "KurrentDB returned $all out of order: {} after {last}",
                    event.global_position
                )));
            }
            if events.len() == max {
                break;
            }
            events.push(event);
        }
        Ok(events)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(1)
            .deadline(READ_DEADLINE);
        let (generation, client) = self.connection.client();
        let last = async {
            let mut read = client.read_all(&options).await?;
            read.next().await
        }
        .await
        .map_err(|e| self.connection.failed(generation, e))?;
        match last.as_ref().and_then(|r| r.event.as_ref()) {
            Some(event) => position_of(event),
            None => Ok(0),
        }
    }

    fn wake_ups(&self) -> watch::Receiver<Position> {
        let connection = self.connection.clone();
        super::wake_ups_following(&self.wake_ups, |tx| follow_appends(connection, tx))
    }
}

/// The client in use, and how many times it has been replaced.
struct Connection {
    settings: ClientSettings,
    current: Mutex<(u64, Client)>,
}

impl Connection {
    fn client(&self) -> (u64, Client) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// Turns a failure of the client of `generation` into a [`StoreError`], replacing that client
    /// first if its connection task has given up (see the module doc).
    fn failed(&self, generation: u64, error: kurrentdb::Error) -> StoreError {
        if matches!(
            error,
            kurrentdb::Error::ConnectionClosed | kurrentdb::Error::GrpcConnectionError(_)
        ) {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            // Another caller may have replaced it already; the new one may be connected.
            if current.0 == generation {
                match Client::new(self.settings.clone()) {
                    Ok(client) => *current = (generation + 1, client),
                    Err(e) => tracing::warn!(error = %e, "cannot set up a new KurrentDB client"),
                }
            }
        }
        store_error(error)
    }
}

/// Follows `$all` (user events only) from its end and reports each event's position. Reconnects
/// forever; after each (re)subscription it wakes readers once, since appends made while it was
/// away are not replayed.
async fn follow_appends(connection: Arc<Connection>, wake: watch::Sender<Position>) {
    loop {
        let (generation, client) = connection.client();
        tokio::select! {
            error = follow(&client, &wake) => {
                let error = connection.failed(generation, error);
                tracing::warn!(%error, "event store wake-up subscription ended; resubscribing");
            }
            _ = wake.closed() => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One subscription, until it fails.
async fn follow(client: &Client, wake: &watch::Sender<Position>) -> kurrentdb::Error {
    let options = SubscribeToAllOptions::default()
        .position(StreamPosition::End)
        .filter(SubscriptionFilter::on_event_type().exclude_system_events());
    let mut subscription = client.subscribe_to_all(&options).await;
    loop {
        match subscription.next_subscription_event().await {
            Err(e) => return e,
            Ok(SubscriptionEvent::Confirmed(_)) => wake.send_modify(|_| {}),
            Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                let head = resolved.event.as_ref().map(position_of);
                if let Some(Ok(head)) = head {
                    wake.send_if_modified(|seen| {
                        let newer = head > *seen;
                        if newer {
                            *seen = head;
                        }
                        newer
                    });
                }
            }
            Ok(_) => {}
        }
    }
}

fn connection_settings(url: &str) -> Result<ClientSettings, StoreError> {
    url.parse()
        .map_err(|e: kurrentdb::ClientSettingsParseError| {
            // The error carries the whole string when it is not a URL at all, and the string may
            // hold a password: only the reason is shown then.
            let reason = match e.error() {
                Some(not_a_url) => not_a_url.to_string(),
                None => e.message().to_owned(),
            };
            StoreError::Rejected(format!(
                "KURRENTDB_URL is not a KurrentDB connection string: {reason}"
            ))
        })
}

fn event_data(event: &NewEvent) -> Result<EventData, StoreError> {
    let metadata = EnvelopeMetadata {
        schema_version: event.schema_version,
        occurred_at: event.occurred_at,
        actor: event.actor.clone(),
        trace_id: event.trace_id.clone(),
    };
    let unencodable = |e: serde_json::Error| {
        StoreError::Rejected(format!(
            "event {} ({}) cannot be encoded: {e}",
            event.event_id, event.event_type
        ))
    };
    EventData::json(&event.event_type, &event.payload)
        .map_err(unencodable)?
        .id(event.event_id)
        .metadata_as_json(&metadata)
        .map_err(unencodable)
}

fn recorded_event(event: &kurrentdb::RecordedEvent) -> Result<RecordedEvent, StoreError> {
    let unreadable = |what: &str, e: serde_json::Error| {
        StoreError::Backend(format!(
            "event {} ({}) in stream {} has {what} this system cannot read: {e}",
            event.id,
            event.event_type,
            event.stream_id()
        ))
    };
    let metadata: EnvelopeMetadata = serde_json::from_slice(&event.custom_metadata)
        .map_err(|e| unreadable("envelope metadata", e))?;
    let payload = serde_json::from_slice(&event.data).map_err(|e| unreadable("a payload", e))?;
    Ok(RecordedEvent {
        event_id: event.id,
        stream_id: StreamId::new(event.stream_id()),
        stream_version: event.revision + 1,
        global_position: position_of(event)?,
        event_type: event.event_type.clone(),
        schema_version: metadata.schema_version,
        occurred_at: metadata.occurred_at,
        actor: metadata.actor,
        trace_id: metadata.trace_id,
        payload,
    })
}

fn position_of(event: &kurrentdb::RecordedEvent) -> Result<Position, StoreError> {
    global_position(event.position).ok_or_else(|| {
        StoreError::Backend(format!(
            "event {} ({}) in stream {} has no single log position ({}): it was written in an \
             explicit transaction, or the server does not report positions on stream reads \
             (KurrentDB and EventStoreDB since 2022 do)",
            event.id,
            event.event_type,
            event.stream_id(),
            event.position
        ))
    })
}

/// Our position of an event at `position` in `$all`: its log position, when the event has one of
/// its own (see the module doc). `u64::MAX` is how the server says "no position".
fn global_position(position: LogPosition) -> Option<Position> {
    (position.commit == position.prepare && position.prepare != u64::MAX)
        .then_some(position.prepare)
}

/// Where a forward read of `$all` must start to see every event after `after` (and the event at
/// `after` itself, which the caller drops).
fn resume_from(after: Position) -> StreamPosition<LogPosition> {
    if after == 0 {
        StreamPosition::Start
    } else {
        StreamPosition::Position(LogPosition {
            commit: after,
            prepare: after,
        })
    }
}

/// KurrentDB counts revisions from 0 and has no empty streams: "holds 0 events" is "no stream".
fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        ExpectedVersion::Any => StreamState::Any,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => StreamState::NoStream,
        ExpectedVersion::Exact(n) => StreamState::StreamRevision(n - 1),
    }
}

/// The number of events in a stream whose last revision is `current`.
fn stream_version(current: CurrentRevision) -> u64 {
    match current {
        CurrentRevision::NoStream => 0,
        CurrentRevision::Current(revision) => revision + 1,
    }
}

fn store_error(e: kurrentdb::Error) -> StoreError {
    use kurrentdb::Error as E;
    match e {
        E::ServerError(_)
        | E::ConnectionClosed
        | E::GrpcConnectionError(_)
        | E::NotLeaderException(_)
        | E::DeadlineExceeded => StoreError::Unavailable(e.to_string()),
        E::Grpc { code, .. } if grpc_code_is_transient(code as i32) => {
            StoreError::Unavailable(e.to_string())
        }
        E::Grpc { code, .. } if grpc_code_is_a_refusal(code as i32) => {
            StoreError::Rejected(e.to_string())
        }
        E::AccessDenied => StoreError::Rejected(
            "KurrentDB refused access: the user in KURRENTDB_URL must be allowed to read $all \
             and write the application's streams"
                .to_owned(),
        ),
        other => StoreError::Backend(other.to_string()),
    }
}

/// gRPC's standard codes (the crate maps Unavailable, Internal and Unknown itself): Cancelled,
/// ResourceExhausted, Aborted.
fn grpc_code_is_transient(code: i32) -> bool {
    matches!(code, 1 | 8 | 10)
}

/// InvalidArgument (e.g. an append over the server's size limit), FailedPrecondition, OutOfRange.
fn grpc_code_is_a_refusal(code: i32) -> bool {
    matches!(code, 3 | 9 | 11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_written_by_append_is_at_its_log_position() {
        let at = |commit, prepare| LogPosition { commit, prepare };
        assert_eq!(global_position(at(4_096, 4_096)), Some(4_096));
        // Explicit transactions share a commit position: no single u64 orders them.
        assert_eq!(global_position(at(9_000, 4_096)), None);
        // The server's "no position".
        assert_eq!(global_position(at(u64::MAX, u64::MAX)), None);
    }

    #[test]
    fn reading_resumes_at_the_event_last_seen() {
        assert_eq!(resume_from(0), StreamPosition::Start);
        assert_eq!(
            resume_from(4_096),
            StreamPosition::Position(LogPosition {
                commit: 4_096,
                prepare: 4_096
            })
        );
    }

    #[test]
    fn versions_count_events_and_revisions_count_from_zero() {
        assert_eq!(stream_state(ExpectedVersion::Any), StreamState::Any);
        assert_eq!(
            stream_state(ExpectedVersion::NoStream),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(0)),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(1)),
            StreamState::StreamRevision(0)
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(7)),
            StreamState::StreamRevision(6)
        );
        assert_eq!(stream_version(CurrentRevision::NoStream), 0);
        assert_eq!(stream_version(CurrentRevision::Current(0)), 1);
        assert_eq!(stream_version(CurrentRevision::Current(6)), 7);
    }

    #[test]
    fn the_envelope_survives_the_round_trip_through_custom_metadata() {
        let written = EnvelopeMetadata {
            schema_version: 2,
            occurred_at: "2026-06-28T10:30:00.123456789Z".parse().expect("a time"),
            actor: "usr_0123456789ab".to_owned(),
            trace_id: "req_0123".to_owned(),
        };
        let bytes = serde_json::to_vec(&written).expect("encodes");
        let read: EnvelopeMetadata = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(read.schema_version, 2);
        assert_eq!(read.occurred_at, written.occurred_at);
        assert_eq!(read.actor, written.actor);
        assert_eq!(read.trace_id, written.trace_id);
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_unavailable() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let started = std::time::Instant::now();
        let refused = KurrentDbEventStore::connect("kurrentdb://127.0.0.1:1?tls=false")
            .await
            .err()
            .expect("no server");
        assert!(
            matches!(refused, StoreError::Unavailable(_)),
            "expected Unavailable, got {refused:?}"
        );
        assert!(started.elapsed() < READ_DEADLINE, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_client_that_gave_up_is_replaced_so_the_next_call_tries_again() {
        let settings: ClientSettings = "kurrentdb://127.0.0.1:1?tls=false".parse().expect("valid");
        let client = Client::new(settings.clone()).expect("a client");
        let store = KurrentDbEventStore {
            connection: Arc::new(Connection {
                settings,
                current: Mutex::new((0, client)),
            }),
            wake_ups: OnceLock::new(),
        };
        for attempt in 1..=2 {
            match store.head().await {
                // The crate's own client would answer "Connection is closed" from the second
                // call on, without trying again.
                Err(StoreError::Unavailable(cause)) => {
                    assert!(!cause.contains("closed"), "attempt {attempt}: {cause}")
                }
                other => panic!("attempt {attempt}: expected Unavailable, got {other:?}"),
            }
            assert_eq!(store.connection.client().0, attempt);
        }
    }

    #[tokio::test]
    async fn a_connection_string_that_is_not_a_url_is_refused_without_echoing_it() {
        let refused = KurrentDbEventStore::connect("kurrentdb://admin:s3cret@host:notaport")
            .await
            .err()
            .expect("refused");
        match refused {
            StoreError::Rejected(message) => assert!(!message.contains("s3cret"), "{message}"),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
}
