//! The resolve cache: [`ShareRecord`]s keyed by token hash, evicted by the projector's change
//! notices, with a short TTL as a safety net for a lost notice.
//!
//! Known and unknown hashes live in two bounded caches, so a flood of made-up tokens can evict
//! only other made-up tokens, never the hot links.
//!
//! **The insert race.** A request reads the database before a revoke is projected; the revoke's
//! notice arrives and evicts (nothing is cached yet); then the request inserts what it read,
//! and the stale record would live until its TTL. To prevent it, every notice bumps a sequence
//! number and records, per id it names (token hash, share, track, collection), the sequence at
//! which it last touched that id (`touched`, kept longer than any read takes). A reader notes the
//! sequence before it reads ([`ResolveCache::begin_read`]); [`ResolveCache::insert`] refuses a
//! record if one of its ids was touched since, and checks again *after* inserting: a notice that
//! lands between the check and the insert has either been seen by the second check, or evicts
//! after the insert. A rebuild (every id suspect) is a sequence number of its own.
//!
//! Dead answers never trust the cache alone: the resolver re-checks them against the event
//! log's head (see `resolve`), so a stale unknown-hash entry cannot hide a just-created link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::notice::ChangeNotice;
use events::share_token::TokenHash;
use moka::sync::Cache;

use crate::view::ShareRecord;

/// How long a record may be served without a notice confirming it (lost-notice safety net).
pub const TTL: Duration = Duration::from_secs(10);
const KNOWN_CAPACITY: u64 = 200_000;
const UNKNOWN_CAPACITY: u64 = 100_000;
/// Longer than any database read may take (the pool's acquire timeout plus a query).
const TOUCHED_TTL: Duration = Duration::from_secs(60);

pub struct ResolveCache {
    enabled: bool,
    known: Cache<TokenHash, Arc<ShareRecord>>,
    unknown: Cache<TokenHash, Arc<ShareRecord>>,
    touched: Cache<String, u64>,
    sequence: AtomicU64,
    rebuilt_at: AtomicU64,
}

/// Taken before a database read; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct ReadTicket(u64);

impl ResolveCache {
    pub fn new(enabled: bool) -> Self {
        ResolveCache {
            enabled,
            known: Cache::builder()
                .max_capacity(KNOWN_CAPACITY)
                .time_to_live(TTL)
                .support_invalidation_closures()
                .build(),
            unknown: Cache::builder()
                .max_capacity(UNKNOWN_CAPACITY)
                .time_to_live(TTL)
                .build(),
            touched: Cache::builder()
                .max_capacity(KNOWN_CAPACITY)
                .time_to_live(TOUCHED_TTL)
                .build(),
            sequence: AtomicU64::new(0),
            rebuilt_at: AtomicU64::new(0),
        }
    }

    pub fn get(&self, hash: &TokenHash) -> Option<Arc<ShareRecord>> {
        if !self.enabled {
            return None;
        }
        let hit = self.known.get(hash).or_else(|| self.unknown.get(hash));
        match hit {
            Some(_) => metrics::counter!("resolve_cache_hits_total").increment(1),
            None => metrics::counter!("resolve_cache_misses_total").increment(1),
        }
        hit
    }

    pub fn begin_read(&self) -> ReadTicket {
        ReadTicket(self.sequence.load(Ordering::SeqCst))
    }

    /// Caches `record` unless a notice touched it since `ticket` was taken.
    pub fn insert(&self, hash: &TokenHash, record: Arc<ShareRecord>, ticket: ReadTicket) {
        if !self.enabled || self.stale(hash, &record, ticket) {
            return;
        }
        let target = if record.share.is_some() {
            &self.known
        } else {
            &self.unknown
        };
        target.insert(hash.clone(), record.clone());
        if self.stale(hash, &record, ticket) {
            target.invalidate(hash);
        }
    }

    fn stale(&self, hash: &TokenHash, record: &ShareRecord, ticket: ReadTicket) -> bool {
        let touched_since = |id: &str| self.touched.get(id).is_some_and(|seq| seq > ticket.0);
        self.rebuilt_at.load(Ordering::SeqCst) > ticket.0
            || touched_since(hash.as_str())
            || record.dependency_ids().into_iter().any(touched_since)
    }

    /// Applies a change notice: every id it names is marked touched, then evicted.
    pub fn apply(&self, notice: &ChangeNotice) {
        if notice.is_heartbeat() {
            return;
        }
        let seq = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        if notice.rebuilt {
            self.rebuilt_at.store(seq, Ordering::SeqCst);
            self.known.invalidate_all();
            self.unknown.invalidate_all();
        }
        for hash in &notice.token_hashes {
            self.touched.insert(hash.as_str().to_owned(), seq);
            self.known.invalidate(hash);
            self.unknown.invalidate(hash);
        }
        let ids: Vec<String> = notice
            .share_ids
            .iter()
            .map(|id| id.as_str().to_owned())
            .chain(notice.track_ids.iter().map(|id| id.as_str().to_owned()))
            .chain(
                notice
                    .collection_ids
                    .iter()
                    .map(|id| id.as_str().to_owned()),
            )
            .collect();
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            self.touched.insert(id.clone(), seq);
        }
        let ids: Arc<[String]> = ids.into();
        // Invalidation closures are checked on every later `get`, so the eviction is immediate
        // even though moka removes the entries in the background.
        let result = self.known.invalidate_entries_if(move |_, record| {
            record
                .dependency_ids()
                .into_iter()
                .any(|dep| ids.iter().any(|id| id == dep))
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not register a cache invalidation; clearing the cache");
            self.known.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Content, ShareRow};
    use events::event::{TargetType, Visibility};

    fn record(share_id: &str) -> Arc<ShareRecord> {
        Arc::new(ShareRecord {
            share: Some(ShareRow {
                share_id: share_id.to_owned(),
                target_type: TargetType::Track,
                target_id: "mtrack_000000000001".to_owned(),
                visibility: Visibility::LinkOnly,
                expires_at: None,
                max_views: None,
                revoked_at: None,
                password_hash: None,
                content: Content::Removed,
            }),
        })
    }

    #[test]
    fn a_read_overtaken_by_a_notice_is_not_cached() {
        let cache = ResolveCache::new(true);
        let hash = TokenHash::of("shr_x");
        let ticket = cache.begin_read();
        cache.apply(&ChangeNotice {
            position: 2,
            token_hashes: vec![hash.clone()],
            ..ChangeNotice::default()
        });
        cache.insert(&hash, record("mslink_000000000001"), ticket);
        assert!(cache.get(&hash).is_none());

        let ticket = cache.begin_read();
        cache.insert(&hash, record("mslink_000000000001"), ticket);
        assert!(cache.get(&hash).is_some());
    }

    #[test]
    fn notices_naming_the_target_evict() {
        let cache = ResolveCache::new(true);
        let hash = TokenHash::of("shr_y");
        cache.insert(&hash, record("mslink_000000000002"), cache.begin_read());
        assert!(cache.get(&hash).is_some());
        cache.apply(&ChangeNotice {
            position: 3,
            track_ids: vec![events::ids::TrackId::parse("mtrack_000000000001").expect("id")],
            ..ChangeNotice::default()
        });
        assert!(cache.get(&hash).is_none());
    }

    #[test]
    fn a_rebuild_evicts_everything() {
        let cache = ResolveCache::new(true);
        let hash = TokenHash::of("shr_z");
        cache.insert(&hash, record("mslink_000000000003"), cache.begin_read());
        cache.apply(&ChangeNotice {
            position: 4,
            rebuilt: true,
            ..ChangeNotice::default()
        });
        assert!(cache.get(&hash).is_none());
    }
}
