//! The resolver: from a token hash to a judged [`Resolution`], before any rendering.
//!
//! Its own module because it holds the resolve's state across requests (the cache, the pool,
//! the links known to have run out) and the order of its steps: record (cache, else
//! [`super::record`]), then the one judge of a link ([`events::link::judge`]), then, only for an
//! active limited link, the view counter ([`events::share_usage`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use events::link::{judge, LinkStatus};
use events::share_token::TokenHash;
use events::share_usage;
use service_kit::ApiError;
use sqlx::PgPool;

use super::record;
use crate::cache::ResolveCache;
use crate::view::{ShareRecord, ShareRow};

/// Looks token hashes up: cache, read models, and the `max_views` counters.
pub struct Resolver {
    pool: PgPool,
    cache: Arc<ResolveCache>,
    /// Limited links this instance has seen run out. A count only grows, so once out a link is
    /// out for good: later resolves answer without a round trip, as fast as any other dead link
    /// (otherwise the counter's round trip would tell an over-limit link from a revoked one).
    exhausted: moka::sync::Cache<String, ()>,
}

/// Whether a resolve counts as a view of a limited link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewing {
    /// A `GET`: takes one view.
    Take,
    /// A `HEAD` (link checkers, preview probes): tells whether a view is left, takes none.
    Peek,
}

/// What a token resolved to, before rendering.
pub struct Resolution {
    /// `None`: no share link has this token (or it is malformed).
    pub status: Option<LinkStatus>,
    pub record: Arc<ShareRecord>,
}

impl Resolution {
    pub fn row(&self) -> Option<&ShareRow> {
        self.record.share.as_ref()
    }
}

impl Resolver {
    pub fn new(pool: PgPool, cache: Arc<ResolveCache>) -> Self {
        Resolver {
            pool,
            cache,
            exhausted: moka::sync::Cache::new(EXHAUSTED_CAPACITY),
        }
    }

    pub async fn resolve(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
        viewing: Viewing,
    ) -> Result<Resolution, ApiError> {
        let record = match self.cache.get(hash) {
            Some(record) => record,
            None => self.read(hash).await?,
        };
        let status = match record.share.as_ref() {
            None => None,
            Some(row) => Some(self.judge(row, now, viewing).await?),
        };
        Ok(Resolution { status, record })
    }

    /// Judges `row` at `now`. The view count is the judge's last question and the only one that
    /// costs a round trip, so it is asked only of a link that is otherwise active and limited.
    async fn judge(
        &self,
        row: &ShareRow,
        now: DateTime<Utc>,
        viewing: Viewing,
    ) -> Result<LinkStatus, ApiError> {
        let facts = row.link_facts();
        let status = judge(&facts, 0, now);
        match (status, facts.max_views) {
            (LinkStatus::Active, Some(max)) => {
                let taken = self.views_taken(&row.share_id, max, viewing).await?;
                Ok(judge(&facts, taken, now))
            }
            _ => Ok(status),
        }
    }

    /// One read-model query (one snapshot) for `hash`, cached unless a notice overtook it.
    async fn read(&self, hash: &TokenHash) -> Result<Arc<ShareRecord>, ApiError> {
        let ticket = self.cache.begin_read();
        let record = Arc::new(record::read(&self.pool, hash).await?);
        self.cache.insert(hash, record.clone(), ticket);
        Ok(record)
    }

    /// The views a limited link had taken before this request, taking one for
    /// [`Viewing::Take`] when one is left. A link that has run out reports its limit (at least
    /// that many were taken, which is all the judge needs to know).
    async fn views_taken(
        &self,
        share_id: &str,
        max_views: u32,
        viewing: Viewing,
    ) -> Result<u64, ApiError> {
        let ran_out = u64::from(max_views);
        if self.exhausted.contains_key(share_id) {
            return Ok(ran_out);
        }
        let taken = match viewing {
            Viewing::Take => share_usage::take_view(&self.pool, share_id, max_views)
                .await?
                .unwrap_or(ran_out),
            Viewing::Peek => share_usage::views_taken(&self.pool, share_id).await?,
        };
        if taken >= ran_out {
            self.exhausted.insert(share_id.to_owned(), ());
        }
        Ok(taken)
    }
}

/// Run-out links remembered per instance; beyond this the oldest are forgotten (and pay one
/// round trip again).
const EXHAUSTED_CAPACITY: u64 = 100_000;
