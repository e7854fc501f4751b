//! The command API over HTTP, started alone on its own database (no projector, so no command
//! waits for one). One test binary for the whole process: one link, and its tests share a run.

#[path = "../command_support/mod.rs"]
mod command_support;

mod auth;
mod collections;
mod read_your_writes;
mod secrets;
mod shares;
mod tracks;
