//! The query API: the public resolve, the share page, signed media, limits, the owner's share
//! list and the audit stream, over read models the real projector built. One test binary for
//! the whole process.

// The old helper module, now re-exports of `tests::*`: compiled here so it keeps compiling for
// test files that still use it (it goes away after one release).
#[path = "../query_fixture/mod.rs"]
mod query_fixture;

mod audit;
mod e2e;
mod judge;
mod limits;
mod link_management;
mod link_previews;
mod media;
mod page;
mod resolve;
mod shares;
