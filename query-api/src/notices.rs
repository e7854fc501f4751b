//! The projector's change notices, heard on core NATS: they evict the resolve cache at once.
//!
//! Notices are fire-and-forget; one lost costs a cache entry its TTL (see `cache`). Each notice
//! applied is confirmed ([`Applied`]) so the command API can answer a write only once every live
//! query instance has evicted what the write changed (read your writes on any instance).

use std::sync::Arc;

use async_nats::{Client, Subscriber};
use events::notice::{applied_subject, subject, Applied, ChangeNotice};
use futures::StreamExt;

use crate::cache::ResolveCache;

/// Listens forever on `subscribed` (made before the instance serves, see
/// [`service_kit::nats::subscribe_before_serving`]) or, if start-up could not, on a subscription
/// made as soon as NATS takes it.
pub async fn listen(
    client: Client,
    namespace: String,
    subscribed: Option<Subscriber>,
    cache: Arc<ResolveCache>,
) {
    let subject = subject(&namespace);
    let mut subscription =
        service_kit::nats::keep_subscribing(&client, &subject, subscribed, "change notices").await;
    tracing::info!(subject, "listening for change notices");
    let confirm_on = applied_subject(&namespace);
    let instance = uuid::Uuid::new_v4().simple().to_string();
    while let Some(message) = subscription.next().await {
        let notice: ChangeNotice = match serde_json::from_slice(&message.payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a change notice that does not decode");
                continue;
            }
        };
        cache.apply(&notice);
        let applied = Applied {
            instance: instance.clone(),
            position: notice.position,
        };
        if let Ok(payload) = serde_json::to_vec(&applied) {
            // Fire-and-forget like the notice: a lost confirmation only makes one write wait.
            if let Err(e) = client.publish(confirm_on.clone(), payload.into()).await {
                tracing::debug!(error = %e, "cannot confirm a change notice");
            }
        }
    }
}
