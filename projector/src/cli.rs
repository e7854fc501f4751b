//! The `projector` binary: runs the subscription by default; `rebuild`, `replay` and `status`
//! are one-shot commands whose output goes to stdout (logs stay on stderr).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use events::EventStore;
use service_kit::config::{EventStoreArgs, ServiceArgs};
use service_kit::{server, telemetry};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::analytics::{self, visitor::VisitorKey};
use crate::notices::Notifier;
use crate::{rebuild, replay, status, subscription};

#[derive(Parser, Debug)]
#[command(
    name = "projector",
    version,
    about = "music-share projector (event log -> read models)"
)]
pub struct Cli {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub event_store: EventStoreArgs,
    /// Health and metrics of the projector.
    #[arg(long, env = "PROJECTOR_ADMIN_ADDR", default_value = "127.0.0.1:8082")]
    pub admin_addr: String,
    /// Events per batch (one transaction each) while keeping the live read models current.
    #[arg(long, env = "PROJECTOR_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// How long an idle projector waits for a wake-up before polling the log, in milliseconds.
    #[arg(long, env = "PROJECTOR_POLL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_ms: u64,
    #[command(flatten)]
    pub analytics: AnalyticsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The per-link statistics folded from the audit stream.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalyticsArgs {
    /// Hex secret (16+ bytes) that keys the visitor hashes standing for client IPs. Unset: a
    /// development key is made once and kept in `analytics-visitor-key` in the data directory.
    #[arg(long, env = "ANALYTICS_VISITOR_KEY", hide_env_values = true)]
    pub analytics_visitor_key: Option<String>,
    /// The query API's spool directory; its parent is the data directory where development keys
    /// are kept (the query API keeps its playback key there too).
    #[arg(long, env = "AUDIT_SPOOL_DIR", default_value = "./data/audit-spool")]
    pub audit_spool_dir: PathBuf,
    /// Audit messages per batch (one transaction each) at most, live.
    #[arg(long, env = "ANALYTICS_BATCH_SIZE", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub analytics_batch_size: u32,
}

impl AnalyticsArgs {
    pub fn key(&self) -> anyhow::Result<Arc<VisitorKey>> {
        let data_dir = self
            .audit_spool_dir
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Arc::new(VisitorKey::configured_or_dev(
            self.analytics_visitor_key.as_deref(),
            &data_dir.join("analytics-visitor-key"),
        )?))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Keep the read models current (the default).
    Run,
    /// Rebuild every read model from the first event beside the live ones, then swap them in.
    /// Resumes an interrupted rebuild.
    Rebuild {
        /// Discard an interrupted rebuild and start from the first event.
        #[arg(long)]
        fresh: bool,
        /// Events per batch: one page read from the log, one transaction. Large, so that most
        /// changes land in the batch that created their row and are folded in before its COPY.
        #[arg(long, env = "PROJECTOR_REBUILD_BATCH_SIZE", default_value_t = 50_000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rebuild_batch_size: u32,
    },
    /// Print one stream's events as JSON lines, upcast to the current schema.
    Replay {
        /// The stream, e.g. `share-mslink_8c4e2a9f1b73`.
        #[arg(long)]
        stream: String,
    },
    /// Print the checkpoint, the head of the log and the lag (and the analytics' position).
    Status,
    /// The per-link statistics folded from the audit stream.
    Analytics {
        #[command(subcommand)]
        command: AnalyticsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AnalyticsCommand {
    /// Rebuild the statistics from where this database started counting, beside the live ones,
    /// then swap them in. Resumes an interrupted rebuild.
    Rebuild {
        /// Discard an interrupted rebuild and start over.
        #[arg(long)]
        fresh: bool,
        /// Audit messages per batch (one transaction each).
        #[arg(long, default_value_t = 20_000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch_size: u32,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    server::run_main("projector", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let backend = cli.event_store.backend().map_err(anyhow::Error::msg)?;
    let pool = cli.service.pool().await?;
    let store = events::store::open(&backend, pool.clone()).await?;
    let namespace = cli.service.namespace();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let settings = subscription::Settings {
                batch_size: cli.batch_size as usize,
                poll: Duration::from_millis(cli.poll_ms),
            };
            let notifier = Notifier::start(&cli.service.nats.nats_url, &namespace).await;
            let analytics = analytics::consumer::Settings {
                namespace: namespace.clone(),
                key: cli.analytics.key()?,
                batch_size: cli.analytics.analytics_batch_size as usize,
                linger: Duration::from_millis(50),
            };
            serve(
                pool,
                store,
                notifier,
                settings,
                (&cli.service.nats.nats_url, analytics),
                &cli.admin_addr,
            )
            .await
        }
        Command::Rebuild {
            fresh,
            rebuild_batch_size,
        } => {
            let settings = rebuild::Settings {
                batch_size: rebuild_batch_size as usize,
                fresh,
                progress: std::io::stderr().is_terminal(),
            };
            let notifier = Notifier::start(&cli.service.nats.nats_url, &namespace).await;
            let summary = rebuild::run(&pool, store, Some(&notifier), &settings).await?;
            notifier.close(Duration::from_secs(2)).await;
            println!("{summary}");
            Ok(())
        }
        Command::Replay { stream } => {
            replay::run(&store, &stream, &mut std::io::stdout().lock()).await
        }
        Command::Status => {
            print!("{}", status::read(&pool, &store).await?);
            print!(
                "{}",
                analytics::status(&pool, &cli.service.nats.nats_url).await?
            );
            Ok(())
        }
        Command::Analytics {
            command: AnalyticsCommand::Rebuild { fresh, batch_size },
        } => {
            let settings = analytics::rebuild::Settings {
                batch_size: batch_size as usize,
                fresh,
                progress: std::io::stderr().is_terminal(),
            };
            let key = cli.analytics.key()?;
            let summary =
                analytics::rebuild::run(&pool, &cli.service.nats.nats_url, key, &settings).await?;
            println!("{summary}");
            Ok(())
        }
    }
}

/// The subscription beside the admin server (health, readiness, metrics), until SIGTERM or
/// until the subscription fails.
async fn serve(
    pool: PgPool,
    store: Arc<dyn EventStore>,
    notifier: Notifier,
    settings: subscription::Settings,
    (nats_url, counting): (&str, analytics::consumer::Settings),
    admin_addr: &str,
) -> anyhow::Result<()> {
    let ready = server::ready_check({
        let (pool, store) = (pool.clone(), store.clone());
        move || {
            let (pool, store) = (pool.clone(), store.clone());
            async move {
                server::postgres_ready(&pool).await?;
                store.head().await.map_err(|_| "event store".to_owned())?;
                Ok(())
            }
        }
    });
    telemetry::describe(subscription::METRICS);
    telemetry::describe(analytics::METRICS);
    // The audit stream's consumer, beside the event log's. This database's counting starts at
    // the stream's last sequence the first time it runs: recorded before the projector says it
    // is listening (when NATS answers within 2 s), so attempts made after that count.
    let nats = service_kit::nats::connect("projector-analytics", nats_url).await?;
    let started = tokio::time::timeout(
        Duration::from_secs(2),
        analytics::consumer::start_counting(&pool, &async_nats::jetstream::new(nats.clone())),
    )
    .await;
    if !matches!(started, Ok(Ok(_))) {
        tracing::warn!(
            "the audit stream is not reachable yet; analytics will start counting when it is"
        );
    }
    let admin = server::finish(server::health_routes(ready));
    let listener = server::bind(admin_addr, "projector").await?;

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        server::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut server_stop = stopping.clone();
    let server = tokio::spawn(server::serve(listener, admin, async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));

    let folding = tokio::spawn(analytics::consumer::run(
        pool.clone(),
        nats,
        counting,
        stopping.clone(),
    ));
    let projected = subscription::run(pool, store, &notifier, settings, stopping).await;
    if let Err(e) = projected {
        // Stop here, loudly: the caller logs and exits non-zero. The admin server goes with us.
        server.abort();
        folding.abort();
        return Err(e);
    }
    folding.await?;
    server.await??;
    notifier.close(Duration::from_secs(2)).await;
    tracing::info!("projector stopped");
    Ok(())
}
