//! The test harness: real PostgreSQL databases, real NATS servers (one, or a cluster), real
//! Redis and the real service binaries.
//!
//! Every test gets its own database ([`db::TestDb`]), so tests run side by side; services are
//! started as processes on port 0 and found through the address they log ([`process`]); tests
//! that stop a server start a private one ([`nats::PrivateNats`]) and never touch the shared
//! ones. Sizes of heavy tests come from [`scale`], which CI sets small.

pub mod audio;
pub mod audit;
pub mod browser;
pub mod conformance;
pub mod db;
pub mod log;
pub mod nats;
pub mod nats_cluster;
pub mod postgres;
pub mod process;
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
