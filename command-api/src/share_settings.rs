//! Managing a share link after creating it: change its settings (`PATCH`) and rotate its token.
//!
//! Why a module of its own: these routes parse and load, then leave the decision to
//! `domain::share_management` and append what it decided; `shares` keeps creation and
//! revocation. Who may act is checked before the body is read: a caller who is not the creator
//! gets the 404 whatever the body holds.
//!
//! A rotation draws a new token, indexes its hash (before the event, as at creation) and appends
//! `ShareTokenRotated`; the old token's index row stays, and is refused because the share's
//! stream names another token as current.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::{TargetType, Visibility};
use events::ids::ShareLinkId;
use events::share_token::ShareToken;
use events::StreamId;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::decide::{self, rfc3339, Attempt, CommandContext};
use crate::domain::share_management::{
    self, Context, Rejection, SettingsChange, ShareCommand, ShareLink,
};
use crate::params::{docs, not_found, path_id, PathParams};
use crate::shares::{self, FieldProblems, ShareLinkObject};

/// The PATCH body: at least one known field. Absent leaves a setting as it is; `null` clears
/// it (never expires, no limit, no password, no label). Unknown fields are ignored.
#[derive(Default, Deserialize, ToSchema)]
pub struct ShareSettingsRequest {
    /// `link_only` or `public`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Visibility>)]
    visibility: Option<Value>,
    /// Days from now until the link expires: an integer of at least 1, clamped to 90; null:
    /// never. An expired link whose new expiry is in the future is live again.
    #[serde(default, deserialize_with = "present_raw")]
    #[schema(schema_with = shares::positive_integer)]
    expires_in_days: Option<Box<RawValue>>,
    /// An integer from 1 to 2147483647, or null: no limit. Views already taken count.
    #[serde(default, deserialize_with = "present_raw")]
    #[schema(schema_with = shares::positive_integer_up_to_max_views)]
    max_views: Option<Box<RawValue>>,
    /// 8 to 128 characters: sets or replaces the password; null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    password: Option<Value>,
    /// The owner's own note (at most 200 characters); null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000]*$")]
    label: Option<Value>,
}

/// A field that was sent, `null` included (serde would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// A share link's settings as they are after the change (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareSettingsObject {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub id: String,
    pub target_type: TargetType,
    pub target_id: String,
    pub visibility: Visibility,
    /// UTC, whole seconds; null: never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Null: no limit.
    #[schema(required = true, schema_with = shares::positive_integer_up_to_max_views)]
    pub max_views: Option<u32>,
    pub password_protected: bool,
    /// The owner's own note; null: none.
    #[schema(required = true)]
    pub label: Option<String>,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last change of settings or token (UTC, whole seconds); `created_at` before any.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl ShareSettingsObject {
    fn new(share: &ShareLink) -> Self {
        let settings = &share.created;
        ShareSettingsObject {
            id: settings.share_id.to_string(),
            target_type: settings.target_type,
            target_id: settings.target_id.clone(),
            visibility: settings.visibility,
            expires_at: settings.expires_at.map(rfc3339),
            max_views: settings.max_views,
            password_protected: settings.password_hash.is_some(),
            label: settings.label.clone(),
            created_at: rfc3339(share.created_at),
            updated_at: rfc3339(share.updated_at),
        }
    }
}

impl ShareSettingsRequest {
    /// Checks every field (a 422 names each bad one); the new password is not hashed yet.
    fn validate(
        self,
    ) -> Result<(SettingsChange, Option<events::password::SharePassword>), ApiError> {
        let mut problems = FieldProblems::default();
        let sent = self.visibility.is_some()
            || self.expires_in_days.is_some()
            || self.max_views.is_some()
            || self.password.is_some()
            || self.label.is_some();
        let nullable_raw = |raw: &RawValue| raw.get().trim() == "null";
        let mut change = SettingsChange {
            visibility: self
                .visibility
                .as_ref()
                .and_then(|v| problems.check("visibility", shares::visibility_field(v))),
            ..SettingsChange::default()
        };
        change.expires_in_days = match self.expires_in_days.as_deref() {
            None => None,
            Some(raw) if nullable_raw(raw) => Some(None),
            Some(raw) => problems
                .check("expires_in_days", shares::expiry_days_field(raw))
                .map(Some),
        };
        change.max_views = match self.max_views.as_deref() {
            None => None,
            Some(raw) if nullable_raw(raw) => Some(None),
            Some(raw) => problems
                .check("max_views", shares::max_views_field(raw))
                .map(Some),
        };
        let mut new_password = None;
        match &self.password {
            None => {}
            Some(Value::Null) => change.password = Some(None),
            Some(value) => new_password = problems.check("password", shares::password_field(value)),
        }
        change.label = match &self.label {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value) => problems
                .check("label", shares::label_field(value))
                .map(Some),
        };
        if !sent {
            problems.0.push((
                "body".to_owned(),
                "must set at least one of visibility, expires_in_days, max_views, password, label"
                    .to_owned(),
            ));
        }
        if problems.0.is_empty() {
            Ok((change, new_password))
        } else {
            Err(ApiError::validation(problems.0))
        }
    }
}

/// Loads a share and answers the 404 unless the caller created it in `org`.
async fn load_owned(state: &AppState, id: &ShareLinkId, ctx: &Context) -> Result<(), ApiError> {
    let (share, _) = shares::load(state, id).await?;
    match share {
        Some(s) if s.created.organization_id == ctx.org && s.created.owner_id == ctx.actor => {
            Ok(())
        }
        _ => Err(not_found("share_id", id.as_str())),
    }
}

fn rejection(rejection: Rejection, id: &ShareLinkId) -> ApiError {
    match rejection {
        Rejection::NotFound => not_found("share_id", id.as_str()),
        Rejection::Revoked => ApiError::conflict(
            "This share link is revoked.",
            "A revoked share link cannot be changed",
        )
        .with_detail("share_id", id.as_str()),
    }
}

fn context(ctx: &CommandContext, org: events::ids::OrganizationId) -> Context {
    Context {
        actor: ctx.actor.clone(),
        org,
        now: ctx.now(),
    }
}

/// Change a share link's settings: visibility, expiry (from now), view limit, password, label.
/// The creator only; a revoked link is a 409. Only what changed is recorded; the first resolve
/// after the 200, on any query instance, sees the change.
#[utoipa::path(
    patch,
    path = "/v1/music/{org}/share/{share_id}",
    operation_id = "change_share_settings",
    tag = "shares",
    params(docs::Org, docs::Share),
    request_body(content = ShareSettingsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The link's settings after the change.", body = ShareSettingsObject),
        (status = 400, description = "Malformed JSON, or a `Content-Type` other than JSON.", body = ErrorEnvelope),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such share link of the caller's.", body = ErrorEnvelope),
        (status = 409, description = "The link is revoked: \"This share link is revoked.\"", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "A field is wrong, or no known field was sent (`body`); `details` names each.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the link kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn change_settings(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, share_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("share_id", &share_id, ShareLinkId::parse)?;
    let cmd_ctx = CommandContext::new(&caller);
    let ctx = context(&cmd_ctx, org);
    load_owned(&state, &id, &ctx).await?;

    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json {
        return Err(ApiError::bad_request(
            "Expected a JSON body with Content-Type: application/json",
        ));
    }
    let request: ShareSettingsRequest = service_kit::json::parse(&body)?;
    let (mut change, new_password) = request.validate()?;
    if let Some(password) = new_password {
        change.password = Some(Some(shares::hash_password(password).await?));
    }

    let stream = &StreamId::share(&id);
    let (state, cmd_ctx, ctx, id, change) = (&state, &cmd_ctx, &ctx, &id, &change);
    let share = decide::on_stream(state, cmd_ctx, stream, move || async move {
        let (share, history) = shares::load(state, id).await?;
        let command = ShareCommand::ChangeSettings(change.clone());
        let events = share_management::decide(share.as_ref(), command, ctx)
            .map_err(|r| Attempt::Failed(rejection(r, id)))?;
        if !events.is_empty() {
            decide::append(state, cmd_ctx, stream, history.expected(), &events).await?;
        }
        let now = ctx.now;
        let after = ShareLink::fold(
            history
                .events
                .iter()
                .map(|r| (&r.event, r.occurred_at))
                .chain(events.iter().map(|e| (e, now))),
        )
        .ok_or_else(|| Attempt::Failed(not_found("share_id", id.as_str())))?;
        Ok::<_, Attempt>(after)
    })
    .await?;
    Ok((StatusCode::OK, Json(ShareSettingsObject::new(&share))).into_response())
}

/// Rotate a share link's token: a new token, shown this once; the old one is dead from the
/// moment of the 201. The link keeps its id, settings, views taken and saved tracks.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/share/{share_id}/rotate",
    operation_id = "rotate_share_token",
    tag = "shares",
    params(docs::Org, docs::Share),
    responses(
        (status = 201, description = "The link with its new token and `url`.", body = ShareLinkObject,
            headers(("Cache-Control" = String, description = "`no-store`: the body holds a secret shown once."))),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such share link of the caller's.", body = ErrorEnvelope),
        (status = 409, description = "The link is revoked: \"This share link is revoked.\"", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the link kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, share_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("share_id", &share_id, ShareLinkId::parse)?;
    let cmd_ctx = CommandContext::new(&caller);
    let ctx = context(&cmd_ctx, org);
    let stream = &StreamId::share(&id);
    let (state, cmd_ctx, ctx, id) = (&state, &cmd_ctx, &ctx, &id);
    let (share, token): (ShareLink, ShareToken) =
        decide::on_stream(state, cmd_ctx, stream, move || async move {
            let (share, history) = shares::load(state, id).await?;
            // Refuse before drawing and indexing a token the decision would not use.
            let token = ShareToken::generate();
            let command = ShareCommand::RotateToken {
                token_hash: token.hash(),
            };
            let events = share_management::decide(share.as_ref(), command, ctx)
                .map_err(|r| Attempt::Failed(rejection(r, id)))?;
            let flushed = state.settings.index_flushed_by_append;
            if !shares::index_token(&state.pool, flushed, &token, id).await? {
                return Err(Attempt::Conflict);
            }
            decide::append(state, cmd_ctx, stream, history.expected(), &events).await?;
            let now = ctx.now;
            let after = ShareLink::fold(
                history
                    .events
                    .iter()
                    .map(|r| (&r.event, r.occurred_at))
                    .chain(events.iter().map(|e| (e, now))),
            )
            .ok_or_else(|| Attempt::Failed(not_found("share_id", id.as_str())))?;
            Ok::<_, Attempt>((after, token))
        })
        .await?;
    let created_at: DateTime<Utc> = share.created_at;
    Ok(ShareLinkObject::new(
        &share.created,
        &token,
        created_at,
        &state.settings.public_base_url,
    )
    .created())
}
