//! The domain events: what can happen to tracks, collections, share links and libraries.
//!
//! Payloads hold facts decided by the command side, never derived ones: a share's `expires_at` is
//! an instant, not "in 7 days", so the read models are a pure function of the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CollectionId, LibraryItemId, OrganizationId, ShareLinkId, TrackId, UserId};
use crate::licence::LicenceClass;
use crate::password::PasswordHash;
use crate::share_token::TokenHash;

/// What a share link or a removal points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    Track,
    Collection,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Track => "track",
            TargetType::Collection => "collection",
        }
    }
}

/// Who may find a share link. Both kinds need the link; `public` only allows indexing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    LinkOnly,
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::LinkOnly => "link_only",
            Visibility::Public => "public",
        }
    }
}

/// The stored audio file of a track, addressed by its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFile {
    /// SHA-256 of the file's bytes, lowercase hex; the file's name under `MEDIA_DIR`.
    pub sha256: String,
    pub content_type: String,
    pub bytes: u64,
}

impl MediaFile {
    /// Where the file lives under `MEDIA_DIR`: `ab/abcdef…` (fanned out by the hash's first
    /// byte). `None` if `sha256` is not 64 lowercase hex, so a bad value can never name a path
    /// outside the media directory.
    pub fn relative_path(&self) -> Option<std::path::PathBuf> {
        let hash = self.sha256.as_str();
        let ok = hash.len() == 64 && crate::format::is_lower_hex(hash);
        ok.then(|| std::path::Path::new(&hash[..2]).join(hash))
    }
}

/// A track was uploaded and its audio measured. Stream `track-{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackImported {
    pub track_id: TrackId,
    pub organization_id: OrganizationId,
    pub owner_id: UserId,
    pub title: String,
    pub engine: String,
    pub mode: String,
    pub instrumental: bool,
    pub licence_class: LicenceClass,
    /// The licence catalogue version the class is read under.
    pub licence_version: String,
    /// Measured by decoding the audio, in whole milliseconds (exact to store and compare).
    pub measured_duration_ms: u64,
    pub media: MediaFile,
}

/// Stream `collection-{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionCreated {
    pub collection_id: CollectionId,
    pub organization_id: OrganizationId,
    pub owner_id: UserId,
    pub name: String,
    pub description: Option<String>,
}

/// The track goes at the end of the collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionTrackAdded {
    pub collection_id: CollectionId,
    pub track_id: TrackId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionTrackRemoved {
    pub collection_id: CollectionId,
    pub track_id: TrackId,
}

/// The collection's complete order after the change (not the request), so applying it needs no
/// knowledge of how the order was computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionReordered {
    pub collection_id: CollectionId,
    pub track_ids: Vec<TrackId>,
}

/// The most views a limited link may allow: the read models and the query side's counters hold
/// it in a 32-bit signed integer.
pub const MAX_VIEWS_LIMIT: u32 = i32::MAX as u32;

/// A share link was created. Stream `share-{id}`. Carries the token's hash, never the token.
///
/// Schema v2. v1 had `public: bool` instead of `visibility` and no `max_views`; see `upcast`.
/// `password_hash` and `label` arrived later as optional fields (absent: none), which needs no
/// new version: every v2 payload written before them decodes as an open, unlabelled link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareCreated {
    pub share_id: ShareLinkId,
    pub token_hash: TokenHash,
    pub target_type: TargetType,
    /// A `TrackId` or a `CollectionId`, as `target_type` says.
    pub target_id: String,
    pub organization_id: OrganizationId,
    pub owner_id: UserId,
    pub visibility: Visibility,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// `None`: unlimited.
    pub max_views: Option<u32>,
    /// Argon2id PHC string of the link's password; `None`: open to anyone with the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<PasswordHash>,
    /// The owner's own note about the link; never shown to recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The owner changed a link's settings. Stream `share-{id}`. Carries only what changed: an absent
/// field is unchanged, a `null` one was cleared (never expires, unlimited, no password, no
/// label). The event's `occurred_at` is the change's instant (an expiry "in N days" is already
/// an instant here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareSettingsChanged {
    pub share_id: ShareLinkId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "changed")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "changed")]
    pub max_views: Option<Option<u32>>,
    /// A new password only ever as its hash.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "changed")]
    pub password_hash: Option<Option<PasswordHash>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "changed")]
    pub label: Option<Option<String>>,
}

impl ShareSettingsChanged {
    /// A change of nothing yet, to fill in.
    pub fn of(share_id: ShareLinkId) -> Self {
        ShareSettingsChanged {
            share_id,
            visibility: None,
            expires_at: None,
            max_views: None,
            password_hash: None,
            label: None,
        }
    }

    /// Whether it changes nothing (such an event is never appended).
    pub fn is_empty(&self) -> bool {
        self.visibility.is_none()
            && self.expires_at.is_none()
            && self.max_views.is_none()
            && self.password_hash.is_none()
            && self.label.is_none()
    }
}

/// A field of [`ShareSettingsChanged`]: absent = unchanged (`None`), `null` = cleared
/// (`Some(None)`), a value = set (`Some(Some(v))`).
mod changed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The owner rotated a link's token: the old one is dead from this event on, the new one (only
/// its hash, as at creation) opens the same link with its settings, views and saved edges.
/// Stream `share-{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareTokenRotated {
    pub share_id: ShareLinkId,
    pub token_hash: TokenHash,
}

/// Stream `share-{id}`. The event's `occurred_at` is the revocation time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareRevoked {
    pub share_id: ShareLinkId,
}

/// The creator removed a track or collection. Appended to the content's own stream; its share
/// links stay and resolve as unavailable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentRemoved {
    pub target_type: TargetType,
    pub target_id: String,
    pub organization_id: OrganizationId,
}

/// A signed-in user saved a shared track to their library. Stream `library-{user}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedTrackSaved {
    pub library_item_id: LibraryItemId,
    pub user_id: UserId,
    pub track_id: TrackId,
    pub share_link_id: ShareLinkId,
}

/// Why a stored event could not be turned into a [`MusicEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event_id} has type {event_type:?}, which this build does not know (written by a newer producer?)")]
    UnknownType { event_id: Uuid, event_type: String },
    #[error("event {event_id} ({event_type}) has schema version {schema_version}, which this build cannot read")]
    UnsupportedVersion {
        event_id: Uuid,
        event_type: String,
        schema_version: i32,
    },
    #[error("event {event_id} ({event_type}) has a malformed payload: {reason}")]
    Malformed {
        event_id: Uuid,
        event_type: String,
        reason: String,
    },
}

macro_rules! music_events {
    ($($variant:ident => $version:literal),* $(,)?) => {
        /// Every event the product writes, at its current schema version.
        #[derive(Clone, Debug, PartialEq)]
        pub enum MusicEvent {
            $($variant($variant),)*
        }

        impl MusicEvent {
            /// Every event type name, as stored in the envelope.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant),)*];

            pub fn event_type(&self) -> &'static str {
                match self {
                    $(MusicEvent::$variant(_) => stringify!($variant),)*
                }
            }

            /// The schema version this build writes for the event's type.
            pub fn schema_version(&self) -> i32 {
                match self {
                    $(MusicEvent::$variant(_) => $version,)*
                }
            }

            /// The current schema version of a type, or `None` for a type this build does not know.
            pub fn current_schema_version(event_type: &str) -> Option<i32> {
                match event_type {
                    $(stringify!($variant) => Some($version),)*
                    _ => None,
                }
            }

            pub fn to_payload(&self) -> serde_json::Value {
                let encoded = match self {
                    $(MusicEvent::$variant(e) => serde_json::to_value(e),)*
                };
                // Payloads are plain structs with string keys; serde_json cannot fail on them.
                encoded.expect("event payloads always serialize")
            }

            /// Decodes a payload that is already at the current schema version.
            pub(crate) fn decode_current(
                event_id: Uuid,
                event_type: &str,
                payload: serde_json::Value,
            ) -> Result<Self, DecodeError> {
                let malformed = |e: serde_json::Error| DecodeError::Malformed {
                    event_id,
                    event_type: event_type.to_owned(),
                    reason: e.to_string(),
                };
                match event_type {
                    $(stringify!($variant) => serde_json::from_value(payload).map(MusicEvent::$variant).map_err(malformed),)*
                    _ => Err(DecodeError::UnknownType { event_id, event_type: event_type.to_owned() }),
                }
            }
        }

        $(
            impl From<$variant> for MusicEvent {
                fn from(e: $variant) -> Self {
                    MusicEvent::$variant(e)
                }
            }
        )*
    };
}

music_events! {
    TrackImported => 1,
    CollectionCreated => 1,
    CollectionTrackAdded => 1,
    CollectionTrackRemoved => 1,
    CollectionReordered => 1,
    ShareCreated => 2,
    ShareRevoked => 1,
    ShareSettingsChanged => 1,
    ShareTokenRotated => 1,
    ContentRemoved => 1,
    SharedTrackSaved => 1,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_changes_tell_unchanged_from_cleared() {
        let id = ShareLinkId::parse("mslink_8c4e2a9f1b73").expect("id");
        let mut change = ShareSettingsChanged::of(id);
        assert!(change.is_empty());
        change.max_views = Some(None);
        change.label = Some(Some("for Ana".to_owned()));
        let payload = MusicEvent::from(change.clone()).to_payload();
        assert_eq!(
            payload,
            json!({"share_id": "mslink_8c4e2a9f1b73", "max_views": null, "label": "for Ana"})
        );
        let back: ShareSettingsChanged = serde_json::from_value(payload).expect("decodes");
        assert_eq!(back, change);
        assert!(!back.is_empty());
    }

    #[test]
    fn share_created_without_the_newer_fields_decodes_as_open_and_unlabelled() {
        let payload = json!({
            "share_id": "mslink_8c4e2a9f1b73",
            "token_hash": "ab".repeat(32),
            "target_type": "track",
            "target_id": "mtrack_5e8a1d3f9c27",
            "organization_id": "org_abc123",
            "owner_id": "usr_0123456789ab",
            "visibility": "link_only",
            "expires_at": null,
            "max_views": null
        });
        let created: ShareCreated = serde_json::from_value(payload.clone()).expect("decodes");
        assert_eq!(
            (created.password_hash.clone(), created.label.clone()),
            (None, None)
        );
        // Written back, an open link's payload is what it always was.
        assert_eq!(serde_json::to_value(&created).expect("encodes"), payload);
    }
}
