//! `GET /v1/music/shared/{token}`: the public resolve.
//!
//! Every input is hashed ([`TokenHash::of`](events::share_token::TokenHash::of), malformed
//! tokens too) and takes the same path: the cache, else one read-model query. The record is
//! judged at request time ([`events::link::judge`], expiry included), then a live limited link
//! takes one view from its exact cross-instance counter. Dead links of every cause get one
//! identical answer; the audit alone tells the causes apart.
//!
//! **Read your writes** is the command API's job: it answers a `201` only once the projector has
//! announced the event's position (see `command-api/src/read_your_writes.rs`). The query side
//! therefore never consults the event log, and a dead link costs what a live one does.
//!
//! One job per file, so each can be read (and changed) alone:
//! - [`negotiate`]: which rendering the client's `Accept` prefers, JSON or the HTML page;
//! - [`record`]: the one read-model query and its typed row, turned into a [`ShareRecord`];
//! - [`resolver`]: cache, record, judgement and the `max_views` counter, giving a [`Resolution`];
//! - [`handler`]: the HTTP route: rate limit, audit, rendering (JSON here, HTML in
//!   [`crate::page`]) and the headers every answer carries.
//!
//! [`ShareRecord`]: crate::view::ShareRecord

pub mod handler;
pub mod negotiate;
pub mod record;
pub mod resolver;

pub use handler::{
    dead_link, handler, is_preview_agent, operation, render_json, submit, TokenParam, FORM_LIMIT,
    PASSWORD_HEADER,
};
pub use negotiate::negotiate;
pub use resolver::{Refusal, Resolution, Resolver, Viewing};
