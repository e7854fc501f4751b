//! The projector: the only writer of the read models, and of the per-link statistics.
//!
//! It reads the event log in global order, and nothing else, and turns it into the tables the
//! query API serves (schema `read_model`), advancing its checkpoint in the same transaction as
//! the effects so a crash can neither skip nor repeat one. After each batch it tells listeners
//! what changed (change notices on NATS). It must never append events and never touch the
//! tables other parts own (`identity`, `command_side`, `query_side`), and the read models it
//! writes must stay a pure function of the log: `rebuild` reproduces them exactly.
//!
//! - [`subscription`]: the catch-up loop that keeps `read_model` current;
//! - [`decode`], [`apply`], [`batch`]: from stored events to one transaction of set-based SQL
//!   (or, for a rebuild's fill, of binary [`copy`]);
//! - [`notices`]: change notices and heartbeats;
//! - [`rebuild`], [`replay`], [`status`]: the operator commands;
//! - [`analytics`]: a second fold, of the audit stream into per-link statistics (schema
//!   `analytics`, never touched by a rebuild of the read models).

pub mod analytics;
pub mod apply;
pub mod batch;
pub mod cli;
pub mod copy;
pub mod decode;
pub mod notices;
pub mod rebuild;
pub mod replay;
pub mod schema;
pub mod status;
pub mod subscription;
