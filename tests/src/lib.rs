//! The test harness: real PostgreSQL databases, real NATS servers (one, or a cluster), real
//! Redis and the real service binaries.
//!
//! One way to start, seed and call a test's world: [`app::TestApp::builder`] makes its own
//! database, directory and environment, then starts the processes the test needs — the whole
//! system ([`stack::Stack`]), the command API alone ([`command::CommandApi`]) or the projector
//! with query API instances ([`query::QueryEnv`]). Seeds go through the command API or as
//! events appended to the store and projected by the real projector, never as rows written
//! into the read models. Services are started as processes on port 0 and found through the
//! address they log ([`process`]); tests that stop a server start a private one
//! ([`nats::PrivateNats`], [`postgres::PrivatePostgres`]) and never touch the shared ones.
//! Sizes of heavy tests come from [`scale`], which CI sets small.
//!
//! The tests themselves are four binaries, one per process and one for the whole system:
//! `tests/tests/{command,projector,query,system}/main.rs`.

pub mod app;
pub mod audio;
pub mod audit;
pub mod browser;
pub mod command;
pub mod conformance;
pub mod db;
pub mod log;
pub mod nats;
pub mod nats_cluster;
pub mod postgres;
pub mod process;
pub mod query;
pub mod read_model;
pub mod redis;
pub mod stack;

/// A size for a heavy test: `MS_TEST_SCALE` (a fraction, default 1.0) times `full`, at least 1.
pub fn scale(full: usize) -> usize {
    let factor = std::env::var("MS_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| *f > 0.0)
        .unwrap_or(1.0);
    ((full as f64 * factor).round() as usize).max(1)
}
