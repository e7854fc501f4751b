//! Views taken of limited links: `query_side.share_usage`, read and written only through here.
//!
//! Only the query side knows how often a link was opened, so it keeps this counter (one row per
//! limited link that was opened; unlimited links have none) and takes views with one atomic
//! statement, exact across any number of query instances. The command side reads one row of it,
//! read-only, to judge whether a shared track may still be saved ([`crate::link::judge`]). One
//! module for both keeps the table's meaning (views taken, never more than the limit) in one
//! place. It is not a read model: a projector rebuild never touches it.

use std::collections::HashMap;

use sqlx::PgPool;

/// Views taken so far of `share_id` (0 when it was never opened).
pub async fn views_taken(pool: &PgPool, share_id: &str) -> Result<u64, sqlx::Error> {
    let used: Option<i64> =
        sqlx::query_scalar("SELECT used FROM query_side.share_usage WHERE share_id = $1")
            .bind(share_id)
            .fetch_optional(pool)
            .await?;
    Ok(count(used.unwrap_or(0)))
}

/// Views taken so far of each of `share_ids` that was ever opened (absent: 0), in one query.
pub async fn views_taken_of(
    pool: &PgPool,
    share_ids: &[&str],
) -> Result<HashMap<String, u64>, sqlx::Error> {
    if share_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT share_id, used FROM query_side.share_usage WHERE share_id = ANY($1)",
    )
    .bind(share_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, used)| (id, count(used)))
        .collect())
}

/// Takes one view of a link limited to `max_views`: the views taken before this one, or `None`
/// when none was left (nothing is taken then). One atomic upsert that only increments below the
/// limit, so concurrent resolves on any number of instances never take more than `max_views`.
pub async fn take_view(
    pool: &PgPool,
    share_id: &str,
    max_views: u32,
) -> Result<Option<u64>, sqlx::Error> {
    let used: Option<i64> = sqlx::query_scalar(
        "INSERT INTO query_side.share_usage (share_id, used) VALUES ($1, 1) \
         ON CONFLICT (share_id) DO UPDATE SET used = share_usage.used + 1 \
         WHERE share_usage.used < $2 \
         RETURNING used",
    )
    .bind(share_id)
    .bind(i64::from(max_views))
    .fetch_optional(pool)
    .await?;
    Ok(used.map(|after| count(after - 1)))
}

/// The column is a non-negative `bigint`; a negative value (never written) counts as none.
fn count(used: i64) -> u64 {
    u64::try_from(used).unwrap_or(0)
}
