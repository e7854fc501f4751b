//! The rules of the command side, as plain functions: no I/O, no clock, no randomness.
//!
//! Each aggregate has one file that holds everything about it: its state, folded from its stream
//! (`from_history` / `evolve`), its commands, and `decide(&State, Command, &Context)`, which
//! answers the events to append or a [`Rejection`]. What a decision needs from outside its own
//! stream (another aggregate's state, a fresh id, a token's hash, a view count) comes in with the
//! command; who asks and when comes in the [`Context`]. The HTTP handlers around them only
//! parse, load, run the decision through the runner (append, retry on a conflict) and answer,
//! so every rule here is proven by the given/when/then tests at the bottom of its file, without
//! a database.
//!
//! The order of checks is part of the rules: who may act is decided before the body is looked
//! at, so a caller who may not act learns nothing from a 422.

use chrono::{DateTime, Utc};
use events::ids::UserId;
use events::link::{DEAD_LINK_MESSAGE, DEAD_LINK_REASON};
use events::MusicEvent;
use service_kit::ApiError;

pub mod collection;
pub mod library;
pub mod share;
pub mod track;

#[cfg(test)]
mod given;

/// One event of a stream with the envelope facts the folds need (the instant it happened).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub event: MusicEvent,
    pub occurred_at: DateTime<Utc>,
}

/// Who decides, and when: one instant per command, the one its events carry and its response
/// shows (whole seconds).
#[derive(Clone, Debug)]
pub struct Context {
    pub actor: UserId,
    pub now: DateTime<Utc>,
}

/// What a decision answers: the events to append (none: nothing to change), or why not.
pub type Decided = Result<Vec<MusicEvent>, Rejection>;

/// Why a command is refused. Each maps to the answer the API has always given (see
/// `From<Rejection> for ApiError`), so moving a rule here changes nothing a client sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 404 naming the id the caller sent (`details[field] = id`): absent, removed, another
    /// organization's, or not the caller's. One answer for all of them.
    NotFound { field: &'static str, id: String },
    /// 403: a member of the organization who may see it, but is not its creator.
    NotCreator {
        field: &'static str,
        id: String,
        why: &'static str,
    },
    /// 422: each wrong field and why, in field order.
    Invalid(Vec<(String, String)>),
    /// The one 404 of every dead share link, whatever the cause.
    DeadLink,
    /// 409: a revoked share link cannot be changed.
    Revoked { share_id: String },
    /// 401: a protected link's password was not sent.
    PasswordRequired,
    /// 401: a protected link's password was wrong.
    InvalidPassword,
}

impl Rejection {
    pub fn not_found(field: &'static str, id: impl Into<String>) -> Self {
        Rejection::NotFound {
            field,
            id: id.into(),
        }
    }

    /// A 422 for one field.
    pub fn invalid(field: &str, why: impl Into<String>) -> Self {
        Rejection::Invalid(vec![(field.to_owned(), why.into())])
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::NotFound { field, id } => crate::params::not_found(field, &id),
            Rejection::NotCreator { field, id, why } => {
                ApiError::forbidden(why).with_detail(field, id)
            }
            Rejection::Invalid(problems) => ApiError::validation(problems),
            Rejection::DeadLink => ApiError::not_found_saying(DEAD_LINK_MESSAGE, DEAD_LINK_REASON),
            Rejection::Revoked { share_id } => ApiError::conflict(
                "This share link is revoked.",
                "A revoked share link cannot be changed",
            )
            .with_detail("share_id", share_id),
            Rejection::PasswordRequired => ApiError::password_required(),
            Rejection::InvalidPassword => ApiError::invalid_password(),
        }
    }
}
