//! Limits shared by every query-API instance through Redis (`RATE_LIMIT_REDIS_URL`).
//!
//! Each limit is one atomic Redis step (a Lua script), timed by Redis's own clock (`TIME`), so
//! instances whose clocks disagree still count against one bucket. Two shapes are offered:
//! [`RedisLimits::gcra`] (a rate with a burst: the resolve limit) and [`RedisLimits::hit`] /
//! [`RedisLimits::hits`] (a counter in a fixed window opened by its first hit: the
//! password-guess limit). Keys are `music-share:{NOTICE_NAMESPACE}:{limit}:{subject}`, so stacks
//! sharing a Redis never share buckets.
//!
//! **Never failing.** Every call has a tight timeout. The first failure switches this instance
//! to fallback (one log line, `rate_limit_fallback_active` 1): callers then get `None` at once,
//! without a round trip, and count locally. A watcher pings Redis every
//! [`PROBE_EVERY`]; the first answer switches back (one log line, the gauge 0).
//!
//! The connection manager multiplexes one connection: concurrent requests' scripts are written
//! together and their replies read in order, so the round trips of a busy instance are
//! pipelined without any batching of our own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

/// How often an instance in fallback asks Redis whether it is back (the contract allows 5 s).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA as governor computes it (so local and shared answers agree), in microseconds of Redis's
/// clock. `ARGV[1]` is the emission interval `t`, `ARGV[2]` the tolerance `tau = t * (burst - 1)`.
/// A request passes unless `now < tat - tau`; passing moves the theoretical arrival time `tat` to
/// `max(tat, now) + t`, kept until the bucket is full again. Returns
/// `{1, remaining, µs until full}` or `{0, 0, µs until a retry passes}`.
const GCRA_LUA: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if now < tat - tau then
  return {0, 0, tat - tau - now}
end
local next = math.max(tat, now) + t
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000))
local remaining = math.floor(math.min(now + tau + t - next, tau + t) / t)
return {1, remaining, next - now}
";

/// One more hit in a fixed window that opens with the key's first hit (`ARGV[1]` ms long).
/// Returns `{hits, ms until the window closes}`.
const HIT_LUA: &str = r"
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
";

/// What [`RedisLimits::gcra`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcraOutcome {
    /// Passed; `remaining` more may pass at once; the bucket is full again after `full_in`.
    Allowed { remaining: u32, full_in: Duration },
    /// Refused; a retry passes after `retry_in`.
    Refused { retry_in: Duration },
}

/// A fixed-window counter's state: `hits` so far, the window closes after `resets_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCount {
    pub hits: u64,
    pub resets_in: Duration,
}

/// The Redis side of the shared limits, cheap to clone (one connection, multiplexed).
#[derive(Clone)]
pub struct RedisLimits {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    namespace: String,
    timeout: Duration,
    fallback: AtomicBool,
    gcra: Script,
    hit: Script,
}

impl RedisLimits {
    /// A client for `url`. Never waits for Redis: the connection is made on first use, and an
    /// unreachable server only puts the instance in fallback.
    pub fn new(url: &str, namespace: &str, timeout: Duration) -> Result<RedisLimits, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("RATE_LIMIT_REDIS_URL is not a Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(PROBE_EVERY)
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis client: {e}"))?;
        metrics::gauge!("rate_limit_fallback_active").set(0.0);
        Ok(RedisLimits {
            inner: Arc::new(Inner {
                connection,
                namespace: namespace.to_owned(),
                timeout,
                fallback: AtomicBool::new(false),
                gcra: Script::new(GCRA_LUA),
                hit: Script::new(HIT_LUA),
            }),
        })
    }

    /// The Redis key of `subject` under the limit called `limit`, in this stack's namespace.
    pub fn key(&self, limit: &str, subject: &str) -> String {
        format!("music-share:{}:{limit}:{subject}", self.inner.namespace)
    }

    /// Whether this instance is limiting alone because Redis did not answer.
    pub fn in_fallback(&self) -> bool {
        self.inner.fallback.load(Ordering::Relaxed)
    }

    /// Takes one request from the GCRA bucket `key` (`interval` per request, `burst` at once);
    /// `None` in fallback.
    pub async fn gcra(&self, key: &str, interval: Duration, burst: u32) -> Option<GcraOutcome> {
        let t = (interval.as_micros() as u64).max(1);
        let tau = t.saturating_mul(u64::from(burst.max(1) - 1));
        let mut invocation = self.inner.gcra.key(key);
        invocation.arg(t).arg(tau);
        let mut connection = self.inner.connection.clone();
        let reply: (i64, i64, i64) = self.run(invocation.invoke_async(&mut connection)).await?;
        let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
        Some(match reply {
            (1, remaining, full_in) => GcraOutcome::Allowed {
                remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                full_in: micros(full_in),
            },
            (_, _, retry_in) => GcraOutcome::Refused {
                retry_in: micros(retry_in),
            },
        })
    }

    /// Counts one hit on `key`, in a window of `window` opened by its first hit; `None` in
    /// fallback.
    pub async fn hit(&self, key: &str, window: Duration) -> Option<WindowCount> {
        let mut invocation = self.inner.hit.key(key);
        invocation.arg((window.as_millis() as u64).max(1));
        let mut connection = self.inner.connection.clone();
        let (hits, ttl): (i64, i64) = self.run(invocation.invoke_async(&mut connection)).await?;
        Some(WindowCount {
            hits: hits.max(0) as u64,
            resets_in: Duration::from_millis(ttl.max(0) as u64),
        })
    }

    /// The hits on `key` in its current window, without counting one; `None` in fallback.
    pub async fn hits(&self, key: &str) -> Option<WindowCount> {
        let mut connection = self.inner.connection.clone();
        let mut pipe = redis::pipe();
        pipe.get(key).pttl(key);
        let (hits, ttl): (Option<i64>, i64) = self.run(pipe.query_async(&mut connection)).await?;
        Some(WindowCount {
            hits: hits.unwrap_or(0).max(0) as u64,
            resets_in: Duration::from_millis(ttl.max(0) as u64),
        })
    }

    /// Runs one Redis call under the timeout; a failure switches to fallback.
    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if self.in_fallback() {
            return None;
        }
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.fall_back(&e.to_string());
                None
            }
            Err(_) => {
                self.fall_back("no answer in time");
                None
            }
        }
    }

    fn fall_back(&self, why: &str) {
        if !self.inner.fallback.swap(true, Ordering::Relaxed) {
            metrics::gauge!("rate_limit_fallback_active").set(1.0);
            tracing::warn!(
                error = why,
                "rate limit: Redis did not answer; each instance limits alone until it does"
            );
        }
    }

    /// Watches Redis forever (spawned once per process): while in fallback, pings it every
    /// [`PROBE_EVERY`] and switches back on the first answer.
    pub async fn watch(self) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.in_fallback() {
                continue;
            }
            let mut connection = self.inner.connection.clone();
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut connection);
            if let Ok(Ok(_)) = tokio::time::timeout(self.inner.timeout, ping).await {
                self.inner.fallback.store(false, Ordering::Relaxed);
                metrics::gauge!("rate_limit_fallback_active").set(0.0);
                tracing::info!("rate limit: Redis answers again; limits are shared again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Over the real Redis (`TEST_REDIS_URL`, default the shared one on 127.0.0.1:6379), each
    //! test in its own namespace.

    use super::*;

    fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    fn limits() -> RedisLimits {
        let namespace = format!("unit-{}", uuid::Uuid::new_v4().simple());
        RedisLimits::new(&redis_url(), &namespace, Duration::from_secs(2)).expect("client")
    }

    #[tokio::test]
    async fn gcra_passes_a_burst_then_refuses_until_one_interval_has_passed() {
        let limits = limits();
        let key = limits.key("resolve", "192.0.2.1");
        let interval = Duration::from_millis(200);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match limits.gcra(&key, interval, 3).await.expect("redis answers") {
                GcraOutcome::Allowed { remaining: r, .. } => remaining.push(r),
                refused => panic!("refused within the burst: {refused:?}"),
            }
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let GcraOutcome::Refused { retry_in } =
            limits.gcra(&key, interval, 3).await.expect("redis")
        else {
            panic!("a fourth request passed a burst of three");
        };
        assert!(
            retry_in <= interval && retry_in > Duration::ZERO,
            "{retry_in:?}"
        );
        tokio::time::sleep(retry_in + Duration::from_millis(20)).await;
        assert!(matches!(
            limits.gcra(&key, interval, 3).await,
            Some(GcraOutcome::Allowed { remaining: 0, .. })
        ));
        // Another subject has its own bucket.
        let other = limits.key("resolve", "192.0.2.2");
        assert!(matches!(
            limits.gcra(&other, interval, 3).await,
            Some(GcraOutcome::Allowed { remaining: 2, .. })
        ));
        assert!(!limits.in_fallback());
    }

    #[tokio::test]
    async fn a_fixed_window_counts_from_its_first_hit_and_then_starts_over() {
        let limits = limits();
        let key = limits.key("password", "link:192.0.2.1");
        let window = Duration::from_millis(300);
        assert_eq!(limits.hits(&key).await.expect("redis").hits, 0);
        let first = limits.hit(&key, window).await.expect("redis");
        assert_eq!(first.hits, 1);
        assert!(first.resets_in <= window && first.resets_in > Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = limits.hit(&key, window).await.expect("redis");
        assert_eq!(second.hits, 2);
        // The window did not restart with the second hit.
        assert!(second.resets_in < first.resets_in, "{second:?} {first:?}");
        assert_eq!(limits.hits(&key).await.expect("redis").hits, 2);
        tokio::time::sleep(second.resets_in + Duration::from_millis(50)).await;
        assert_eq!(limits.hits(&key).await.expect("redis").hits, 0);
        assert_eq!(limits.hit(&key, window).await.expect("redis").hits, 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_means_fallback_at_once_never_an_error() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let limits = RedisLimits::new(
            &format!("redis://127.0.0.1:{port}"),
            "unit-down",
            Duration::from_millis(100),
        )
        .expect("client");
        assert_eq!(limits.gcra("k", Duration::from_secs(1), 1).await, None);
        assert!(limits.in_fallback());
        let started = std::time::Instant::now();
        assert_eq!(limits.hit("k", Duration::from_secs(1)).await, None);
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "no round trip in fallback"
        );
    }
}
