//! The audit stream: one message per resolve attempt and per media fetch, on NATS JetStream.
//!
//! Requests only hand an [`AuditEvent`] to [`Auditor::record`], which never waits: a bounded
//! channel carries it to the [`publisher`], which publishes in batches and awaits the acks
//! together ([`batch`]: one reply subscription, not a future per message). When NATS is
//! unreachable, events go to an on-disk [`spool`] and are delivered, in order and each once,
//! when it returns. Messages name the token's share, never the token.

pub mod batch;
pub mod publisher;
pub mod spool;
pub mod tail;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use events::link::LinkStatus;
use events::share_token::TokenHash;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The stream every instance publishes to (created at start if missing), its subjects, and the
/// subject of resolve attempts and media fetches.
pub use events::audit::{STREAM, STREAM_SUBJECTS, SUBJECT};

/// How many events may wait between the request path and the publisher. When NATS is down
/// the publisher moves them to the spool, so this only has to absorb bursts.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// What one attempt came to. A resolve's outcome is its link's status ([`Outcome::of_link`]);
/// the others belong to the request (`rate_limited`) or to media (`forbidden`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Unavailable,
    NotFound,
    Revoked,
    Expired,
    OverLimit,
    RateLimited,
    Forbidden,
    /// A look that takes no view: a link-preview agent, a `HEAD`, or the read-only page of a
    /// limited link.
    Preview,
    /// A protected link opened without its password.
    PasswordRequired,
    /// A protected link opened with a wrong password.
    PasswordInvalid,
}

impl Outcome {
    /// The one mapping from a link's status ([`events::link::judge`]) to an audit outcome;
    /// `None` is a token no link has (malformed ones included).
    pub fn of_link(status: Option<LinkStatus>) -> Outcome {
        match status {
            None => Outcome::NotFound,
            Some(LinkStatus::Active) => Outcome::Ok,
            Some(LinkStatus::Unavailable) => Outcome::Unavailable,
            Some(LinkStatus::Revoked) => Outcome::Revoked,
            Some(LinkStatus::Expired) => Outcome::Expired,
            Some(LinkStatus::OverLimit) => Outcome::OverLimit,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Html,
    Media,
}

/// One audit message, fields exactly as CONTRACT.md lists them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event_id: Uuid,
    /// RFC 3339 with milliseconds.
    pub occurred_at: String,
    pub outcome: Outcome,
    pub client_ip: String,
    pub user_agent: Option<String>,
    pub share_id: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub format: Format,
    pub trace_id: String,
    /// A rate-limited attempt's token hash, until the publisher has looked up which share it
    /// matches (the limiter answers before any lookup). Never published or spooled.
    #[serde(skip)]
    pub unmatched: Option<String>,
}

impl AuditEvent {
    pub fn new(outcome: Outcome, format: Format, client_ip: IpAddr, at: DateTime<Utc>) -> Self {
        AuditEvent {
            event_id: Uuid::now_v7(),
            occurred_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            outcome,
            client_ip: client_ip.to_string(),
            user_agent: None,
            share_id: None,
            target_type: None,
            target_id: None,
            format,
            trace_id: service_kit::current_request_id().unwrap_or_default(),
            unmatched: None,
        }
    }

    /// Leaves the share to [`publisher`], which looks `hash` up before the event leaves memory.
    pub fn to_be_matched(mut self, hash: &TokenHash) -> Self {
        self.unmatched = Some(hash.as_str().to_owned());
        self
    }

    pub fn user_agent(mut self, user_agent: Option<&str>) -> Self {
        // Bounded, so one header cannot make a message the stream refuses.
        self.user_agent = user_agent.map(|ua| ua.chars().take(512).collect());
        self
    }

    pub fn target(
        mut self,
        share_id: Option<&str>,
        target_type: Option<&str>,
        target_id: Option<&str>,
    ) -> Self {
        self.share_id = share_id.map(str::to_owned);
        self.target_type = target_type.map(str::to_owned);
        self.target_id = target_id.map(str::to_owned);
        self
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<AuditEvent>>,
    dropped: Arc<AtomicU64>,
}

impl Auditor {
    pub fn new(tx: mpsc::Sender<AuditEvent>) -> Self {
        Auditor {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An auditor that records nothing (audit off, for the benchmark's baseline).
    pub fn disabled() -> Self {
        Auditor {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn record(&self, event: AuditEvent) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err() {
            metrics::counter!("audit_dropped_total", "reason" => "channel_full").increment(1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped = dropped + 1,
                    "AUDIT EVENTS LOST: the publisher cannot keep up and its queue is full"
                );
            }
        }
    }
}
