//! The password-guess limit: at most 5 wrong passwords per client IP and link within 60 s.
//!
//! Why a module of its own: the rule is the contract's ("once 5 wrong passwords from one client
//! IP for one link fall within 60 s, every attempt from that IP on that link is refused until
//! 60 s after the first of them"), and where its counters live is not. Today each instance
//! counts alone, in memory; when the resolve limit moves to Redis (`RATE_LIMIT_REDIS_URL`), this
//! is the one place to switch so that every instance shares the count.
//!
//! A fixed window starts at the first wrong password: its entry expires 60 s after it was made
//! (moka's time-to-live counts from the insert, and later guesses only bump a counter), so the
//! window neither slides nor outlives its minute. Memory is bounded; beyond the bound the least
//! valuable windows are forgotten, which can only make the limit more lenient, never refuse a
//! person who guessed nothing.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Wrong passwords allowed per client IP and link within [`WINDOW`].
pub const MAX_WRONG: u32 = 5;
/// The window, from the first wrong password.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Windows remembered at most (one per client IP and link that guessed wrong lately).
const CAPACITY: u64 = 500_000;

#[derive(Clone)]
pub struct PasswordGuard {
    windows: Cache<(IpAddr, Arc<str>), Arc<Window>>,
}

struct Window {
    started: Instant,
    wrong: AtomicU32,
}

impl Default for PasswordGuard {
    fn default() -> Self {
        PasswordGuard {
            windows: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(WINDOW)
                .build(),
        }
    }
}

impl PasswordGuard {
    /// Whole seconds (at least 1) until `ip` may try `share_id` again, or `None` if it may now.
    pub fn blocked(&self, ip: IpAddr, share_id: &str) -> Option<u64> {
        let window = self.windows.get(&(ip, Arc::from(share_id)))?;
        if window.wrong.load(Ordering::Acquire) < MAX_WRONG {
            return None;
        }
        let left = WINDOW.saturating_sub(window.started.elapsed());
        if left.is_zero() {
            return None;
        }
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Counts a wrong password from `ip` for `share_id`.
    pub fn wrong_guess(&self, ip: IpAddr, share_id: &str) {
        let window = self.windows.get_with((ip, Arc::from(share_id)), || {
            Arc::new(Window {
                started: Instant::now(),
                wrong: AtomicU32::new(0),
            })
        });
        window.wrong.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_guesses_block_that_ip_on_that_link_only() {
        let guard = PasswordGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        for _ in 0..MAX_WRONG - 1 {
            guard.wrong_guess(ip, "mslink_000000000001");
        }
        assert_eq!(guard.blocked(ip, "mslink_000000000001"), None);
        guard.wrong_guess(ip, "mslink_000000000001");
        let wait = guard.blocked(ip, "mslink_000000000001").expect("blocked");
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(guard.blocked(other, "mslink_000000000001"), None);
        assert_eq!(guard.blocked(ip, "mslink_000000000002"), None);
    }
}
