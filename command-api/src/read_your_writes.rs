//! Read your writes: after a command appends, wait (bounded) until the projector has projected
//! it, so the very first resolve after a `2xx` finds what the command created.
//!
//! The projector publishes a [`ChangeNotice`] after each committed batch, and an idle heartbeat
//! about every second, on core NATS. One subscription per process keeps the latest position in a
//! `watch` channel. A command waits only while a projector is known to be alive (a notice was
//! heard recently), or in the first seconds after start, before a first heartbeat could have
//! arrived: with no projector running, or NATS down, nothing waits after that, and the command
//! side keeps working on its own.

use std::time::{Duration, Instant};

use events::notice::{self, ChangeNotice};
use events::Position;
use futures::StreamExt;
use tokio::sync::watch;

/// A projector not heard from for this long is taken to be down (it beats about every second).
const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// Pause between attempts to reach NATS.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default)]
struct Heard {
    position: Position,
    at: Option<Instant>,
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
        tokio::spawn(follow(nats_url, notice::subject(namespace), tx));
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
        let now = *self.heard.borrow();
        if now.position >= position {
            return;
        }
        let limit = match now.at {
            Some(at) if at.elapsed() < ALIVE_WITHIN => self.timeout,
            Some(_) => return,
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
        let reached = tokio::time::timeout(limit, heard.wait_for(|h| h.position >= position))
            .await
            .is_ok_and(|r| r.is_ok());
        metrics::histogram!("read_your_writes_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        if !reached {
            metrics::counter!("read_your_writes_timeouts_total").increment(1);
            tracing::info!(
                position,
                projected = heard.borrow().position,
                "the projector did not reach this command's events in time; answering anyway"
            );
        }
    }
}

async fn follow(url: String, subject: String, tx: watch::Sender<Heard>) {
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
            Ok(client) => match client.subscribe(subject.clone()).await {
                Ok(mut notices) => {
                    warned = false;
                    tracing::info!(subject, "listening for the projector's change notices");
                    while let Some(message) = notices.next().await {
                        let Ok(notice) = serde_json::from_slice::<ChangeNotice>(&message.payload)
                        else {
                            continue;
                        };
                        tx.send_modify(|h| {
                            h.position = h.position.max(notice.position);
                            h.at = Some(Instant::now());
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to change notices"),
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
