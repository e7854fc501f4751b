//! Settings more than one process takes, as clap arguments that also read the environment
//! (`--database-url` or `DATABASE_URL`, and so on). Flattened into each binary's own arguments.

use clap::Args;
use events::store::Backend;
use sqlx::PgPool;

/// What every process is configured with: its PostgreSQL database and its NATS server(s).
/// Each binary flattens this one struct into its own arguments.
#[derive(Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl ServiceArgs {
    /// The database, created and migrated if needed, as a pool of the configured size.
    pub async fn pool(&self) -> Result<PgPool, migrations::PrepareError> {
        migrations::prepare(
            &self.database.database_url,
            self.database.database_max_connections,
        )
        .await
    }

    /// The namespace of this stack's change notices: `NOTICE_NAMESPACE`, else the database's
    /// name, so stacks that share a NATS server never hear each other.
    pub fn namespace(&self) -> String {
        self.nats
            .notice_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| migrations::database_name(&self.database.database_url))
            .unwrap_or_else(|| "music_share".to_owned())
    }
}

#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL; the database is created and migrated on start.
    #[arg(long, env = "DATABASE_URL", default_value = migrations::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections in this process's pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
}

#[derive(Args, Clone, Debug)]
pub struct NatsArgs {
    /// One server, or several comma-separated (a cluster's members).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas of the audit stream `MUSIC_AUDIT` when this process creates it (an existing
    /// stream keeps its own count, reported at start).
    #[arg(long, env = "AUDIT_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub audit_stream_replicas: u8,
    /// Subject namespace for change notices; defaults to the database's name so stacks that
    /// share a NATS server never hear each other.
    #[arg(long, env = "NOTICE_NAMESPACE")]
    pub notice_namespace: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct EventStoreArgs {
    /// `postgres` (default) or `kurrentdb`.
    #[arg(long, env = "EVENT_STORE", default_value = "postgres")]
    pub event_store: String,
    /// Required when EVENT_STORE=kurrentdb, e.g. `kurrentdb://127.0.0.1:2113?tls=false`.
    #[arg(long, env = "KURRENTDB_URL")]
    pub kurrentdb_url: Option<String>,
}

impl EventStoreArgs {
    pub fn backend(&self) -> Result<Backend, String> {
        Backend::from_settings(&self.event_store, self.kurrentdb_url.as_deref())
    }
}
