//! Checking a protected link's password on resolve, without letting Argon2 starve the server.
//!
//! Why a module of its own: an Argon2id verification costs tens of milliseconds of CPU and
//! 19 MiB of memory, on purpose. Run inline it would stall the async executor; run without a
//! bound, a crowd of guessers would take every core. So checks run on blocking threads behind a
//! semaphore (`workers` at a time) with a bounded queue: past it the check is refused as busy
//! (the caller answers 429, and it is not counted as a guess).
//!
//! A password verified once is remembered per instance, so a person who sends it on every
//! request pays Argon2 once: by an HMAC-SHA256 of (share, stored hash, password) under a key
//! drawn at start and never stored, never the password itself. A new password changes the
//! stored hash, which forgets every remembered one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::password::{PasswordHash, SharePassword};
use hmac::{Hmac, Mac};
use moka::sync::Cache;
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::Semaphore;

/// How long a verified password is remembered (it is checked again after).
const REMEMBER_FOR: Duration = Duration::from_secs(600);
const REMEMBERED_CAPACITY: u64 = 100_000;
/// Checks that may wait for a worker, per worker.
const QUEUE_PER_WORKER: usize = 32;

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Right,
    Wrong,
    /// Too many checks are waiting: try again in a moment (not a guess).
    Busy,
}

#[derive(Clone)]
pub struct PasswordChecker {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    remembered: Cache<[u8; 32], ()>,
    key: [u8; 32],
}

impl PasswordChecker {
    /// At most `workers` verifications at once (at least 1).
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        PasswordChecker {
            inner: Arc::new(Inner {
                workers: Arc::new(Semaphore::new(workers)),
                waiting: AtomicUsize::new(0),
                max_waiting: workers * QUEUE_PER_WORKER,
                remembered: Cache::builder()
                    .max_capacity(REMEMBERED_CAPACITY)
                    .time_to_live(REMEMBER_FOR)
                    .build(),
                key,
            }),
        }
    }

    /// Half the cores (at least one): the rest keep serving everything else.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// Whether `candidate` is the password of `share_id`, stored as `hash`.
    pub async fn check(
        &self,
        share_id: &str,
        hash: &PasswordHash,
        candidate: SharePassword,
    ) -> Check {
        let inner = &self.inner;
        let fingerprint = inner.fingerprint(share_id, hash, &candidate);
        if inner.remembered.contains_key(&fingerprint) {
            return Check::Right;
        }
        if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.max_waiting {
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            return Check::Busy;
        }
        let permit = inner.workers.clone().acquire_owned().await;
        inner.waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(permit) = permit else {
            return Check::Busy;
        };
        let hash = hash.clone();
        let right = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.verify(&candidate)
        })
        .await
        .unwrap_or(false);
        if right {
            inner.remembered.insert(fingerprint, ());
            Check::Right
        } else {
            Check::Wrong
        }
    }
}

impl Inner {
    fn fingerprint(
        &self,
        share_id: &str,
        hash: &PasswordHash,
        candidate: &SharePassword,
    ) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        for part in [
            share_id.as_bytes(),
            hash.as_str().as_bytes(),
            candidate.expose(),
        ] {
            // Length-prefixed, so no two splits of the same bytes collide.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_wrong_and_remembered() {
        let checker = PasswordChecker::new(1);
        let hash = SharePassword::new("open sesame").hash();
        let share = "mslink_000000000001";
        let check = |p: &str| checker.check(share, &hash, SharePassword::new(p));
        assert_eq!(check("nope nope").await, Check::Wrong);
        assert_eq!(check("open sesame").await, Check::Right);
        // Remembered: the second check is answered without Argon2 (and fast).
        let started = std::time::Instant::now();
        assert_eq!(check("open sesame").await, Check::Right);
        assert!(
            started.elapsed() < Duration::from_millis(5),
            "{:?}",
            started.elapsed()
        );
        // Another link with the same hash string is not the same fingerprint.
        assert_eq!(
            checker
                .check(
                    "mslink_000000000002",
                    &hash,
                    SharePassword::new("nope nope")
                )
                .await,
            Check::Wrong
        );
    }
}
