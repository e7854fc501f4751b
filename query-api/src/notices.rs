//! The projector's change notices, heard on core NATS: they evict the resolve cache at once.
//!
//! Notices are fire-and-forget; one lost costs a cache entry its TTL (see `cache`). Each notice
//! applied is confirmed ([`Applied`]) so the command API can answer a write only once every live
//! query instance has evicted what the write changed (read your writes on any instance).

use std::sync::Arc;

use async_nats::Client;
use events::notice::{applied_subject, subject, Applied, ChangeNotice};
use futures::StreamExt;

use crate::cache::ResolveCache;

/// Listens forever (the client resubscribes by itself after a reconnect).
pub async fn listen(client: Client, namespace: String, cache: Arc<ResolveCache>) {
    let subject = subject(&namespace);
    let mut subscription = loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to change notices; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
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
