//! `GET /v1/music/{org}/shares?limit=&cursor=`: the caller's share links, newest first.
//!
//! Keyset pagination on `(created_at, created_position, share_id)`: newest first, links of the
//! same second in the order the log has them; the cursor is that triple, opaque to clients.
//! Each link carries its status as of now and its view statistics (flushed every few seconds,
//! so eventually consistent). Never a token: the read models do not even have one.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use events::event::{TargetType, Visibility};
use events::link::{judge, LinkFacts, LinkStatus};
use events::share_usage;
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::view::whole_seconds;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Links per page, 1 to 100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; absent or empty for the first page.
    #[param(pattern = r"^((3[0-9]){1,18}2e(3[0-9]){1,18}2e6d736c696e6b5f(3[0-9]|6[1-6]){12})?$")]
    cursor: Option<String>,
}

/// The organization of the share list, for its OpenAPI operation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct OrgParam {
    /// The organization (`org_` + 3 to 40 of `[a-z0-9_]`). The caller must belong to it;
    /// otherwise, or when malformed, 404.
    #[param(pattern = r"^org_[a-z0-9_]{3,40}$")]
    org: String,
}

/// One of the caller's share links (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareListItem {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub id: String,
    #[schema(value_type = TargetType)]
    pub target_type: String,
    pub target_id: String,
    #[schema(value_type = Visibility)]
    pub visibility: String,
    /// UTC, whole seconds; null: never.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Null: no limit.
    #[schema(value_type = Option<i64>, minimum = 1, required = true)]
    pub max_views: Option<i32>,
    /// UTC, whole seconds.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Option<DateTime<Utc>>,
    /// UTC, whole seconds; null: not revoked.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Successful resolves (eventually consistent: flushed every few seconds).
    #[schema(minimum = 0)]
    pub view_count: i64,
    /// UTC, whole seconds; null: never opened.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub last_viewed_at: Option<DateTime<Utc>>,
    /// As of the request ([`events::link::judge`]).
    pub status: LinkStatus,
    /// Whether opening the link needs its password.
    pub password_protected: bool,
    /// The owner's own note; null: none.
    #[schema(required = true)]
    pub label: Option<String>,
    /// The last change of settings or token (UTC, whole seconds); `created_at` before any.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A page of share links, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareList {
    pub data: Vec<ShareListItem>,
    /// The cursor of the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// List the caller's share links in an organization, newest first, with their status and views.
#[utoipa::path(
    get,
    path = "/v1/music/{org}/shares",
    operation_id = "list_shares",
    tag = "shares",
    params(OrgParam, ListParams),
    responses(
        (status = 200, description = "A page of the caller's links.", body = ShareList),
        (status = 400, description = "The query string could not be parsed (a parameter given twice, say).", body = ErrorEnvelope),
        (status = 422, description = "`limit` is not an integer from 1 to 100, or `cursor` is not one this API gave.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn handler(
    State(app): State<AppState>,
    caller: Caller,
    org: Result<Path<String>, axum::extract::rejection::PathRejection>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ShareList>, ApiError> {
    // A segment that does not decode names no organization of the caller's.
    let org = org.map(|Path(org)| org).unwrap_or_default();
    let org = caller.member_of(&org)?;
    let Query(params) =
        params.map_err(|_| ApiError::bad_request("The query string could not be parsed"))?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid_field(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let after =
        match params.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor this API gave")
            })?),
        };
    let now = Utc::now();
    let (after_at, after_position, after_id) = match after {
        Some(Cursor {
            created_at,
            position,
            share_id,
        }) => (Some(created_at), Some(position), Some(share_id)),
        None => (None, None, None),
    };
    let rows: Vec<ListRow> = sqlx::query_as(LIST_SQL)
        .bind(org.as_str())
        .bind(caller.user_id.as_str())
        .bind(after_at)
        .bind(after_position)
        .bind(after_id)
        .bind(limit + 1)
        .fetch_all(&app.pool)
        .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let limited: Vec<&str> = page
        .iter()
        .filter(|r| r.max_views.is_some())
        .map(|r| r.share_id.as_str())
        .collect();
    let views_taken = share_usage::views_taken_of(&app.pool, &limited).await?;

    let next_cursor = match page.last() {
        Some(last) if more => Some(encode_cursor(&Cursor {
            created_at: last.created_at,
            position: last.created_position,
            share_id: last.share_id.clone(),
        })),
        _ => None,
    };
    let data = page
        .iter()
        .map(|row| {
            let taken = views_taken.get(&row.share_id).copied().unwrap_or(0);
            row.item(taken, now)
        })
        .collect();
    Ok(Json(ShareList { data, next_cursor }))
}

/// A page of the caller's links with their content's state and view statistics, newest first,
/// after the cursor's sort key when there is one.
const LIST_SQL: &str = "\
SELECT s.share_id, s.target_type, s.target_id, s.visibility, s.expires_at, \
       s.max_views, s.created_at, s.created_position, s.revoked_at, \
       s.password_hash IS NOT NULL AS password_protected, s.label, \
       coalesce(s.updated_at, s.created_at) AS updated_at, \
       coalesce(v.view_count, 0) AS view_count, v.last_viewed_at, \
       CASE WHEN s.target_type = 'track' \
            THEN t.track_id IS NULL OR t.removed_at IS NOT NULL \
            ELSE c.collection_id IS NULL OR c.removed_at IS NOT NULL END AS removed \
  FROM read_model.share_links s \
  LEFT JOIN read_model.tracks t \
         ON s.target_type = 'track' AND t.track_id = s.target_id \
  LEFT JOIN read_model.collections c \
         ON s.target_type = 'collection' AND c.collection_id = s.target_id \
  LEFT JOIN query_side.share_views v ON v.share_id = s.share_id \
 WHERE s.organization_id = $1 AND s.owner_id = $2 \
   AND ($3::timestamptz IS NULL \
        OR (s.created_at, s.created_position, s.share_id) < ($3, $4, $5)) \
 ORDER BY s.created_at DESC, s.created_position DESC, s.share_id DESC \
 LIMIT $6";

/// One row of [`LIST_SQL`].
#[derive(sqlx::FromRow)]
struct ListRow {
    share_id: String,
    target_type: String,
    target_id: String,
    visibility: String,
    expires_at: Option<DateTime<Utc>>,
    max_views: Option<i32>,
    created_at: DateTime<Utc>,
    created_position: i64,
    revoked_at: Option<DateTime<Utc>>,
    view_count: i64,
    last_viewed_at: Option<DateTime<Utc>>,
    removed: Option<bool>,
    password_protected: bool,
    label: Option<String>,
    updated_at: DateTime<Utc>,
}

impl ListRow {
    /// The list item, judged at `now` with `views_taken` views taken.
    fn item(&self, views_taken: u64, now: DateTime<Utc>) -> ShareListItem {
        let link = LinkFacts {
            revoked: self.revoked_at.is_some(),
            expires_at: self.expires_at,
            max_views: self.max_views.map(|m| m.max(0) as u32),
            content_removed: self.removed.unwrap_or(false),
        };
        ShareListItem {
            id: self.share_id.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            visibility: self.visibility.clone(),
            expires_at: self.expires_at,
            max_views: self.max_views,
            created_at: Some(self.created_at),
            revoked_at: self.revoked_at,
            view_count: self.view_count,
            last_viewed_at: self.last_viewed_at,
            status: judge(&link, views_taken, now),
            password_protected: self.password_protected,
            label: self.label.clone(),
            updated_at: Some(self.updated_at),
        }
    }
}

/// Where a page ended: the last link's sort key.
#[derive(Debug, PartialEq, Eq)]
struct Cursor {
    created_at: DateTime<Utc>,
    position: i64,
    share_id: String,
}

/// `{unix micros}.{position}.{share_id}`, hex-encoded so clients treat it as opaque.
fn encode_cursor(cursor: &Cursor) -> String {
    hex::encode(format!(
        "{}.{}.{}",
        cursor.created_at.timestamp_micros(),
        cursor.position,
        cursor.share_id
    ))
}

/// Accepts exactly what [`encode_cursor`] makes (lowercase hex; at most 18 digits of micros since
/// 1970, which every time of the next 30 000 years fits, and at most 18 of log position, all of
/// which PostgreSQL can compare with), so the documented pattern of `cursor` is the whole rule.
fn decode_cursor(raw: &str) -> Option<Cursor> {
    if !events::format::is_lower_hex(raw) {
        return None;
    }
    let text = String::from_utf8(hex::decode(raw).ok()?).ok()?;
    let mut parts = text.splitn(3, '.');
    let number = |part: &str| -> Option<i64> {
        if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let created_at = Utc.timestamp_micros(number(parts.next()?)?).single()?;
    let position = number(parts.next()?)?;
    let share_id = parts.next()?;
    events::ids::ShareLinkId::parse(share_id).ok()?;
    Some(Cursor {
        created_at,
        position,
        share_id: share_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: Utc
                .timestamp_micros(1_782_000_000_123_456)
                .single()
                .expect("time"),
            position: 42,
            share_id: "mslink_0123456789ab".to_owned(),
        };
        let encoded = encode_cursor(&cursor);
        assert_eq!(decode_cursor(&encoded.to_uppercase()), None);
        assert_eq!(decode_cursor(&encoded), Some(cursor));
        assert_eq!(decode_cursor("zz"), None);
        let nineteen = hex::encode("1000000000000000000.1.mslink_0123456789ab");
        assert_eq!(decode_cursor(&nineteen), None);
        for sign in ["+", "-"] {
            let signed = hex::encode(format!("{sign}1.1.mslink_0123456789ab"));
            assert_eq!(decode_cursor(&signed), None, "{sign}");
        }
        assert_eq!(decode_cursor(&hex::encode("1.nope")), None);
        assert_eq!(decode_cursor(&hex::encode("1.2.nope")), None);
        assert_eq!(decode_cursor(&hex::encode("1.mslink_0123456789ab")), None);
    }
}
