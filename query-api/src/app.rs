//! Wiring: the settings, the shared state, the routes and the background tasks of one
//! query-API instance. The binary (`cli`) and the benchmark both build it from here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::Router;
use service_kit::auth::ApiKeys;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::publisher::Publisher;
use crate::audit::spool::Spool;
use crate::audit::{self, Auditor};
use crate::cache::ResolveCache;
use crate::client_ip::TrustedProxies;
use crate::playback::{self, PlaybackSigner};
use crate::rate_limit::ResolveLimit;
use crate::resolve::Resolver;
use crate::stats::ViewStats;
use crate::{media, notices, resolve, shares};

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
    pub trusted_proxies: String,
    pub cache_enabled: bool,
    pub audit_enabled: bool,
    pub nats_url: String,
    pub notice_namespace: String,
    pub stats_flush_every: Duration,
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

/// The state every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub resolver: Arc<Resolver>,
    pub limit: ResolveLimit,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub auditor: Auditor,
    pub signer: Arc<PlaybackSigner>,
    pub media_dir: Arc<PathBuf>,
    pub stats: ViewStats,
    pub api_keys: ApiKeys,
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
        .routes(routes!(resolve::handler))
        .routes(routes!(media::handler))
        .routes(routes!(shares::handler))
}

/// A running instance: its state and the tasks behind it.
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
        let trusted_proxies =
            TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg)?;
        let limit = ResolveLimit::new(settings.resolve_rate_per_minute, settings.resolve_burst)
            .map_err(anyhow::Error::msg)?;
        let keys = playback::keys_or_dev_key(
            settings.playback_signing_keys.as_deref(),
            &settings.dev_key_file(),
        )?;
        let signer =
            PlaybackSigner::new(&keys, settings.playback_url_ttl, &settings.media_base_url)
                .map_err(anyhow::Error::msg)?;

        let nats = async_nats::ConnectOptions::new()
            .name("query-api")
            .retry_on_initial_connect()
            .connect(settings.nats_url.as_str())
            .await?;

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let cache = Arc::new(ResolveCache::new(settings.cache_enabled));
        tasks.push(tokio::spawn(notices::listen(
            nats.clone(),
            settings.notice_namespace.clone(),
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
            let publisher = Publisher::new(nats.clone(), spool);
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
        tasks.push(tokio::spawn(limit.clone().sweep(Duration::from_secs(5))));

        let state = AppState {
            resolver: Arc::new(Resolver::new(pool.clone(), cache)),
            limit,
            trusted_proxies: Arc::new(trusted_proxies),
            auditor,
            signer: Arc::new(signer),
            media_dir: Arc::new(settings.media_dir.clone()),
            stats,
            api_keys: ApiKeys::new(pool.clone()),
            pool,
        };
        Ok(App {
            state,
            stop,
            publisher,
            tasks,
        })
    }

    /// The API's own routes (without health, metrics and the shared layers).
    pub fn routes(&self) -> Router {
        self.api().into()
    }

    /// [`App::routes`] with their OpenAPI operations.
    pub fn api(&self) -> OpenApiRouter {
        routes().with_state(self.state.clone())
    }

    /// Stops the background tasks: view statistics are flushed, audit events still queued are
    /// published or spooled.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        // Drop our sender so the publisher sees the channel close once requests are done.
        let state = self.state.clone();
        drop(self.state.auditor.clone());
        if let Err(e) = state.stats.flush(&state.pool).await {
            tracing::warn!(error = %e, "could not flush view statistics at shutdown");
        }
        if let Some(publisher) = self.publisher.take() {
            if tokio::time::timeout(Duration::from_secs(10), publisher)
                .await
                .is_err()
            {
                tracing::error!("the audit publisher did not stop in time");
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}
