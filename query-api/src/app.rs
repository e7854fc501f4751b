//! Wiring: the settings, the shared state, the routes and the background tasks of one
//! query-API instance. The binary (`cli`) and the benchmark both build it from here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::Router;
use service_kit::auth::ApiKeys;
use service_kit::server;
use service_kit::telemetry::{self, Metric};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::audit::publisher::Publisher;
use crate::audit::spool::Spool;
use crate::audit::{self, Auditor};
use crate::cache::ResolveCache;
use crate::client_ip::TrustedProxies;
use crate::password_check::PasswordChecker;
use crate::password_guard::PasswordGuard;
use crate::playback::{self, PlaybackSigner};
use crate::rate_limit::shared::RedisLimits;
use crate::rate_limit::ResolveLimit;
use crate::resolve::Resolver;
use crate::stats::ViewStats;
use crate::used_up::UsedUpLinks;
use crate::{media, notices, resolve, shares};

/// What a query-API instance reports on `/metrics`, beside the HTTP metrics every process has.
pub const METRICS: &[Metric] = &[
    Metric::counter(
        "resolve_cache_hits_total",
        "Resolves answered from the cache",
    ),
    Metric::counter(
        "resolve_cache_misses_total",
        "Resolves that read the read models",
    ),
    Metric::counter(
        "resolve_rate_limited_total",
        "Resolves refused by the per-client-IP rate limit",
    ),
    Metric::gauge(
        "resolve_rate_limit_keys",
        "Client IPs the rate limiter currently remembers",
    ),
    Metric::gauge(
        "rate_limit_fallback_active",
        "1 while Redis does not answer and this instance limits alone; 0 otherwise",
    ),
    Metric::counter(
        "audit_published_total",
        "Audit events acknowledged by JetStream",
    ),
    Metric::counter(
        "audit_publish_failures_total",
        "Audit publish batches that JetStream did not fully acknowledge",
    ),
    Metric::counter(
        "audit_dropped_total",
        "Audit events lost: the request channel or the spool was full, or the spool unwritable",
    )
    .series(&[
        &[("reason", "channel_full")],
        &[("reason", "spool_full")],
        &[("reason", "spool_io")],
    ]),
    Metric::gauge(
        "audit_spool_depth",
        "Audit events waiting in the on-disk spool for NATS",
    ),
    Metric::gauge("audit_spool_bytes", "Size of the audit spool on disk"),
];

/// Everything one instance is configured with (the CLI fills it from flags and environment).
#[derive(Clone, Debug)]
pub struct Settings {
    pub media_base_url: String,
    pub media_dir: PathBuf,
    pub audit_spool_dir: PathBuf,
    pub audit_spool_max_bytes: u64,
    /// `kid:hexsecret,...`; `None` makes (once) and keeps a development key.
    pub playback_signing_keys: Option<String>,
    pub playback_url_ttl: Duration,
    pub resolve_rate_per_minute: u32,
    pub resolve_burst: u32,
    /// `RATE_LIMIT_REDIS_URL`: the limits are shared through this Redis; `None`: counted alone.
    pub rate_limit_redis_url: Option<String>,
    /// How long a limit waits for Redis before counting alone (`RATE_LIMIT_REDIS_TIMEOUT_MS`).
    pub rate_limit_redis_timeout: Duration,
    pub trusted_proxies: String,
    pub cache_enabled: bool,
    pub audit_enabled: bool,
    pub nats_url: String,
    /// `AUDIT_STREAM_REPLICAS`: the audit stream's copies if this instance creates it.
    pub audit_stream_replicas: usize,
    pub notice_namespace: String,
    pub stats_flush_every: Duration,
    /// Password checks at once, at most (0: [`PasswordChecker::default_workers`]).
    pub password_check_workers: usize,
}

impl Settings {
    /// Where the development signing key is kept: the data directory the spool lives in.
    pub fn dev_key_file(&self) -> PathBuf {
        let data_dir = self
            .audit_spool_dir
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        data_dir.join("playback-signing-key")
    }
}

/// The state every handler shares, behind one `Arc`: axum clones the state for every extractor
/// and layer of every request, and one reference count is all such a clone should cost.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub pool: PgPool,
    pub resolver: Arc<Resolver>,
    pub limit: ResolveLimit,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub auditor: Auditor,
    pub signer: Arc<PlaybackSigner>,
    pub media_dir: Arc<PathBuf>,
    pub stats: ViewStats,
    pub api_keys: ApiKeys,
    pub password_guard: Arc<PasswordGuard>,
    pub passwords: PasswordChecker,
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> ApiKeys {
        state.api_keys.clone()
    }
}

/// The query routes, each registered from its handler's OpenAPI operation (`routes!` takes the
/// path and the method from `#[utoipa::path]`), so the document is the route table.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(resolve::operation().layer(DefaultBodyLimit::max(resolve::FORM_LIMIT)))
        .routes(routes!(media::handler))
        .routes(routes!(shares::handler))
        .routes(routes!(crate::analytics::handler))
}

/// A running instance: its state and the tasks behind it, with the lifecycle both APIs share:
/// [`App::start`], [`App::router`] (served by `service_kit::server::run`), [`App::shutdown`].
pub struct App {
    pub state: AppState,
    stop: CancellationToken,
    publisher: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Builds the state and starts the background tasks. NATS being down is not an error: the
    /// client connects in the background, audit events wait in the spool, the cache relies on
    /// its TTL until notices flow.
    pub async fn start(settings: Settings, pool: PgPool) -> anyhow::Result<App> {
        telemetry::describe(METRICS);
        let trusted_proxies =
            TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg)?;
        let mut limit = ResolveLimit::new(settings.resolve_rate_per_minute, settings.resolve_burst)
            .map_err(anyhow::Error::msg)?;
        let redis_limits = match settings.rate_limit_redis_url.as_deref() {
            Some(url) if !url.is_empty() => Some(
                RedisLimits::new(
                    url,
                    &settings.notice_namespace,
                    settings.rate_limit_redis_timeout,
                )
                .map_err(anyhow::Error::msg)?,
            ),
            _ => None,
        };
        if let Some(redis) = &redis_limits {
            limit = limit.shared(redis.clone());
        }
        let keys = playback::keys_or_dev_key(
            settings.playback_signing_keys.as_deref(),
            &settings.dev_key_file(),
        )?;
        let signer =
            PlaybackSigner::new(&keys, settings.playback_url_ttl, &settings.media_base_url)
                .map_err(anyhow::Error::msg)?;

        let nats = service_kit::nats::connect("query-api", &settings.nats_url).await?;

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let cache = Arc::new(ResolveCache::new(settings.cache_enabled));
        // Subscribed before serving: a write's notice sent while the subscription was on its
        // way would leave a cached answer stale for its TTL.
        let notices_subscribed = service_kit::nats::subscribe_before_serving(
            &nats,
            &events::notice::subject(&settings.notice_namespace),
        )
        .await;
        tasks.push(tokio::spawn(notices::listen(
            nats.clone(),
            settings.notice_namespace.clone(),
            notices_subscribed,
            cache.clone(),
        )));

        let (auditor, publisher) = if settings.audit_enabled {
            let spool = Spool::open(&settings.audit_spool_dir, settings.audit_spool_max_bytes)?;
            tracing::info!(
                spool = %spool.dir().display(),
                pending = spool.pending(),
                "audit spool opened"
            );
            let (tx, rx) = mpsc::channel(audit::CHANNEL_CAPACITY);
            let publisher = Publisher::new(
                nats.clone(),
                spool,
                pool.clone(),
                settings.audit_stream_replicas,
            );
            let handle = tokio::spawn(publisher.run(rx, stop.clone()));
            (Auditor::new(tx), Some(handle))
        } else {
            (Auditor::disabled(), None)
        };

        let stats = ViewStats::default();
        tasks.push(tokio::spawn(
            stats
                .clone()
                .flush_every(pool.clone(), settings.stats_flush_every),
        ));
        tasks.push(tokio::spawn(limit.clone().maintain(Duration::from_secs(5))));

        let used_up = Arc::new(UsedUpLinks::shared(
            nats.clone(),
            &settings.notice_namespace,
        ));
        let subscribed = used_up.subscribe().await;
        tasks.push(tokio::spawn(used_up.clone().listen(subscribed)));
        let state = AppState::from(Shared {
            resolver: Arc::new(Resolver::new(pool.clone(), cache, used_up)),
            limit,
            trusted_proxies: Arc::new(trusted_proxies),
            auditor,
            signer: Arc::new(signer),
            media_dir: Arc::new(settings.media_dir.clone()),
            stats,
            api_keys: ApiKeys::new(pool.clone()),
            password_guard: Arc::new(PasswordGuard::new(redis_limits)),
            passwords: PasswordChecker::new(match settings.password_check_workers {
                0 => PasswordChecker::default_workers(),
                n => n,
            }),
            pool,
        });
        Ok(App {
            state,
            stop,
            publisher,
            tasks,
        })
    }

    /// The whole application, ready to serve: the query routes, health, readiness, metrics and
    /// `/openapi.json`, behind the layers every API shares.
    pub fn router(&self) -> Router {
        let pool = self.state.pool.clone();
        let ready = server::ready_check(move || {
            let pool = pool.clone();
            async move { server::postgres_ready(&pool).await }
        });
        let api = self.api().merge(server::health_api(ready));
        server::finish(service_kit::openapi::serve(api))
    }

    /// The API's own routes (without health, metrics and the shared layers).
    pub fn routes(&self) -> Router {
        self.api().into()
    }

    /// [`App::routes`] with their OpenAPI operations.
    pub fn api(&self) -> OpenApiRouter {
        routes().with_state(self.state.clone())
    }

    /// After the server has drained, stops the background tasks: view statistics are flushed,
    /// audit events still queued are published or spooled.
    pub async fn shutdown(mut self) {
        // The server has drained its requests, so everything they audited is in the channel;
        // told to stop, the publisher empties it (and the spool) before it returns.
        self.stop.cancel();
        let state = &self.state;
        if let Err(e) = state.stats.flush(&state.pool).await {
            tracing::warn!(error = %e, "could not flush view statistics at shutdown");
        }
        if let Some(publisher) = self.publisher.take() {
            // Its own grace for an unreachable NATS, and time to deliver after it.
            let bound = crate::audit::publisher::STOP_GRACE + Duration::from_secs(5);
            if tokio::time::timeout(bound, publisher).await.is_err() {
                tracing::error!("the audit publisher did not stop in time");
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        tracing::info!("query-api stopped");
    }
}
