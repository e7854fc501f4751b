//! The event log of music-share, and the vocabulary every other crate speaks.
//!
//! This crate owns the domain events (what happened to tracks, collections, share links and
//! libraries), the versioned envelope they travel in, the upcasting that lets old payloads be read
//! by new code, and the [`EventStore`](store::EventStore) abstraction with its PostgreSQL (default)
//! and KurrentDB backends. It also holds the few product facts that both sides of the system need
//! to agree on: id formats, share tokens and their hashes, the licence catalogue, the one judge of
//! whether a share link is active ([`link`]), and the views taken of limited links
//! ([`share_usage`], the one counter the query side keeps and the command side reads).
//!
//! It must not know about HTTP, read models or NATS: it is the part every process shares, so it
//! stays small and free of any one process's concerns.

pub mod audit;
pub mod envelope;
pub mod event;
pub mod format;
pub mod ids;
pub mod licence;
pub mod link;
pub mod notice;
pub mod password;
pub mod share_token;
pub mod share_usage;
pub mod store;
mod upcast;

pub use envelope::{EventMetadata, NewEvent, RecordedEvent, StreamId};
pub use event::{DecodeError, MusicEvent};
pub use store::{AppendOutcome, Claim, EventStore, ExpectedVersion, Position, StoreError};
