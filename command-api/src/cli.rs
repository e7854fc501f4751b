//! The `command-api` binary: serves the API by default; `admin` holds operator commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use service_kit::config::{DatabaseArgs, EventStoreArgs};
use service_kit::{server, telemetry};

use crate::app::{self, AppState};

#[derive(Parser, Debug)]
#[command(
    name = "command-api",
    version,
    about = "music-share command API (authenticated writes)"
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub event_store: EventStoreArgs,
    /// Address to listen on.
    #[arg(long, env = "COMMAND_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    server::run_main("command-api", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.database, cli.event_store, &cli.addr).await,
    }
}

async fn serve(
    database: DatabaseArgs,
    event_store: EventStoreArgs,
    addr: &str,
) -> anyhow::Result<()> {
    let backend = event_store.backend().map_err(anyhow::Error::msg)?;
    let pool =
        migrations::prepare(&database.database_url, database.database_max_connections).await?;
    let store = events::store::open(&backend, pool.clone()).await?;
    let state = AppState {
        api_keys: service_kit::auth::ApiKeys::new(pool.clone()),
        pool,
        store,
    };
    let listener = server::bind(addr, "command-api").await?;
    server::serve(listener, app::router(state), server::shutdown_signal()).await?;
    tracing::info!("command-api stopped");
    Ok(())
}
