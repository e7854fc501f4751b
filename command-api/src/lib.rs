//! The command API: authenticated writes.
//!
//! It owns the decisions: a command loads the streams it needs from the event store, decides, and
//! appends with the version it decided from. It also owns the identity tables and the small
//! indexes it needs to decide (the share-token index). It must never read the projector's tables:
//! the command side keeps working while the projector is down.

pub mod app;
pub mod cli;
