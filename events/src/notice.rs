//! Change notices: what the projector tells everyone after each committed batch.
//!
//! Published on core NATS (fire-and-forget; a lost notice costs a cache entry's TTL, never
//! correctness) at [`subject`]. The namespace is `NOTICE_NAMESPACE`, by default the database
//! name, so stacks that share one NATS server never hear each other. The projector also
//! publishes an empty notice (a heartbeat) every second or so while idle, so a listener can tell
//! "a projector is alive and has reached position P".
//!
//! Every query instance answers each notice it has applied with an [`Applied`] at
//! [`applied_subject`]: the command API waits for those too, so read your writes holds on *any*
//! query instance, not only once the projector has committed.

use serde::{Deserialize, Serialize};

use crate::ids::{CollectionId, ShareLinkId, TrackId};
use crate::share_token::TokenHash;
use crate::store::Position;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// The read models now reflect the event log up to and including this position.
    pub position: Position,
    /// Share links whose resolved view may have changed (created, revoked, or their content
    /// changed or was removed): query caches evict these.
    #[serde(default)]
    pub token_hashes: Vec<TokenHash>,
    #[serde(default)]
    pub share_ids: Vec<ShareLinkId>,
    #[serde(default)]
    pub track_ids: Vec<TrackId>,
    #[serde(default)]
    pub collection_ids: Vec<CollectionId>,
    /// The read models were rebuilt and swapped: every cached view is suspect.
    #[serde(default)]
    pub rebuilt: bool,
}

impl ChangeNotice {
    /// A heartbeat: nothing changed, the projector is alive at `position`.
    pub fn heartbeat(position: Position) -> Self {
        ChangeNotice {
            position,
            ..ChangeNotice::default()
        }
    }

    pub fn is_heartbeat(&self) -> bool {
        !self.rebuilt
            && self.token_hashes.is_empty()
            && self.share_ids.is_empty()
            && self.track_ids.is_empty()
            && self.collection_ids.is_empty()
    }
}

/// The subject notices of one namespace are published on.
pub fn subject(namespace: &str) -> String {
    format!("music.readmodel.{namespace}.changed")
}

/// A query instance's answer to a notice: its cache now reflects the read models up to
/// `position`. Sent for heartbeats too, so the command API knows which instances are alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Random per process: tells instances apart, names nothing else.
    pub instance: String,
    pub position: Position,
}

/// The subject query instances confirm applied notices on.
pub fn applied_subject(namespace: &str) -> String {
    format!("music.readmodel.{namespace}.applied")
}
