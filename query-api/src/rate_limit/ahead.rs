//! Answering a shared check ahead of Redis, for a client far from its limit.
//!
//! A shared check makes its request wait for Redis's answer, yet for many requests that answer
//! is not in doubt: a client whose bucket Redis found at least half full a moment ago, and whom
//! no other instance was serving, still has room. Such a request passes at once, and its take
//! goes to Redis behind it, counted *anyway* (Redis moves the bucket even if it now finds it
//! empty; see [`Take::Anyway`](super::shared::Take::Anyway)), so Redis's count of what passed
//! stays exact and the rate over time is the configured one. Redis's answer then refreshes
//! what this instance knows. In the lower half of its bucket, when nothing fresh is known, or
//! while other instances take from the same bucket, a client waits for Redis as before: every
//! refusal is Redis's own decision, and a client spread over several instances is, once that
//! shows, counted exactly as without this module.
//!
//! **Whether others take too.** Each answer says what was left after one of this instance's
//! takes; if it is less than the previous answer's less this instance's takes between the two,
//! someone else took from the bucket (refills only ever add). A client is answered ahead only
//! once this instance's answers about it have shown nobody else taking for [`ALONE_FOR`] (so
//! not two answers to takes of one batch, between which nobody could have).
//!
//! **How far off it can be.** A request answered ahead passes on an estimate: the remaining burst
//! in Redis's latest answer (at most [`FRESH`] old, usually one round trip), less this
//! instance's takes sent since. Only another instance starting to serve the client, before
//! this one hears of it, can make the bucket overdrawn, and only by the takes let through ahead
//! that Redis has not counted yet at that moment (those in flight, one round trip's worth); the
//! overdrawn bucket then refuses that much longer (`rate_limit_overdrawn_total` counts such
//! takes). A burst of 5 or less is never answered ahead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::shared::GcraOutcome;
use super::{ceil_secs, Decision, Rate};

/// How long Redis's answer about a client counts as what its bucket holds now. A busy client's
/// answers come one round trip apart; one that paused this long waits for Redis again.
pub const FRESH: Duration = Duration::from_millis(100);

/// How long this instance's answers about a client must show that nobody else takes from its
/// bucket before it is answered ahead: several round trips, in which another instance serving
/// it would have shown.
pub const ALONE_FOR: Duration = Duration::from_millis(20);

/// How long a client this instance stops hearing about is remembered: one to two of these.
const KEEP: Duration = Duration::from_secs(1);

/// The most clients one generation holds; a crowd larger than this in [`KEEP`] starts the next
/// generation early.
const GENERATION_CAPACITY: usize = 200_000;

/// Clients whose buckets this instance has heard of, cheap to clone.
#[derive(Clone)]
pub struct AheadOfRedis {
    clients: Arc<Mutex<Generations>>,
    /// Requests let through ahead of Redis so far (the metric counts the same; this is for
    /// tests and benches, which have no metrics recorder).
    passed: Arc<AtomicU64>,
}

/// The clients heard of in this generation and the one before; the older is dropped whole.
/// A crowd of clients each seen once costs one map insert each, no per-entry clock or sweeper
/// (a bounded cache's bookkeeping cost a crowd of new clients more than a tenth of its
/// throughput here).
struct Generations {
    current: HashMap<IpAddr, Known>,
    previous: HashMap<IpAddr, Known>,
    started: Instant,
}

impl Generations {
    /// `ip`'s entry, brought into the current generation; created if `create`.
    fn get(&mut self, ip: IpAddr, create: bool) -> Option<&mut Known> {
        if !self.current.contains_key(&ip) {
            match self.previous.remove(&ip) {
                Some(known) => {
                    self.current.insert(ip, known);
                }
                None if create => {
                    self.current.insert(ip, Known::default());
                }
                None => return None,
            }
        }
        self.current.get_mut(&ip)
    }

    /// Starts a new generation if this one is old or full; returns the one dropped, to be freed
    /// outside the lock.
    fn rotate(&mut self, now: Instant) -> Option<HashMap<IpAddr, Known>> {
        let old = now.saturating_duration_since(self.started) >= KEEP
            || self.current.len() >= GENERATION_CAPACITY;
        if !old {
            return None;
        }
        self.started = now;
        let current = std::mem::take(&mut self.current);
        Some(std::mem::replace(&mut self.previous, current))
    }
}

/// What this instance knows of one client's bucket in Redis.
#[derive(Debug, Default)]
struct Known {
    /// Takes this instance has sent to Redis for this client, numbered from 1 in sending order.
    sent: u64,
    /// The latest take whose answer has come back (answers may come back out of order).
    answered: u64,
    /// The burst left after that take, and when its answer came.
    remaining: u32,
    answered_at: Option<Instant>,
    /// The first of the answers since which no one else was seen taking from this bucket.
    alone_since: Option<Instant>,
}

/// The number of a take sent to Redis, for [`AheadOfRedis::learn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeNumber(u64);

impl Default for AheadOfRedis {
    fn default() -> Self {
        AheadOfRedis {
            clients: Arc::new(Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            })),
            passed: Arc::default(),
        }
    }
}

impl AheadOfRedis {
    /// Lets `ip`'s request pass without waiting, if what is known of its bucket is fresh and at
    /// least half the burst stays after it: the answer to give, and the number of the take to
    /// send to Redis behind it (counted anyway).
    pub fn pass(&self, ip: IpAddr, rate: Rate, now: Instant) -> Option<(Decision, TakeNumber)> {
        let mut clients = self.lock();
        let known = clients.get(ip, false)?;
        let trusted = match (known.alone_since, known.answered_at) {
            (Some(since), Some(at)) => {
                now.saturating_duration_since(at) < FRESH
                    && at.saturating_duration_since(since) >= ALONE_FOR
            }
            _ => false,
        };
        // Every take sent after the answered one may have taken one more.
        let in_flight = known.sent - known.answered;
        let estimate = u64::from(known.remaining).saturating_sub(in_flight);
        let left_after = estimate.checked_sub(1)?;
        if !trusted || left_after < u64::from(rate.burst.div_ceil(2)) {
            return None;
        }
        known.sent += 1;
        self.passed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rate_limit_answered_ahead_total").increment(1);
        let remaining = u32::try_from(left_after).unwrap_or(u32::MAX);
        Some((
            Decision {
                allowed: true,
                limit: rate.per_minute,
                remaining,
                reset_secs: ceil_secs(rate.interval() * rate.burst.saturating_sub(remaining)),
            },
            TakeNumber(known.sent),
        ))
    }

    /// How many requests [`pass`](Self::pass) has let through.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// Numbers a take about to be sent to Redis whose answer the request waits for.
    pub fn send(&self, ip: IpAddr, now: Instant) -> TakeNumber {
        let mut clients = self.lock();
        let dropped = clients.rotate(now);
        let number = clients.get(ip, true).map_or(0, |known| {
            known.sent += 1;
            known.sent
        });
        drop(clients);
        drop(dropped);
        TakeNumber(number)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps Redis's answer to take `number`, unless a later take's answer is already kept.
    pub fn learn(&self, ip: IpAddr, number: TakeNumber, outcome: GcraOutcome, now: Instant) {
        let mut clients = self.lock();
        let Some(known) = clients.get(ip, false) else {
            return;
        };
        if number.0 <= known.answered {
            return;
        }
        let remaining = match outcome {
            GcraOutcome::Allowed { remaining, .. } => Some(remaining),
            GcraOutcome::Refused { .. } => None,
        };
        // Refills only add, so less than the last answer less our takes since means others took.
        let ours_since = number.0 - known.answered;
        let alone = known.answered_at.is_some()
            && remaining.is_some_and(|r| u64::from(r) + ours_since >= u64::from(known.remaining));
        if !alone || known.alone_since.is_none() {
            // This answer is where the evidence starts over.
            known.alone_since = Some(now);
        }
        known.answered = number.0;
        known.answered_at = Some(now);
        known.remaining = remaining.unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn allowed(remaining: u32) -> GcraOutcome {
        GcraOutcome::Allowed {
            remaining,
            full_in: Duration::from_secs(1),
        }
    }

    /// Given Redis answered this instance's first two takes of a burst of `burst`, [`ALONE_FOR`]
    /// apart (the second at `at`), and no one else took from it.
    fn after_two_answers(burst: u32, at: Instant) -> (AheadOfRedis, Rate) {
        let ahead = AheadOfRedis::default();
        for (left, when) in [(burst - 1, at - ALONE_FOR), (burst - 2, at)] {
            let take = ahead.send(IP, when);
            ahead.learn(IP, take, allowed(left), when);
        }
        (ahead, Rate::new(60, burst).expect("rate"))
    }

    #[test]
    fn passes_ahead_while_half_the_burst_stays_then_waits() {
        let now = Instant::now();
        let (ahead, rate) = after_two_answers(20, now);
        let mut remaining = Vec::new();
        while let Some((decision, _)) = ahead.pass(IP, rate, now) {
            assert!(decision.allowed);
            remaining.push(decision.remaining);
        }
        // 18 left after the second: 17 down to 10 pass ahead; the next waits for Redis.
        assert_eq!(remaining, (10..=17).rev().collect::<Vec<u32>>());
    }

    #[test]
    fn headers_count_down_as_the_waiting_answers_do() {
        let now = Instant::now();
        let (ahead, rate) = after_two_answers(20, now);
        let (decision, _) = ahead.pass(IP, rate, now).expect("passes ahead");
        // 17 left of 20: three intervals of one second until the bucket is full.
        assert_eq!((decision.remaining, decision.reset_secs), (17, 3));
    }

    #[test]
    fn answers_in_flight_are_subtracted_and_a_late_answer_of_an_older_take_is_ignored() {
        let now = Instant::now();
        let (ahead, rate) = after_two_answers(20, now);
        let (_, third) = ahead.pass(IP, rate, now).expect("ahead");
        let (_, fourth) = ahead.pass(IP, rate, now).expect("ahead");
        // Two takes in flight: 18 - 2 = 16 left, so 15 after the next.
        let (decision, fifth) = ahead.pass(IP, rate, now).expect("ahead");
        assert_eq!(decision.remaining, 15);
        // Redis answers the fourth take (both ours counted) with 16 left: still alone.
        ahead.learn(IP, fourth, allowed(16), now);
        // The third take's answer comes back late and changes nothing.
        ahead.learn(IP, third, allowed(17), now);
        let (decision, _) = ahead.pass(IP, rate, now).expect("ahead");
        assert_eq!(
            decision.remaining, 14,
            "16 less the fifth in flight, less this one"
        );
        let _ = fifth;
    }

    #[test]
    fn a_client_another_instance_also_serves_waits_for_redis() {
        let now = Instant::now();
        let (ahead, rate) = after_two_answers(100, now);
        let (_, third) = ahead.pass(IP, rate, now).expect("alone, and 97 would stay");
        // Redis answers the third take with 90 left, not 97: others took 7 meanwhile.
        ahead.learn(IP, third, allowed(90), now);
        assert!(ahead.pass(IP, rate, now).is_none(), "others take too");
        // Answers showing no one else taking, but not yet for long enough...
        let fourth = ahead.send(IP, now);
        let later = now + ALONE_FOR / 2;
        ahead.learn(IP, fourth, allowed(89), later);
        assert!(
            ahead.pass(IP, rate, later).is_none(),
            "alone for too short a time"
        );
        // ...then for long enough: answered ahead again.
        let fifth = ahead.send(IP, now);
        let later = now + ALONE_FOR;
        ahead.learn(IP, fifth, allowed(88), later);
        assert!(ahead.pass(IP, rate, later).is_some());
    }

    #[test]
    fn a_client_not_heard_of_for_two_generations_is_forgotten() {
        let now = Instant::now();
        let (ahead, rate) = after_two_answers(20, now);
        // Another client's take a generation later keeps ours, in the previous generation.
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let held = |ahead: &AheadOfRedis| {
            let clients = ahead.lock();
            clients.current.contains_key(&IP) || clients.previous.contains_key(&IP)
        };
        // (The generations started just after `now`.)
        let margin = Duration::from_millis(10);
        ahead.send(other, now + KEEP + margin);
        assert!(held(&ahead), "kept one generation");
        ahead.send(other, now + (KEEP + margin) * 2);
        assert!(!held(&ahead), "dropped with its generation");
        assert!(ahead.pass(IP, rate, now + (KEEP + margin) * 2).is_none());
    }

    #[test]
    fn two_answers_close_together_are_no_evidence_of_being_alone() {
        // Two takes of one batch: nobody could have taken between them.
        let now = Instant::now();
        let ahead = AheadOfRedis::default();
        for left in [99, 98] {
            let take = ahead.send(IP, now);
            ahead.learn(IP, take, allowed(left), now);
        }
        let rate = Rate::new(60, 100).expect("rate");
        assert!(ahead.pass(IP, rate, now).is_none());
    }

    #[test]
    fn a_stale_answer_a_refusal_or_a_small_burst_means_waiting() {
        let then = Instant::now();
        let (ahead, rate) = after_two_answers(20, then);
        assert!(ahead.pass(IP, rate, then + FRESH).is_none(), "stale");
        assert!(ahead.pass(IP, rate, then).is_some(), "fresh");

        let (ahead, rate) = after_two_answers(20, then);
        let next = ahead.send(IP, then);
        ahead.learn(
            IP,
            next,
            GcraOutcome::Refused {
                retry_in: Duration::from_secs(1),
            },
            then,
        );
        assert!(ahead.pass(IP, rate, then).is_none(), "refused");

        for burst in 2..=5 {
            let (ahead, rate) = after_two_answers(burst, then);
            assert!(ahead.pass(IP, rate, then).is_none(), "burst {burst}");
        }
        let (ahead, rate) = after_two_answers(6, then);
        assert!(
            ahead.pass(IP, rate, then).is_some(),
            "burst 6: 4 left, 3 after"
        );

        let ahead = AheadOfRedis::default();
        let first = ahead.send(IP, then);
        ahead.learn(IP, first, allowed(19), then);
        let rate = Rate::new(60, 20).expect("rate");
        assert!(
            ahead.pass(IP, rate, then).is_none(),
            "one answer says nothing of others"
        );

        let unknown = AheadOfRedis::default();
        assert!(unknown.pass(IP, rate, then).is_none(), "never heard of");
    }
}
