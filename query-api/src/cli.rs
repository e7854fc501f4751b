//! The `query-api` binary: serves the public resolve by default.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use service_kit::config::{DatabaseArgs, NatsArgs};
use service_kit::{server, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "query-api",
    version,
    about = "music-share query API (the public resolve)"
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Address to listen on.
    #[arg(long, env = "QUERY_API_ADDR", default_value = "127.0.0.1:8081")]
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
    server::run_main("query-api", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let pool = migrations::prepare(
                &cli.database.database_url,
                cli.database.database_max_connections,
            )
            .await?;
            let ready = server::ready_check(move || {
                let pool = pool.clone();
                async move { server::postgres_ready(&pool).await }
            });
            let app = server::finish(server::health_routes(ready));
            let listener = server::bind(&cli.addr, "query-api").await?;
            server::serve(listener, app, server::shutdown_signal()).await?;
            tracing::info!("query-api stopped");
            Ok(())
        }
    }
}
