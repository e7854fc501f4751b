//! The password-guess limit: at most 5 wrong passwords per client IP and link within 60 s.
//!
//! Why a module of its own: the rule is the contract's ("once 5 wrong passwords from one client
//! IP for one link fall within 60 s, every attempt from that IP on that link is refused until
//! 60 s after the first of them"), and where its counters live is not. The counting is the
//! shared fixed-window counter of [`crate::rate_limit::window`]: through Redis when
//! `RATE_LIMIT_REDIS_URL` is set, so every instance shares one count, and in this instance's
//! memory without it or while Redis does not answer, like the resolve limit.
//!
//! The window starts at the first wrong password and neither slides nor outlives its minute.

use std::net::IpAddr;
use std::time::Duration;

use crate::rate_limit::shared::RedisLimits;
use crate::rate_limit::window::WindowLimit;

/// Wrong passwords allowed per client IP and link within [`WINDOW`].
pub const MAX_WRONG: u32 = 5;
/// The window, from the first wrong password.
pub const WINDOW: Duration = Duration::from_secs(60);

pub struct PasswordGuard {
    wrong: WindowLimit,
}

impl PasswordGuard {
    pub fn new(shared: Option<RedisLimits>) -> Self {
        PasswordGuard {
            wrong: WindowLimit::new("password", u64::from(MAX_WRONG), WINDOW, shared),
        }
    }

    /// Whole seconds (at least 1) until `ip` may try `share_id` again, or `None` if it may now.
    pub async fn blocked(&self, ip: IpAddr, share_id: &str) -> Option<u64> {
        let left = self.wrong.blocked(&subject(ip, share_id)).await?;
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Counts a wrong password from `ip` for `share_id`.
    pub async fn wrong_guess(&self, ip: IpAddr, share_id: &str) {
        self.wrong.hit(&subject(ip, share_id)).await;
    }
}

fn subject(ip: IpAddr, share_id: &str) -> String {
    format!("{share_id}:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn five_wrong_guesses_block_that_ip_on_that_link_only() {
        let guard = PasswordGuard::new(None);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        for _ in 0..MAX_WRONG - 1 {
            guard.wrong_guess(ip, "mslink_000000000001").await;
        }
        assert_eq!(guard.blocked(ip, "mslink_000000000001").await, None);
        guard.wrong_guess(ip, "mslink_000000000001").await;
        let wait = guard
            .blocked(ip, "mslink_000000000001")
            .await
            .expect("blocked");
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(guard.blocked(other, "mslink_000000000001").await, None);
        assert_eq!(guard.blocked(ip, "mslink_000000000002").await, None);
    }
}
