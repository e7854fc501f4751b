//! The command API over HTTP, started alone on its own database (no projector, so no command
//! waits for one). One test binary for the whole process: one link, and its tests share a run.

// The old helper module, now re-exports of `tests::*`: compiled here so it keeps compiling for
// test files that still use it (it goes away after one release).
#[path = "../command_support/mod.rs"]
mod command_support;

mod auth;
mod collections;
mod domain;
mod read_your_writes;
mod secrets;
mod shares;
mod tracks;
