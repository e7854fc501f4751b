//! From stored envelopes to events the projector can apply, and the one error that stops it.
//!
//! An event this build cannot read (an unknown type, a newer schema version, a malformed payload,
//! a licence catalogue version it does not know) is never skipped: skipping would make the read
//! models a function of the log *and* of which build happened to read it. The batch is cut just
//! before it, what comes before is applied, and the projector stops naming the event.

use chrono::{DateTime, Utc};
use events::{DecodeError, MusicEvent, Position, RecordedEvent};
use uuid::Uuid;

/// An event ready to apply, with the envelope fields projections may use.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub position: Position,
    pub event_id: Uuid,
    /// The only clock projections read: never `now()`, so a rebuild reproduces every value.
    pub occurred_at: DateTime<Utc>,
    pub event: MusicEvent,
}

/// Why the projector stopped. Names the event so an operator can find it (`projector replay`).
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "cannot project event {event_id} of type {event_type} at position {position}: {reason}. \
     The projector stops here instead of skipping it; deploy a build that knows this event"
)]
pub struct Unprojectable {
    pub position: Position,
    pub event_id: Uuid,
    pub event_type: String,
    pub reason: String,
}

impl Unprojectable {
    pub fn new(event: &RecordedEvent, reason: impl Into<String>) -> Self {
        Unprojectable {
            position: event.global_position,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            reason: reason.into(),
        }
    }

    /// For an event that decoded but cannot be applied (say, an unknown licence catalogue).
    pub fn decoded(event: &Decoded, reason: impl Into<String>) -> Self {
        Unprojectable {
            position: event.position,
            event_id: event.event_id,
            event_type: event.event.event_type().to_owned(),
            reason: reason.into(),
        }
    }
}

/// Events read after one checkpoint, decoded up to the first one that cannot be.
#[derive(Debug)]
pub struct Batch {
    /// The checkpoint the events were read after: the batch applies only on top of it.
    pub after: Position,
    pub events: Vec<Decoded>,
    /// The event the batch was cut before, if any.
    pub stop: Option<Unprojectable>,
}

impl Batch {
    pub fn decode(after: Position, recorded: Vec<RecordedEvent>) -> Batch {
        let mut events = Vec::with_capacity(recorded.len());
        let mut stop = None;
        for event in recorded {
            match event.decode() {
                Ok(decoded) => events.push(Decoded {
                    position: event.global_position,
                    event_id: event.event_id,
                    occurred_at: event.occurred_at,
                    event: decoded,
                }),
                Err(e) => {
                    stop = Some(Unprojectable::new(&event, reason(&e)));
                    break;
                }
            }
        }
        Batch {
            after,
            events,
            stop,
        }
    }

    /// The position of the last event read, applicable or not.
    pub fn last_position(&self) -> Position {
        self.events.last().map_or(self.after, |e| e.position)
    }
}

fn reason(e: &DecodeError) -> String {
    match e {
        DecodeError::UnknownType { .. } => {
            "this build does not know the type (written by a newer producer?)".to_owned()
        }
        DecodeError::UnsupportedVersion { schema_version, .. } => {
            format!("schema version {schema_version} is newer than this build can read")
        }
        DecodeError::Malformed { reason, .. } => format!("malformed payload: {reason}"),
    }
}
