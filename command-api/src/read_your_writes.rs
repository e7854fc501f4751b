//! Read your writes: after a command appends, wait (bounded) until the projector has projected
//! it and every live query instance has evicted what it changed, so the very first resolve after
//! a `2xx`, on any instance, finds what the command did.
//!
//! The projector publishes a [`ChangeNotice`] after each committed batch, and an idle heartbeat
//! about every second, on core NATS. One subscription per process keeps the latest position in a
//! `watch` channel. A command waits only while a projector is known to be alive (a notice was
//! heard recently), or in the first seconds after start, before a first heartbeat could have
//! arrived: with no projector running, or NATS down, nothing waits after that, and the command
//! side keeps working on its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::notice::{self, Applied, ChangeNotice};
use events::Position;
use futures::StreamExt;
use tokio::sync::watch;

/// A projector not heard from for this long is taken to be down (it beats about every second).
const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// Pause between attempts to reach NATS.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);
/// How often a waiting command looks again when nothing was heard: a query instance that went
/// silent stops being waited for once it is no longer alive.
const RECHECK_EVERY: Duration = Duration::from_millis(200);
/// Query instances silent for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Where one process (the projector, or a query instance) was last heard to be.
#[derive(Clone, Copy, Debug)]
struct Reached {
    position: Position,
    at: Instant,
}

impl Reached {
    fn alive(&self) -> bool {
        self.at.elapsed() < ALIVE_WITHIN
    }
}

#[derive(Clone, Debug, Default)]
struct Heard {
    projector: Option<Reached>,
    query_instances: HashMap<String, Reached>,
}

impl Heard {
    fn projected(&self) -> Position {
        self.projector.map_or(0, |p| p.position)
    }

    /// The projector reached `position`, and so did every query instance still alive.
    fn reached(&self, position: Position) -> bool {
        self.projected() >= position
            && self
                .query_instances
                .values()
                .all(|q| q.position >= position || !q.alive())
    }
}

/// What this process last heard from the projector.
#[derive(Clone)]
pub struct ProjectorProgress {
    heard: watch::Receiver<Heard>,
    timeout: Duration,
    started: Instant,
}

impl ProjectorProgress {
    /// Starts listening for change notices of `namespace` on `nats_url` in the background.
    /// Never fails: an unreachable NATS is retried, and until then nothing waits.
    pub fn listen(nats_url: String, namespace: &str, timeout: Duration) -> Self {
        let (tx, heard) = watch::channel(Heard::default());
        tokio::spawn(follow(nats_url, namespace.to_owned(), tx));
        ProjectorProgress {
            heard,
            timeout,
            started: Instant::now(),
        }
    }

    /// Never waits (tools, and processes started without NATS).
    pub fn disabled() -> Self {
        let (_tx, heard) = watch::channel(Heard::default());
        ProjectorProgress {
            heard,
            timeout: Duration::ZERO,
            started: Instant::now(),
        }
    }

    /// Waits until the projector has reached `position`, at most the configured timeout, and
    /// only if a projector is alive.
    pub async fn wait_for(&self, position: Position) {
        let limit = {
            let now = self.heard.borrow();
            if now.reached(position) {
                return;
            }
            now.projector.map(|p| p.alive())
        };
        let limit = match limit {
            Some(true) => self.timeout,
            Some(false) => return,
            // Never heard yet: a projector's first heartbeat may still be on its way. Wait for
            // it only as long as it could take to come.
            None => ALIVE_WITHIN
                .saturating_sub(self.started.elapsed())
                .min(self.timeout),
        };
        if limit.is_zero() {
            return;
        }
        let started = Instant::now();
        let mut heard = self.heard.clone();
        let reached = loop {
            if heard.borrow_and_update().reached(position) {
                break true;
            }
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                break false;
            }
            if let Ok(Err(_closed)) =
                tokio::time::timeout(left.min(RECHECK_EVERY), heard.changed()).await
            {
                break false;
            }
        };
        metrics::histogram!("read_your_writes_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        if !reached {
            metrics::counter!("read_your_writes_timeouts_total").increment(1);
            tracing::info!(
                position,
                projected = heard.borrow().projected(),
                "the projector or a query instance did not reach this command's events in time; answering anyway"
            );
        }
    }
}

async fn follow(url: String, namespace: String, tx: watch::Sender<Heard>) {
    let subject = notice::subject(&namespace);
    let applied = notice::applied_subject(&namespace);
    let mut warned = false;
    loop {
        let servers = match service_kit::nats::servers(&url) {
            Ok(servers) => servers,
            Err(e) => {
                tracing::error!(error = %e, "commands will not wait for the projector");
                return;
            }
        };
        match service_kit::nats::options("command-api")
            .connect(servers)
            .await
        {
            Ok(client) => match (
                client.subscribe(subject.clone()).await,
                client.subscribe(applied.clone()).await,
            ) {
                (Ok(notices), Ok(confirmations)) => {
                    warned = false;
                    tracing::info!(subject, "listening for the projector's change notices");
                    let mut heard = futures::stream::select(notices, confirmations);
                    while let Some(message) = heard.next().await {
                        hear(&tx, &message.subject, &message.payload, &applied);
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot subscribe to change notices")
                }
            },
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot reach NATS; commands will not wait for the projector until it answers");
            }
            Err(e) => tracing::debug!(error = %e, "NATS still unreachable"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// Records one notice (from the projector) or confirmation (from a query instance).
fn hear(tx: &watch::Sender<Heard>, subject: &str, payload: &[u8], applied: &str) {
    let now = Instant::now();
    if subject == applied {
        let Ok(confirmed) = serde_json::from_slice::<Applied>(payload) else {
            return;
        };
        tx.send_modify(|h| {
            h.query_instances
                .retain(|_, q| q.at.elapsed() < FORGET_AFTER);
            let q = h
                .query_instances
                .entry(confirmed.instance)
                .or_insert(Reached {
                    position: 0,
                    at: now,
                });
            q.position = q.position.max(confirmed.position);
            q.at = now;
        });
    } else if let Ok(notice) = serde_json::from_slice::<ChangeNotice>(payload) {
        tx.send_modify(|h| {
            let position = h.projected().max(notice.position);
            h.projector = Some(Reached { position, at: now });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: Position, ago: Duration) -> Reached {
        Reached {
            position,
            at: Instant::now() - ago,
        }
    }

    #[test]
    fn a_write_is_read_once_the_projector_and_every_live_query_instance_reached_it() {
        let mut heard = Heard {
            projector: Some(at(10, Duration::ZERO)),
            ..Heard::default()
        };
        assert!(
            heard.reached(10),
            "no query instance heard of: the projector is enough"
        );
        assert!(!heard.reached(11));

        heard
            .query_instances
            .insert("a".into(), at(9, Duration::ZERO));
        assert!(
            !heard.reached(10),
            "a live instance that has not evicted yet"
        );
        heard
            .query_instances
            .insert("a".into(), at(10, Duration::ZERO));
        assert!(heard.reached(10));

        heard
            .query_instances
            .insert("gone".into(), at(3, ALIVE_WITHIN + Duration::from_secs(1)));
        assert!(heard.reached(10), "a silent instance is not waited for");
    }
}
