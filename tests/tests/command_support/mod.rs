//! Moved to `tests::command` (the command API harness) and `tests::app` (the one builder). Kept
//! for one release so a test written against it still compiles: replace `mod command_support;`
//! and `command_support::` with `tests::command::`, and make the file a module of
//! `tests/tests/command/main.rs`.

#![allow(unused_imports)]

pub use tests::command::{
    assert_timestamp, expect_error, expect_json, new_org, new_user, CommandApi as Api,
    CommandCalls, TrackForm,
};
