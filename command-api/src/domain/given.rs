//! Given/when/then for the pure decisions: `given(history).when(command).then(events | rejection)`.
//!
//! Each aggregate's tests wrap [`given`] with their own fold and decide, so a test reads as the
//! rule it proves. The fixtures below are the cast every test shares: one organization, its
//! owner and another member, fixed ids and two instants (history, then now).

use chrono::{DateTime, TimeZone, Utc};
use events::event::{
    CollectionCreated, MediaFile, ShareCreated, TargetType, TrackImported, Visibility,
};
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId, UserId};
use events::licence::{self, LicenceClass};
use events::share_token::TokenHash;
use events::MusicEvent;

use super::{Context, Decided, Recorded, Rejection};

/// A history folded, waiting for a command.
pub struct Given<S, C> {
    state: S,
    decide: fn(&S, C, &Context) -> Decided,
    ctx: Context,
}

/// Starts a scenario: `history` happened at [`earlier`]; the command comes from [`owner`] at
/// [`now`] unless told otherwise.
pub fn given<S, C>(
    fold: fn(&[Recorded]) -> S,
    decide: fn(&S, C, &Context) -> Decided,
    history: impl IntoIterator<Item = MusicEvent>,
) -> Given<S, C> {
    Given {
        state: fold(&recorded(history)),
        decide,
        ctx: Context {
            actor: owner(),
            now: now(),
        },
    }
}

impl<S, C> Given<S, C> {
    /// The command comes from `actor`.
    pub fn by(mut self, actor: &UserId) -> Self {
        self.ctx.actor = actor.clone();
        self
    }

    /// The command is decided at `now`.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.ctx.now = now;
        self
    }

    pub fn when(self, command: C) -> Then {
        Then((self.decide)(&self.state, command, &self.ctx))
    }
}

/// What was decided.
#[must_use = "a decision must be checked with then(..)"]
pub struct Then(Decided);

/// What a test expects: these events, or this rejection.
pub enum Expected {
    Events(Vec<MusicEvent>),
    Rejected(Rejection),
}

impl From<Rejection> for Expected {
    fn from(r: Rejection) -> Self {
        Expected::Rejected(r)
    }
}

impl<const N: usize> From<[MusicEvent; N]> for Expected {
    fn from(events: [MusicEvent; N]) -> Self {
        Expected::Events(events.into())
    }
}

impl From<Vec<MusicEvent>> for Expected {
    fn from(events: Vec<MusicEvent>) -> Self {
        Expected::Events(events)
    }
}

impl Then {
    pub fn then(self, expected: impl Into<Expected>) {
        match expected.into() {
            Expected::Events(events) => assert_eq!(self.0, Ok(events)),
            Expected::Rejected(rejection) => assert_eq!(self.0, Err(rejection)),
        }
    }

    /// Accepted, with nothing to change (an idempotent repeat).
    pub fn then_nothing(self) {
        assert_eq!(self.0, Ok(Vec::new()));
    }

    /// The accepted events, for tests that check a part of them.
    pub fn events(self) -> Vec<MusicEvent> {
        self.0.unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub fn rejection(self) -> Rejection {
        match self.0 {
            Ok(events) => panic!("accepted: {events:?}"),
            Err(r) => r,
        }
    }
}

/// `events` as a stream holds them, all at [`earlier`].
pub fn recorded(events: impl IntoIterator<Item = MusicEvent>) -> Vec<Recorded> {
    events
        .into_iter()
        .map(|event| Recorded {
            event,
            occurred_at: earlier(),
        })
        .collect()
}

/// When the history happened.
pub fn earlier() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0)
        .single()
        .expect("a date")
}

/// When commands are decided, unless a test says otherwise.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, 10, 30, 0)
        .single()
        .expect("a date")
}

fn id<T>(parse: fn(&str) -> Result<T, events::ids::InvalidId>, raw: &str) -> T {
    parse(raw).expect("a fixture id")
}

pub fn org() -> OrganizationId {
    id(OrganizationId::parse, "org_acme")
}

pub fn other_org() -> OrganizationId {
    id(OrganizationId::parse, "org_other")
}

/// The creator of everything in the fixtures.
pub fn owner() -> UserId {
    id(UserId::parse, "usr_0000000000a1")
}

/// Another member of [`org`]: may create, but owns nothing here.
pub fn member() -> UserId {
    id(UserId::parse, "usr_0000000000b2")
}

pub fn track_id() -> TrackId {
    id(TrackId::parse, "mtrack_00000000000a")
}

pub fn collection_id() -> CollectionId {
    id(CollectionId::parse, "mcoll_00000000000c")
}

pub fn share_id() -> ShareLinkId {
    id(ShareLinkId::parse, "mslink_000000000055")
}

pub fn token_hash() -> TokenHash {
    TokenHash::of("shr_00000000000000000000000000000001")
}

pub fn media() -> MediaFile {
    MediaFile {
        sha256: "ab".repeat(32),
        content_type: "audio/wav".into(),
        bytes: 44_144,
    }
}

/// [`track_id`] imported into `org` by `owner`.
pub fn track_imported(org: &OrganizationId, owner: &UserId) -> MusicEvent {
    MusicEvent::TrackImported(TrackImported {
        track_id: track_id(),
        organization_id: org.clone(),
        owner_id: owner.clone(),
        title: "Late Night Study".into(),
        engine: "studio".into(),
        mode: "creation".into(),
        instrumental: true,
        licence_class: LicenceClass::PersonalOnly,
        licence_version: licence::CURRENT_VERSION.into(),
        measured_duration_ms: 250,
        media: media(),
    })
}

/// [`collection_id`] created in [`org`] by [`owner`].
pub fn collection_created() -> MusicEvent {
    MusicEvent::CollectionCreated(CollectionCreated {
        collection_id: collection_id(),
        organization_id: org(),
        owner_id: owner(),
        name: "Mix".into(),
        description: None,
    })
}

/// [`share_id`] of [`track_id`] in [`org`] by [`owner`], with no limits.
pub fn share_created() -> ShareCreated {
    ShareCreated {
        share_id: share_id(),
        token_hash: token_hash(),
        target_type: TargetType::Track,
        target_id: track_id().to_string(),
        organization_id: org(),
        owner_id: owner(),
        visibility: Visibility::LinkOnly,
        expires_at: None,
        max_views: None,
        password_hash: None,
        label: None,
    }
}
