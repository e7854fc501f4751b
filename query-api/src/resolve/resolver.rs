//! The resolver: from a token hash to a judged [`Resolution`], before any rendering.
//!
//! Its own module because it holds the resolve's state across requests (the cache, the pool,
//! the links known to be used up) and the order of its steps: record (cache, else
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
use crate::used_up::UsedUpLinks;
use crate::view::{ShareRecord, ShareRow};

/// Looks token hashes up: cache, read models, and the `max_views` counters.
pub struct Resolver {
    pool: PgPool,
    cache: Arc<ResolveCache>,
    /// Limited links known to be used up, on every instance from the view that used them up:
    /// their refusals answer without a round trip, as fast as any other dead link's.
    used_up: Arc<UsedUpLinks>,
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
    pub fn new(pool: PgPool, cache: Arc<ResolveCache>, used_up: Arc<UsedUpLinks>) -> Self {
        Resolver {
            pool,
            cache,
            used_up,
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
        if self.used_up.is_used_up(share_id, max_views) {
            return Ok(ran_out);
        }
        let taken = match viewing {
            Viewing::Take => match share_usage::take_view(&self.pool, share_id, max_views).await? {
                Some(before) => {
                    if before + 1 >= ran_out {
                        // This view took the last one: from now on the link is known used up.
                        self.used_up.announce(share_id, max_views).await;
                    }
                    return Ok(before);
                }
                None => ran_out,
            },
            Viewing::Peek => share_usage::views_taken(&self.pool, share_id).await?,
        };
        if taken >= ran_out {
            // Used up before this instance heard of it (an announcement missed): tell the
            // others, without making this refusal wait for it.
            self.used_up.remember(share_id, max_views);
            let used_up = self.used_up.clone();
            let share_id = share_id.to_owned();
            tokio::spawn(async move { used_up.announce(&share_id, max_views).await });
        }
        Ok(taken)
    }
}
