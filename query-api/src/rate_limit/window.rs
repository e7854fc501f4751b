//! A counter per subject in a fixed window opened by the subject's first hit: "at most `max`
//! failures per `window`", such as wrong passwords per client IP and link.
//!
//! Shared through Redis when the instance has it ([`RedisLimits::hit`]); counted by this
//! instance alone without it or while Redis does not answer, exactly like the resolve limit.

use std::time::{Duration, Instant};

use super::shared::{RedisLimits, WindowCount};

pub struct WindowLimit {
    /// The limit's name in Redis keys (`music-share:{namespace}:{name}:{subject}`).
    name: &'static str,
    max: u64,
    window: Duration,
    shared: Option<RedisLimits>,
    /// Subject → (hits, when its window opened); entries expire with their window.
    local: moka::sync::Cache<String, (u64, Instant)>,
}

impl WindowLimit {
    pub fn new(
        name: &'static str,
        max: u64,
        window: Duration,
        shared: Option<RedisLimits>,
    ) -> Self {
        WindowLimit {
            name,
            max,
            window,
            shared,
            local: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        }
    }

    /// `Some(wait)` when `subject` has used its `max` hits and its window is still open.
    pub async fn blocked(&self, subject: &str) -> Option<Duration> {
        let count = match &self.shared {
            Some(redis) => match redis.hits(&redis.key(self.name, subject)).await {
                Some(count) => count,
                None => self.local_count(subject),
            },
            None => self.local_count(subject),
        };
        (count.hits >= self.max).then_some(count.resets_in.max(Duration::from_millis(1)))
    }

    /// Counts one hit for `subject`; returns the count with it.
    pub async fn hit(&self, subject: &str) -> WindowCount {
        if let Some(redis) = &self.shared {
            if let Some(count) = redis.hit(&redis.key(self.name, subject), self.window).await {
                return count;
            }
        }
        let now = Instant::now();
        let entry = self
            .local
            .entry(subject.to_owned())
            .and_upsert_with(|current| match current.map(|e| *e.value()) {
                Some((hits, opened)) if now.duration_since(opened) < self.window => {
                    (hits + 1, opened)
                }
                _ => (1, now),
            });
        let (hits, opened) = entry.into_value();
        WindowCount {
            hits,
            resets_in: self.window.saturating_sub(now.duration_since(opened)),
        }
    }

    fn local_count(&self, subject: &str) -> WindowCount {
        let now = Instant::now();
        match self.local.get(subject) {
            Some((hits, opened)) if now.duration_since(opened) < self.window => WindowCount {
                hits,
                resets_in: self.window - now.duration_since(opened),
            },
            _ => WindowCount {
                hits: 0,
                resets_in: Duration::ZERO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn five_then_blocked(limit: &WindowLimit, subject: &str) {
        for n in 1..=5 {
            assert_eq!(limit.blocked(subject).await, None, "before hit {n}");
            assert_eq!(limit.hit(subject).await.hits, n);
        }
        let wait = limit.blocked(subject).await.expect("blocked after five");
        assert!(wait <= Duration::from_millis(400));
        assert_eq!(limit.blocked("another subject").await, None);
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
        assert_eq!(limit.blocked(subject).await, None, "the window closed");
        assert_eq!(limit.hit(subject).await.hits, 1);
    }

    #[tokio::test]
    async fn locally_five_per_window_then_the_window_starts_over() {
        let limit = WindowLimit::new("password", 5, Duration::from_millis(400), None);
        five_then_blocked(&limit, "shr_x:192.0.2.1").await;
    }

    #[tokio::test]
    async fn through_redis_two_instances_share_the_count() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let namespace = format!("unit-{}", uuid::Uuid::new_v4().simple());
        let redis = || RedisLimits::new(&url, &namespace, Duration::from_secs(2)).expect("client");
        let window = Duration::from_millis(400);
        let a = WindowLimit::new("password", 5, window, Some(redis()));
        let b = WindowLimit::new("password", 5, window, Some(redis()));
        for _ in 0..3 {
            a.hit("s").await;
        }
        assert_eq!(b.hit("s").await.hits, 4);
        assert_eq!(a.hit("s").await.hits, 5);
        assert!(b.blocked("s").await.is_some(), "b sees a's hits");
        five_then_blocked(&a, "t").await;
    }
}
