//! Logs and metrics, the same way in every process.
//!
//! Logs are JSON lines on stderr (stdout belongs to commands' output), each carrying the request
//! id of the request it belongs to. Access lines name the route *template*, never the raw path:
//! the public resolve path contains a share token, and tokens must never reach a log.
//! Metrics are Prometheus text on `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// What is logged unless `RUST_LOG` says otherwise. symphonia reports a file it cannot read as
/// an error of its own; for us that is a client's bad upload, answered with a 422, not an error.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,symphonia_core=off,symphonia=off";

/// JSON logs on stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]). Safe to call
/// twice.
pub fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .with_span_list(true)
        .try_init();
    install_panic_hook();
}

/// Reports a panic as one JSON log line (message, location and, with `RUST_BACKTRACE`, the
/// backtrace as one string field) instead of the default multi-line text on stderr: every line
/// of a log stays one JSON object, and a client that can trigger a panic cannot flood the log
/// with backtraces. The panic itself still unwinds as before (a handler's becomes a 500).
pub fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let backtrace = std::backtrace::Backtrace::capture();
            let backtrace = match backtrace.status() {
                std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
                _ => String::new(),
            };
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            if tracing::dispatcher::has_been_set() {
                tracing::error!(panic = message, location, thread, backtrace, "panicked");
            } else {
                let line = serde_json::json!({
                    "timestamp": chrono::Utc::now().to_rfc3339(),
                    "level": "ERROR",
                    "fields": {"message": "panicked", "panic": message, "location": location,
                               "thread": thread, "backtrace": backtrace},
                });
                eprintln!("{line}");
            }
        }));
    });
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (several services in one test process): keep a
                // private one so `/metrics` still renders.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// One metric a process reports, with the help text `/metrics` shows for it.
pub struct Metric {
    kind: Kind,
    name: &'static str,
    help: &'static str,
    /// Label sets to show at zero before anything happens (counters and gauges only).
    series: &'static [&'static [(&'static str, &'static str)]],
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric {
            kind: Kind::Counter,
            name,
            help,
            series: &[&[]],
        }
    }
    pub const fn gauge(name: &'static str, help: &'static str) -> Metric {
        Metric {
            kind: Kind::Gauge,
            name,
            help,
            series: &[&[]],
        }
    }
    pub const fn histogram(name: &'static str, help: &'static str) -> Metric {
        Metric {
            kind: Kind::Histogram,
            name,
            help,
            series: &[],
        }
    }
    /// Shows these label sets at zero instead of the bare name.
    pub const fn series(
        self,
        series: &'static [&'static [(&'static str, &'static str)]],
    ) -> Metric {
        Metric { series, ..self }
    }
}

/// What every HTTP process reports.
pub const HTTP_METRICS: &[Metric] = &[
    Metric::counter(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status",
    )
    .series(&[]),
    Metric::histogram(
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by method, route template and status",
    ),
];

/// Installs the recorder and describes `metrics`, with counters and gauges at zero, so every
/// series is on `/metrics` from the first scrape: an alert on a counter that has never moved
/// must still find it.
pub fn describe(metrics: &[Metric]) {
    let _ = metrics_handle();
    for m in HTTP_METRICS.iter().chain(metrics) {
        match m.kind {
            Kind::Counter => {
                metrics::describe_counter!(m.name, m.help);
                for labels in m.series {
                    metrics::counter!(m.name, *labels).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(m.name, m.help);
                for labels in m.series {
                    metrics::gauge!(m.name, *labels).increment(0.0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Middleware: one access log line and two metrics per request (a counter and a latency
/// histogram), labelled by method, route template and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let labels = [
        ("method", method.clone()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::info!(
        method,
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request completed"
    );
    response
}
