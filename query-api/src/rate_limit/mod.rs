//! Rate limits per client: the resolve route's GCRA per client IP ([`ResolveLimit`]), and a
//! fixed-window counter for other limits ([`window::WindowLimit`], e.g. password guesses).
//!
//! With `RATE_LIMIT_REDIS_URL` set, every instance counts in the same Redis buckets
//! ([`shared`]), so N instances let one client through the configured rate, not N times it.
//! Without it, and while Redis does not answer, each instance counts alone ([`local`], and the
//! local half of [`window`]). A limiter never fails a request: a slow or lost Redis only means
//! local counting for a while.

pub mod local;
pub mod shared;
pub mod window;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use self::local::LocalLimit;
use self::shared::{GcraOutcome, RedisLimits};

/// A rate with a burst, as configured (`RESOLVE_RATE_PER_MINUTE`, `RESOLVE_BURST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub fn new(per_minute: u32, burst: u32) -> Result<Rate, String> {
        if per_minute == 0 {
            return Err("RESOLVE_RATE_PER_MINUTE must be at least 1".to_owned());
        }
        if burst == 0 {
            return Err("RESOLVE_BURST must be at least 1".to_owned());
        }
        Ok(Rate { per_minute, burst })
    }

    /// Time to earn one request back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute
    }
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

impl Decision {
    fn refused(limit: u32, wait: Duration) -> Decision {
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: ceil_secs(wait).max(1),
        }
    }

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

/// The resolve route's limit per client IP.
#[derive(Clone)]
pub struct ResolveLimit {
    rate: Rate,
    local: LocalLimit,
    shared: Option<RedisLimits>,
    /// Addresses Redis refused, until when. A GCRA refusal cannot be undone by anyone (the
    /// bucket's arrival time only grows), so until then a flood is refused without a round trip.
    refused_until: moka::sync::Cache<IpAddr, Instant>,
}

/// The name of the resolve limit in Redis keys.
const RESOLVE: &str = "resolve";

impl ResolveLimit {
    /// Counting alone, in this instance.
    pub fn new(per_minute: u32, burst: u32) -> Result<Self, String> {
        let rate = Rate::new(per_minute, burst)?;
        Ok(ResolveLimit {
            rate,
            local: LocalLimit::new(rate),
            shared: None,
            refused_until: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(rate.interval() + Duration::from_secs(1))
                .build(),
        })
    }

    /// Counting in Redis with every other instance, alone while Redis does not answer.
    pub fn shared(mut self, redis: RedisLimits) -> Self {
        self.shared = Some(redis);
        self
    }

    pub async fn check(&self, ip: IpAddr) -> Decision {
        let decision = match &self.shared {
            Some(redis) => match self.check_shared(redis, ip).await {
                Some(decision) => decision,
                None => self.local.check(ip),
            },
            None => self.local.check(ip),
        };
        if !decision.allowed {
            metrics::counter!("resolve_rate_limited_total").increment(1);
        }
        decision
    }

    async fn check_shared(&self, redis: &RedisLimits, ip: IpAddr) -> Option<Decision> {
        let now = Instant::now();
        if let Some(until) = self.refused_until.get(&ip).filter(|until| *until > now) {
            return Some(Decision::refused(self.rate.per_minute, until - now));
        }
        let key = redis.key(RESOLVE, &ip.to_string());
        Some(
            match redis
                .gcra(&key, self.rate.interval(), self.rate.burst)
                .await?
            {
                GcraOutcome::Allowed { remaining, full_in } => Decision {
                    allowed: true,
                    limit: self.rate.per_minute,
                    remaining,
                    reset_secs: ceil_secs(full_in),
                },
                GcraOutcome::Refused { retry_in } => {
                    self.refused_until.insert(ip, now + retry_in);
                    Decision::refused(self.rate.per_minute, retry_in)
                }
            },
        )
    }

    /// Keys the local limiter holds (for metrics and the memory benchmark).
    pub fn len(&self) -> usize {
        self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the local limiter's memory bounded, and (with Redis) watches for Redis's return
    /// while in fallback; runs forever (spawned once per process).
    pub async fn maintain(self, sweep_every: Duration) {
        match self.shared {
            Some(redis) => {
                tokio::join!(self.local.sweep(sweep_every), redis.watch());
            }
            None => self.local.sweep(sweep_every).await,
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_and_local_answer_the_same_headers() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let namespace = format!("unit-{}", uuid::Uuid::new_v4().simple());
        let redis = RedisLimits::new(&url, &namespace, Duration::from_secs(2)).expect("client");
        let local = ResolveLimit::new(60, 3).expect("limit");
        let shared = ResolveLimit::new(60, 3).expect("limit").shared(redis);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..4 {
            let (a, b) = (local.check(ip).await, shared.check(ip).await);
            assert_eq!(
                (a.allowed, a.limit, a.remaining, a.reset_secs),
                (b.allowed, b.limit, b.remaining, b.reset_secs)
            );
        }
        // Refused from memory now: still the same answer.
        let (a, b) = (local.check(ip).await, shared.check(ip).await);
        assert!(!a.allowed && !b.allowed);
        assert_eq!(a.reset_secs, b.reset_secs);
    }
}
