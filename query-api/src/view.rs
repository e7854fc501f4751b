//! What a share link resolves to: the record read from the read models (cached), and the views
//! rendered from it for one request.
//!
//! A [`ShareRecord`] holds only facts that change through events (and so through change
//! notices): revocation, content, expiry instant. Whether the link is alive is decided per
//! request by [`events::link::judge`] from [`ShareRow::link_facts`], never cached, so an expiry
//! passes at its instant even for a cached record. Playback URLs are minted per response by the renderer, never stored here.

use chrono::{DateTime, Utc};
use events::event::{TargetType, Visibility};
use events::licence::LicenceClass;
use events::link::LinkFacts;
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

/// The read models' answer for one token hash.
#[derive(Clone, Debug)]
pub struct ShareRecord {
    /// `None`: no share link has this token hash.
    pub share: Option<ShareRow>,
}

#[derive(Clone, Debug)]
pub struct ShareRow {
    pub share_id: String,
    pub target_type: TargetType,
    pub target_id: String,
    pub visibility: Visibility,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_views: Option<u32>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The link's password as an Argon2id PHC string; `None`: open to anyone with the link.
    pub password_hash: Option<events::password::PasswordHash>,
    pub content: Content,
}

/// The shared content as the viewer will see it.
#[derive(Clone, Debug)]
pub enum Content {
    /// The creator removed it (or it is missing from the read models, which we treat alike).
    Removed,
    Track(TrackFacts),
    Collection {
        id: String,
        name: String,
        description: Option<String>,
        /// In the owner's order, removed tracks left out.
        tracks: Vec<TrackFacts>,
    },
}

/// A track as a resolved view shows it (without its playback URL, minted per response).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct TrackFacts {
    pub id: String,
    pub title: String,
    pub engine: String,
    pub mode: String,
    pub measured_duration_ms: i64,
    pub instrumental: bool,
    pub licence_class: String,
    pub licence_version: String,
    pub commercial_use: bool,
    pub requires_attribution: bool,
}

impl ShareRow {
    /// What [`events::link::judge`] needs to know about this link. Whether it is alive is
    /// judged per request from these, never cached, so an expiry passes at its instant.
    pub fn link_facts(&self) -> LinkFacts {
        LinkFacts {
            revoked: self.revoked_at.is_some(),
            expires_at: self.expires_at,
            max_views: self.max_views,
            content_removed: matches!(self.content, Content::Removed),
        }
    }
}

impl ShareRecord {
    /// Every id whose change notice makes this record stale: the token hash's own key is
    /// checked by the cache; these are the share, its target and a collection's tracks.
    pub fn dependency_ids(&self) -> Vec<&str> {
        let Some(row) = &self.share else {
            return Vec::new();
        };
        let mut ids = vec![row.share_id.as_str(), row.target_id.as_str()];
        if let Content::Collection { tracks, .. } = &row.content {
            ids.extend(tracks.iter().map(|t| t.id.as_str()));
        }
        ids
    }
}

/// The body of a 200 resolve, exactly the source page's shape. Every key is always present:
/// when the creator removed the content, all but `kind`, `available` and `message` are null.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResolvedView {
    /// `track` or `collection`.
    #[schema(value_type = TargetType)]
    pub kind: &'static str,
    /// `false` when the creator removed the content.
    pub available: bool,
    /// Why the content is unavailable; null when it is available.
    #[schema(value_type = Option<String>, required = true)]
    pub message: Option<&'static str>,
    /// Public share metadata; null when unavailable.
    #[schema(required = true)]
    pub share: Option<ShareMeta>,
    /// The shared track (a track share); otherwise null.
    #[schema(required = true)]
    pub track: Option<TrackView>,
    /// The shared collection (a collection share); otherwise null.
    #[schema(required = true)]
    pub collection: Option<CollectionMeta>,
    /// The collection's live tracks in the owner's order (a collection share); otherwise null.
    #[schema(required = true)]
    pub tracks: Option<Vec<TrackView>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShareMeta {
    #[schema(value_type = TargetType)]
    pub target_type: &'static str,
    #[schema(value_type = Visibility)]
    pub visibility: &'static str,
    /// When the link expires (UTC, whole seconds); null: never.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A track as a viewer sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackView {
    #[schema(example = "mtrack_b4d9e1c6a72f")]
    pub id: String,
    pub title: String,
    /// The engine key the track was generated with.
    pub engine: String,
    /// The generation mode.
    pub mode: String,
    /// Measured by decoding the audio, in seconds.
    #[schema(minimum = 0)]
    pub measured_duration_seconds: f64,
    pub instrumental: bool,
    /// A short-lived signed URL of the audio (`GET /v1/music/media/{track_id}`); null for a
    /// link-preview agent, which takes no view.
    #[schema(format = "uri", required = true)]
    pub playback_url: Option<String>,
    pub licence: LicenceView,
}

/// Truthful licence facts: `commercial_use` is never overstated.
#[derive(Debug, Serialize, ToSchema)]
pub struct LicenceView {
    #[schema(value_type = LicenceClass)]
    pub licence_class: String,
    #[schema(example = "2026-01")]
    pub licence_version: String,
    pub commercial_use: bool,
    pub requires_attribution: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionMeta {
    #[schema(example = "mcoll_5e8a1d3f9c27")]
    pub id: String,
    pub name: String,
    #[schema(required = true)]
    pub description: Option<String>,
}

/// What a viewer is told when the creator removed the content.
pub const UNAVAILABLE_MESSAGE: &str =
    "The creator removed this content. It is no longer available.";

impl ResolvedView {
    pub fn unavailable(target_type: TargetType) -> Self {
        ResolvedView {
            kind: target_type.as_str(),
            available: false,
            message: Some(UNAVAILABLE_MESSAGE),
            share: None,
            track: None,
            collection: None,
            tracks: None,
        }
    }

    /// The live view of `row`, with `playback_url` minting a fresh URL per track (or none, for
    /// a preview).
    pub fn live(row: &ShareRow, playback_url: impl Fn(&str) -> Option<String>) -> Self {
        let track_view = |t: &TrackFacts| TrackView {
            id: t.id.clone(),
            title: t.title.clone(),
            engine: t.engine.clone(),
            mode: t.mode.clone(),
            measured_duration_seconds: t.measured_duration_ms as f64 / 1000.0,
            instrumental: t.instrumental,
            playback_url: playback_url(&t.id),
            licence: LicenceView {
                licence_class: t.licence_class.clone(),
                licence_version: t.licence_version.clone(),
                commercial_use: t.commercial_use,
                requires_attribution: t.requires_attribution,
            },
        };
        let share = Some(ShareMeta {
            target_type: row.target_type.as_str(),
            visibility: row.visibility.as_str(),
            expires_at: row.expires_at,
        });
        let mut view = ResolvedView {
            kind: row.target_type.as_str(),
            available: true,
            message: None,
            share,
            track: None,
            collection: None,
            tracks: None,
        };
        match &row.content {
            Content::Track(t) => view.track = Some(track_view(t)),
            Content::Collection {
                id,
                name,
                description,
                tracks,
            } => {
                view.collection = Some(CollectionMeta {
                    id: id.clone(),
                    name: name.clone(),
                    description: description.clone(),
                });
                view.tracks = Some(tracks.iter().map(track_view).collect());
            }
            Content::Removed => return Self::unavailable(row.target_type),
        }
        view
    }
}

/// Timestamps in the contract's form: UTC, whole seconds, `Z`.
pub fn whole_seconds<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&events::format::rfc3339(*at)),
        None => s.serialize_none(),
    }
}
