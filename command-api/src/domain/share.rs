//! The share-link aggregate (stream `share-{id}`): create a link to a track or a collection,
//! revoke it.
//!
//! Only the creator of the content may share it, and only the creator of a link may change it;
//! anyone else gets the 404 of a resource that does not exist, whatever the body holds (who may
//! act is decided before the body is read). A link carries its token's hash, never the token:
//! the handler draws the token and the id, indexes the hash, and passes both in.
//!
//! The fold ignores events it does not know, so new commands (settings, rotation) add a variant
//! to [`ShareCommand`], an arm to [`evolve`] and one to [`decide`], and nothing else here moves.

use chrono::{DateTime, Utc};
use events::event::{ShareCreated, ShareRevoked, TargetType, Visibility, MAX_VIEWS_LIMIT};
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId, UserId};
use events::share_token::TokenHash;
use events::MusicEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::collection::Collection;
use super::track::Track;
use super::{Context, Decided, Recorded, Rejection};

/// `expires_in_days` above this is clamped to it.
pub const MAX_EXPIRY_DAYS: i64 = 90;

/// A share link as decided from its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ShareLink {
    /// What `ShareCreated` recorded, as it stands now: later changes to a link's settings or
    /// token update these facts in place.
    pub facts: ShareCreated,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

impl ShareLink {
    /// In `org` and created by `actor`: who may change a link (revoked or not).
    pub fn is_owned_by(&self, org: &OrganizationId, actor: &UserId) -> bool {
        &self.facts.organization_id == org && &self.facts.owner_id == actor
    }

    /// Whether the link opens at `now`, having been opened `views_used` times (only the query
    /// side counts views; a link without a limit never needs the count). The command side's
    /// one judge of a link.
    pub fn is_live_at(&self, now: DateTime<Utc>, views_used: u64) -> bool {
        !self.revoked
            && self.facts.expires_at.is_none_or(|at| now < at)
            && self
                .facts
                .max_views
                .is_none_or(|max| views_used < u64::from(max))
    }
}

pub fn from_history(history: &[Recorded]) -> Option<ShareLink> {
    history.iter().fold(None, evolve)
}

/// Applies one event; events a share link does not know leave it as it was.
pub fn evolve(state: Option<ShareLink>, recorded: &Recorded) -> Option<ShareLink> {
    match (&recorded.event, state) {
        (MusicEvent::ShareCreated(created), _) => Some(ShareLink {
            facts: created.clone(),
            created_at: recorded.occurred_at,
            revoked: false,
        }),
        (MusicEvent::ShareRevoked(_), Some(link)) => Some(ShareLink {
            revoked: true,
            ..link
        }),
        (_, state) => state,
    }
}

// One command per request, built once and moved into `decide`: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ShareCommand {
    Create(CreateShare),
    /// Revoke: the creator only; revoking a revoked link changes nothing.
    Revoke {
        org: OrganizationId,
        share_id: ShareLinkId,
    },
}

/// A new link, under an id and a token hash drawn by the handler.
#[derive(Clone, Debug)]
pub struct CreateShare {
    pub org: OrganizationId,
    pub target: ShareTarget,
    pub share_id: ShareLinkId,
    pub token_hash: TokenHash,
    /// The body as sent, checked only once the caller may share the target.
    pub body: ShareRequest,
}

/// What a link is to point at, with the state its own stream folds to.
#[derive(Clone, Debug)]
pub enum ShareTarget {
    Track {
        id: TrackId,
        state: Option<Track>,
    },
    Collection {
        id: CollectionId,
        state: Option<Collection>,
    },
}

pub fn decide(state: &Option<ShareLink>, command: ShareCommand, ctx: &Context) -> Decided {
    match command {
        ShareCommand::Create(create) => {
            let (target_type, target_id) = shareable(&create.org, create.target, ctx)?;
            let options = create.body.validate()?;
            Ok(vec![MusicEvent::ShareCreated(ShareCreated {
                share_id: create.share_id,
                token_hash: create.token_hash,
                target_type,
                target_id,
                organization_id: create.org,
                owner_id: ctx.actor.clone(),
                visibility: options.visibility,
                expires_at: options
                    .expires_in_days
                    .map(|days| ctx.now + chrono::Duration::days(days)),
                max_views: options.max_views,
            })])
        }
        ShareCommand::Revoke { org, share_id } => {
            let link = state
                .as_ref()
                .filter(|s| s.is_owned_by(&org, &ctx.actor))
                .ok_or_else(|| Rejection::not_found("share_id", share_id.as_str()))?;
            if link.revoked {
                return Ok(Vec::new());
            }
            Ok(vec![MusicEvent::ShareRevoked(ShareRevoked { share_id })])
        }
    }
}

/// The target, if the caller created it and it is live in `org`; else the 404 naming it.
fn shareable(
    org: &OrganizationId,
    target: ShareTarget,
    ctx: &Context,
) -> Result<(TargetType, String), Rejection> {
    match target {
        ShareTarget::Track { id, state } => state
            .filter(|t| {
                t.imported.track_id == id && t.is_live_in(org) && t.imported.owner_id == ctx.actor
            })
            .map(|_| (TargetType::Track, id.to_string()))
            .ok_or_else(|| Rejection::not_found("track_id", id.as_str())),
        ShareTarget::Collection { id, state } => state
            .filter(|c| c.created.collection_id == id && c.is_owned_in(org, &ctx.actor))
            .map(|_| (TargetType::Collection, id.to_string()))
            .ok_or_else(|| Rejection::not_found("collection_id", id.as_str())),
    }
}

/// The optional body of both share routes. Fields are taken as raw JSON so that every wrong one
/// is reported, each with a reason in the contract's words; unknown fields are ignored. The two
/// numbers are kept as their literal text: a JSON integer is a literal without fraction or
/// exponent, of any size (a `Value` would have turned `1e21` and an integer beyond 64 bits alike
/// into a float).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub struct ShareRequest {
    /// `link_only` (the default; absent or null) or `public`.
    #[serde(default)]
    #[schema(value_type = Option<Visibility>)]
    pub visibility: Option<Value>,
    /// Days until the link expires: a JSON integer of at least 1, clamped to 90. Absent or null:
    /// never.
    #[serde(default)]
    #[schema(schema_with = positive_integer)]
    pub expires_in_days: Option<Box<RawValue>>,
    /// After this many successful resolves the link is dead: a JSON integer from 1 to
    /// 2147483647. Absent or null: no limit.
    #[serde(default)]
    #[schema(schema_with = positive_integer_up_to_max_views)]
    pub max_views: Option<Box<RawValue>>,
}

/// A nullable JSON integer of at least 1. No `format`: `int32`/`int64` would claim signed
/// bounds these fields do not have.
fn nullable_positive_integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
}

fn positive_integer() -> RefOr<Schema> {
    nullable_positive_integer().into()
}

pub fn positive_integer_up_to_max_views() -> RefOr<Schema> {
    nullable_positive_integer()
        .maximum(Some(MAX_VIEWS_LIMIT as usize))
        .into()
}

/// What a raw JSON number field holds, read as the contract reads it.
#[derive(Debug, PartialEq)]
enum RawInteger {
    /// A JSON integer of at least 1; `u64::MAX` stands for any larger one.
    Positive(u64),
    /// Anything else: 0, a negative, a fraction (`2.5`, `2.0`), an exponent, a string, a bool...
    Invalid,
}

fn raw_integer(raw: &RawValue) -> RawInteger {
    let text = raw.get().trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return RawInteger::Invalid;
    }
    // Digits only, and JSON allows no leading zero: it overflows only above u64::MAX.
    match text.parse::<u64>() {
        Ok(0) => RawInteger::Invalid,
        Ok(n) => RawInteger::Positive(n),
        Err(_) => RawInteger::Positive(u64::MAX),
    }
}

/// The request, valid.
struct ShareOptions {
    visibility: Visibility,
    /// Already clamped to [`MAX_EXPIRY_DAYS`]; `None`: never expires.
    expires_in_days: Option<i64>,
    max_views: Option<u32>,
}

impl ShareRequest {
    fn validate(self) -> Result<ShareOptions, Rejection> {
        let mut problems = Vec::new();
        let visibility = match self.visibility {
            None => Visibility::LinkOnly,
            Some(Value::String(v)) if v == "link_only" => Visibility::LinkOnly,
            Some(Value::String(v)) if v == "public" => Visibility::Public,
            Some(_) => {
                problems.push((
                    "visibility".to_owned(),
                    "must be \"link_only\" or \"public\"".to_owned(),
                ));
                Visibility::LinkOnly
            }
        };
        // JSON integers only: "3", 2.5, 2.0 and 1e3 are refused, as are integers below 1; any
        // larger number of days is clamped like 91.
        let expires_in_days = match &self.expires_in_days {
            None => None,
            Some(raw) => match raw_integer(raw) {
                RawInteger::Positive(days) => Some(days.min(MAX_EXPIRY_DAYS as u64) as i64),
                RawInteger::Invalid => {
                    problems.push((
                        "expires_in_days".to_owned(),
                        "must be an integer of at least 1".to_owned(),
                    ));
                    None
                }
            },
        };
        let max_views = match &self.max_views {
            None => None,
            Some(raw) => match raw_integer(raw) {
                RawInteger::Positive(n) if n <= u64::from(MAX_VIEWS_LIMIT) => Some(n as u32),
                _ => {
                    problems.push((
                        "max_views".to_owned(),
                        format!("must be an integer from 1 to {MAX_VIEWS_LIMIT}"),
                    ));
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(ShareOptions {
                visibility,
                expires_in_days,
                max_views,
            })
        } else {
            Err(Rejection::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use events::event::{CollectionTrackAdded, ContentRemoved};

    use super::*;
    use crate::domain::given::{self, *};
    use crate::domain::{collection, track};

    fn given(
        events: impl IntoIterator<Item = MusicEvent>,
    ) -> Given<Option<ShareLink>, ShareCommand> {
        given::given(from_history, decide, events)
    }

    fn body(json: &str) -> ShareRequest {
        serde_json::from_str(json).expect("a share body")
    }

    fn live_track() -> Option<Track> {
        track::from_history(&given::recorded([track_imported(&org(), &owner())]))
    }

    fn create_for(target: ShareTarget, body: ShareRequest) -> ShareCommand {
        ShareCommand::Create(CreateShare {
            org: org(),
            target,
            share_id: share_id(),
            token_hash: token_hash(),
            body,
        })
    }

    fn share_track(json: &str) -> ShareCommand {
        create_for(
            ShareTarget::Track {
                id: track_id(),
                state: live_track(),
            },
            body(json),
        )
    }

    fn created(change: impl FnOnce(&mut ShareCreated)) -> MusicEvent {
        let mut created = share_created();
        change(&mut created);
        MusicEvent::ShareCreated(created)
    }

    fn revoke() -> ShareCommand {
        ShareCommand::Revoke {
            org: org(),
            share_id: share_id(),
        }
    }

    fn revoked() -> MusicEvent {
        MusicEvent::ShareRevoked(ShareRevoked {
            share_id: share_id(),
        })
    }

    fn track_not_found() -> Rejection {
        Rejection::not_found("track_id", track_id().as_str())
    }

    #[test]
    fn the_creator_shares_a_track_with_the_defaults() {
        given([]).when(share_track("{}")).then([created(|_| {})]);
    }

    #[test]
    fn options_are_recorded_as_facts_the_expiry_an_instant_from_now() {
        given([])
            .when(share_track(
                r#"{"visibility":"public","expires_in_days":7,"max_views":3,"unknown":1}"#,
            ))
            .then([created(|c| {
                c.visibility = Visibility::Public;
                c.expires_at = Some(now() + Duration::days(7));
                c.max_views = Some(3);
            })]);
    }

    #[test]
    fn null_fields_mean_the_defaults() {
        given([])
            .when(share_track(
                r#"{"visibility":null,"expires_in_days":null,"max_views":null}"#,
            ))
            .then([created(|_| {})]);
    }

    #[test]
    fn an_expiry_beyond_ninety_days_is_clamped_to_ninety_even_beyond_64_bits() {
        for days in ["91", "100000000000000000000000000000"] {
            given([])
                .when(share_track(&format!(r#"{{"expires_in_days":{days}}}"#)))
                .then([created(|c| c.expires_at = Some(now() + Duration::days(90)))]);
        }
    }

    #[test]
    fn the_largest_view_limit_is_accepted_and_one_more_is_not() {
        given([])
            .when(share_track(r#"{"max_views":2147483647}"#))
            .then([created(|c| c.max_views = Some(MAX_VIEWS_LIMIT))]);
        given([])
            .when(share_track(r#"{"max_views":2147483648}"#))
            .then(Rejection::invalid(
                "max_views",
                "must be an integer from 1 to 2147483647",
            ));
    }

    #[test]
    fn each_wrong_field_is_named() {
        for (json, field) in [
            (r#"{"expires_in_days":"3"}"#, "expires_in_days"),
            (r#"{"expires_in_days":0}"#, "expires_in_days"),
            (r#"{"expires_in_days":2.0}"#, "expires_in_days"),
            (r#"{"expires_in_days":1e3}"#, "expires_in_days"),
            (r#"{"max_views":0}"#, "max_views"),
            (r#"{"max_views":-3}"#, "max_views"),
            (r#"{"visibility":"private"}"#, "visibility"),
            (r#"{"visibility":1}"#, "visibility"),
        ] {
            let rejection = given([]).when(share_track(json)).rejection();
            assert!(
                matches!(&rejection, Rejection::Invalid(p) if p.len() == 1 && p[0].0 == field),
                "{json}: {rejection:?}"
            );
        }
        let all = given([])
            .when(share_track(
                r#"{"visibility":"x","expires_in_days":0,"max_views":0}"#,
            ))
            .rejection();
        assert!(matches!(all, Rejection::Invalid(p) if p.len() == 3));
    }

    #[test]
    fn a_member_who_did_not_create_the_track_gets_the_404_whatever_the_body_holds() {
        for json in [r#"{"max_views":0}"#, "{}"] {
            given([])
                .by(&member())
                .when(share_track(json))
                .then(track_not_found());
        }
        // The creator, with the same body: the 422.
        given([])
            .when(share_track(r#"{"max_views":0}"#))
            .then(Rejection::invalid(
                "max_views",
                "must be an integer from 1 to 2147483647",
            ));
    }

    #[test]
    fn a_removed_absent_or_foreign_track_cannot_be_shared() {
        let removed = MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Track,
            target_id: track_id().to_string(),
            organization_id: org(),
        });
        for state in [
            track::from_history(&given::recorded([
                track_imported(&org(), &owner()),
                removed,
            ])),
            None,
            track::from_history(&given::recorded([track_imported(&other_org(), &owner())])),
        ] {
            given([])
                .when(create_for(
                    ShareTarget::Track {
                        id: track_id(),
                        state,
                    },
                    body(r#"{"max_views":0}"#),
                ))
                .then(track_not_found());
        }
    }

    #[test]
    fn the_creator_shares_a_collection_and_no_one_else_may() {
        let collection = || {
            collection::from_history(&given::recorded([
                collection_created(),
                MusicEvent::CollectionTrackAdded(CollectionTrackAdded {
                    collection_id: collection_id(),
                    track_id: track_id(),
                }),
            ]))
        };
        let share_collection = |json: &str| {
            create_for(
                ShareTarget::Collection {
                    id: collection_id(),
                    state: collection(),
                },
                body(json),
            )
        };
        given([]).when(share_collection("{}")).then([created(|c| {
            c.target_type = TargetType::Collection;
            c.target_id = collection_id().to_string();
        })]);
        given([])
            .by(&member())
            .when(share_collection(r#"{"visibility":7}"#))
            .then(Rejection::not_found(
                "collection_id",
                collection_id().as_str(),
            ));
    }

    #[test]
    fn a_removed_or_foreign_collection_cannot_be_shared() {
        let removed = collection::from_history(&given::recorded([
            collection_created(),
            MusicEvent::ContentRemoved(ContentRemoved {
                target_type: TargetType::Collection,
                target_id: collection_id().to_string(),
                organization_id: org(),
            }),
        ]));
        let live = collection::from_history(&given::recorded([collection_created()]));
        for (org, state) in [(org(), removed), (other_org(), live), (org(), None)] {
            given([])
                .when(ShareCommand::Create(CreateShare {
                    org,
                    target: ShareTarget::Collection {
                        id: collection_id(),
                        state,
                    },
                    share_id: share_id(),
                    token_hash: token_hash(),
                    body: body("{}"),
                }))
                .then(Rejection::not_found(
                    "collection_id",
                    collection_id().as_str(),
                ));
        }
    }

    #[test]
    fn the_creator_revokes_a_link() {
        given([created(|_| {})]).when(revoke()).then([revoked()]);
    }

    #[test]
    fn revoking_a_revoked_link_changes_nothing() {
        given([created(|_| {}), revoked()])
            .when(revoke())
            .then_nothing();
    }

    #[test]
    fn only_the_creator_may_revoke_and_an_absent_link_is_not_found() {
        let not_found = Rejection::not_found("share_id", share_id().as_str());
        given([created(|_| {})])
            .by(&member())
            .when(revoke())
            .then(not_found.clone());
        given([created(|_| {})])
            .when(ShareCommand::Revoke {
                org: other_org(),
                share_id: share_id(),
            })
            .then(not_found.clone());
        given([]).when(revoke()).then(not_found);
    }

    #[test]
    fn a_link_is_live_until_revoked_expired_or_used_up() {
        let at = |change: fn(&mut ShareCreated), events: Vec<MusicEvent>| {
            let mut history = vec![created(change)];
            history.extend(events);
            from_history(&given::recorded(history)).expect("a link")
        };
        let plain = at(|_| {}, vec![]);
        assert!(plain.is_live_at(now(), u64::MAX));
        assert!(!at(|_| {}, vec![revoked()]).is_live_at(now(), 0));
        let expiring = at(|c| c.expires_at = Some(now()), vec![]);
        assert!(expiring.is_live_at(now() - Duration::seconds(1), 0));
        assert!(!expiring.is_live_at(now(), 0), "dead at its expiry instant");
        let limited = at(|c| c.max_views = Some(2), vec![]);
        assert!(limited.is_live_at(now(), 1));
        assert!(!limited.is_live_at(now(), 2));
        assert_eq!(plain.created_at, given::earlier());
    }

    #[test]
    fn the_fold_ignores_events_that_are_not_a_links() {
        let history = given::recorded([created(|_| {}), collection_created()]);
        assert_eq!(
            from_history(&history),
            from_history(&given::recorded([created(|_| {})]))
        );
    }

    fn read(text: &str) -> RawInteger {
        let raw: Box<RawValue> = serde_json::from_str(text).expect("JSON");
        raw_integer(&raw)
    }

    #[test]
    fn integers_are_literals_without_fraction_or_exponent() {
        assert_eq!(read("1"), RawInteger::Positive(1));
        assert_eq!(read("90"), RawInteger::Positive(90));
        assert_eq!(read("18446744073709551615"), RawInteger::Positive(u64::MAX));
        assert_eq!(
            read("100000000000000000000000000000"),
            RawInteger::Positive(u64::MAX)
        );
        for invalid in [
            "0", "-1", "-0", "2.5", "2.0", "1e3", "\"3\"", "true", "{}", "[1]",
        ] {
            assert_eq!(read(invalid), RawInteger::Invalid, "{invalid}");
        }
    }
}
