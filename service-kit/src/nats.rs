//! Connecting to NATS the same way in every process: `NATS_URL` may list several servers
//! (comma-separated, e.g. the members of a JetStream cluster), and a lost server is replaced by
//! any other the client knows (those listed, and those the cluster announces).

use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr, Subscriber};

/// The servers of a `NATS_URL`: one URL or several, comma-separated (spaces allowed).
pub fn servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| format!("NATS_URL: {s:?} is not a NATS server URL: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("NATS_URL names no server".to_owned());
    }
    Ok(servers)
}

/// The options every process connects with: its `name`, and reconnects within a second (the
/// client's default backs off to 4 s; spooled audit events and change notices wait for it).
pub fn options(name: &str) -> ConnectOptions {
    ConnectOptions::new()
        .name(name)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
}

/// Connects `name` to the servers of `url`, in the background: the client is returned at once
/// and keeps trying (and later reconnecting to any surviving server) forever.
pub async fn connect(name: &str, url: &str) -> anyhow::Result<async_nats::Client> {
    Ok(options(name)
        .retry_on_initial_connect()
        .connect(servers(url).map_err(anyhow::Error::msg)?)
        .await?)
}

/// How long start-up waits for the server to confirm a subscription (NATS down must not hold the
/// start; [`keep_subscribing`] then goes on trying).
pub const SUBSCRIBE_WAIT: Duration = Duration::from_millis(500);

/// Subscribes to `subject` and waits (at most [`SUBSCRIBE_WAIT`]) until the server has the
/// subscription. Called before a process serves, so that it hears every message sent from its
/// first request on instead of missing those sent while the subscription was on its way.
pub async fn subscribe_before_serving(client: &Client, subject: &str) -> Option<Subscriber> {
    let subscribed = async {
        let subscription = client.subscribe(subject.to_owned()).await.ok()?;
        client.flush().await.ok()?;
        Some(subscription)
    };
    tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
        .await
        .ok()
        .flatten()
}

/// The subscription start-up got, or else one to `subject` made as soon as the server takes it
/// (retrying every second, one warning naming `what` each time). After that the client
/// resubscribes by itself across reconnects.
pub async fn keep_subscribing(
    client: &Client,
    subject: &str,
    subscribed: Option<Subscriber>,
    what: &str,
) -> Subscriber {
    if let Some(subscription) = subscribed {
        return subscription;
    }
    loop {
        match client.subscribe(subject.to_owned()).await {
            Ok(subscription) => return subscription,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to {what}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_servers() {
        assert_eq!(servers("nats://127.0.0.1:4222").expect("one").len(), 1);
        let three = servers("nats://a:4222, nats://b:4223,nats://c:4224").expect("three");
        assert_eq!(three.len(), 3);
        assert_eq!(three[1].host(), "b");
        assert_eq!(three[2].port(), 4224);
        assert!(servers("").is_err());
        assert!(servers(" , ").is_err());
        assert!(servers("nats://a:4222,http://b").is_err());
    }
}
