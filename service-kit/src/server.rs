//! Serving: the layers every API shares, health and metrics routes, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{request_id, telemetry, ApiError};

/// A readiness probe: `Err` names the dependency that is down.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/healthz` (the process is alive), `/readyz` (its dependencies answer) and `/metrics`.
pub fn health_routes<S: Clone + Send + Sync + 'static>(ready: ReadyCheck) -> Router<S> {
    // Installed now, when the process starts serving: counts recorded before the first scrape
    // would otherwise go nowhere.
    let metrics = telemetry::metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => Json(json!({"status": "ready"})).into_response(),
                        Err(down) => {
                            ApiError::unavailable(format!("Not ready: {down}")).into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}

/// Wraps an API's routes with what every API does alike: 404 and 405 in the envelope, panics
/// turned into a 500 envelope, access logs and metrics, and request ids (outermost, so every
/// response, even a panic's, carries one).
pub fn finish(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found("No route matches this path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            ApiError::internal("a request handler panicked").into_response()
        }))
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

/// Serves `app` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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

/// The status and body of a JSON acknowledgement (`{"success":true,"id","detail"}`).
pub fn ack(status: StatusCode, id: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"success": true, "id": id, "detail": detail})),
    )
        .into_response()
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
