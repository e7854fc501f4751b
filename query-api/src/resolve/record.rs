//! The resolve's one read-model query and its typed row.
//!
//! Its own module because the query is the resolve's whole contract with the projector's
//! tables: one statement (one snapshot) for the share, its content and a collection's live
//! tracks, read into a [`sqlx::FromRow`] row whose fields are the statement's columns, and turned
//! into the [`ShareRecord`] the cache keeps.

use chrono::{DateTime, Utc};
use events::event::{TargetType, Visibility};
use events::password::PasswordHash;
use events::share_token::TokenHash;
use service_kit::ApiError;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool};

use crate::view::{Content, ShareRecord, ShareRow, TrackFacts};

/// The share, its content and (for a collection) its live tracks in the owner's order, in one
/// statement so all of it comes from one snapshot.
const RESOLVE_SQL: &str = "\
SELECT s.share_id, s.target_type, s.target_id, s.visibility, s.expires_at, s.max_views, \
       s.revoked_at, s.password_hash, \
       t.track_id, t.title, t.engine, t.mode, t.measured_duration_ms, t.instrumental, \
       t.licence_class, t.licence_version, t.commercial_use, t.requires_attribution, \
       t.removed_at AS track_removed_at, \
       c.collection_id, c.name, c.description, c.removed_at AS collection_removed_at, \
       CASE WHEN c.collection_id IS NOT NULL THEN ( \
         SELECT coalesce(json_agg(json_build_object( \
                  'id', ct.track_id, 'title', tt.title, 'engine', tt.engine, 'mode', tt.mode, \
                  'measured_duration_ms', tt.measured_duration_ms, \
                  'instrumental', tt.instrumental, 'licence_class', tt.licence_class, \
                  'licence_version', tt.licence_version, 'commercial_use', tt.commercial_use, \
                  'requires_attribution', tt.requires_attribution) ORDER BY ct.position), \
                '[]'::json) \
           FROM read_model.collection_tracks ct \
           JOIN read_model.tracks tt ON tt.track_id = ct.track_id \
          WHERE ct.collection_id = c.collection_id AND tt.removed_at IS NULL) \
       END AS collection_tracks \
  FROM (SELECT 1) AS one \
  LEFT JOIN read_model.share_links s ON s.token_hash = $1 \
  LEFT JOIN read_model.tracks t ON s.target_type = 'track' AND t.track_id = s.target_id \
  LEFT JOIN read_model.collections c \
         ON s.target_type = 'collection' AND c.collection_id = s.target_id";

/// One row of [`RESOLVE_SQL`]. Every column may be null: the share is left-joined to a
/// one-row table (no share: one row of nulls), its content to the share.
#[derive(FromRow)]
struct ResolveRow {
    share_id: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
    visibility: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    max_views: Option<i32>,
    revoked_at: Option<DateTime<Utc>>,
    password_hash: Option<String>,
    #[sqlx(flatten)]
    track: TrackColumns,
    track_removed_at: Option<DateTime<Utc>>,
    collection_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    collection_removed_at: Option<DateTime<Utc>>,
    collection_tracks: Option<Json<Vec<TrackFacts>>>,
}

/// A track share's track, as [`RESOLVE_SQL`] names its columns (all null for a collection share
/// or a track missing from the read models).
#[derive(FromRow)]
struct TrackColumns {
    track_id: Option<String>,
    title: Option<String>,
    engine: Option<String>,
    mode: Option<String>,
    measured_duration_ms: Option<i64>,
    instrumental: Option<bool>,
    licence_class: Option<String>,
    licence_version: Option<String>,
    commercial_use: Option<bool>,
    requires_attribution: Option<bool>,
}

impl TrackColumns {
    /// The track, if the read models have it (its columns are `NOT NULL` there).
    fn facts(self) -> Option<TrackFacts> {
        Some(TrackFacts {
            id: self.track_id?,
            title: self.title?,
            engine: self.engine?,
            mode: self.mode?,
            measured_duration_ms: self.measured_duration_ms?,
            instrumental: self.instrumental?,
            licence_class: self.licence_class?,
            licence_version: self.licence_version?,
            commercial_use: self.commercial_use?,
            requires_attribution: self.requires_attribution?,
        })
    }
}

/// The record of `hash`, in one statement.
pub async fn read(pool: &PgPool, hash: &TokenHash) -> Result<ShareRecord, ApiError> {
    let row: ResolveRow = sqlx::query_as(RESOLVE_SQL)
        .bind(hash.as_str())
        .fetch_one(pool)
        .await?;
    row.into_record()
}

impl ResolveRow {
    fn into_record(self) -> Result<ShareRecord, ApiError> {
        let Some(share_id) = self.share_id else {
            return Ok(ShareRecord { share: None });
        };
        let target_type = match self.target_type.as_deref() {
            Some("track") => TargetType::Track,
            Some("collection") => TargetType::Collection,
            other => return Err(ApiError::internal(format!("unknown target_type {other:?}"))),
        };
        let visibility = match self.visibility.as_deref() {
            Some("public") => Visibility::Public,
            _ => Visibility::LinkOnly,
        };
        let content = match target_type {
            TargetType::Track if self.track_removed_at.is_none() => {
                self.track.facts().map_or(Content::Removed, Content::Track)
            }
            TargetType::Collection if self.collection_removed_at.is_none() => {
                match (self.collection_id, self.name) {
                    (Some(id), Some(name)) => Content::Collection {
                        id,
                        name,
                        description: self.description,
                        tracks: self.collection_tracks.map(|t| t.0).unwrap_or_default(),
                    },
                    _ => Content::Removed,
                }
            }
            _ => Content::Removed,
        };
        Ok(ShareRecord {
            share: Some(ShareRow {
                share_id,
                target_type,
                target_id: self.target_id.unwrap_or_default(),
                visibility,
                expires_at: self.expires_at,
                max_views: self.max_views.map(|m| m.max(0) as u32),
                revoked_at: self.revoked_at,
                password_hash: self.password_hash.map(PasswordHash::from_phc),
                content,
            }),
        })
    }
}
