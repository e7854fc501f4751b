//! The `command-api` binary: serves the API by default; `admin` holds operator commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use events::ids::{OrganizationId, UserId};
use service_kit::config::{EventStoreArgs, ServiceArgs};
use service_kit::{server, telemetry};

use crate::app::{App, Settings};
use crate::identity;
use crate::read_your_writes::ProjectorProgress;

#[derive(Parser, Debug)]
#[command(
    name = "command-api",
    version,
    about = "music-share command API (authenticated writes)"
)]
pub struct Cli {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub event_store: EventStoreArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "COMMAND_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Share `url`s are `{PUBLIC_BASE_URL}/v1/music/shared/{token}` (the query API's address).
    #[arg(long, env = "PUBLIC_BASE_URL", default_value = "http://127.0.0.1:8081")]
    pub public_base_url: String,
    /// Where uploaded audio is kept (content-addressed by SHA-256).
    #[arg(long, env = "MEDIA_DIR", default_value = "./data/media")]
    pub media_dir: PathBuf,
    /// The largest audio upload accepted, in bytes (413 above it).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 104_857_600)]
    pub max_upload_bytes: u64,
    /// How long a command waits for the projector to catch up with its events before answering
    /// (only while a projector is heard on NATS; 0 disables the wait).
    #[arg(long, env = "READ_YOUR_WRITES_TIMEOUT_MS", default_value_t = 2000)]
    pub read_your_writes_timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Operator commands.
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand, Debug)]
pub enum Admin {
    /// Prints a new API key for USER (only the key, on stdout), creating the user, the
    /// organizations and the memberships if missing.
    CreateKey {
        /// The user the key belongs to (`usr_` + 12 hex).
        #[arg(long, value_parser = identity::parse_user)]
        user: UserId,
        /// An organization the user belongs to (`org_…`); may repeat.
        #[arg(long = "org", value_parser = identity::parse_organization)]
        orgs: Vec<OrganizationId>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    server::run_main("command-api", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None | Some(Command::Serve) => serve(cli.service, cli.event_store, cli.serve).await,
        Some(Command::Admin(Admin::CreateKey { user, orgs })) => {
            let pool = migrations::prepare(&cli.service.database.database_url, 1).await?;
            let key = identity::create_key(&pool, &user, &orgs).await?;
            println!("{key}");
            Ok(())
        }
    }
}

async fn serve(
    service: ServiceArgs,
    event_store: EventStoreArgs,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let backend = event_store.backend().map_err(anyhow::Error::msg)?;
    let pool = service.pool().await?;
    let store = events::store::open(&backend, pool.clone()).await?;
    let namespace = service.namespace();
    let projector = ProjectorProgress::listen(
        service.nats.nats_url.clone(),
        &namespace,
        Duration::from_millis(args.read_your_writes_timeout_ms),
    );
    let settings = Settings {
        public_base_url: args.public_base_url.trim_end_matches('/').to_owned(),
        media_dir: args.media_dir,
        max_upload_bytes: args.max_upload_bytes,
        index_in_append: matches!(backend, events::store::Backend::Postgres),
    };
    let app = App::start(settings, pool, store, projector).await?;
    server::run(&args.addr, "command-api", app.router()).await?;
    app.shutdown().await;
    Ok(())
}
