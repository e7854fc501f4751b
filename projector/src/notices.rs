//! Change notices on core NATS: best effort, and never in the projection's way.
//!
//! A notice is published after its batch commits, so whoever receives it and then reads the
//! read models sees the change. Losing one costs a cache entry its TTL, never correctness, so
//! the projector keeps projecting when NATS is down: notices go through a small queue to a task
//! that owns the connection, and are dropped (not queued for later) while it is disconnected or
//! when the queue is full. The connection is retried in the background forever.

use std::time::{Duration, Instant};

use events::notice::{self, ChangeNotice};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Notices waiting for the publishing task; beyond this they are dropped.
const QUEUE: usize = 256;
/// The most entries of one kind a message carries (2 000 token hashes are about 140 KB, far
/// below NATS's 1 MB default payload limit); a bigger notice goes out in several messages.
const MAX_ENTRIES: usize = 2_000;

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
        let servers = match service_kit::nats::servers(url) {
            Ok(servers) => servers,
            Err(e) => {
                tracing::error!(error = %e, "cannot use NATS_URL; change notices are disabled");
                return Notifier {
                    queue,
                    task: tokio::spawn(discard(notices)),
                };
            }
        };
        let client = service_kit::nats::options("projector")
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
            .connect(servers)
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
        for piece in pieces(notice) {
            if self.queue.try_send(piece).is_err() {
                metrics::counter!("projector_notices_dropped_total").increment(1);
            }
        }
    }

    /// Publishes what is queued and waits (at most `timeout`) until the server has it: for
    /// one-shot commands that exit right after.
    pub async fn close(self, timeout: Duration) {
        drop(self.queue);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// `notice` cut into messages of at most [`MAX_ENTRIES`] entries per list, each with the same
/// position and `rebuilt` flag.
fn pieces(notice: ChangeNotice) -> Vec<ChangeNotice> {
    let longest = [
        notice.token_hashes.len(),
        notice.share_ids.len(),
        notice.track_ids.len(),
        notice.collection_ids.len(),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if longest <= MAX_ENTRIES {
        return vec![notice];
    }
    fn chunk<T: Clone>(list: &[T], i: usize) -> Vec<T> {
        list.iter()
            .skip(i * MAX_ENTRIES)
            .take(MAX_ENTRIES)
            .cloned()
            .collect()
    }
    (0..longest.div_ceil(MAX_ENTRIES))
        .map(|i| ChangeNotice {
            position: notice.position,
            token_hashes: chunk(&notice.token_hashes, i),
            share_ids: chunk(&notice.share_ids, i),
            track_ids: chunk(&notice.track_ids, i),
            collection_ids: chunk(&notice.collection_ids, i),
            rebuilt: notice.rebuilt,
        })
        .collect()
}

/// How long the publisher waits for its first connection before it drops notices.
const CONNECT_GRACE: Duration = Duration::from_secs(2);

async fn publish(
    client: async_nats::Client,
    subject: String,
    mut notices: mpsc::Receiver<ChangeNotice>,
) {
    // The client connects in the background (`retry_on_initial_connect`), so the first notices
    // can come before the connection: wait for it a moment (they queue meanwhile), or a one-shot
    // command such as `projector rebuild` would drop the only notice it has.
    let started = Instant::now();
    while client.connection_state() != async_nats::connection::State::Connected
        && started.elapsed() < CONNECT_GRACE
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

#[cfg(test)]
mod tests {
    use events::share_token::TokenHash;

    use super::*;

    #[test]
    fn big_notices_are_cut_into_pieces_that_keep_every_entry() {
        let hashes: Vec<TokenHash> = (0..4_500).map(|i| TokenHash::of(&i.to_string())).collect();
        let notice = ChangeNotice {
            position: 42,
            token_hashes: hashes.clone(),
            ..ChangeNotice::default()
        };
        let pieces = pieces(notice);
        assert_eq!(pieces.len(), 3);
        assert!(pieces
            .iter()
            .all(|p| p.position == 42 && p.token_hashes.len() <= MAX_ENTRIES));
        let joined: Vec<TokenHash> = pieces.into_iter().flat_map(|p| p.token_hashes).collect();
        assert_eq!(joined, hashes);

        let small = ChangeNotice::heartbeat(7);
        assert_eq!(super::pieces(small.clone()), vec![small]);
    }
}
