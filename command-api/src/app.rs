//! The HTTP application: state and routes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::Router;
use service_kit::auth::ApiKeys;
use service_kit::openapi;
use service_kit::server::{self, ReadyCheck};
use service_kit::telemetry::{self, Metric};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::runner::Runner;
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
    /// The event store, behind the load–decide–append loop every command runs.
    pub runner: Runner,
    pub api_keys: ApiKeys,
    pub settings: Arc<Settings>,
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
    let api = routes(upload_limit(&state.settings))
        .with_state(state)
        .merge(server::health_api(ready));
    server::finish(openapi::serve(api))
}

/// The command routes, each registered from its handler's OpenAPI operation (`routes!` takes
/// the path and the method from `#[utoipa::path]`), so the document is the route table.
pub fn routes(upload_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(tracks::import).layer(DefaultBodyLimit::max(upload_limit)))
        .routes(routes!(tracks::remove))
        .routes(routes!(shares::share_track))
        .routes(routes!(collections::create))
        .routes(routes!(collections::remove))
        .routes(routes!(collections::add_track))
        .routes(routes!(collections::remove_track))
        .routes(routes!(collections::reorder))
        .routes(routes!(shares::share_collection))
        .routes(routes!(shares::revoke))
        .routes(routes!(library::save))
}

/// Uploads stream to disk and count their own bytes; the body limit only stops a form far beyond
/// any acceptable audio file.
fn upload_limit(settings: &Settings) -> usize {
    usize::try_from(
        settings
            .max_upload_bytes
            .saturating_add(tracks::FORM_OVERHEAD_BYTES),
    )
    .unwrap_or(usize::MAX)
}

fn readiness(state: AppState) -> ReadyCheck {
    server::ready_check(move || {
        let state = state.clone();
        async move {
            server::postgres_ready(&state.pool).await?;
            state
                .runner
                .store()
                .head()
                .await
                .map_err(|_| "event store".to_owned())?;
            Ok(())
        }
    })
}
