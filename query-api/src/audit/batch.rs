//! One batch of messages to JetStream, its acks awaited together, at the least cost per message
//! the client allows.
//!
//! Why not `jetstream::Context::send_publish`: per message it draws an inbox, registers a
//! one-shot reply channel, takes a semaphore permit, arms a timer and boxes a future, then
//! parses the ack through an untagged enum; at audit rates that was a good part of the client's
//! cost per message. Here every message of every batch replies to one subscription of its own
//! (`{inbox}.{n}`, `n` counting up), the batch has one deadline, and an ack is read for its
//! sequence number alone. A late ack of an earlier batch is recognised by its number and
//! ignored.

use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{Client, HeaderMap, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

/// What became of a batch: how many messages, from the first, the stream acknowledged, the
/// highest sequence among those, and why the rest were not (if they were not).
#[derive(Debug, Default)]
pub struct Published {
    pub acked: usize,
    pub last_sequence: u64,
    pub failure: Option<String>,
}

/// Publishes batches to JetStream from one task (see the module docs).
pub struct BatchPublisher {
    client: Client,
    inbox: String,
    acks: Option<Subscriber>,
    /// The number the next message's reply subject ends in.
    next: u64,
    timeout: Duration,
}

/// The part of a JetStream publish ack we read: its sequence, or its error.
#[derive(Deserialize)]
struct Ack {
    seq: Option<u64>,
    error: Option<AckError>,
}

#[derive(Deserialize)]
struct AckError {
    #[serde(default)]
    description: String,
}

impl BatchPublisher {
    /// `timeout` bounds the wait for a whole batch's acks.
    pub fn new(client: Client, timeout: Duration) -> Self {
        let inbox = client.new_inbox();
        BatchPublisher {
            client,
            inbox,
            acks: None,
            next: 0,
            timeout,
        }
    }

    /// Publishes `messages` (`Nats-Msg-Id`, payload) to `subject` in order and waits for their
    /// acks (at most the timeout given at [`BatchPublisher::new`]).
    pub async fn publish(
        &mut self,
        subject: Subject,
        messages: impl IntoIterator<Item = (String, Bytes)>,
    ) -> Published {
        if self.acks.is_none() {
            match self.client.subscribe(format!("{}.*", self.inbox)).await {
                Ok(subscriber) => self.acks = Some(subscriber),
                Err(e) => {
                    return Published {
                        failure: Some(format!("cannot subscribe to the acks: {e}")),
                        ..Published::default()
                    }
                }
            }
        }
        let first = self.next;
        let mut failure = None;
        for (id, payload) in messages {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, id);
            let reply = Subject::from(format!("{}.{}", self.inbox, self.next));
            if let Err(e) = self
                .client
                .publish_with_reply_and_headers(subject.clone(), reply, headers, payload)
                .await
            {
                failure = Some(format!("publish failed: {e}"));
                break;
            }
            self.next += 1;
        }
        let sent = (self.next - first) as usize;
        let mut answers: Vec<Option<Result<u64, String>>> = vec![None; sent];
        let mut waiting = sent;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while waiting > 0 {
            let Some(acks) = self.acks.as_mut() else {
                break;
            };
            let message = match tokio::time::timeout_at(deadline, acks.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    // The subscription ended (the client closed it): the next batch subscribes
                    // again instead of waiting on a dead one.
                    self.acks = None;
                    break;
                }
                Err(_) => break,
            };
            let number = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|n| n.parse::<u64>().ok());
            let Some(slot) = number
                .and_then(|n| n.checked_sub(first))
                .and_then(|i| answers.get_mut(i as usize))
            else {
                continue;
            };
            if slot.is_none() {
                waiting -= 1;
                *slot = Some(read_ack(message.status, &message.payload));
            }
        }
        let mut published = Published::default();
        for answer in answers {
            match answer {
                Some(Ok(sequence)) => {
                    published.acked += 1;
                    published.last_sequence = published.last_sequence.max(sequence);
                }
                Some(Err(reason)) => {
                    failure.get_or_insert(reason);
                    break;
                }
                None => {
                    failure.get_or_insert_with(|| "not acknowledged in time".to_owned());
                    break;
                }
            }
        }
        published.failure = failure;
        published
    }
}

fn read_ack(status: Option<StatusCode>, payload: &[u8]) -> Result<u64, String> {
    if status == Some(StatusCode::NO_RESPONDERS) {
        return Err("no stream takes the subject".to_owned());
    }
    match serde_json::from_slice::<Ack>(payload) {
        Ok(Ack { seq: Some(seq), .. }) => Ok(seq),
        Ok(Ack {
            error: Some(error), ..
        }) => Err(format!("refused: {}", error.description)),
        Ok(_) => Err("an ack without a sequence".to_owned()),
        Err(e) => Err(format!("an unreadable ack: {e}")),
    }
}

#[cfg(test)]
mod tests {
    //! Over the real NATS (`TEST_NATS_URL`, default the shared one on 127.0.0.1:4222), each test
    //! with a stream of its own.

    use async_nats::jetstream::{self, stream};

    use super::*;

    async fn connect() -> Client {
        let url =
            std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        async_nats::connect(url).await.expect("NATS")
    }

    /// A stream of its own and its subject; removed when the test is done with it.
    async fn scratch_stream(client: &Client) -> (jetstream::Context, String, Subject) {
        let js = jetstream::new(client.clone());
        let name = format!("UNIT_BATCH_{}", uuid::Uuid::new_v4().simple());
        let subject = format!("unit.batch.{}", uuid::Uuid::new_v4().simple());
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("stream");
        (js, name, Subject::from(subject))
    }

    fn messages(ids: std::ops::Range<u32>) -> Vec<(String, Bytes)> {
        ids.map(|i| (format!("id-{i}"), Bytes::from(format!("{{\"n\":{i}}}"))))
            .collect()
    }

    async fn stored(js: &jetstream::Context, name: &str) -> u64 {
        let mut stream = js.get_stream(name).await.expect("stream");
        stream.info().await.expect("info").state.messages
    }

    #[tokio::test]
    async fn every_message_is_acknowledged_with_its_sequence_and_resent_ids_are_not_stored_twice() {
        let client = connect().await;
        let (js, name, subject) = scratch_stream(&client).await;
        let mut publisher = BatchPublisher::new(client, Duration::from_secs(3));

        let first = publisher.publish(subject.clone(), messages(0..5)).await;
        assert_eq!((first.acked, first.last_sequence), (5, 5));
        assert_eq!(first.failure, None);
        let second = publisher.publish(subject.clone(), messages(5..300)).await;
        assert_eq!((second.acked, second.last_sequence), (295, 300));
        let empty = publisher.publish(subject.clone(), messages(0..0)).await;
        assert_eq!((empty.acked, empty.failure), (0, None));
        assert_eq!(stored(&js, &name).await, 300);

        // Sent again with the same ids (a resent batch): acknowledged, but not stored again.
        let again = publisher.publish(subject, messages(290..300)).await;
        assert_eq!((again.acked, again.failure), (10, None));
        assert_eq!(
            again.last_sequence, 300,
            "a duplicate's ack names the stored copy"
        );
        assert_eq!(stored(&js, &name).await, 300);
        js.delete_stream(&name).await.expect("cleanup");
    }

    #[tokio::test]
    async fn a_subject_no_stream_takes_fails_the_batch_at_once() {
        let client = connect().await;
        let mut publisher = BatchPublisher::new(client, Duration::from_secs(10));
        let subject = Subject::from(format!("unit.nostream.{}", uuid::Uuid::new_v4().simple()));
        let started = std::time::Instant::now();
        let published = publisher.publish(subject, messages(0..3)).await;
        assert_eq!(published.acked, 0);
        let failure = published.failure.expect("a failure");
        assert!(failure.contains("no stream"), "{failure}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for the deadline instead of reading the no-responders answer"
        );
    }

    #[tokio::test]
    async fn an_ack_that_is_not_for_this_batch_is_not_taken_for_one_of_its_messages() {
        let client = connect().await;
        let (js, name, subject) = scratch_stream(&client).await;
        let mut publisher = BatchPublisher::new(client.clone(), Duration::from_secs(3));
        let earlier = publisher.publish(subject.clone(), messages(0..5)).await;
        assert_eq!((earlier.acked, earlier.failure), (5, None));
        // Acks that arrive after their batch gave up on them (numbers 0..5), one for a number
        // not drawn yet and one that names no number, all queued before the next batch's own
        // (same connection, so they are delivered first).
        let fake = Bytes::from_static(br#"{"stream":"X","seq":999}"#);
        for number in ["0", "4", "10000", "x"] {
            let reply = format!("{}.{number}", publisher.inbox);
            client.publish(reply, fake.clone()).await.expect("publish");
        }
        client.flush().await.expect("flush");
        let next = publisher.publish(subject, messages(5..15)).await;
        assert_eq!((next.acked, next.failure), (10, None));
        assert_eq!(
            next.last_sequence, 15,
            "only the acks numbered for this batch are read as its own"
        );
        js.delete_stream(&name).await.expect("cleanup");
    }
}
