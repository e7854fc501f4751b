//! Serving: the layers every API shares, health and metrics routes, graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::error::ErrorEnvelope;
use crate::{http_limits, request_id, telemetry, ApiError};

/// A readiness probe: `Err` names the dependency that is down.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/healthz` (the process is alive), `/readyz` (its dependencies answer) and `/metrics`, with
/// their OpenAPI operations.
pub fn health_api<S: Clone + Send + Sync + 'static>(ready: ReadyCheck) -> OpenApiRouter<S> {
    // Installed now, when the process starts serving: counts recorded before the first scrape
    // would otherwise go nowhere.
    let _ = telemetry::metrics_handle();
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz).layer(Extension(ready)))
        .routes(routes!(metrics))
}

/// [`health_api`] without its documentation, for processes that serve no OpenAPI document.
pub fn health_routes<S: Clone + Send + Sync + 'static>(ready: ReadyCheck) -> Router<S> {
    health_api(ready).into()
}

/// The body of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = HealthStatus)),
)]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: every dependency the process needs answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers.", body = HealthStatus),
        (status = 503, description = "A dependency is down (named in `system_message`).", body = ErrorEnvelope),
    ),
)]
pub async fn readyz(Extension(ready): Extension<ReadyCheck>) -> Response {
    match ready().await {
        Ok(()) => Json(HealthStatus { status: "ready" }).into_response(),
        Err(down) => ApiError::unavailable(format!("Not ready: {down}")).into_response(),
    }
}

/// Prometheus metrics of this process (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition.", body = String, content_type = "text/plain")),
)]
pub async fn metrics() -> String {
    telemetry::metrics_handle().render()
}

/// Wraps an API's routes with what every API does alike: 404 and 405 in the envelope, panics
/// turned into a 500 envelope, the contract's limits on a request's head, access logs and metrics, and request ids (outermost, so every
/// response, even a panic's, carries one).
pub fn finish(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found("No route matches this path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            ApiError::internal("a request handler panicked").into_response()
        }))
        .layer(middleware::from_fn(http_limits::enforce))
        .layer(middleware::from_fn(telemetry::track_http))
        .layer(middleware::from_fn(request_id::propagate))
}

/// Binds `addr`, logging the bound address (tests bind port 0 and read it from the log line).
pub async fn bind(addr: &str, what: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, service = what, "listening");
    Ok(listener)
}

/// What an API binary does with its router: binds `addr` ([`bind`]) and [`serve`]s until
/// SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn run(addr: &str, service: &str, router: Router) -> std::io::Result<()> {
    let listener = bind(addr, service).await?;
    serve(listener, router, shutdown_signal()).await
}

/// Serves `app` until `shutdown` completes, then drains in-flight requests, with the
/// contract's connection timeouts (see [`crate::connection`]). The one place any process hands
/// connections to the HTTP server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::connection::serve(listener, app, shutdown).await
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
}

/// A JSON acknowledgement, as the source pages' revoke and delete routes answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ack {
    /// Always `true`.
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    /// The id of the resource the command was about.
    pub id: String,
    /// What happened, in a sentence.
    #[schema(example = "Share link revoked.")]
    pub detail: String,
}

/// The status and body of a JSON acknowledgement (`{"success":true,"id","detail"}`).
pub fn ack(status: StatusCode, id: &str, detail: &str) -> Response {
    let body = Ack {
        success: true,
        id: id.to_owned(),
        detail: detail.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// A readiness check from an async closure.
pub fn ready_check<F, Fut>(check: F) -> ReadyCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

/// PostgreSQL answers a trivial query.
pub async fn postgres_ready(pool: &sqlx::PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(|_| "postgres".to_owned())
}

/// Runs a binary's async main on a fresh runtime and turns its outcome into an exit code, with
/// the error (and its causes) on stderr and in the log.
pub fn run_main<F>(name: &str, main: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
