//! The query API: the public resolve of share links, and the owner's share list.
//!
//! It serves reads from the projector's read models (never writing them), keeps its own counters
//! (`query_side`: `max_views` usage, view statistics), and publishes every resolve attempt to the
//! audit stream. It must never append events: the query side observes, it does not decide.

pub mod cli;
