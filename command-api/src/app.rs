//! The HTTP application: state, routes, and the lifecycle of a running instance ([`App`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::Router;
use events::EventStore;
use service_kit::auth::ApiKeys;
use service_kit::openapi;
use service_kit::server::{self, ReadyCheck};
use service_kit::telemetry::{self, Metric};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::read_your_writes::ProjectorProgress;
use crate::runner::Runner;
use crate::{collections, library, share_settings, shares, tracks};

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
    /// The event log is in the command side's own PostgreSQL database, so the token index row
    /// is written by the append's own statement (see `shares::index_token`).
    pub index_in_append: bool,
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> ApiKeys {
        state.api_keys.clone()
    }
}

/// A running instance, with the lifecycle both APIs share: [`App::start`], [`App::router`]
/// (served by `service_kit::server::run`), [`App::shutdown`].
pub struct App {
    pub state: AppState,
}

impl App {
    /// Builds the state from what the binary opened: the database (identity tables, token
    /// index), the event log, and the projector's progress heard on NATS (which keeps trying in
    /// the background, so NATS being down is not an error).
    pub async fn start(
        settings: Settings,
        pool: PgPool,
        store: Arc<dyn EventStore>,
        projector: ProjectorProgress,
    ) -> anyhow::Result<App> {
        telemetry::describe(METRICS);
        let state = AppState {
            api_keys: ApiKeys::new(pool.clone()),
            pool,
            runner: Runner::new(store, projector),
            settings: Arc::new(settings),
        };
        Ok(App { state })
    }

    /// The whole application, ready to serve: the command routes, health, readiness, metrics and
    /// `/openapi.json`, behind the layers every API shares.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let ready = readiness(state.clone());
        let api = routes(upload_limit(&state.settings))
            .with_state(state)
            .merge(server::health_api(ready));
        server::finish(openapi::serve(api))
    }

    /// After the server has drained: nothing of its own is left to flush (a command answers
    /// only once its events are appended), so this only marks the end, as the query API's does.
    pub async fn shutdown(self) {
        tracing::info!("command-api stopped");
    }
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
        .routes(routes!(shares::revoke, share_settings::change_settings))
        .routes(routes!(share_settings::rotate))
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
