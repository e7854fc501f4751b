//! The event log of music-share, and the vocabulary every other crate speaks.
//!
//! This crate owns the domain events (what happened to tracks, collections, share links and
//! libraries), the versioned envelope they travel in, the upcasting that lets old payloads be read
//! by new code, and the [`EventStore`](store::EventStore) abstraction with its PostgreSQL (default)
//! and KurrentDB backends. It also holds the few product facts that both sides of the system need
//! to agree on: id formats, share tokens and their hashes, and the licence catalogue.
//!
//! It must not know about HTTP, read models or NATS: it is the part every process shares, so it
//! stays small and free of any one process's concerns.

pub mod audit;
pub mod envelope;
pub mod event;
pub mod format;
pub mod ids;
pub mod licence;
pub mod notice;
pub mod share_token;
pub mod store;
mod upcast;

pub use envelope::{EventMetadata, NewEvent, RecordedEvent, StreamId};
pub use event::{DecodeError, MusicEvent};
pub use store::{AppendOutcome, EventStore, ExpectedVersion, Position, StoreError};
