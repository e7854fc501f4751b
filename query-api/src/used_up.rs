//! Limited links that are used up, known on every instance from the view that used them up.
//!
//! A link's count of views only grows, so once used up at a limit it stays used up at that
//! limit (or any lower one). The view that takes the last one is the moment it is known: that
//! instance remembers it and announces it on core NATS (`music.usage.{namespace}.used_up`);
//! every instance that hears it remembers it too. A refusal is then answered from memory on any
//! instance, with no counter round trip, as fast as a revoked link's: the round trip would
//! otherwise tell "over the limit" apart from every other dead cause (CONTRACT: "no cause can be
//! told apart by status, body or timing"). An instance that missed the announcement (NATS was
//! down) learns it from its first refused round trip, and announces it in turn.

use std::time::Duration;

use async_nats::{Client, Subscriber};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Used-up links remembered per instance; beyond this the oldest are forgotten (and pay one
/// round trip again).
const CAPACITY: u64 = 100_000;

/// How long the view that used a link up waits for its announcement to be queued (never
/// longer: NATS being slow or down must not hold a view).
const ANNOUNCE_WAIT: Duration = Duration::from_millis(20);

/// The subject used-up links of one namespace are announced on.
pub fn subject(namespace: &str) -> String {
    format!("music.usage.{namespace}.used_up")
}

/// One announcement: `share_id` has no view left under a limit of `max_views`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedUp {
    pub share_id: String,
    pub max_views: u32,
}

/// What this instance knows to be used up, and where it tells the others.
pub struct UsedUpLinks {
    /// share id → the limit it was used up at.
    known: moka::sync::Cache<String, u32>,
    nats: Option<(Client, String)>,
}

impl UsedUpLinks {
    /// Remembers alone (no announcements): for an instance without NATS.
    pub fn local() -> Self {
        UsedUpLinks {
            known: moka::sync::Cache::new(CAPACITY),
            nats: None,
        }
    }

    /// Remembers, and announces to and hears from the other instances of `namespace`.
    pub fn shared(client: Client, namespace: &str) -> Self {
        UsedUpLinks {
            nats: Some((client, subject(namespace))),
            ..UsedUpLinks::local()
        }
    }

    /// Whether `share_id` is known to be used up under a limit of `max_views` (a limit raised
    /// since is not: views may be left again).
    pub fn is_used_up(&self, share_id: &str, max_views: u32) -> bool {
        self.known
            .get(share_id)
            .is_some_and(|used_up_at| max_views <= used_up_at)
    }

    /// Remembers, on this instance only, that `share_id` is used up under `max_views`.
    pub fn remember(&self, share_id: &str, max_views: u32) {
        let at = self
            .known
            .get(share_id)
            .map_or(max_views, |at| at.max(max_views));
        self.known.insert(share_id.to_owned(), at);
    }

    /// Remembers that `share_id` is used up under `max_views` and tells the other instances,
    /// waiting at most [`ANNOUNCE_WAIT`] for the message to be queued.
    pub async fn announce(&self, share_id: &str, max_views: u32) {
        let used_up = UsedUp {
            share_id: share_id.to_owned(),
            max_views,
        };
        self.remember(share_id, max_views);
        let Some((client, subject)) = &self.nats else {
            return;
        };
        let Ok(payload) = serde_json::to_vec(&used_up) else {
            return;
        };
        // Queued for the connection's writer, which sends it at once (an explicit flush waits
        // for more than that on a busy machine, and would hold the view).
        let sent = tokio::time::timeout(
            ANNOUNCE_WAIT,
            client.publish(subject.clone(), payload.into()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(
                share_id,
                "a used-up link's announcement could not be queued"
            );
        }
    }

    /// Subscribes to the other instances' announcements before the instance serves (see
    /// [`service_kit::nats::subscribe_before_serving`]), so that it does not pay a counter round
    /// trip to refuse each link used up while its subscription was on its way; `None` for a local
    /// instance or when NATS did not confirm in time.
    pub async fn subscribe(&self) -> Option<Subscriber> {
        let (client, subject) = self.nats.as_ref()?;
        service_kit::nats::subscribe_before_serving(client, subject).await
    }

    /// Hears the other instances' announcements, forever, on `subscribed` if start-up got it,
    /// else on a subscription made as soon as NATS takes it. Returns at once for a local
    /// instance.
    pub async fn listen(self: std::sync::Arc<Self>, subscribed: Option<Subscriber>) {
        let Some((client, subject)) = &self.nats else {
            return;
        };
        let mut subscription =
            service_kit::nats::keep_subscribing(client, subject, subscribed, "used-up links").await;
        while let Some(message) = subscription.next().await {
            match serde_json::from_slice::<UsedUp>(&message.payload) {
                Ok(used_up) => self.remember(&used_up.share_id, used_up.max_views),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a used-up announcement that does not decode")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn used_up_at_a_limit_holds_for_that_limit_and_lower_ones_only() {
        let links = UsedUpLinks::local();
        assert!(!links.is_used_up("mslink_0123456789ab", 3));
        links.announce("mslink_0123456789ab", 3).await;
        assert!(links.is_used_up("mslink_0123456789ab", 3));
        assert!(links.is_used_up("mslink_0123456789ab", 2));
        assert!(
            !links.is_used_up("mslink_0123456789ab", 4),
            "a raised limit"
        );
        assert!(!links.is_used_up("mslink_ba9876543210", 3));
    }
}
