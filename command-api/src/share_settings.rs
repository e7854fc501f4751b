//! Managing a share link after creating it: change its settings (`PATCH`) and rotate its token.
//!
//! Why a module of its own: these routes parse and load, then leave the decision to
//! `domain::share` (`ShareCommand::ChangeSettings`, `ShareCommand::Rotate`) and append what it
//! decided through the runner; `shares` keeps creation and
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
use events::format::rfc3339;
use events::ids::ShareLinkId;
use events::share_token::ShareToken;
use events::StreamId;
use serde::Serialize;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::share::{self, ShareCommand, ShareLink, ShareSettingsRequest};
use crate::params::{docs, Resource};
use crate::runner::{CommandContext, Decision};
use crate::shares::{self, LinkErrors, LinkSettings, ShareLinkObject};

/// A share link's settings as they are after the change (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareSettingsObject {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub id: String,
    #[serde(flatten)]
    pub settings: LinkSettings,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last change of settings or token (UTC, whole seconds); `created_at` before any.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl ShareSettingsObject {
    fn new(share: &ShareLink) -> Self {
        ShareSettingsObject {
            id: share.facts.share_id.to_string(),
            settings: LinkSettings::of(share),
            created_at: rfc3339(share.created_at),
            updated_at: rfc3339(share.updated_at),
        }
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
        (status = 409, description = "The link is revoked: \"This share link is revoked.\"", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "A field is wrong, or no known field was sent (`body`); `details` names each.", body = ErrorEnvelope),
        LinkErrors,
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn change_settings(
    State(state): State<AppState>,
    Resource { caller, org, id }: Resource<ShareLinkId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let decider = ctx.decider();
    // Who may act, before the body: a stranger's request is the 404 whatever it holds.
    let before = shares::load(&state, &id).await?;
    if !before
        .as_ref()
        .is_some_and(|s| s.is_owned_by(&org, &decider.actor))
    {
        return Err(crate::params::not_found("share_id", id.as_str()));
    }
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
    let body: ShareSettingsRequest = service_kit::json::parse(&body)?;
    // Hashed only for the link's creator, and only a password the decision will accept.
    let password_hash = match body.settable_password() {
        Some(password) if before.as_ref().is_some_and(|s| !s.revoked) => {
            Some(shares::hash_password(password).await?)
        }
        _ => None,
    };
    let command = ShareCommand::ChangeSettings {
        org,
        share_id: id.clone(),
        body,
        password_hash,
    };
    let after = state
        .runner
        .on_stream(&ctx, &StreamId::share(&id), |history| {
            let link = share::from_history(&history.events);
            let events = share::decide(&link, command.clone(), &decider)?;
            let after = ctx.recorded(&events).iter().fold(link, share::evolve);
            Ok((events, after))
        })
        .await?;
    let after = after.ok_or_else(|| ApiError::internal("a changed link without its stream"))?;
    Ok((StatusCode::OK, Json(ShareSettingsObject::new(&after))).into_response())
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
        (status = 409, description = "The link is revoked: \"This share link is revoked.\"", body = ErrorEnvelope),
        LinkErrors,
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    Resource { caller, org, id }: Resource<ShareLinkId>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let decider = ctx.decider();
    let (state_ref, org, id_ref, decider, ctx_ref) = (&state, &org, &id, &decider, &ctx);
    // Like creation: a fresh token per attempt, indexed before the event that makes it current.
    let (link, token) = state
        .runner
        .new_stream(&ctx, move || async move {
            let stream = StreamId::share(id_ref);
            let history = state_ref.runner.read(&stream).await?;
            let before = share::from_history(&history.events);
            let token = ShareToken::generate();
            let command = ShareCommand::Rotate {
                org: org.clone(),
                share_id: id_ref.clone(),
                token_hash: token.hash(),
            };
            // Decided before the token is indexed: a refused command writes nothing.
            let events = share::decide(&before, command, decider)?;
            let after = ctx_ref
                .recorded(&events)
                .iter()
                .fold(before, share::evolve)
                .ok_or_else(|| ApiError::internal("a rotated link without its stream"))?;
            let claim = shares::index_token(state_ref, &token, id_ref).await?;
            Ok(Decision {
                stream,
                expected: history.expected(),
                events,
                claim,
                answer: (after, token),
            })
        })
        .await?;
    Ok(shares::created(shares::link_object(&state, link, &token)))
}
