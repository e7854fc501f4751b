//! GCRA (governor) per client IP, counted by this instance alone: the limit when no Redis is
//! configured, and the fallback while Redis does not answer.
//!
//! Memory stays bounded however many addresses we see: a sweeper drops every key whose bucket is
//! full again (indistinguishable from a key never seen) and shrinks the map, so only addresses
//! active within the last burst-refill period are kept.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{ceil_secs, Decision, Rate};

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

#[derive(Clone)]
pub struct LocalLimit {
    limiter: Arc<Limiter>,
    rate: Rate,
}

impl LocalLimit {
    pub fn new(rate: Rate) -> Self {
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN));
        LocalLimit {
            limiter: Arc::new(RateLimiter::keyed(quota).with_middleware()),
            rate,
        }
    }

    pub fn check(&self, ip: IpAddr) -> Decision {
        match self.limiter.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.rate.burst.saturating_sub(remaining + 1) + 1;
                Decision {
                    allowed: true,
                    limit: self.rate.per_minute,
                    remaining,
                    reset_secs: ceil_secs(self.rate.interval() * missing),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision::refused(self.rate.per_minute, wait)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_refusal_with_a_whole_second_wait() {
        let limit = LocalLimit::new(Rate::new(60, 3).expect("rate"));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let remaining: Vec<u32> = (0..3).map(|_| limit.check(ip).remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = limit.check(ip);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_secs, 1);
        assert!(limit.check("192.0.2.2".parse().expect("ip")).allowed);
    }
}
