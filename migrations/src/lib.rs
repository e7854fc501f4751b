//! The database schema of music-share, and the one way a process gets a pool.
//!
//! Every process calls [`prepare`] at start: it creates the database if it is missing, applies
//! the migrations in `sql/` (embedded in the binary, so no files are needed at run time) and makes
//! sure the live read-model schema exists. Running it from several processes at once is safe.
//!
//! Each schema has one writer: `event_store` (the event store), `identity` and `command_side`
//! (the command API), `read_model` (the projector, built from [`READ_MODEL_DDL`]), `analytics`
//! (the projector's fold of the audit stream) and `query_side` (the query API). This crate only creates them; it holds no queries of its own.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres};

static MIGRATOR: Migrator = sqlx::migrate!("./sql");

/// The read-model tables, with unqualified names; see [`create_read_model`].
pub const READ_MODEL_DDL: &str = include_str!("../read_model.sql");

/// The schema the query API reads and the projector keeps current.
pub const LIVE_READ_MODEL_SCHEMA: &str = "read_model";

/// The default database, as CONTRACT.md gives it.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/music_share";

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "cannot reach PostgreSQL at {address}: {source}. Is it running? On this machine: \
         pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    )]
    Unreachable {
        address: String,
        source: sqlx::Error,
    },
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while preparing: {0}")]
    Database(#[from] sqlx::Error),
}

/// A pooled connection idle this long is checked before it is used.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Creates (if missing) and migrates the database at `url`, and returns a pool of at most
/// `max_connections`.
pub async fn prepare(url: &str, max_connections: u32) -> Result<PgPool, PrepareError> {
    let options: PgConnectOptions = url.parse().map_err(PrepareError::BadUrl)?;
    let address = format!("{}:{}", options.get_host(), options.get_port());
    let unreachable = |source| PrepareError::Unreachable {
        address: address.clone(),
        source,
    };

    let exists = Postgres::database_exists(url).await.map_err(unreachable)?;
    if !exists {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(
                database = options.get_database().unwrap_or_default(),
                "created the database"
            ),
            // Another process won the race (the services start together): that is what we
            // wanted. PostgreSQL says so with 42P04, or, when both were creating it at the same
            // instant, with a unique violation on its catalogue; either way it exists now.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "the database was created meanwhile");
            }
            Err(e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut)) => {
                return Err(unreachable(e))
            }
            Err(e) => return Err(PrepareError::Database(e)),
        }
    }

    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        // While PostgreSQL is down, sqlx keeps retrying a refused connection until this runs
        // out: it is how long a request waits before it is told 503, so keep it short.
        .acquire_timeout(Duration::from_secs(2))
        // sqlx pings every connection it hands out, a round trip before each query of ours
        // (and it pings again on release, off the request's path, discarding broken ones).
        // Only a connection that sat idle for a while may have died unnoticed: ping just those.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(
            options
                .clone()
                .log_statements(tracing::log::LevelFilter::Trace),
        )
        .await
        .map_err(unreachable)?;
    MIGRATOR.run(&pool).await?;

    let mut conn = pool.acquire().await?;
    create_read_model(&mut conn, LIVE_READ_MODEL_SCHEMA).await?;
    Ok(pool)
}

/// Creates `schema` and the read-model tables in it, if missing. Serialized with a transaction
/// advisory lock, since concurrent `CREATE SCHEMA IF NOT EXISTS` can still collide.
pub async fn create_read_model(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(4207311970)")
        .execute(&mut *tx)
        .await?;
    let schema = quote_ident(schema);
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(READ_MODEL_DDL).execute(&mut *tx).await?;
    tx.commit().await
}

/// The database name in a PostgreSQL URL (the default change-notice namespace).
pub fn database_name(url: &str) -> Option<String> {
    let options: PgConnectOptions = url.parse().ok()?;
    options.get_database().map(str::to_owned)
}

/// Quotes an identifier for PostgreSQL (schema names are built at run time by the projector).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
