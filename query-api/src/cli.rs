//! The `query-api` binary: serves the public resolve by default; `audit tail` prints the audit
//! stream.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service_kit::config::ServiceArgs;
use service_kit::{server, telemetry};

use crate::app::{App, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "query-api",
    version,
    about = "music-share query API (the public resolve)"
)]
pub struct Cli {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// Address to listen on.
    #[arg(long, env = "QUERY_API_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// Base of the signed playback URLs.
    #[arg(long, env = "MEDIA_BASE_URL", default_value = "http://127.0.0.1:8081")]
    pub media_base_url: String,
    /// Where uploaded audio lives (written by the command API).
    #[arg(long, env = "MEDIA_DIR", default_value = "./data/media")]
    pub media_dir: PathBuf,
    /// Where audit events wait while NATS is unreachable (one slot per instance inside).
    #[arg(long, env = "AUDIT_SPOOL_DIR", default_value = "./data/audit-spool")]
    pub audit_spool_dir: PathBuf,
    /// The spool's bound; beyond it audit events are dropped, loudly.
    #[arg(long, env = "AUDIT_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub audit_spool_max_bytes: u64,
    /// `kid:hexsecret,...`: the first signs, all verify. Unset: a development key is made once
    /// and kept beside the spool directory.
    #[arg(long, env = "PLAYBACK_SIGNING_KEYS", hide_env_values = true)]
    pub playback_signing_keys: Option<String>,
    #[arg(long, env = "PLAYBACK_URL_TTL_SECONDS", default_value_t = 300)]
    pub playback_url_ttl_seconds: u64,
    #[arg(long, env = "RESOLVE_RATE_PER_MINUTE", default_value_t = 60)]
    pub resolve_rate_per_minute: u32,
    #[arg(long, env = "RESOLVE_BURST", default_value_t = 20)]
    pub resolve_burst: u32,
    /// Share the rate limits with every instance through this Redis (`redis://host:6379`);
    /// unset: each instance limits alone.
    #[arg(long, env = "RATE_LIMIT_REDIS_URL", hide_env_values = true)]
    pub rate_limit_redis_url: Option<String>,
    /// How long a limit waits for Redis before this instance counts alone for a while.
    #[arg(long, env = "RATE_LIMIT_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub rate_limit_redis_timeout_ms: u64,
    /// CIDRs whose `X-Forwarded-For` is believed, comma-separated.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Serve every resolve from the read models (for cold measurements).
    #[arg(long, env = "RESOLVE_CACHE_DISABLED", default_value_t = false)]
    pub resolve_cache_disabled: bool,
    /// Share-link password checks (Argon2id) run at once, at most; 0: half the cores.
    #[arg(long, env = "PASSWORD_CHECK_WORKERS", default_value_t = 0)]
    pub password_check_workers: usize,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// The audit stream.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print audit messages as JSON lines as they arrive.
    Tail {
        /// Start with the oldest message in the stream instead of new ones.
        #[arg(long, conflicts_with = "since")]
        from_start: bool,
        /// Start with the messages of this last while: `90s`, `15m`, `1h`, `7d`.
        #[arg(long, value_parser = crate::audit::tail::parse_since)]
        since: Option<Duration>,
        /// Only the attempts on this link (`mslink_…`).
        #[arg(long)]
        share: Option<String>,
        /// Only these outcomes (`ok`, `rate_limited`, …; repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        outcome: Vec<String>,
        /// Instead of lines, print a table of outcomes per link for the window (`--since`,
        /// 1 hour by default, or `--from-start`) up to the stream's last message, and exit.
        #[arg(long, conflicts_with = "limit")]
        summary: bool,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<u64>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    server::run_main("query-api", run(cli))
}

impl Cli {
    pub fn settings(&self) -> Settings {
        let q = &self.query;
        Settings {
            media_base_url: q.media_base_url.clone(),
            media_dir: q.media_dir.clone(),
            audit_spool_dir: q.audit_spool_dir.clone(),
            audit_spool_max_bytes: q.audit_spool_max_bytes,
            playback_signing_keys: q.playback_signing_keys.clone(),
            playback_url_ttl: Duration::from_secs(q.playback_url_ttl_seconds.max(1)),
            resolve_rate_per_minute: q.resolve_rate_per_minute,
            resolve_burst: q.resolve_burst,
            rate_limit_redis_url: q.rate_limit_redis_url.clone(),
            rate_limit_redis_timeout: Duration::from_millis(q.rate_limit_redis_timeout_ms.max(1)),
            trusted_proxies: q.trusted_proxies.clone(),
            cache_enabled: !q.resolve_cache_disabled,
            audit_enabled: true,
            nats_url: self.service.nats.nats_url.clone(),
            audit_stream_replicas: usize::from(self.service.nats.audit_stream_replicas),
            notice_namespace: self.service.namespace(),
            stats_flush_every: Duration::from_secs(2),
            password_check_workers: q.password_check_workers,
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Audit {
            command:
                AuditCommand::Tail {
                    from_start,
                    since,
                    share,
                    outcome,
                    summary,
                    limit,
                },
        }) => {
            let options = crate::audit::tail::Options {
                from_start: *from_start,
                since: *since,
                limit: *limit,
                filter: crate::audit::tail::Filter {
                    share: share.clone(),
                    outcomes: outcome.clone(),
                },
                summary: *summary,
            };
            let replicas = usize::from(cli.service.nats.audit_stream_replicas);
            crate::audit::tail::run(&cli.service.nats.nats_url, replicas, &options).await
        }
        None | Some(Command::Serve) => serve(&cli).await,
    }
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let pool = cli.service.pool().await?;
    let app = App::start(cli.settings(), pool).await?;
    server::run(&cli.query.addr, "query-api", app.router()).await?;
    app.shutdown().await;
    Ok(())
}
