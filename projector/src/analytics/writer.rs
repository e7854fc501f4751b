//! The SQL side of the analytics model: one transaction per batch that takes the schema's lock,
//! reads the folded position, folds the messages after it, adds the counts and moves the
//! position, so a batch counts entirely or not at all, and a message at or before the position
//! (a redelivery, or a batch another process got first) counts nothing.
//!
//! The same code writes the live schema (`analytics`) and a rebuild's (`analytics_rebuild`):
//! statements use unqualified names under `SET LOCAL search_path`, as the projector does.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use migrations::quote_ident;
use sqlx::{Connection, PgConnection, PgPool};

use super::fold::{self, DayCounts, Folded};
use super::visitor::VisitorKey;

/// The schema the stats route reads.
pub const LIVE: &str = "analytics";
/// Where `projector analytics rebuild` builds, beside the live tables.
pub const REBUILD: &str = "analytics_rebuild";
/// The replaced live tables, between a swap and their drop.
pub const RETIRED: &str = "analytics_retired";

/// Where a schema counts from and how far it has counted (stream sequences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Counting began after this sequence (the stream's last when the database started).
    pub start: u64,
    /// The last sequence folded.
    pub folded: u64,
}

/// What committing one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The folded position after the batch.
    pub folded: u64,
    /// Messages past the old position (counted or not).
    pub messages: u64,
    /// Messages that could not be read.
    pub unreadable: u64,
}

/// Points the transaction's unqualified names at `schema` (`SET LOCAL search_path`, with the
/// name bound rather than spliced).
pub async fn enter(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(quote_ident(schema))
        .execute(conn)
        .await
        .map(drop)
}

/// The transaction-scoped lock of `schema`: batches of any number of consumers, and a rebuild's
/// swap, take turns.
pub async fn lock(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("music-share analytics {schema}"))
        .execute(conn)
        .await
        .map(drop)
}

/// The position of `schema`, if it has started counting (and exists).
pub async fn read_position(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Option<Position>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(None);
    }
    let row: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT start_sequence, folded_sequence FROM {}.position",
        quote_ident(schema)
    ))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(start, folded)| Position {
        start: from_db(start),
        folded: from_db(folded),
    }))
}

/// Records that the live schema starts counting after `last_sequence`, unless it already has a
/// start (the first process to record one wins); returns the position that holds.
pub async fn start_counting(pool: &PgPool, last_sequence: u64) -> Result<Position, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "INSERT INTO analytics.position (singleton, start_sequence, folded_sequence) \
         VALUES (true, $1, $1) ON CONFLICT DO NOTHING",
    )
    .bind(to_db(last_sequence))
    .execute(&mut *conn)
    .await?;
    read_position(&mut conn, LIVE)
        .await?
        .ok_or_else(|| sqlx::Error::RowNotFound)
}

/// The folded position of the schema the transaction has entered.
async fn folded_sequence(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let folded: i64 = sqlx::query_scalar("SELECT folded_sequence FROM position")
        .fetch_one(conn)
        .await?;
    Ok(from_db(folded))
}

/// How a batch is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The live tables: every commit waits for the disk.
    Durable,
    /// A rebuild's tables, which nobody reads yet: a database crash loses the last batches and
    /// their position together, and they are folded again.
    Relaxed,
}

/// Folds and writes one batch of `(stream sequence, payload)` into `schema`, in one transaction.
pub async fn commit_batch(
    conn: &mut PgConnection,
    schema: &str,
    durability: Durability,
    messages: &[(u64, &[u8])],
    key: &VisitorKey,
) -> Result<Committed, sqlx::Error> {
    let mut tx = conn.begin().await?;
    enter(&mut tx, schema).await?;
    if durability == Durability::Relaxed {
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true)")
            .execute(&mut *tx)
            .await?;
    }
    lock(&mut tx, schema).await?;
    let after = folded_sequence(&mut tx).await?;
    let folded = fold::fold(after, messages.iter().copied(), key);
    let Some(last) = folded.last_sequence else {
        // A redelivery of what is folded already: nothing to write.
        return Ok(Committed {
            folded: after,
            ..Committed::default()
        });
    };
    write(&mut tx, &folded).await?;
    sqlx::query("UPDATE position SET folded_sequence = $1")
        .bind(to_db(last))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Committed {
        folded: last,
        messages: folded.messages,
        unreadable: folded.unreadable,
    })
}

/// Adds `folded` to the tables of the schema the transaction has entered. Counts of links this
/// database does not have (attempts on other stacks that share the NATS server) are left out.
async fn write(conn: &mut PgConnection, folded: &Folded) -> Result<(), sqlx::Error> {
    if folded.days.is_empty() {
        return Ok(());
    }
    // Owned strings throughout: sqlx futures that bind borrowed ones are not provably `Send`.
    let mentioned: Vec<String> = {
        let set: HashSet<&String> = folded.days.keys().map(|(s, _)| s).collect();
        set.into_iter().cloned().collect()
    };
    let ours: HashSet<String> = sqlx::query_scalar(
        "SELECT share_id FROM read_model.share_links WHERE share_id = ANY($1::text[])",
    )
    .bind(&mentioned)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    if ours.is_empty() {
        return Ok(());
    }

    // Visitors first: which of them are new today, and new to the link.
    let (mut vs, mut vd, mut vv) = (Vec::new(), Vec::new(), Vec::new());
    for (share, day, visitor) in &folded.visitors {
        if ours.contains(share) {
            vs.push(share.clone());
            vd.push(*day);
            vv.push(visitor.to_vec());
        }
    }
    let new_daily: Vec<(String, NaiveDate)> = sqlx::query_as(
        "INSERT INTO day_visitors (share_id, day, visitor) \
         SELECT * FROM unnest($1::text[], $2::date[], $3::bytea[]) \
         ON CONFLICT DO NOTHING RETURNING share_id, day",
    )
    .bind(&vs)
    .bind(&vd)
    .bind(&vv)
    .fetch_all(&mut *conn)
    .await?;
    let new_ever: Vec<String> = sqlx::query_scalar(
        "INSERT INTO link_visitors (share_id, visitor) \
         SELECT DISTINCT * FROM unnest($1::text[], $2::bytea[]) \
         ON CONFLICT DO NOTHING RETURNING share_id",
    )
    .bind(&vs)
    .bind(&vv)
    .fetch_all(&mut *conn)
    .await?;
    let mut uniques_daily: HashMap<(String, NaiveDate), i64> = HashMap::new();
    for key in new_daily {
        *uniques_daily.entry(key).or_default() += 1;
    }
    let mut uniques_ever: HashMap<String, i64> = HashMap::new();
    for share in new_ever {
        *uniques_ever.entry(share).or_default() += 1;
    }

    // Days, then all-time totals per link.
    let mut totals: BTreeMap<String, DayCounts> = BTreeMap::new();
    let (mut days, mut dates) = (CountColumns::default(), Vec::new());
    for ((share, day), counts) in &folded.days {
        if !ours.contains(share) {
            continue;
        }
        let uniques = uniques_daily.get(&(share.clone(), *day)).copied();
        days.push(share.clone(), counts, uniques);
        dates.push(*day);
        let total = totals.entry(share.clone()).or_default();
        total.views += counts.views;
        total.previews += counts.previews;
        total.denied += counts.denied;
        total.last_viewed_at = total.last_viewed_at.max(counts.last_viewed_at);
    }
    sqlx::query(
        "INSERT INTO link_days (share_id, views, previews, denied, unique_visitors, day) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                              $5::bigint[], $6::date[]) \
         ON CONFLICT (share_id, day) DO UPDATE SET \
            views = link_days.views + excluded.views, \
            previews = link_days.previews + excluded.previews, \
            denied = link_days.denied + excluded.denied, \
            unique_visitors = link_days.unique_visitors + excluded.unique_visitors",
    )
    .bind(&days.shares)
    .bind(&days.views)
    .bind(&days.previews)
    .bind(&days.denied)
    .bind(&days.uniques)
    .bind(&dates)
    .execute(&mut *conn)
    .await?;

    let (mut links, mut last_viewed) = (CountColumns::default(), Vec::new());
    for (share, total) in totals {
        let uniques = uniques_ever.get(&share).copied();
        last_viewed.push(total.last_viewed_at);
        links.push(share, &total, uniques);
    }
    sqlx::query(
        "INSERT INTO links (share_id, views, previews, denied, unique_visitors, last_viewed_at) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                              $5::bigint[], $6::timestamptz[]) \
         ON CONFLICT (share_id) DO UPDATE SET \
            views = links.views + excluded.views, \
            previews = links.previews + excluded.previews, \
            denied = links.denied + excluded.denied, \
            unique_visitors = links.unique_visitors + excluded.unique_visitors, \
            last_viewed_at = greatest(links.last_viewed_at, excluded.last_viewed_at)",
    )
    .bind(&links.shares)
    .bind(&links.views)
    .bind(&links.previews)
    .bind(&links.denied)
    .bind(&links.uniques)
    .bind(&last_viewed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The counts of many links (or link-days) as column vectors, for one `unnest` insert.
#[derive(Default)]
struct CountColumns {
    shares: Vec<String>,
    views: Vec<i64>,
    previews: Vec<i64>,
    denied: Vec<i64>,
    uniques: Vec<i64>,
}

impl CountColumns {
    fn push(&mut self, share: String, counts: &DayCounts, uniques: Option<i64>) {
        self.shares.push(share);
        self.views.push(counts.views);
        self.previews.push(counts.previews);
        self.denied.push(counts.denied);
        self.uniques.push(uniques.unwrap_or(0));
    }
}

/// Sequences are unsigned in JetStream and `bigint` here; a stream never gets near `i64::MAX`.
pub fn to_db(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

pub fn from_db(sequence: i64) -> u64 {
    sequence.max(0) as u64
}
