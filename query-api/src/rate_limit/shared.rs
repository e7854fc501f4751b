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
//! **Cheap when busy.** Redis spends far more on running a script than on the work inside it
//! (about 16 µs per GCRA call here, pipelined, against a few µs per key inside one call), and on
//! two cores that time is taken from the resolves. So the resolve limit's checks are batched, as
//! a group commit: one task sends whatever checks are waiting as one script call over every
//! key, in arrival order, and the checks that arrive meanwhile wait for the next call. An idle
//! instance pays one round trip per check, as before; a busy one pays one per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::{mpsc, oneshot};

/// How often an instance in fallback asks Redis whether it is back (the contract allows 5 s).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA as governor computes it (so local and shared answers agree), in microseconds of Redis's
/// clock, for each key in turn (a key may come twice: a batch from a busy client holds its key
/// many times). For key `i`, `ARGV[3i-2]` is the emission interval `t`, `ARGV[3i-1]` the
/// tolerance `tau = t * (burst - 1)`, and `ARGV[3i]` `1` for a take counted anyway (its request
/// has already passed; see [`Take::Anyway`]). A request passes unless `now < tat - tau`; passing
/// (or being counted anyway) moves the theoretical arrival time `tat` to `max(tat, now) + t`,
/// kept until the bucket is full again. A key is read once and written once per call however
/// often it comes, since each `redis.call` costs Redis more than the arithmetic. Returns three
/// numbers per key: `1, remaining, µs until full` or `0, 0, µs until a retry passes`.
const GCRA_LUA: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out, tats, moved = {}, {}, {}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[3 * i - 2])
  local tau = tonumber(ARGV[3 * i - 1])
  local tat = tats[key]
  if tat == nil then tat = tonumber(redis.call('GET', key)) or now end
  local passes = now >= tat - tau
  if passes or ARGV[3 * i] == '1' then
    local next = math.max(tat, now) + t
    tat = next
    moved[key] = true
  end
  if passes then
    out[#out + 1] = 1
    out[#out + 1] = math.floor(math.min(now + tau + t - tat, tau + t) / t)
    out[#out + 1] = tat - now
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - tau - now
  end
  tats[key] = tat
end
for key in pairs(moved) do
  redis.call('SET', key, tats[key], 'PX', math.ceil((tats[key] - now) / 1000))
end
return out
";

/// The most checks one script call takes: enough to empty a busy instance's queue in a call or
/// two, small enough that Redis is never busy with one call for long.
const MAX_BATCH: usize = 256;

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

/// How a GCRA take counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The request waits: it passes only if the bucket has room, and only then is counted.
    IfAllowed,
    /// The request has already passed (answered ahead of Redis, see [`super::ahead`]): counted
    /// even if the bucket is empty now, so that what passed is what Redis counts. The answer
    /// says whether it would have passed.
    Anyway,
}

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
    /// The queue of the task that batches GCRA checks, started with the first check (inside the
    /// runtime); the task ends when the last clone of these limits is dropped. Unbounded, as
    /// it may be: each check waits at most the timeout, after which this instance is in
    /// fallback and queues nothing more.
    gcra_batches: OnceLock<mpsc::UnboundedSender<GcraCheck>>,
    hit: Script,
}

/// One GCRA check waiting for its batch: the key, its `t` and `tau`, how it counts, and where
/// the answer goes.
struct GcraCheck {
    key: String,
    t: u64,
    tau: u64,
    take: Take,
    answer: oneshot::Sender<redis::RedisResult<[i64; 3]>>,
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
                gcra_batches: OnceLock::new(),
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

    /// Takes one request from the GCRA bucket `key` (`interval` per request, `burst` at once),
    /// counted as `take` says; `None` in fallback.
    pub async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        take: Take,
    ) -> Option<GcraOutcome> {
        self.queue_gcra(key, interval, burst, take)?.await
    }

    /// [`gcra`](Self::gcra) in two steps: the take is queued now, so takes queued one after
    /// another reach Redis in that order, and the answer comes when the returned future is
    /// awaited (it need not be, for a take counted anyway). `None` in fallback.
    pub fn queue_gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        take: Take,
    ) -> Option<impl std::future::Future<Output = Option<GcraOutcome>> + Send + 'static> {
        if self.in_fallback() {
            return None;
        }
        let t = (interval.as_micros() as u64).max(1);
        let tau = t.saturating_mul(u64::from(burst.max(1) - 1));
        let batches = self.inner.gcra_batches.get_or_init(|| {
            let (queue, checks) = mpsc::unbounded_channel();
            tokio::spawn(run_gcra_batches(self.inner.connection.clone(), checks));
            queue
        });
        let (answer, reply) = oneshot::channel();
        let check = GcraCheck {
            key: key.to_owned(),
            t,
            tau,
            take,
            answer,
        };
        let queued = batches.send(check).is_ok();
        let limits = self.clone();
        Some(async move {
            let reply = limits
                .run(async {
                    if !queued {
                        return Err(stopped());
                    }
                    reply.await.map_err(|_| stopped())?
                })
                .await?;
            let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
            Some(match reply {
                [1, remaining, full_in] => GcraOutcome::Allowed {
                    remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                    full_in: micros(full_in),
                },
                [_, _, retry_in] => GcraOutcome::Refused {
                    retry_in: micros(retry_in),
                },
            })
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

/// The batching task: takes whatever checks wait (up to [`MAX_BATCH`]), sends them as one script
/// call, and answers each. A failed call fails every check of its batch, and each check's
/// caller then switches the instance to fallback as for a call of its own.
async fn run_gcra_batches(
    mut connection: ConnectionManager,
    mut checks: mpsc::UnboundedReceiver<GcraCheck>,
) {
    let script = Script::new(GCRA_LUA);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while checks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // The requests being served right now reach their check within one scheduler turn:
        // yielding once lets them join this call instead of paying a round trip each (an idle
        // instance loses a few µs).
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match checks.try_recv() {
                Ok(check) => batch.push(check),
                Err(_) => break,
            }
        }
        let mut invocation = script.prepare_invoke();
        for check in &batch {
            let anyway = u8::from(check.take == Take::Anyway);
            invocation
                .key(&check.key)
                .arg(check.t)
                .arg(check.tau)
                .arg(anyway);
        }
        let reply: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut connection).await;
        match reply {
            Ok(numbers) if numbers.len() == 3 * batch.len() => {
                for (check, answer) in batch.drain(..).zip(numbers.chunks_exact(3)) {
                    let _ = check.answer.send(Ok([answer[0], answer[1], answer[2]]));
                }
            }
            Ok(numbers) => {
                let why = format!("{} numbers for {} keys", numbers.len(), batch.len());
                for check in batch.drain(..) {
                    let _ = check.answer.send(Err(unexpected_reply(&why)));
                }
            }
            Err(e) => {
                for check in batch.drain(..) {
                    let _ = check.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

fn stopped() -> redis::RedisError {
    unexpected_reply("the batching task has stopped")
}

fn unexpected_reply(why: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "the rate limit script",
        why.to_owned(),
    ))
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
            match limits
                .gcra(&key, interval, 3, Take::IfAllowed)
                .await
                .expect("redis answers")
            {
                GcraOutcome::Allowed { remaining: r, .. } => remaining.push(r),
                refused => panic!("refused within the burst: {refused:?}"),
            }
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let GcraOutcome::Refused { retry_in } = limits
            .gcra(&key, interval, 3, Take::IfAllowed)
            .await
            .expect("redis")
        else {
            panic!("a fourth request passed a burst of three");
        };
        assert!(
            retry_in <= interval && retry_in > Duration::ZERO,
            "{retry_in:?}"
        );
        tokio::time::sleep(retry_in + Duration::from_millis(20)).await;
        assert!(matches!(
            limits.gcra(&key, interval, 3, Take::IfAllowed).await,
            Some(GcraOutcome::Allowed { remaining: 0, .. })
        ));
        // Another subject has its own bucket.
        let other = limits.key("resolve", "192.0.2.2");
        assert!(matches!(
            limits.gcra(&other, interval, 3, Take::IfAllowed).await,
            Some(GcraOutcome::Allowed { remaining: 2, .. })
        ));
        assert!(!limits.in_fallback());
    }

    #[tokio::test]
    async fn a_take_counted_anyway_overdraws_an_empty_bucket_and_the_wait_grows() {
        let limits = limits();
        let key = limits.key("resolve", "192.0.2.3");
        let interval = Duration::from_secs(10);
        let take = |how| limits.gcra(&key, interval, 2, how);
        for how in [Take::IfAllowed, Take::Anyway] {
            assert!(
                matches!(take(how).await, Some(GcraOutcome::Allowed { .. })),
                "room in the bucket: {how:?} passes"
            );
        }
        let Some(GcraOutcome::Refused { retry_in: waiting }) = take(Take::IfAllowed).await else {
            panic!("a third request passed a burst of two");
        };
        // A refused request that waits moves nothing...
        let Some(GcraOutcome::Refused { retry_in: again }) = take(Take::IfAllowed).await else {
            panic!("passed");
        };
        assert!(again <= waiting, "{again:?} {waiting:?}");
        // ...one counted anyway (it already passed) costs the bucket one more interval.
        let Some(GcraOutcome::Refused {
            retry_in: overdrawn,
        }) = take(Take::Anyway).await
        else {
            panic!("counted anyway, but as passing an empty bucket");
        };
        let grew = overdrawn.saturating_sub(waiting);
        assert!(
            grew > interval - Duration::from_secs(1) && grew <= interval,
            "the wait grew by {grew:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_batched_together_count_each_one_in_turn() {
        let limits = limits();
        let hot = limits.key("resolve", "192.0.2.10");
        let interval = Duration::from_secs(60);
        // 60 checks at once on one key (they share batches) and one each on 20 others.
        let checks = (0..80).map(|i| {
            let limits = limits.clone();
            let key = if i < 60 {
                hot.clone()
            } else {
                limits.key("resolve", &format!("192.0.2.{}", 100 + i))
            };
            tokio::spawn(async move { (i, limits.gcra(&key, interval, 10, Take::IfAllowed).await) })
        });
        let mut hot_remaining = Vec::new();
        let (mut hot_refused, mut others) = (0, 0);
        for check in checks {
            let (i, outcome) = check.await.expect("check task");
            match (i < 60, outcome.expect("redis answers")) {
                (true, GcraOutcome::Allowed { remaining, .. }) => hot_remaining.push(remaining),
                (true, GcraOutcome::Refused { .. }) => hot_refused += 1,
                (false, GcraOutcome::Allowed { remaining: 9, .. }) => others += 1,
                (false, other) => panic!("a fresh key's first check: {other:?}"),
            }
        }
        hot_remaining.sort_unstable();
        assert_eq!(
            hot_remaining,
            (0..10).collect::<Vec<u32>>(),
            "the burst, each once"
        );
        assert_eq!(hot_refused, 50);
        assert_eq!(others, 20);
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
        assert_eq!(
            limits
                .gcra("k", Duration::from_secs(1), 1, Take::IfAllowed)
                .await,
            None
        );
        assert!(limits.in_fallback());
        let started = std::time::Instant::now();
        assert_eq!(limits.hit("k", Duration::from_secs(1)).await, None);
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "no round trip in fallback"
        );
    }
}
