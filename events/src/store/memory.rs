//! An event store in this process's memory (feature `memory`), for tests of anything that
//! needs a store but not PostgreSQL. It keeps the same contract as the other backends (the
//! conformance suite in `tests/src/conformance.rs` runs against it too): an append checks the
//! expected version and lands whole under one lock, positions are dense and grow along the log,
//! and every append wakes readers. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{validate, AppendOutcome, EventStore, ExpectedVersion, Position, StoreError};
use crate::envelope::{NewEvent, RecordedEvent, StreamId};

pub struct MemoryEventStore {
    log: Mutex<Log>,
    head: watch::Sender<Position>,
}

#[derive(Default)]
struct Log {
    /// The global log: the event at index `i` has position `i + 1`.
    events: Vec<RecordedEvent>,
    /// Each stream's events, as indexes into `events`, in stream order.
    streams: HashMap<StreamId, Vec<usize>>,
}

impl MemoryEventStore {
    pub fn new() -> Self {
        MemoryEventStore {
            log: Mutex::new(Log::default()),
            head: watch::channel(0).0,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave a half-written append: events are pushed
        // only after every check passed, so the log stays usable.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        new: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        validate(stream, expected, &new)?;
        let mut log = self.log();
        let indexes = log.streams.get(stream).map_or(&[][..], Vec::as_slice);
        let actual = indexes.len() as u64;
        let stream_head = indexes.last().map_or(0, |&i| i as Position + 1);
        expected.check(stream, actual)?;
        if new.is_empty() {
            return Ok(AppendOutcome {
                stream_version: actual,
                last_position: stream_head,
            });
        }
        let mut version = actual;
        for event in new {
            version += 1;
            let index = log.events.len();
            log.events.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                stream_version: version,
                global_position: index as Position + 1,
                event_type: event.event_type,
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                actor: event.actor,
                trace_id: event.trace_id,
                payload: event.payload,
            });
            log.streams.entry(stream.clone()).or_default().push(index);
        }
        let last_position = log.events.len() as Position;
        drop(log);
        self.head.send_replace(last_position);
        Ok(AppendOutcome {
            stream_version: version,
            last_position,
        })
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        Ok(log
            .streams
            .get(stream)
            .map(|indexes| indexes.iter().map(|&i| log.events[i].clone()).collect())
            .unwrap_or_default())
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        let from = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(log.events.iter().skip(from).take(max).cloned().collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(self.log().events.len() as Position)
    }

    fn wake_ups(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }
}
