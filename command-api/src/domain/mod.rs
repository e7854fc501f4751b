//! The command side's decisions as pure functions: given an aggregate's events, when a command,
//! then the events to append or a rejection. No I/O here; the handlers parse, load, decide and
//! append.

pub mod share_management;
