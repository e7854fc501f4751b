//! Change notices on core NATS: best effort, and never in the projection's way.
//!
//! A notice is published after its batch commits, so whoever receives it and then reads the
//! read models sees the change. Losing one costs a cache entry its TTL, never correctness, so
//! the projector keeps projecting when NATS is down: notices go through a small queue to a task
//! that owns the connection, and are dropped (not queued for later) while it is disconnected or
//! when the queue is full. The connection is retried in the background forever.

use std::time::Duration;

use events::notice::{self, ChangeNotice};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Notices waiting for the publishing task; beyond this they are dropped.
const QUEUE: usize = 256;

pub struct Notifier {
    queue: mpsc::Sender<ChangeNotice>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts publishing on `notice::subject(namespace)` at `url`. Never fails: an unreachable
    /// server is retried in the background.
    pub async fn start(url: &str, namespace: &str) -> Notifier {
        let (queue, notices) = mpsc::channel(QUEUE);
        let subject = notice::subject(namespace);
        let client = async_nats::ConnectOptions::new()
            .name("projector")
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost NATS; change notices are dropped until it returns")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(url)
            .await;
        let task = match client {
            Ok(client) => tokio::spawn(publish(client, subject, notices)),
            Err(e) => {
                tracing::error!(error = %e, "cannot use NATS_URL; change notices are disabled");
                tokio::spawn(discard(notices))
            }
        };
        Notifier { queue, task }
    }

    /// Queues `notice` for publishing; never waits.
    pub fn publish(&self, notice: ChangeNotice) {
        if self.queue.try_send(notice).is_err() {
            metrics::counter!("projector_notices_dropped_total").increment(1);
        }
    }

    /// Publishes what is queued and waits (at most `timeout`) until the server has it: for
    /// one-shot commands that exit right after.
    pub async fn close(self, timeout: Duration) {
        drop(self.queue);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

async fn publish(
    client: async_nats::Client,
    subject: String,
    mut notices: mpsc::Receiver<ChangeNotice>,
) {
    while let Some(notice) = notices.recv().await {
        if client.connection_state() != async_nats::connection::State::Connected {
            metrics::counter!("projector_notices_dropped_total").increment(1);
            continue;
        }
        let payload = match serde_json::to_vec(&notice) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a change notice");
                continue;
            }
        };
        if let Err(e) = client.publish(subject.clone(), payload.into()).await {
            tracing::warn!(error = %e, "publishing a change notice failed");
            metrics::counter!("projector_notices_dropped_total").increment(1);
        }
    }
    let _ = client.flush().await;
}

async fn discard(mut notices: mpsc::Receiver<ChangeNotice>) {
    while notices.recv().await.is_some() {
        metrics::counter!("projector_notices_dropped_total").increment(1);
    }
}
