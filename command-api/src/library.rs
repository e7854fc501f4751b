//! Libraries: a signed-in user saves a shared track (`POST /v1/music/shared/{token}/save`).
//!
//! A library's stream is `library-{user}`; its edges are keyed by track, so saving a track again,
//! through any link, returns the edge already there. Only a live track share can be saved; every
//! other case (unknown or malformed token, a collection share, revoked, expired, over its view
//! limit, removed content) is the one dead-link 404, so this route tells a token holder nothing
//! the public resolve would not.
//!
//! The share is found through the command side's own token index and decided from its stream.
//! Whether a link is over `max_views` depends on how often it was opened, which only the query
//! side knows: this reads that one counter row (`query_side.share_usage`), read-only, and only
//! for links that have a limit. Without a row the link has not been opened.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::SharedTrackSaved;
use events::ids::{LibraryItemId, ShareLinkId, TrackId};
use events::password::SharePassword;
use events::share_token::ShareToken;
use events::{MusicEvent, StreamId};
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::decide::{self, rfc3339, Attempt, CommandContext, History};
use crate::domain::share_management::{self, SaveAccess};
use crate::params::{docs, PathParams};
use crate::{shares, tracks};

/// One saved track in a library.
#[derive(Clone, Debug)]
pub struct LibraryItem {
    pub saved: SharedTrackSaved,
    pub created_at: DateTime<Utc>,
}

/// The edges of a library stream, in the order they were saved.
pub fn items(history: &History) -> Vec<LibraryItem> {
    history
        .events
        .iter()
        .filter_map(|recorded| match &recorded.event {
            MusicEvent::SharedTrackSaved(saved) => Some(LibraryItem {
                saved: saved.clone(),
                created_at: recorded.occurred_at,
            }),
            _ => None,
        })
        .collect()
}

/// A saved track in the caller's library.
#[derive(Debug, Serialize, ToSchema)]
pub struct LibraryItemObject {
    #[schema(example = "mlib_3f9c27a1d5e8")]
    pub id: String,
    pub track_id: String,
    /// Always `shared`.
    #[schema(example = "shared")]
    pub source: &'static str,
    pub share_link_id: String,
    /// When the track was first saved (UTC, whole seconds).
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn item_view(item: &LibraryItem) -> LibraryItemObject {
    LibraryItemObject {
        id: item.saved.library_item_id.to_string(),
        track_id: item.saved.track_id.to_string(),
        source: "shared",
        share_link_id: item.saved.share_link_id.to_string(),
        created_at: rfc3339(item.created_at),
    }
}

/// Save a shared track to the caller's library: only a live track share can be saved.
#[utoipa::path(
    post,
    path = "/v1/music/shared/{token}/save",
    operation_id = "save_shared_track",
    tag = "library",
    params(
        docs::Token,
        ("X-Share-Password" = Option<String>, Header,
            description = "The link's password, if it has one (a protected link needs it)."),
    ),
    responses(
        (status = 201, description = "Saved now.", body = LibraryItemObject),
        (status = 200, description = "Saved before (through any link): the existing edge.", body = LibraryItemObject),
        (status = 401, description = "No API key, or an unknown one (`AUTHENTICATION_REQUIRED`); or the link has a password and `X-Share-Password` is missing (`PASSWORD_REQUIRED`) or wrong (`INVALID_PASSWORD`).", body = ErrorEnvelope),
        (status = 404, description = "Not a live track share: unknown, malformed, revoked, expired, over its limit, a collection share, or removed content.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the library kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let password = headers
        .get(SHARE_PASSWORD_HEADER)
        .map(|v| SharePassword::new(String::from_utf8_lossy(v.as_bytes())));
    let (share_id, track_id) = live_track_share(&state, &token, ctx.now(), password).await?;
    let user = ctx.actor.clone();
    let stream = StreamId::library(&user);
    let (state, ctx, stream, user) = (&state, &ctx, &stream, &user);
    let (share_id, track_id) = (&share_id, &track_id);
    let (created, item) = decide::on_stream(state, ctx, stream, move || async move {
        let history = decide::read(state.store.as_ref(), stream).await?;
        if let Some(existing) = items(&history)
            .into_iter()
            .find(|i| &i.saved.track_id == track_id)
        {
            return Ok((false, existing));
        }
        let saved = SharedTrackSaved {
            library_item_id: LibraryItemId::generate(),
            user_id: user.clone(),
            track_id: track_id.clone(),
            share_link_id: share_id.clone(),
        };
        let event = MusicEvent::SharedTrackSaved(saved.clone());
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>((
            true,
            LibraryItem {
                saved,
                created_at: ctx.now(),
            },
        ))
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(item_view(&item))).into_response())
}

/// The header a protected link's password travels in (as on the public resolve).
pub const SHARE_PASSWORD_HEADER: &str = "x-share-password";

/// The share and track behind `raw_token`, if it is a live link to a live track and, when the
/// link has a password, `password` is it (401 otherwise, as on the public resolve).
async fn live_track_share(
    state: &AppState,
    raw_token: &str,
    now: DateTime<Utc>,
    password: Option<SharePassword>,
) -> Result<(ShareLinkId, TrackId), ApiError> {
    let dead = ApiError::dead_share_link;
    let token = ShareToken::parse(raw_token).ok_or_else(dead)?;
    let share_id = shares::find_by_token(&state.pool, &token)
        .await?
        .ok_or_else(dead)?;
    let (share, _) = shares::load(state, &share_id).await?;
    let access = share_management::save_access(share.as_ref(), &token.hash(), now);
    let (Some(access), Some(share)) = (access, share) else {
        return Err(dead());
    };
    if let SaveAccess::NeedsPassword(hash) = access {
        let Some(password) = password else {
            return Err(ApiError::password_required());
        };
        let right = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .map_err(ApiError::internal)?;
        if !right {
            return Err(ApiError::invalid_password());
        }
    }
    if let Some(max_views) = share.created.max_views {
        if views_used(&state.pool, &share_id).await? >= i64::from(max_views) {
            return Err(dead());
        }
    }
    let track_id = TrackId::parse(&share.created.target_id).map_err(|_| dead())?;
    let (track, _) = tracks::load(state, &track_id).await?;
    if !track.is_some_and(|t| t.is_live_in(&share.created.organization_id)) {
        return Err(dead());
    }
    Ok((share_id, track_id))
}

/// Successful resolves so far of a link with a view limit (see the module docs).
async fn views_used(pool: &PgPool, share_id: &ShareLinkId) -> Result<i64, sqlx::Error> {
    let used: Option<i64> =
        sqlx::query_scalar("SELECT used FROM query_side.share_usage WHERE share_id = $1")
            .bind(share_id.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(used.unwrap_or(0))
}
