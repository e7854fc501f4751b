//! The projector: the only writer of the read models.
//!
//! It reads the event log in global order, and nothing else, and turns it into the tables the
//! query API serves (schema `read_model`), advancing its checkpoint in the same transaction as
//! the effects so a crash can neither skip nor repeat one. It must never append events and never
//! touch the tables other parts own (`identity`, `command_side`, `query_side`).

pub mod cli;
