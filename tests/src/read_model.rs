//! Observing the projector from outside: its checkpoint, and checksums of its tables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The checkpoint of the read models in `schema`.
pub async fn checkpoint(pool: &PgPool, schema: &str) -> u64 {
    let sql = format!("SELECT position FROM {schema}.checkpoint");
    let position: i64 = sqlx::query_scalar(&sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("read {schema}.checkpoint: {e}"));
    position.max(0) as u64
}

/// Waits until the live read models reflect the log up to `position`.
pub async fn wait_for_checkpoint(pool: &PgPool, position: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let at = checkpoint(pool, "read_model").await;
        if at >= position {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the projector is at {at}, still short of {position} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Row count and an MD5 of every row (in a canonical order) of every table in `schema`: two
/// schemas with equal checksums hold the same data, value for value.
pub async fn checksums(pool: &PgPool, schema: &str) -> BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("list the read-model tables");
    assert!(!tables.is_empty(), "schema {schema} has no tables");
    let mut sums = BTreeMap::new();
    for table in tables {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') \
             FROM {schema}.{table} AS t"
        );
        let sum: (i64, String) = sqlx::query_as(&sql)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("checksum {schema}.{table}: {e}"));
        sums.insert(table, sum);
    }
    sums
}

/// The value of a counter or gauge in a Prometheus text exposition (0 when absent).
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let key = key.split('{').next()?;
            (key == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The definitions of every index in `schema`, sorted: what readers can count on.
pub async fn indexes(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexdef::text FROM pg_indexes WHERE schemaname = $1 ORDER BY indexdef",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("list the indexes")
}
