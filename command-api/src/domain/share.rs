//! The share-link aggregate (stream `share-{id}`): create a link to a track or a collection,
//! change its settings, rotate its token, revoke it.
//!
//! Only the creator of the content may share it, and only the creator of a link may change it;
//! anyone else gets the 404 of a resource that does not exist, whatever the body holds (who may
//! act is decided before the body is read). A link carries its token's hash, never the token:
//! the handler draws the token and the id, indexes the hash, and passes both in.
//!
//! The fold ignores events it does not know, so new commands (settings, rotation) add a variant
//! to [`ShareCommand`], an arm to [`evolve`] and one to [`decide`], and nothing else here moves.

use chrono::{DateTime, Utc};
use events::event::{
    ShareCreated, ShareRevoked, ShareSettingsChanged, ShareTokenRotated, TargetType, Visibility,
    MAX_VIEWS_LIMIT,
};
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId, UserId};
use events::link::{judge, LinkFacts, LinkStatus};
use events::password::{PasswordHash, SharePassword};
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
    /// The last change of settings or token (`created_at` before any).
    pub updated_at: DateTime<Utc>,
    pub revoked: bool,
}

impl ShareLink {
    /// In `org` and created by `actor`: who may change a link (revoked or not).
    pub fn is_owned_by(&self, org: &OrganizationId, actor: &UserId) -> bool {
        &self.facts.organization_id == org && &self.facts.owner_id == actor
    }

    /// The link's status at `now` by the one judge of a link ([`events::link::judge`]), having
    /// been opened `views_used` times (only the query side counts views; a link without a limit
    /// never needs the count), `content_removed` as its content's own stream says.
    pub fn status_at(
        &self,
        now: DateTime<Utc>,
        views_used: u64,
        content_removed: bool,
    ) -> LinkStatus {
        let link = LinkFacts {
            revoked: self.revoked,
            expires_at: self.facts.expires_at,
            max_views: self.facts.max_views,
            content_removed,
        };
        judge(&link, views_used, now)
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
            updated_at: recorded.occurred_at,
            revoked: false,
        }),
        (MusicEvent::ShareRevoked(_), Some(link)) => Some(ShareLink {
            revoked: true,
            ..link
        }),
        (MusicEvent::ShareSettingsChanged(change), Some(mut link)) => {
            let facts = &mut link.facts;
            if let Some(visibility) = change.visibility {
                facts.visibility = visibility;
            }
            if let Some(expires_at) = change.expires_at {
                facts.expires_at = expires_at;
            }
            if let Some(max_views) = change.max_views {
                facts.max_views = max_views;
            }
            if let Some(password_hash) = &change.password_hash {
                facts.password_hash = password_hash.clone();
            }
            if let Some(label) = &change.label {
                facts.label = label.clone();
            }
            link.updated_at = recorded.occurred_at;
            Some(link)
        }
        (MusicEvent::ShareTokenRotated(rotated), Some(mut link)) => {
            link.facts.token_hash = rotated.token_hash.clone();
            link.updated_at = recorded.occurred_at;
            Some(link)
        }
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
    /// Change settings: the creator only, not on a revoked link; records only what changed.
    ChangeSettings {
        org: OrganizationId,
        share_id: ShareLinkId,
        /// The body as sent, checked only once the caller may change the link.
        body: ShareSettingsRequest,
        /// The body's new password, hashed by the handler (slow and salted, so not here).
        password_hash: Option<PasswordHash>,
    },
    /// Rotate the token: the creator only, not on a revoked link; `token_hash` is the hash of
    /// a token the handler drew.
    Rotate {
        org: OrganizationId,
        share_id: ShareLinkId,
        token_hash: TokenHash,
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
    /// The body's password, hashed by the handler (slow and salted, so not here).
    pub password_hash: Option<PasswordHash>,
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
                password_hash: options.password.and(create.password_hash),
                label: options.label,
            })])
        }
        ShareCommand::ChangeSettings {
            org,
            share_id,
            body,
            password_hash,
        } => {
            let link = changeable(state, &org, &share_id, ctx)?;
            let wanted = body.validate()?;
            let facts = &link.facts;
            let mut change = ShareSettingsChanged::of(share_id);
            change.visibility = wanted.visibility.filter(|v| *v != facts.visibility);
            change.expires_at = wanted
                .expires_in_days
                .map(|days| days.map(|d| ctx.now + chrono::Duration::days(d)))
                .filter(|at| *at != facts.expires_at);
            change.max_views = wanted.max_views.filter(|m| *m != facts.max_views);
            // A new password always changes the hash (a fresh salt): the owner asked for it.
            change.password_hash = match wanted.password {
                Some(Some(_)) => Some(password_hash),
                Some(None) if facts.password_hash.is_some() => Some(None),
                _ => None,
            };
            change.label = wanted.label.filter(|l| *l != facts.label);
            if change.is_empty() {
                Ok(Vec::new())
            } else {
                Ok(vec![MusicEvent::ShareSettingsChanged(change)])
            }
        }
        ShareCommand::Rotate {
            org,
            share_id,
            token_hash,
        } => {
            changeable(state, &org, &share_id, ctx)?;
            Ok(vec![MusicEvent::ShareTokenRotated(ShareTokenRotated {
                share_id,
                token_hash,
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

/// The link, if the caller created it in `org` (else the 404) and it is not revoked (else the
/// 409).
fn changeable<'a>(
    state: &'a Option<ShareLink>,
    org: &OrganizationId,
    share_id: &ShareLinkId,
    ctx: &Context,
) -> Result<&'a ShareLink, Rejection> {
    let link = state
        .as_ref()
        .filter(|s| s.is_owned_by(org, &ctx.actor))
        .ok_or_else(|| Rejection::not_found("share_id", share_id.as_str()))?;
    if link.revoked {
        return Err(Rejection::Revoked {
            share_id: share_id.to_string(),
        });
    }
    Ok(link)
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
    /// Protects the link: 8 to 128 characters, kept only as an Argon2id hash. Absent or null:
    /// open to anyone with the link.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    pub password: Option<Value>,
    /// The owner's own note about the link (at most 200 characters), never shown to
    /// recipients. Absent or null: none.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000]*$")]
    pub label: Option<Value>,
}

impl ShareRequest {
    /// The password to hash before deciding, if the body sets a valid one.
    pub fn settable_password(&self) -> Option<SharePassword> {
        settable_password(self.password.as_ref())
    }
}

/// The body of `PATCH /v1/music/{org}/share/{share_id}`: at least one known field. Absent
/// leaves a setting as it is; `null` clears it (never expires, no limit, no password, no
/// label). Unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub struct ShareSettingsRequest {
    /// `link_only` or `public`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Visibility>)]
    pub visibility: Option<Value>,
    /// Days from now until the link expires: an integer of at least 1, clamped to 90; null:
    /// never. An expired link whose new expiry is in the future is live again.
    #[serde(default, deserialize_with = "present_raw")]
    #[schema(schema_with = positive_integer)]
    pub expires_in_days: Option<Box<RawValue>>,
    /// An integer from 1 to 2147483647, or null: no limit. Views already taken count.
    #[serde(default, deserialize_with = "present_raw")]
    #[schema(schema_with = positive_integer_up_to_max_views)]
    pub max_views: Option<Box<RawValue>>,
    /// 8 to 128 characters: sets or replaces the password; null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    pub password: Option<Value>,
    /// The owner's own note (at most 200 characters); null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000]*$")]
    pub label: Option<Value>,
}

impl ShareSettingsRequest {
    /// The password to hash before deciding, if the body sets a valid one.
    pub fn settable_password(&self) -> Option<SharePassword> {
        settable_password(self.password.as_ref())
    }
}

fn settable_password(value: Option<&Value>) -> Option<SharePassword> {
    value.and_then(|v| password_field(v).ok())
}

/// A field that was sent, `null` included (serde would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// A nullable JSON integer of at least 1. No `format`: `int32`/`int64` would claim signed
/// bounds these fields do not have.
fn nullable_positive_integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
}

pub fn positive_integer() -> RefOr<Schema> {
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
    /// Whether the body sets a password (its hash comes with the command).
    password: Option<()>,
    label: Option<String>,
}

/// A settings change, valid. `None`: not sent; `Some(None)`: sent as `null`.
struct SettingsChange {
    visibility: Option<Visibility>,
    expires_in_days: Option<Option<i64>>,
    max_views: Option<Option<u32>>,
    /// `Some(Some(()))`: a new password (its hash comes with the command).
    password: Option<Option<()>>,
    label: Option<Option<String>>,
}

/// The bad fields of a body, each with why; a 422 names them all.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|why| self.0.push((field.to_owned(), why)))
            .ok()
    }

    fn done<T>(self, value: T) -> Result<T, Rejection> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Rejection::Invalid(self.0))
        }
    }
}

fn visibility_field(value: &Value) -> Result<Visibility, String> {
    match value {
        Value::String(v) if v == "link_only" => Ok(Visibility::LinkOnly),
        Value::String(v) if v == "public" => Ok(Visibility::Public),
        _ => Err("must be \"link_only\" or \"public\"".to_owned()),
    }
}

/// JSON integers only: "3", 2.5, 2.0 and 1e3 are refused, as are integers below 1; any larger
/// number of days is clamped like 91.
fn expiry_days_field(raw: &RawValue) -> Result<i64, String> {
    match raw_integer(raw) {
        RawInteger::Positive(days) => Ok(days.min(MAX_EXPIRY_DAYS as u64) as i64),
        RawInteger::Invalid => Err("must be an integer of at least 1".to_owned()),
    }
}

fn max_views_field(raw: &RawValue) -> Result<u32, String> {
    match raw_integer(raw) {
        RawInteger::Positive(n) if n <= u64::from(MAX_VIEWS_LIMIT) => Ok(n as u32),
        _ => Err(format!("must be an integer from 1 to {MAX_VIEWS_LIMIT}")),
    }
}

fn password_field(value: &Value) -> Result<SharePassword, String> {
    let Value::String(raw) = value else {
        return Err("must be a string of 8 to 128 characters".to_owned());
    };
    let password = SharePassword::new(raw.clone());
    password.check_settable().map_err(str::to_owned)?;
    Ok(password)
}

/// The longest `label` (characters).
pub const MAX_LABEL_CHARS: usize = 200;

fn label_field(value: &Value) -> Result<String, String> {
    match value {
        Value::String(label) if label.chars().count() <= MAX_LABEL_CHARS => {
            match crate::text::nul_problem(label) {
                Some(problem) => Err(problem.to_owned()),
                None => Ok(label.clone()),
            }
        }
        _ => Err(format!(
            "must be a string of at most {MAX_LABEL_CHARS} characters"
        )),
    }
}

/// `null` read from a raw field.
fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

impl ShareRequest {
    fn validate(self) -> Result<ShareOptions, Rejection> {
        let mut problems = Problems::default();
        let sent = |v: &Option<Value>| v.clone().filter(|v| !v.is_null());
        let options = ShareOptions {
            visibility: sent(&self.visibility)
                .and_then(|v| problems.check("visibility", visibility_field(&v)))
                .unwrap_or_default(),
            expires_in_days: self
                .expires_in_days
                .as_deref()
                .and_then(|raw| problems.check("expires_in_days", expiry_days_field(raw))),
            max_views: self
                .max_views
                .as_deref()
                .and_then(|raw| problems.check("max_views", max_views_field(raw))),
            password: sent(&self.password)
                .and_then(|v| problems.check("password", password_field(&v)))
                .map(drop),
            label: sent(&self.label).and_then(|v| problems.check("label", label_field(&v))),
        };
        problems.done(options)
    }
}

impl ShareSettingsRequest {
    fn validate(self) -> Result<SettingsChange, Rejection> {
        let mut problems = Problems::default();
        let change = SettingsChange {
            visibility: self
                .visibility
                .as_ref()
                .and_then(|v| problems.check("visibility", visibility_field(v))),
            expires_in_days: match self.expires_in_days.as_deref() {
                None => None,
                Some(raw) if is_null(raw) => Some(None),
                Some(raw) => problems
                    .check("expires_in_days", expiry_days_field(raw))
                    .map(Some),
            },
            max_views: match self.max_views.as_deref() {
                None => None,
                Some(raw) if is_null(raw) => Some(None),
                Some(raw) => problems.check("max_views", max_views_field(raw)).map(Some),
            },
            password: match &self.password {
                None => None,
                Some(Value::Null) => Some(None),
                Some(v) => problems
                    .check("password", password_field(v))
                    .map(|_| Some(())),
            },
            label: match &self.label {
                None => None,
                Some(Value::Null) => Some(None),
                Some(v) => problems.check("label", label_field(v)).map(Some),
            },
        };
        let sent = self.visibility.is_some()
            || self.expires_in_days.is_some()
            || self.max_views.is_some()
            || self.password.is_some()
            || self.label.is_some();
        if !sent {
            problems.0.push((
                "body".to_owned(),
                "must set at least one of visibility, expires_in_days, max_views, password, label"
                    .to_owned(),
            ));
        }
        problems.done(change)
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
            password_hash: None,
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
                    password_hash: None,
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
        let live = |link: &ShareLink, now, views_used| {
            link.status_at(now, views_used, false) == LinkStatus::Active
        };
        let plain = at(|_| {}, vec![]);
        assert!(live(&plain, now(), u64::MAX));
        assert!(!live(&at(|_| {}, vec![revoked()]), now(), 0));
        let expiring = at(|c| c.expires_at = Some(now()), vec![]);
        assert!(live(&expiring, now() - Duration::seconds(1), 0));
        assert!(!live(&expiring, now(), 0), "dead at its expiry instant");
        let limited = at(|c| c.max_views = Some(2), vec![]);
        assert!(live(&limited, now(), 1));
        assert!(!live(&limited, now(), 2));
        assert_eq!(
            plain.status_at(now(), 0, true),
            LinkStatus::Unavailable,
            "its content removed"
        );
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

    fn settings(json: &str) -> ShareCommand {
        settings_with(json, None)
    }

    fn settings_with(json: &str, password_hash: Option<PasswordHash>) -> ShareCommand {
        ShareCommand::ChangeSettings {
            org: org(),
            share_id: share_id(),
            body: serde_json::from_str(json).expect("a settings body"),
            password_hash,
        }
    }

    fn changed(change: impl FnOnce(&mut ShareSettingsChanged)) -> MusicEvent {
        let mut event = ShareSettingsChanged::of(share_id());
        change(&mut event);
        MusicEvent::ShareSettingsChanged(event)
    }

    fn a_hash() -> PasswordHash {
        PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into())
    }

    fn rotate(token_hash: TokenHash) -> ShareCommand {
        ShareCommand::Rotate {
            org: org(),
            share_id: share_id(),
            token_hash,
        }
    }

    #[test]
    fn a_password_and_a_label_at_creation_are_kept_the_password_as_its_hash() {
        let command = ShareCommand::Create(CreateShare {
            org: org(),
            target: ShareTarget::Track {
                id: track_id(),
                state: live_track(),
            },
            share_id: share_id(),
            token_hash: token_hash(),
            body: body(r#"{"password":"open sesame","label":"for Ana"}"#),
            password_hash: Some(a_hash()),
        });
        given([]).when(command).then([created(|c| {
            c.password_hash = Some(a_hash());
            c.label = Some("for Ana".into());
        })]);
        for (json, field) in [
            (r#"{"password":"short"}"#, "password"),
            (r#"{"password":7}"#, "password"),
            (r#"{"label":[]}"#, "label"),
        ] {
            let rejection = given([]).when(share_track(json)).rejection();
            assert!(
                matches!(&rejection, Rejection::Invalid(p) if p[0].0 == field),
                "{json}: {rejection:?}"
            );
        }
    }

    #[test]
    fn only_what_changed_is_recorded() {
        given([created(|c| c.max_views = Some(3))])
            .when(settings(
                r#"{"visibility":"link_only","max_views":3,"label":"for Ana","unknown":1}"#,
            ))
            .then([changed(|c| c.label = Some(Some("for Ana".into())))]);
    }

    #[test]
    fn asking_for_the_settings_a_link_has_changes_nothing() {
        given([created(|_| {})])
            .when(settings(
                r#"{"max_views":null,"password":null,"label":null}"#,
            ))
            .then_nothing();
    }

    #[test]
    fn the_expiry_counts_from_the_change_and_null_means_never() {
        let expired = created(|c| c.expires_at = Some(earlier()));
        given([expired.clone()])
            .when(settings(r#"{"expires_in_days":91}"#))
            .then([changed(|c| {
                c.expires_at = Some(Some(now() + Duration::days(90)))
            })]);
        given([expired])
            .when(settings(r#"{"expires_in_days":null}"#))
            .then([changed(|c| c.expires_at = Some(None))]);
    }

    #[test]
    fn an_expired_link_given_a_future_expiry_is_live_again() {
        let history = given::recorded([
            created(|c| c.expires_at = Some(earlier())),
            changed(|c| c.expires_at = Some(Some(now() + Duration::days(1)))),
        ]);
        let link = from_history(&history).expect("a link");
        assert_eq!(link.status_at(now(), 0, false), LinkStatus::Active);
        assert_eq!(link.updated_at, history[1].occurred_at);
    }

    #[test]
    fn a_lower_limit_than_the_views_taken_makes_the_link_over_its_limit() {
        let history = given::recorded([
            created(|c| c.max_views = Some(5)),
            changed(|c| c.max_views = Some(Some(2))),
        ]);
        let link = from_history(&history).expect("a link");
        assert_eq!(link.status_at(now(), 3, false), LinkStatus::OverLimit);
        assert_eq!(link.status_at(now(), 2, false), LinkStatus::OverLimit);
        assert_eq!(link.status_at(now(), 1, false), LinkStatus::Active);
    }

    #[test]
    fn a_password_is_set_replaced_and_removed_as_its_hash() {
        given([created(|_| {})])
            .when(settings_with(
                r#"{"password":"open sesame"}"#,
                Some(a_hash()),
            ))
            .then([changed(|c| c.password_hash = Some(Some(a_hash())))]);
        given([created(|c| c.password_hash = Some(a_hash()))])
            .when(settings(r#"{"password":null}"#))
            .then([changed(|c| c.password_hash = Some(None))]);
    }

    #[test]
    fn every_wrong_setting_is_named_and_an_empty_change_is_refused() {
        for (json, fields) in [
            ("{}", vec!["body"]),
            (r#"{"unknown":1}"#, vec!["body"]),
            (r#"{"visibility":null}"#, vec!["visibility"]),
            (r#"{"expires_in_days":"3"}"#, vec!["expires_in_days"]),
            (r#"{"max_views":2147483648}"#, vec!["max_views"]),
            (r#"{"password":"1234567"}"#, vec!["password"]),
            (r#"{"label":5,"max_views":0}"#, vec!["max_views", "label"]),
        ] {
            let rejection = given([created(|_| {})]).when(settings(json)).rejection();
            let named: Vec<&str> = match &rejection {
                Rejection::Invalid(p) => p.iter().map(|(f, _)| f.as_str()).collect(),
                other => panic!("{json}: {other:?}"),
            };
            assert_eq!(named, fields, "{json}");
        }
    }

    #[test]
    fn strangers_get_the_404_whatever_the_body_and_a_revoked_link_the_409() {
        let not_found = Rejection::not_found("share_id", share_id().as_str());
        given([created(|_| {})])
            .by(&member())
            .when(settings("{}"))
            .then(not_found.clone());
        given([created(|_| {})])
            .by(&member())
            .when(rotate(token_hash()))
            .then(not_found.clone());
        given([]).when(rotate(token_hash())).then(not_found);
        let revoked_409 = Rejection::Revoked {
            share_id: share_id().to_string(),
        };
        given([created(|_| {}), revoked()])
            .when(settings(r#"{"label":"late"}"#))
            .then(revoked_409.clone());
        given([created(|_| {}), revoked()])
            .when(rotate(token_hash()))
            .then(revoked_409);
    }

    #[test]
    fn a_rotation_keeps_the_link_with_a_new_token_hash() {
        let new = TokenHash::of("shr_new");
        let rotated = MusicEvent::ShareTokenRotated(ShareTokenRotated {
            share_id: share_id(),
            token_hash: new.clone(),
        });
        given([created(|c| c.max_views = Some(4))])
            .when(rotate(new.clone()))
            .then([rotated.clone()]);
        let link = from_history(&given::recorded([
            created(|c| c.max_views = Some(4)),
            rotated,
        ]))
        .expect("a link");
        assert_eq!(link.facts.token_hash, new);
        assert_eq!(link.facts.max_views, Some(4));
        assert_eq!(link.facts.share_id, share_id());
        assert_eq!(link.created_at, given::earlier());
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
