//! Libraries over HTTP: a signed-in user saves a shared track
//! (`POST /v1/music/shared/{token}/save`). The rules are in [`crate::domain::library`].
//!
//! The link is found through the command side's own token index and folded from its stream.
//! Whether a link is over `max_views` depends on how often it was opened, which only the query
//! side knows: this reads that one counter row ([`events::share_usage`]), read-only, and only
//! for links that have a limit.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::event::TargetType;
use events::format::rfc3339;
use events::ids::{LibraryItemId, TrackId};
use events::password::SharePassword;
use events::share_token::{ShareToken, TokenHash};
use events::share_usage;
use events::StreamId;
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::library::{self, LibraryCommand, LibraryItem, PasswordCheck};
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
    let (share, track, views_used) = load_link(&state, &token).await?;
    let password = check_password(&share, &headers).await?;
    let presented = TokenHash::of(&token);
    let decider = ctx.decider();
    let command = |library_item_id| LibraryCommand::Save {
        share: share.clone(),
        track: track.clone(),
        views_used,
        library_item_id,
        presented: presented.clone(),
        password,
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

/// The header a protected link's password travels in (as on the public resolve).
pub const SHARE_PASSWORD_HEADER: &str = "x-share-password";

/// Checks `X-Share-Password` against a protected link's hash, on a blocking thread (Argon2id
/// takes tens of milliseconds of CPU). Nothing to check for an open link.
async fn check_password(
    share: &Option<ShareLink>,
    headers: &HeaderMap,
) -> Result<PasswordCheck, ApiError> {
    let Some(hash) = share.as_ref().and_then(|s| s.facts.password_hash.clone()) else {
        return Ok(PasswordCheck::NotSent);
    };
    let Some(sent) = headers.get(SHARE_PASSWORD_HEADER) else {
        return Ok(PasswordCheck::NotSent);
    };
    let candidate = SharePassword::new(String::from_utf8_lossy(sent.as_bytes()));
    let right = tokio::task::spawn_blocking(move || hash.verify(&candidate))
        .await
        .map_err(ApiError::internal)?;
    Ok(if right {
        PasswordCheck::Right
    } else {
        PasswordCheck::Wrong
    })
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
        Some(_) => share_usage::views_taken(&state.pool, share_id.as_str()).await?,
        None => 0,
    };
    Ok((share, track, views_used))
}
