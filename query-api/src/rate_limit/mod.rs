//! Rate limits per client: the resolve route's GCRA per client IP ([`ResolveLimit`]), and a
//! fixed-window counter for other limits ([`window::WindowLimit`], e.g. password guesses).
//!
//! With `RATE_LIMIT_REDIS_URL` set, every instance counts in the same Redis buckets
//! ([`shared`]), so N instances let one client through the configured rate, not N times it.
//! Without it, and while Redis does not answer, each instance counts alone ([`local`], and the
//! local half of [`window`]). A limiter never fails a request: a slow or lost Redis only means
//! local counting for a while. A client far from its limit, served by this instance alone, does
//! not wait for Redis at all ([`ahead`]): its take is counted behind its answer.

pub mod ahead;
pub mod local;
pub mod shared;
pub mod window;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use self::ahead::AheadOfRedis;
use self::local::LocalLimit;
use self::shared::{GcraOutcome, RedisLimits, Take};

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
    /// What Redis last said of each busy client, to answer far-from-the-limit checks at once.
    ahead: AheadOfRedis,
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
            ahead: AheadOfRedis::default(),
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
        if redis.in_fallback() {
            return None;
        }
        let now = Instant::now();
        if let Some(until) = self.refused_until.get(&ip).filter(|until| *until > now) {
            return Some(Decision::refused(self.rate.per_minute, until - now));
        }
        let key = redis.key(RESOLVE, &ip.to_string());
        let (interval, burst) = (self.rate.interval(), self.rate.burst);
        if let Some((decision, number)) = self.ahead.pass(ip, self.rate, now) {
            // Queued before the answer goes out, so this instance's takes reach Redis in order.
            if let Some(counted) = redis.queue_gcra(&key, interval, burst, Take::Anyway) {
                let (ahead, refused_until) = (self.ahead.clone(), self.refused_until.clone());
                tokio::spawn(async move {
                    let Some(outcome) = counted.await else {
                        return;
                    };
                    if let GcraOutcome::Refused { retry_in } = outcome {
                        // Another instance took from the bucket before this one heard of it.
                        metrics::counter!("rate_limit_overdrawn_total").increment(1);
                        refused_until.insert(ip, Instant::now() + retry_in);
                    }
                    ahead.learn(ip, number, outcome, Instant::now());
                });
            }
            return Some(decision);
        }
        let number = self.ahead.send(ip, now);
        let outcome = redis.gcra(&key, interval, burst, Take::IfAllowed).await?;
        self.ahead.learn(ip, number, outcome, Instant::now());
        Some(match outcome {
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
        })
    }

    /// Requests let through ahead of Redis's answer so far ([`ahead`]).
    pub fn answered_ahead(&self) -> u64 {
        self.ahead.passed()
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
        // A burst of 3 always waits for Redis; one of 20 is answered ahead in its upper half.
        for burst in [3, 20] {
            let local = ResolveLimit::new(60, burst).expect("limit");
            let shared = ResolveLimit::new(60, burst)
                .expect("limit")
                .shared(redis.clone());
            let ip: IpAddr = format!("192.0.2.{burst}").parse().expect("ip");
            for i in 0..=burst {
                let (a, b) = (local.check(ip).await, shared.check(ip).await);
                assert_eq!(
                    (a.allowed, a.limit, a.remaining, a.reset_secs),
                    (b.allowed, b.limit, b.remaining, b.reset_secs),
                    "burst {burst}, request {i}"
                );
                // Apart enough for Redis's answers to show this instance alone with the client.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            // Refused from memory now: still the same answer.
            let (a, b) = (local.check(ip).await, shared.check(ip).await);
            assert!(!a.allowed && !b.allowed);
            assert_eq!(a.reset_secs, b.reset_secs);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_answered_ahead_are_counted_in_redis_all_the_same() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let namespace = format!("unit-{}", uuid::Uuid::new_v4().simple());
        let redis = RedisLimits::new(&url, &namespace, Duration::from_secs(2)).expect("client");
        let instance = || {
            ResolveLimit::new(1, 40)
                .expect("limit")
                .shared(redis.clone())
        };
        let (a, b) = (instance(), instance());
        let ip: IpAddr = "192.0.2.50".parse().expect("ip");
        // 30 from A, one every 2 ms: A waits for Redis until its answers have shown for 20 ms
        // that nobody else takes, then answers ahead of it while at least 20 stay.
        for i in 0..30 {
            assert!(a.check(ip).await.allowed, "request {i} within the burst");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            (5..=18).contains(&a.answered_ahead()),
            "{} answered ahead",
            a.answered_ahead()
        );
        // Once A's takes behind its answers have landed, B (which never saw this client) finds
        // 10 left in Redis, not 39: every request A let through was counted there.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = b.check(ip).await;
        assert!(first.allowed);
        assert_eq!(first.remaining, 9);
        let passed = 1 + futures::future::join_all((0..20).map(|_| b.check(ip)))
            .await
            .iter()
            .filter(|d| d.allowed)
            .count();
        assert_eq!(passed, 10, "what was left of the burst, and no more");
    }
}
