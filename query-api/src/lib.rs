//! The query API: the public resolve of share links, signed media, and the owner's share list.
//!
//! It serves reads from the projector's read models (never writing them), keeps its own counters
//! (`query_side`: `max_views` usage through `events::share_usage`, view statistics), and
//! publishes every resolve attempt and media fetch to the audit stream. Whether a link is alive
//! it asks `events::link::judge`, as the command side does. It must never append events: the
//! query side observes, it does not decide. It reads the event log's head only to know whether the read models have
//! caught up with a write a client was just told about (read your writes).

pub mod analytics;
pub mod app;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod client_ip;
pub mod media;
pub mod notices;
pub mod openapi;
pub mod page;
pub mod password_check;
pub mod password_guard;
pub mod playback;
pub mod rate_limit;
pub mod resolve;
pub mod shares;
pub mod stats;
pub mod used_up;
pub mod view;

pub use app::{App, Settings};
