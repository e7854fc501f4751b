//! The `projector` binary: runs the subscription by default.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use service_kit::config::{DatabaseArgs, EventStoreArgs, NatsArgs};
use service_kit::{server, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "projector",
    version,
    about = "music-share projector (event log -> read models)"
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub event_store: EventStoreArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Health and metrics of the projector.
    #[arg(long, env = "PROJECTOR_ADMIN_ADDR", default_value = "127.0.0.1:8082")]
    pub admin_addr: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Keep the read models current (the default).
    Run,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    server::run_main("projector", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let backend = cli.event_store.backend().map_err(anyhow::Error::msg)?;
            let pool = migrations::prepare(
                &cli.database.database_url,
                cli.database.database_max_connections,
            )
            .await?;
            let store = events::store::open(&backend, pool.clone()).await?;
            let ready = server::ready_check(move || {
                let (pool, store) = (pool.clone(), store.clone());
                async move {
                    server::postgres_ready(&pool).await?;
                    store.head().await.map_err(|_| "event store".to_owned())?;
                    Ok(())
                }
            });
            let admin = server::finish(server::health_routes(ready));
            let listener = server::bind(&cli.admin_addr, "projector").await?;
            server::serve(listener, admin, server::shutdown_signal()).await?;
            tracing::info!("projector stopped");
            Ok(())
        }
    }
}
