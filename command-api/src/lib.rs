//! The command API: authenticated writes.
//!
//! It owns the decisions: every rule is a pure function in [`domain`] (one file per aggregate,
//! its given/when/then tests beside it). A handler parses the request, loads the streams the
//! decision needs, and lets the [`runner`] decide and append with the version it decided from
//! (again on a conflict). It also owns the identity tables
//! ([`identity`]) and the small indexes it needs to decide (the share-token index, [`shares`]),
//! and the media files it measured ([`audio`]). It must never read the projector's tables: the
//! command side keeps working while the projector is down. The one exception is a single
//! read-only row of `query_side.share_usage` when saving a shared track (see [`library`] and
//! [`events::share_usage`]), since only the query side knows how often a link was opened.

pub mod app;
pub mod audio;
pub mod cli;
pub mod collections;
pub mod domain;
pub mod identity;
pub mod library;
pub mod media;
pub mod openapi;
pub mod params;
pub mod read_your_writes;
pub mod runner;
pub mod share_settings;
pub mod shares;
pub mod text;
pub mod tracks;
