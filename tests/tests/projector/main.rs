//! The projector process: what each event does to the read models, its failure mode and
//! operator commands, ordering under concurrency, crash safety, determinism and its change
//! notices. One test binary for the whole process.

mod commands;
mod concurrency;
mod crash;
mod determinism;
mod effects;
mod notices;
