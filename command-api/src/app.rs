//! The HTTP application: state and routes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, patch, post};
use axum::Router;
use events::EventStore;
use service_kit::auth::ApiKeys;
use service_kit::server::{self, ReadyCheck};
use service_kit::telemetry::{self, Metric};
use sqlx::PgPool;

use crate::read_your_writes::ProjectorProgress;
use crate::{collections, library, shares, tracks};

/// What the command API reports on `/metrics`, beside the HTTP metrics every process has.
pub const METRICS: &[Metric] = &[
    Metric::counter(
        "events_appended_total",
        "Events appended to the event log, by event type",
    )
    .series(&[]),
    Metric::counter(
        "command_conflicts_total",
        "Appends that lost a race for a stream and were decided again",
    ),
    Metric::histogram(
        "read_your_writes_wait_seconds",
        "Time a command waited for the projector to reach its events",
    ),
    Metric::counter(
        "read_your_writes_timeouts_total",
        "Commands answered before the projector was heard reaching their events",
    ),
];

/// What every handler may use, passed by axum's `State`.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
    pub api_keys: ApiKeys,
    pub settings: Arc<Settings>,
    pub projector: ProjectorProgress,
    pub stream_locks: crate::decide::StreamLocks,
}

/// The command API's own configuration (see `cli`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Share `url`s start with this (no trailing slash).
    pub public_base_url: String,
    /// Uploaded audio lives here, content-addressed; uploads in progress under `tmp/`.
    pub media_dir: PathBuf,
    /// The largest audio file accepted.
    pub max_upload_bytes: u64,
    /// The event log is in the command side's own PostgreSQL database, so an append's commit
    /// also makes the command side's earlier writes durable (see `shares::index_token`).
    pub index_flushed_by_append: bool,
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> ApiKeys {
        state.api_keys.clone()
    }
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    telemetry::describe(METRICS);
    let ready = readiness(state.clone());
    // Uploads stream to disk and count their own bytes; the body limit only stops a form far
    // beyond any acceptable audio file.
    let upload_limit = usize::try_from(
        state
            .settings
            .max_upload_bytes
            .saturating_add(tracks::FORM_OVERHEAD_BYTES),
    )
    .unwrap_or(usize::MAX);
    let api = Router::new()
        .route(
            "/v1/music/{org}/tracks",
            post(tracks::import).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/music/{org}/tracks/{track_id}", delete(tracks::remove))
        .route(
            "/v1/music/{org}/tracks/{track_id}/share",
            post(shares::share_track),
        )
        .route("/v1/music/{org}/collections", post(collections::create))
        .route(
            "/v1/music/{org}/collections/{collection_id}",
            delete(collections::remove),
        )
        .route(
            "/v1/music/{org}/collections/{collection_id}/tracks",
            post(collections::add_track),
        )
        .route(
            "/v1/music/{org}/collections/{collection_id}/tracks/{track_id}",
            delete(collections::remove_track),
        )
        .route(
            "/v1/music/{org}/collections/{collection_id}/order",
            patch(collections::reorder),
        )
        .route(
            "/v1/music/{org}/collections/{collection_id}/share",
            post(shares::share_collection),
        )
        .route("/v1/music/{org}/share/{share_id}", delete(shares::revoke))
        .route("/v1/music/shared/{token}/save", post(library::save))
        .with_state(state);
    server::finish(api.merge(server::health_routes(ready)))
}

fn readiness(state: AppState) -> ReadyCheck {
    server::ready_check(move || {
        let state = state.clone();
        async move {
            server::postgres_ready(&state.pool).await?;
            state
                .store
                .head()
                .await
                .map_err(|_| "event store".to_owned())?;
            Ok(())
        }
    })
}
