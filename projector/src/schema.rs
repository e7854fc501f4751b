//! Where the read models live, and what every writer of one schema agrees on: the lock that
//! serializes its batches and the checkpoint kept beside its tables.
//!
//! The live tables are in `read_model`; a rebuild fills `read_model_rebuild` and swaps the two
//! by renaming schemas. Projection SQL uses unqualified names under `SET LOCAL search_path`, so
//! one piece of code writes either schema.

use events::Position;
use migrations::quote_ident;
use sqlx::{PgConnection, PgPool};

/// The schema the query API reads.
pub const LIVE: &str = migrations::LIVE_READ_MODEL_SCHEMA;
/// Where a rebuild builds, beside the live tables; it survives a crash so a rebuild resumes.
pub const REBUILD: &str = "read_model_rebuild";
/// Where the replaced live tables go for the instant between the swap and their drop.
pub const RETIRED: &str = "read_model_retired";

/// Points the transaction's unqualified names at `schema`.
pub async fn enter(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&format!("SET LOCAL search_path TO {}", quote_ident(schema)))
        .execute(conn)
        .await
        .map(drop)
}

/// Takes the transaction-scoped lock of `schema`: two projector processes, or a projector and
/// a rebuild's swap, never write one schema at the same time.
pub async fn lock(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("music-share projector {schema}"))
        .execute(conn)
        .await
        .map(drop)
}

/// Puts a rebuilt schema in place of the live one, in the caller's transaction (which holds both
/// schemas' locks): the live tables move aside to `retired`, to be dropped after the commit.
/// Renaming is what makes a swap atomic for readers, for the read model and analytics alike.
pub async fn rename_into_place(
    conn: &mut PgConnection,
    rebuilt: &str,
    live: &str,
    retired: &str,
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&format!(
        "ALTER SCHEMA {live} RENAME TO {retired}; ALTER SCHEMA {rebuilt} RENAME TO {live};",
        live = quote_ident(live),
        retired = quote_ident(retired),
        rebuilt = quote_ident(rebuilt),
    ))
    .execute(conn)
    .await
    .map(drop)
}

/// The checkpoint of the schema the transaction has entered.
pub async fn checkpoint(conn: &mut PgConnection) -> Result<Position, sqlx::Error> {
    let position: i64 = sqlx::query_scalar("SELECT position FROM checkpoint")
        .fetch_one(conn)
        .await?;
    Ok(from_db(position))
}

/// Moves the checkpoint of the schema the transaction has entered.
pub async fn set_checkpoint(
    conn: &mut PgConnection,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE checkpoint SET position = $1")
        .bind(to_db(position))
        .execute(conn)
        .await
        .map(drop)
}

/// The checkpoint of `schema`, or `None` if the schema does not exist (no rebuild under way).
pub async fn read_checkpoint(pool: &PgPool, schema: &str) -> Result<Option<Position>, sqlx::Error> {
    if !exists(pool, schema).await? {
        return Ok(None);
    }
    let sql = format!("SELECT position FROM {}.checkpoint", quote_ident(schema));
    let position: Option<i64> = sqlx::query_scalar(&sql).fetch_optional(pool).await?;
    Ok(position.map(from_db))
}

pub async fn exists(pool: &PgPool, schema: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
}

/// Positions are unsigned in the log and `bigint` in PostgreSQL; the stores never exceed
/// `i64::MAX`.
pub fn to_db(position: Position) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

pub fn from_db(position: i64) -> Position {
    position.max(0) as Position
}
