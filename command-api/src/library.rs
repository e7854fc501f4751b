//! Libraries over HTTP: a signed-in user saves a shared track
//! (`POST /v1/music/shared/{token}/save`). The rules are in [`crate::domain::library`].
//!
//! The link is found through the command side's own token index and folded from its stream.
//! Whether a link is over `max_views` depends on how often it was opened, which only the query
//! side knows: this reads that one counter row (`query_side.share_usage`), read-only, and only
//! for links that have a limit. Without a row the link has not been opened.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::event::TargetType;
use events::format::rfc3339;
use events::ids::{LibraryItemId, ShareLinkId, TrackId};
use events::share_token::ShareToken;
use events::StreamId;
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::library::{self, LibraryCommand, LibraryItem};
use crate::domain::share::ShareLink;
use crate::domain::track::Track;
use crate::params::{docs, PathParams};
use crate::runner::CommandContext;
use crate::{shares, tracks};

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
    params(docs::Token),
    responses(
        (status = 201, description = "Saved now.", body = LibraryItemObject),
        (status = 200, description = "Saved before (through any link): the existing edge.", body = LibraryItemObject),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "Not a live track share: unknown, malformed, revoked, expired, over its limit, a collection share, or removed content.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the library kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token): PathParams<String>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let (share, track, views_used) = load_link(&state, &token).await?;
    let decider = ctx.decider();
    let command = |library_item_id| LibraryCommand::Save {
        share: share.clone(),
        track: track.clone(),
        views_used,
        library_item_id,
    };
    let (created, item) = state
        .runner
        .on_stream(&ctx, &StreamId::library(&decider.actor), |history| {
            let before = library::from_history(&history.events);
            let events = library::decide(&before, command(LibraryItemId::generate()), &decider)?;
            let created = !events.is_empty();
            let after = ctx.recorded(&events).iter().fold(before, library::evolve);
            // Accepted: the link's track is saved, now or before.
            let item = target_track(&share).and_then(|track| after.item(&track).cloned());
            Ok((events, (created, item)))
        })
        .await?;
    let item = item.ok_or_else(|| ApiError::internal("a save decided without its edge"))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(item_view(&item))).into_response())
}

/// The track a link points at, if it points at one.
fn target_track(share: &Option<ShareLink>) -> Option<TrackId> {
    share
        .as_ref()
        .filter(|s| s.facts.target_type == TargetType::Track)
        .and_then(|s| TrackId::parse(&s.facts.target_id).ok())
}

/// What deciding a save needs from outside the library: the link `raw_token` names (if any),
/// the track it points at, and how often a limited link was opened.
async fn load_link(
    state: &AppState,
    raw_token: &str,
) -> Result<(Option<ShareLink>, Option<Track>, u64), ApiError> {
    let Some(token) = ShareToken::parse(raw_token) else {
        return Ok((None, None, 0));
    };
    let Some(share_id) = shares::find_by_token(&state.pool, &token).await? else {
        return Ok((None, None, 0));
    };
    let share = shares::load(state, &share_id).await?;
    let track = match target_track(&share) {
        Some(track_id) => tracks::load(state, &track_id).await?,
        None => None,
    };
    let views_used = match share.as_ref().and_then(|s| s.facts.max_views) {
        Some(_) => views_used(&state.pool, &share_id).await?,
        None => 0,
    };
    Ok((share, track, views_used))
}

/// Successful resolves so far of a link with a view limit (see the module docs).
async fn views_used(pool: &PgPool, share_id: &ShareLinkId) -> Result<u64, sqlx::Error> {
    let used: Option<i64> =
        sqlx::query_scalar("SELECT used FROM query_side.share_usage WHERE share_id = $1")
            .bind(share_id.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(used.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}
