//! Share links: create one for a track or a collection, and revoke it.
//!
//! A share's stream is `share-{id}`. The raw token comes from the OS CSPRNG and leaves this
//! process exactly once, in the `201` body; `ShareCreated` and the token index carry only its
//! SHA-256. The index row (`command_side.share_tokens`) is written *before* the event: if the
//! append then fails, the row points at an empty stream, which every reader takes as "no such
//! share"; the other order could leave a live share that no token finds.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::{ShareCreated, ShareRevoked, TargetType, Visibility, MAX_VIEWS_LIMIT};
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId};
use events::password::{PasswordHash, SharePassword};
use events::share_token::ShareToken;
use events::{ExpectedVersion, MusicEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::json::OptionalJson;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use sqlx::PgPool;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::collections;
use crate::decide::{self, rfc3339, Attempt, CommandContext, History};
use crate::params::{docs, not_found, path_id, PathParams};
use crate::tracks;

/// `expires_in_days` above this is clamped to it.
pub const MAX_EXPIRY_DAYS: i64 = 90;

pub use crate::domain::share_management::ShareLink;

impl ShareLink {
    pub fn from_history(history: &History) -> Option<ShareLink> {
        ShareLink::fold(history.events.iter().map(|r| (&r.event, r.occurred_at)))
    }
}

pub async fn load(
    state: &AppState,
    id: &ShareLinkId,
) -> Result<(Option<ShareLink>, History), ApiError> {
    let history = decide::read(state.store.as_ref(), &StreamId::share(id)).await?;
    Ok((ShareLink::from_history(&history), history))
}

/// The optional body of both share routes. Fields are taken as raw JSON so that every wrong one
/// is reported, each with a reason in the contract's words; unknown fields are ignored. The two
/// numbers are kept as their literal text: a JSON integer is a literal without fraction or
/// exponent, of any size (a `Value` would have turned `1e21` and an integer beyond 64 bits alike
/// into a float).
#[derive(Default, Deserialize, ToSchema)]
pub struct ShareRequest {
    /// `link_only` (the default; absent or null) or `public`.
    #[serde(default)]
    #[schema(value_type = Option<Visibility>)]
    visibility: Option<Value>,
    /// Days until the link expires: a JSON integer of at least 1, clamped to 90. Absent or null:
    /// never.
    #[serde(default)]
    #[schema(schema_with = positive_integer)]
    expires_in_days: Option<Box<RawValue>>,
    /// After this many successful resolves the link is dead: a JSON integer from 1 to
    /// 2147483647. Absent or null: no limit.
    #[serde(default)]
    #[schema(schema_with = positive_integer_up_to_max_views)]
    max_views: Option<Box<RawValue>>,
    /// Protects the link: 8 to 128 characters, kept only as an Argon2id hash. Absent or null:
    /// open to anyone with the link.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    password: Option<Value>,
    /// The owner's own note about the link (at most 200 characters), never shown to
    /// recipients. Absent or null: none.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000]*$")]
    label: Option<Value>,
}

/// A nullable JSON integer of at least 1. No `format`: `int32`/`int64` would claim signed
/// bounds these fields do not have.
fn nullable_positive_integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
}

pub(crate) fn positive_integer() -> RefOr<Schema> {
    nullable_positive_integer().into()
}

pub(crate) fn positive_integer_up_to_max_views() -> RefOr<Schema> {
    nullable_positive_integer()
        .maximum(Some(MAX_VIEWS_LIMIT as usize))
        .into()
}

/// What a raw JSON number field holds, read as the contract reads it.
#[derive(Debug, PartialEq)]
pub(crate) enum RawInteger {
    /// A JSON integer of at least 1; `u64::MAX` stands for any larger one.
    Positive(u64),
    /// Anything else: 0, a negative, a fraction (`2.5`, `2.0`), an exponent, a string, a bool...
    Invalid,
}

pub(crate) fn raw_integer(raw: &RawValue) -> RawInteger {
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

/// A share link at creation: the only response that ever shows its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareLinkObject {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub id: String,
    /// The raw token. Shown only once: only its hash is stored.
    #[schema(
        pattern = r"^shr_[0-9a-f]{32}$",
        example = "shr_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
    )]
    pub token: String,
    /// `{PUBLIC_BASE_URL}/v1/music/shared/{token}`: opens the share without signing in.
    pub url: String,
    pub target_type: TargetType,
    pub target_id: String,
    pub visibility: Visibility,
    /// UTC, whole seconds; null: never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Null: no limit.
    #[schema(required = true, schema_with = positive_integer_up_to_max_views)]
    pub max_views: Option<u32>,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Whether opening the link needs its password.
    pub password_protected: bool,
    /// The owner's own note; null: none.
    #[schema(required = true)]
    pub label: Option<String>,
}

impl ShareLinkObject {
    /// The link as it is now, with `token` (just drawn: creation or rotation) shown this once.
    pub fn new(
        share: &ShareCreated,
        token: &ShareToken,
        created_at: DateTime<Utc>,
        public_base_url: &str,
    ) -> Self {
        ShareLinkObject {
            id: share.share_id.to_string(),
            token: token.expose().to_owned(),
            url: format!("{public_base_url}/v1/music/shared/{}", token.expose()),
            target_type: share.target_type,
            target_id: share.target_id.clone(),
            visibility: share.visibility,
            expires_at: share.expires_at.map(rfc3339),
            max_views: share.max_views,
            created_at: rfc3339(created_at),
            password_protected: share.password_hash.is_some(),
            label: share.label.clone(),
        }
    }

    /// `201` with `Cache-Control: no-store`: the body holds a secret shown once.
    pub fn created(self) -> Response {
        let mut response = (StatusCode::CREATED, Json(self)).into_response();
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The request, valid.
struct ShareOptions {
    visibility: Visibility,
    /// Already clamped to [`MAX_EXPIRY_DAYS`]; `None`: never expires.
    expires_in_days: Option<i64>,
    max_views: Option<u32>,
    password: Option<SharePassword>,
    label: Option<String>,
}

/// The bad fields of a body, each with why; a 422 names them all.
#[derive(Default)]
pub(crate) struct FieldProblems(pub Vec<(String, String)>);

impl FieldProblems {
    /// The value, or `None` with `field`'s problem noted.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.0.push((field.to_owned(), reason));
                None
            }
        }
    }
}

/// A `visibility` field's value, or why it is wrong.
pub(crate) fn visibility_field(value: &Value) -> Result<Visibility, String> {
    match value {
        Value::String(v) if v == "link_only" => Ok(Visibility::LinkOnly),
        Value::String(v) if v == "public" => Ok(Visibility::Public),
        _ => Err("must be \"link_only\" or \"public\"".to_owned()),
    }
}

/// An `expires_in_days` literal, clamped to [`MAX_EXPIRY_DAYS`], or why it is wrong. JSON
/// integers only: "3", 2.5, 2.0 and 1e3 are refused, as are integers below 1; any larger number
/// of days is clamped like 91.
pub(crate) fn expiry_days_field(raw: &RawValue) -> Result<i64, String> {
    match raw_integer(raw) {
        RawInteger::Positive(days) => Ok(days.min(MAX_EXPIRY_DAYS as u64) as i64),
        RawInteger::Invalid => Err("must be an integer of at least 1".to_owned()),
    }
}

/// A `max_views` literal, or why it is wrong.
pub(crate) fn max_views_field(raw: &RawValue) -> Result<u32, String> {
    match raw_integer(raw) {
        RawInteger::Positive(n) if n <= u64::from(MAX_VIEWS_LIMIT) => Ok(n as u32),
        _ => Err(format!("must be an integer from 1 to {MAX_VIEWS_LIMIT}")),
    }
}

/// A `password` an owner sets, or why it cannot be one.
pub(crate) fn password_field(value: &Value) -> Result<SharePassword, String> {
    let Value::String(raw) = value else {
        return Err("must be a string of 8 to 128 characters".to_owned());
    };
    let password = SharePassword::new(raw.clone());
    password.check_settable().map_err(str::to_owned)?;
    Ok(password)
}

/// The longest `label` (characters).
pub const MAX_LABEL_CHARS: usize = 200;

/// A `label`, or why it is wrong.
pub(crate) fn label_field(value: &Value) -> Result<String, String> {
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

/// Hashes an owner's new password on a blocking thread: Argon2id takes tens of milliseconds
/// of CPU, which must not stall the executor.
pub(crate) async fn hash_password(password: SharePassword) -> Result<PasswordHash, ApiError> {
    tokio::task::spawn_blocking(move || password.hash())
        .await
        .map_err(ApiError::internal)
}

impl ShareRequest {
    fn validate(self) -> Result<ShareOptions, ApiError> {
        let mut problems = FieldProblems::default();
        let present = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_null()).cloned();
        let visibility = present(&self.visibility)
            .and_then(|v| problems.check("visibility", visibility_field(&v)))
            .unwrap_or_default();
        let expires_in_days = self
            .expires_in_days
            .as_deref()
            .and_then(|raw| problems.check("expires_in_days", expiry_days_field(raw)));
        let max_views = self
            .max_views
            .as_deref()
            .and_then(|raw| problems.check("max_views", max_views_field(raw)));
        let password =
            present(&self.password).and_then(|v| problems.check("password", password_field(&v)));
        let label = present(&self.label).and_then(|v| problems.check("label", label_field(&v)));
        if problems.0.is_empty() {
            Ok(ShareOptions {
                visibility,
                expires_in_days,
                max_views,
                password,
                label,
            })
        } else {
            Err(ApiError::validation(problems.0))
        }
    }
}

/// Share a track: a new link, its raw token shown this once. The track's creator only.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/tracks/{track_id}/share",
    operation_id = "share_track",
    tag = "shares",
    params(docs::Org, docs::Track),
    // A `ref`, not `Option<ShareRequest>`: the body is optional, but `null` is not a body.
    request_body(
        content = ref("#/components/schemas/ShareRequest"),
        content_type = "application/json",
        description = "Optional: no body, an empty body or no `Content-Type` means the defaults.",
    ),
    responses(
        (status = 201, description = "The new share link.", body = ShareLinkObject,
            headers(("Cache-Control" = String, description = "`no-store`: the body holds a secret shown once."))),
        (status = 400, description = "Malformed JSON, or a `Content-Type` other than JSON.", body = ErrorEnvelope),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such live track of the caller's.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "A field is wrong; `details` names each.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn share_track(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, track_id)): PathParams<(String, String)>,
    OptionalJson(body): OptionalJson<ShareRequest>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("track_id", &track_id, TrackId::parse)?;
    let options = body.validate()?;
    let ctx = CommandContext::new(&caller);
    let (track, _) = tracks::load(&state, &id).await?;
    if !track.is_some_and(|t| t.is_live_in(&org) && t.imported.owner_id == ctx.actor) {
        return Err(not_found("track_id", id.as_str()));
    }
    create(
        &state,
        &ctx,
        &org,
        TargetType::Track,
        id.to_string(),
        options,
    )
    .await
}

/// Share a collection: a new link, its raw token shown this once. The collection's creator only.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/collections/{collection_id}/share",
    operation_id = "share_collection",
    tag = "shares",
    params(docs::Org, docs::Collection),
    // A `ref`, not `Option<ShareRequest>`: the body is optional, but `null` is not a body.
    request_body(
        content = ref("#/components/schemas/ShareRequest"),
        content_type = "application/json",
        description = "Optional: no body, an empty body or no `Content-Type` means the defaults.",
    ),
    responses(
        (status = 201, description = "The new share link.", body = ShareLinkObject,
            headers(("Cache-Control" = String, description = "`no-store`: the body holds a secret shown once."))),
        (status = 400, description = "Malformed JSON, or a `Content-Type` other than JSON.", body = ErrorEnvelope),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such live collection of the caller's.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "A field is wrong; `details` names each.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn share_collection(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, collection_id)): PathParams<(String, String)>,
    OptionalJson(body): OptionalJson<ShareRequest>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("collection_id", &collection_id, CollectionId::parse)?;
    let options = body.validate()?;
    let ctx = CommandContext::new(&caller);
    let (collection, _) = collections::load(&state, &id).await?;
    if !collection.is_some_and(|c| c.is_owned_in(&org, &ctx)) {
        return Err(not_found("collection_id", id.as_str()));
    }
    let target = id.to_string();
    create(&state, &ctx, &org, TargetType::Collection, target, options).await
}

async fn create(
    state: &AppState,
    ctx: &CommandContext,
    org: &OrganizationId,
    target_type: TargetType,
    target_id: String,
    mut options: ShareOptions,
) -> Result<Response, ApiError> {
    let created_at = ctx.now();
    let expires_at = options
        .expires_in_days
        .map(|days| created_at + chrono::Duration::days(days));
    let password_hash = match options.password.take() {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let (target_id, options, password_hash) = (&target_id, &options, &password_hash);
    let (created, token) = decide::new_stream(state, ctx, move || async move {
        // A fresh id and token per attempt: a new share can only conflict on a collision.
        let token = ShareToken::generate();
        let share_id = ShareLinkId::generate();
        if !index_token(
            &state.pool,
            state.settings.index_flushed_by_append,
            &token,
            &share_id,
        )
        .await?
        {
            return Err(Attempt::Conflict);
        }
        let created = ShareCreated {
            share_id: share_id.clone(),
            token_hash: token.hash(),
            target_type,
            target_id: target_id.clone(),
            organization_id: org.clone(),
            owner_id: ctx.actor.clone(),
            visibility: options.visibility,
            expires_at,
            max_views: options.max_views,
            password_hash: password_hash.clone(),
            label: options.label.clone(),
        };
        let event = MusicEvent::ShareCreated(created.clone());
        let stream = StreamId::share(&share_id);
        decide::append(state, ctx, &stream, ExpectedVersion::NoStream, &[event]).await?;
        Ok((created, token))
    })
    .await?;
    Ok(ShareLinkObject::new(
        &created,
        &token,
        created_at,
        &state.settings.public_base_url,
    )
    .created())
}

/// Records which share a token's hash belongs to. `false` if the hash is taken (astronomically
/// unlikely): the caller retries with a new token. A share id drawn twice is caught by its
/// stream's `ExpectedVersion::NoStream` instead; since a rotation adds a row per token, one
/// share may have several rows, and its stream says which token is current.
///
/// When the event log lives in this same PostgreSQL database, the row is committed without
/// waiting for its own WAL flush: the `ShareCreated` append that follows commits synchronously,
/// and flushing the WAL up to that commit flushes this row too, so a share whose event is durable
/// always has its row. That halves the fsyncs a share costs. With another event store the row is
/// flushed on its own.
pub(crate) async fn index_token(
    pool: &PgPool,
    flushed_by_append: bool,
    token: &ShareToken,
    share_id: &ShareLinkId,
) -> Result<bool, sqlx::Error> {
    // One statement, so one round trip: `set_config(.., true)` lasts until the end of the
    // statement's own transaction, i.e. through its commit.
    let sql = if flushed_by_append {
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO command_side.share_tokens (token_hash, share_id) \
         SELECT $1, $2 FROM relaxed ON CONFLICT DO NOTHING"
    } else {
        "INSERT INTO command_side.share_tokens (token_hash, share_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING"
    };
    let inserted = sqlx::query(sql)
        .bind(token.hash().as_str())
        .bind(share_id.as_str())
        .execute(pool)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The share a token's hash names in the index, if any (the token may be one a rotation
/// retired: check it against the share's stream).
pub async fn find_by_token(
    pool: &PgPool,
    token: &ShareToken,
) -> Result<Option<ShareLinkId>, sqlx::Error> {
    let share_id: Option<String> =
        sqlx::query_scalar("SELECT share_id FROM command_side.share_tokens WHERE token_hash = $1")
            .bind(token.hash().as_str())
            .fetch_optional(pool)
            .await?;
    Ok(share_id.and_then(|id| ShareLinkId::parse(&id).ok()))
}

/// Revoke a share link: the creator only; idempotent. Tracks saved through it stay saved.
#[utoipa::path(
    delete,
    path = "/v1/music/{org}/share/{share_id}",
    operation_id = "revoke_share",
    tag = "shares",
    params(docs::Org, docs::Share),
    responses(
        (status = 200, description = "Revoked, now or before (`detail`: \"Share link revoked.\").", body = Ack),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such share link of the caller's.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the link kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, share_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("share_id", &share_id, ShareLinkId::parse)?;
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id) = (&state, &ctx, &org, &id);
    let stream = &StreamId::share(id);
    decide::on_stream(state, ctx, stream, move || async move {
        let (share, history) = load(state, id).await?;
        let share = share
            .filter(|s| &s.created.organization_id == org && s.created.owner_id == ctx.actor)
            .ok_or_else(|| not_found("share_id", id.as_str()))?;
        if share.revoked {
            return Ok(());
        }
        let event = MusicEvent::ShareRevoked(ShareRevoked {
            share_id: id.clone(),
        });
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>(())
    })
    .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Share link revoked."))
}

#[cfg(test)]
mod tests {
    use super::*;

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
