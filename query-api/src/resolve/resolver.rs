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
use crate::audit::Outcome;
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
    /// A person opening the link (a JSON `GET`, the page's `POST`): takes one view.
    Take,
    /// A look that takes none (a `HEAD`, a link-preview agent, the read-only `GET` page of a
    /// limited link): tells whether a view is left, and is audited as `preview`.
    Peek,
}

/// Why a protected link's content was not shown although the link is not dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PasswordRequired,
    PasswordInvalid,
    /// The password-guess limit (or a full verification queue): retry after these seconds.
    TooManyGuesses(u64),
}

/// What a token resolved to, before rendering.
pub struct Resolution {
    /// `None`: no share link has this token (or it is malformed).
    pub status: Option<LinkStatus>,
    pub record: Arc<ShareRecord>,
    /// The password gate's answer, when it refused.
    pub refusal: Option<Refusal>,
    /// An active link looked at without taking a view (previews get no playback URL).
    pub preview: bool,
}

impl Resolution {
    pub fn row(&self) -> Option<&ShareRow> {
        self.record.share.as_ref()
    }

    /// What the audit records for it.
    pub fn outcome(&self) -> Outcome {
        match self.refusal {
            Some(Refusal::PasswordRequired) => Outcome::PasswordRequired,
            Some(Refusal::PasswordInvalid) => Outcome::PasswordInvalid,
            Some(Refusal::TooManyGuesses(_)) => Outcome::RateLimited,
            None if self.preview && self.status == Some(LinkStatus::Active) => Outcome::Preview,
            None => Outcome::of_link(self.status),
        }
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

    /// The record of `hash`: from the cache, else one read-model query.
    pub async fn record(&self, hash: &TokenHash) -> Result<Arc<ShareRecord>, ApiError> {
        match self.cache.get(hash) {
            Some(record) => Ok(record),
            None => self.read(hash).await,
        }
    }

    /// Judges `row` at `now`. The view count is the judge's last question and the only one that
    /// costs a round trip, so it is asked only of a link that is otherwise active and limited.
    pub async fn judge(
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
        // Counted so that a refusal answered from memory can be told from one that was not.
        metrics::counter!("resolve_view_counter_round_trips_total").increment(1);
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
