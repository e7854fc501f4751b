//! The resolve route's rate limit: GCRA (governor) per client IP.
//!
//! Memory stays bounded however many addresses we see: a sweeper drops every key whose bucket is
//! full again (indistinguishable from a key never seen) and shrinks the map, so only addresses
//! active within the last burst-refill period are kept.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

#[derive(Clone)]
pub struct ResolveLimit {
    limiter: Arc<Limiter>,
    per_minute: u32,
    burst: u32,
    /// Time to earn one request back.
    interval: Duration,
}

/// The headers every resolve answer carries, and the wait when refused.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (allowed) or until a retry may pass.
    pub reset_secs: u64,
}

impl ResolveLimit {
    pub fn new(per_minute: u32, burst: u32) -> Result<Self, String> {
        let per_minute_nz = NonZeroU32::new(per_minute)
            .ok_or_else(|| "RESOLVE_RATE_PER_MINUTE must be at least 1".to_owned())?;
        let burst_nz =
            NonZeroU32::new(burst).ok_or_else(|| "RESOLVE_BURST must be at least 1".to_owned())?;
        let quota = Quota::per_minute(per_minute_nz).allow_burst(burst_nz);
        Ok(ResolveLimit {
            interval: quota.replenish_interval(),
            limiter: Arc::new(RateLimiter::keyed(quota).with_middleware()),
            per_minute,
            burst,
        })
    }

    pub fn check(&self, ip: IpAddr) -> Decision {
        match self.limiter.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.burst.saturating_sub(remaining + 1) + 1;
                Decision {
                    allowed: true,
                    limit: self.per_minute,
                    remaining,
                    reset_secs: ceil_secs(self.interval * missing),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("resolve_rate_limited_total").increment(1);
                Decision {
                    allowed: false,
                    limit: self.per_minute,
                    remaining: 0,
                    reset_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }

    /// Keys currently held (for metrics and the memory benchmark).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops keys whose bucket is full again, forever (spawned once per process).
    pub async fn sweep(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let limiter = self.limiter.clone();
            let kept = tokio::task::spawn_blocking(move || {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .await
            .unwrap_or(0);
            metrics::gauge!("resolve_rate_limit_keys").set(kept as f64);
        }
    }
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: u64| {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        };
        set("ratelimit-limit", u64::from(self.limit));
        set("ratelimit-remaining", u64::from(self.remaining));
        set("ratelimit-reset", self.reset_secs);
        if !self.allowed {
            set("retry-after", self.reset_secs);
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_refusal_with_a_whole_second_wait() {
        let limit = ResolveLimit::new(60, 3).expect("limit");
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let remaining: Vec<u32> = (0..3).map(|_| limit.check(ip).remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = limit.check(ip);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_secs, 1);
        assert!(limit.check("192.0.2.2".parse().expect("ip")).allowed);
    }
}
