//! The envelope every event travels in, on the way in ([`NewEvent`]) and out ([`RecordedEvent`]).
//!
//! The envelope is what the store understands; the payload is what the domain understands. The
//! store never looks inside a payload, which is why old payloads can wait in the log untouched
//! until [`RecordedEvent::decode`] upcasts them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, MusicEvent};
use crate::ids::{CollectionId, ShareLinkId, TrackId, UserId};
use crate::store::Position;
use crate::upcast;

/// A stream: the events of one aggregate, e.g. `share-mslink_8c4e2a9f1b73`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn track(id: &TrackId) -> Self {
        Self(format!("track-{id}"))
    }

    pub fn collection(id: &CollectionId) -> Self {
        Self(format!("collection-{id}"))
    }

    pub fn share(id: &ShareLinkId) -> Self {
        Self(format!("share-{id}"))
    }

    pub fn library(user: &UserId) -> Self {
        Self(format!("library-{user}"))
    }

    /// Any other stream name (tests, tools). Empty names are refused by the stores.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who did it, under which request, and when. Shared by every event one command appends.
#[derive(Clone, Debug)]
pub struct EventMetadata {
    /// A user id, or `system` for work nobody asked for.
    pub actor: String,
    /// The request id (`X-Request-Id`) of the command, so a log line, an HTTP response and an
    /// event can be tied together.
    pub trace_id: String,
    pub occurred_at: DateTime<Utc>,
}

/// An event about to be appended. Fields are public so tests and tools can write payloads of
/// any type and schema version, including ones this build cannot decode.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub trace_id: String,
}

impl NewEvent {
    /// Encodes a domain event at its current schema version, with a fresh UUID v7 id.
    pub fn new(event: &MusicEvent, meta: &EventMetadata) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: event.to_payload(),
            occurred_at: meta.occurred_at,
            actor: meta.actor.clone(),
            trace_id: meta.trace_id.clone(),
        }
    }
}

/// An event as the log holds it. Serializes as the envelope with the payload under `payload`,
/// which is the shape `projector replay` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    /// 1 for the first event of a stream; a stream's version is the number of events in it.
    pub stream_version: u64,
    /// Strictly increasing along the global log; see [`Position`].
    pub global_position: Position,
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub trace_id: String,
    pub payload: serde_json::Value,
}

impl RecordedEvent {
    /// Upcasts the payload to the current schema and decodes it. Errors name the event id and
    /// type, so an operator can find the one event a newer producer wrote.
    pub fn decode(&self) -> Result<MusicEvent, DecodeError> {
        let payload = upcast::to_current(
            self.event_id,
            &self.event_type,
            self.schema_version,
            &self.payload,
        )?;
        MusicEvent::decode_current(self.event_id, &self.event_type, payload)
    }

    /// The same envelope with its payload upcast to the current schema version (for tools that
    /// print events, so readers see one shape per type).
    pub fn upcast(&self) -> Result<RecordedEvent, DecodeError> {
        let event = self.decode()?;
        Ok(RecordedEvent {
            schema_version: event.schema_version(),
            payload: event.to_payload(),
            ..self.clone()
        })
    }
}
