//! Moved to `tests::query` (the read side, seeded through events) and `tests::stack` (the
//! whole system, seeded through the API). Kept for one release so a test written against it
//! still compiles: replace `mod query_fixture;` and `query_fixture::` with those modules, and
//! make the file a module of `tests/tests/query/main.rs` (or `system/main.rs`).

#![allow(unused_imports)]

pub use tests::query::{
    audio_bytes, path_and_query, query_param, QueryEnv, ShareOpts, SIGNING_KEYS,
};
pub use tests::stack::{share_via_api, upload_audio_via_api, upload_via_api, wav, ORG, USER};
