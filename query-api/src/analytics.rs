//! `GET /v1/music/{org}/share/{share_id}/stats`: a link's statistics for its creator, read from
//! the analytics model (schema `analytics`) that the projector folds from the audit stream.
//!
//! Not to be confused with [`crate::stats`], the view counter this instance keeps on the request
//! path for the share list. These numbers are built from the audit stream instead, each attempt
//! counted exactly once whichever instance served it, and trail the stream by well under 5 s.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::view::whole_seconds;

/// How many UTC days `daily` covers, today included.
const DAILY_WINDOW_DAYS: u64 = 90;

/// The link of a statistics request.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct StatsParams {
    /// The organization (`org_` + 3 to 40 of `[a-z0-9_]`); the caller must belong to it.
    #[param(pattern = r"^org_[a-z0-9_]{3,40}$")]
    org: String,
    /// The share link (`mslink_` + 12 lowercase hex); the caller must have created it.
    #[param(pattern = r"^mslink_[0-9a-f]{12}$")]
    share_id: String,
}

/// A link's statistics since this database started counting.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareStats {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub share_id: String,
    /// Since counting began.
    #[serde(flatten)]
    pub totals: Counts,
    /// UTC, whole seconds; null: never viewed.
    #[serde(serialize_with = "whole_seconds")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub last_viewed_at: Option<DateTime<Utc>>,
    /// The last 90 UTC days with at least one attempt, oldest first.
    pub daily: Vec<DailyStats>,
}

/// One UTC day of a link's statistics.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DailyStats {
    #[schema(value_type = String, format = Date, example = "2026-12-02")]
    pub date: NaiveDate,
    #[serde(flatten)]
    pub counts: Counts,
}

/// What the statistics count, in total and for each day.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Counts {
    /// Attempts answered with the link's content (JSON or HTML).
    #[schema(minimum = 0)]
    pub views: i64,
    /// Link-preview fetches (a chat app unfurling the link, `HEAD`), which take no view.
    #[schema(minimum = 0)]
    pub previews: i64,
    /// Distinct client IPs among the views (exact; counted through a keyed hash, never stored).
    #[schema(minimum = 0)]
    pub unique_visitors: i64,
    /// Every other attempt on this link: rate limited, password missing or wrong, revoked,
    /// expired, over its limit, content removed.
    #[schema(minimum = 0)]
    pub denied: i64,
}

/// The one statement's row: the totals, the last view, the days.
#[derive(sqlx::FromRow)]
struct StatsRow {
    #[sqlx(flatten)]
    totals: Counts,
    last_viewed_at: Option<DateTime<Utc>>,
    daily: DbJson<Vec<DailyStats>>,
}

/// A link's views, previews, unique visitors and denied attempts, in total and per day.
#[utoipa::path(
    get,
    path = "/v1/music/{org}/share/{share_id}/stats",
    operation_id = "share_stats",
    tag = "shares",
    params(StatsParams),
    responses(
        (status = 200, description = "The link's statistics, built from the audit stream.", body = ShareStats),
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "No such link, or the caller did not create it, or is not a member of the organization.", body = ErrorEnvelope),
        (status = 503, description = "The database is down.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn handler(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ShareStats>, ApiError> {
    // A path that does not decode names nothing of the caller's.
    let (org, share_id) = path.map(|Path(p)| p).unwrap_or_default();
    let org = caller.member_of(&org)?;
    let not_found = || {
        ApiError::not_found("Share link not found or caller is not its creator")
            .with_detail("share_id", share_id.as_str())
    };
    if events::ids::ShareLinkId::parse(&share_id).is_err() {
        return Err(not_found());
    }
    let since = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(DAILY_WINDOW_DAYS - 1))
        .unwrap_or(NaiveDate::MIN);
    // One statement, one snapshot: the totals and the days always agree.
    let row: StatsRow = sqlx::query_as(
        "SELECT coalesce(l.views, 0) AS views, coalesce(l.previews, 0) AS previews, \
                coalesce(l.denied, 0) AS denied, \
                coalesce(l.unique_visitors, 0) AS unique_visitors, l.last_viewed_at, \
                (SELECT coalesce(json_agg(json_build_object( \
                          'date', d.day, 'views', d.views, 'previews', d.previews, \
                          'unique_visitors', d.unique_visitors, 'denied', d.denied) \
                        ORDER BY d.day), '[]'::json) \
                   FROM analytics.link_days d \
                  WHERE d.share_id = s.share_id AND d.day >= $4) AS daily \
           FROM read_model.share_links s \
           LEFT JOIN analytics.links l ON l.share_id = s.share_id \
          WHERE s.share_id = $1 AND s.organization_id = $2 AND s.owner_id = $3",
    )
    .bind(&share_id)
    .bind(org.as_str())
    .bind(caller.user_id.as_str())
    .bind(since)
    .fetch_optional(&app.pool)
    .await?
    .ok_or_else(not_found)?;
    Ok(Json(ShareStats {
        share_id,
        totals: row.totals,
        last_viewed_at: row.last_viewed_at,
        daily: row.daily.0,
    }))
}
