//! `GET /v1/music/shared/{token}`: the public resolve.
//!
//! Every input is hashed ([`TokenHash::of`], malformed tokens too) and takes the same path: the
//! cache, else one read-model query. The record is judged at request time (expiry included),
//! then a live limited link takes one view from its exact cross-instance counter. Dead links of
//! every cause get one identical answer; the audit alone tells the causes apart.
//!
//! **Read your writes** is the command API's job: it answers a `201` only once the projector has
//! announced the event's position (see `command-api/src/read_your_writes.rs`). The query side
//! therefore never consults the event log, and a dead link costs what a live one does.
//!
//! Rendering is separate from resolving ([`Resolution`] → [`render_json`], or [`page::render`]
//! when [`negotiate`] finds the client prefers HTML), so both renderings show the same facts
//! under the same rate limit and the same audit (with `format` telling them apart).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::{TargetType, Visibility};
use events::share_token::TokenHash;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use sqlx::{PgPool, Row};

use crate::app::AppState;
use crate::audit::{AuditEvent, Format, Outcome};
use crate::cache::ResolveCache;
use crate::page;
use crate::used_up::UsedUpLinks;
use crate::view::{Content, DeadCause, Judgement, ResolvedView, ShareRecord, ShareRow, TrackFacts};

/// Looks token hashes up: cache, read models, and the `max_views` counters.
pub struct Resolver {
    pool: PgPool,
    cache: Arc<ResolveCache>,
    /// Limited links known to be used up, on every instance from the view that used them up:
    /// their refusals answer without a round trip, as fast as any other dead link's.
    used_up: Arc<UsedUpLinks>,
}

/// Whether a resolve counts as a view of a limited link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewing {
    /// A `GET`: takes one view.
    Take,
    /// A `HEAD` (link checkers, preview probes): tells whether a view is left, takes none.
    Peek,
}

/// What a token resolved to, before rendering.
pub struct Resolution {
    pub outcome: Outcome,
    pub record: Arc<ShareRecord>,
}

impl Resolution {
    pub fn row(&self) -> Option<&ShareRow> {
        self.record.share.as_ref()
    }
}

impl Resolver {
    pub fn new(pool: PgPool, cache: Arc<ResolveCache>, used_up: Arc<UsedUpLinks>) -> Self {
        Resolver {
            pool,
            cache,
            used_up,
        }
    }

    pub async fn resolve(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
        viewing: Viewing,
    ) -> Result<Resolution, ApiError> {
        let record = match self.cache.get(hash) {
            Some(record) => record,
            None => self.read(hash).await?,
        };
        let outcome = match record.judge(now) {
            Judgement::Dead(cause) => dead_outcome(cause),
            Judgement::Unavailable(_) => Outcome::Unavailable,
            Judgement::Alive(row) => match row.max_views {
                Some(max) if !self.view_left(&row.share_id, max, viewing).await? => {
                    dead_outcome(DeadCause::OverLimit)
                }
                _ => Outcome::Ok,
            },
        };
        Ok(Resolution { outcome, record })
    }

    /// One read-model query (one snapshot) for `hash`, cached unless a notice overtook it.
    async fn read(&self, hash: &TokenHash) -> Result<Arc<ShareRecord>, ApiError> {
        let ticket = self.cache.begin_read();
        let record = Arc::new(read_record(&self.pool, hash).await?);
        self.cache.insert(hash, record.clone(), ticket);
        Ok(record)
    }

    /// Whether a limited link has a view left, taking it for [`Viewing::Take`]; `false` when
    /// none is left.
    async fn view_left(
        &self,
        share_id: &str,
        max_views: u32,
        viewing: Viewing,
    ) -> Result<bool, ApiError> {
        if self.used_up.is_used_up(share_id, max_views) {
            return Ok(false);
        }
        let left = match viewing {
            Viewing::Take => match self.take_view(share_id, max_views).await? {
                Some(used) if used >= i64::from(max_views) => {
                    // This view took the last one: from now on the link is known used up.
                    self.used_up.announce(share_id, max_views).await;
                    true
                }
                Some(_) => true,
                None => false,
            },
            Viewing::Peek => {
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT used FROM query_side.share_usage WHERE share_id = $1",
                )
                .bind(share_id)
                .fetch_optional(&self.pool)
                .await?;
                used.unwrap_or(0) < i64::from(max_views)
            }
        };
        if !left {
            // Used up before this instance heard of it (an announcement missed): tell the
            // others, without making this refusal wait for it.
            self.used_up.remember(share_id, max_views);
            let used_up = self.used_up.clone();
            let share_id = share_id.to_owned();
            tokio::spawn(async move { used_up.announce(&share_id, max_views).await });
        }
        Ok(left)
    }

    /// Takes one view of a limited link: the views used with this one, or `None` when none
    /// was left. Exact across instances: one atomic upsert that only increments below the
    /// limit.
    async fn take_view(&self, share_id: &str, max_views: u32) -> Result<Option<i64>, ApiError> {
        let used: Option<i64> = sqlx::query_scalar(
            "INSERT INTO query_side.share_usage (share_id, used) VALUES ($1, 1) \
             ON CONFLICT (share_id) DO UPDATE SET used = share_usage.used + 1 \
             WHERE share_usage.used < $2 \
             RETURNING used",
        )
        .bind(share_id)
        .bind(i64::from(max_views))
        .fetch_optional(&self.pool)
        .await?;
        Ok(used)
    }
}

fn dead_outcome(cause: DeadCause) -> Outcome {
    match cause {
        DeadCause::NotFound => Outcome::NotFound,
        DeadCause::Revoked => Outcome::Revoked,
        DeadCause::Expired => Outcome::Expired,
        DeadCause::OverLimit => Outcome::OverLimit,
    }
}

/// The share, its content and (for a collection) its live tracks in the owner's order, in one
/// statement so all of it comes from one snapshot.
const RESOLVE_SQL: &str = "\
SELECT s.share_id, s.target_type, s.target_id, s.visibility, s.expires_at, s.max_views, \
       s.revoked_at, \
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

async fn read_record(pool: &PgPool, hash: &TokenHash) -> Result<ShareRecord, ApiError> {
    let row = sqlx::query(RESOLVE_SQL)
        .bind(hash.as_str())
        .fetch_one(pool)
        .await?;
    let Some(share_id) = row.try_get::<Option<String>, _>("share_id")? else {
        return Ok(ShareRecord { share: None });
    };
    let target_type = match row.try_get::<String, _>("target_type")?.as_str() {
        "track" => TargetType::Track,
        "collection" => TargetType::Collection,
        other => return Err(ApiError::internal(format!("unknown target_type {other:?}"))),
    };
    let visibility = match row.try_get::<String, _>("visibility")?.as_str() {
        "public" => Visibility::Public,
        _ => Visibility::LinkOnly,
    };
    let content = match target_type {
        TargetType::Track => match row.try_get::<Option<String>, _>("track_id")? {
            Some(id)
                if row
                    .try_get::<Option<DateTime<Utc>>, _>("track_removed_at")?
                    .is_none() =>
            {
                Content::Track(TrackFacts {
                    id,
                    title: row.try_get("title")?,
                    engine: row.try_get("engine")?,
                    mode: row.try_get("mode")?,
                    measured_duration_ms: row.try_get("measured_duration_ms")?,
                    instrumental: row.try_get("instrumental")?,
                    licence_class: row.try_get("licence_class")?,
                    licence_version: row.try_get("licence_version")?,
                    commercial_use: row.try_get("commercial_use")?,
                    requires_attribution: row.try_get("requires_attribution")?,
                })
            }
            _ => Content::Removed,
        },
        TargetType::Collection => match row.try_get::<Option<String>, _>("collection_id")? {
            Some(id)
                if row
                    .try_get::<Option<DateTime<Utc>>, _>("collection_removed_at")?
                    .is_none() =>
            {
                let tracks: Option<serde_json::Value> = row.try_get("collection_tracks")?;
                let tracks: Vec<TrackFacts> =
                    serde_json::from_value(tracks.unwrap_or(serde_json::Value::Array(vec![])))
                        .map_err(ApiError::internal)?;
                Content::Collection {
                    id,
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    tracks,
                }
            }
            _ => Content::Removed,
        },
    };
    let max_views: Option<i32> = row.try_get("max_views")?;
    Ok(ShareRecord {
        share: Some(ShareRow {
            share_id,
            target_type,
            target_id: row.try_get("target_id")?,
            visibility,
            expires_at: row.try_get("expires_at")?,
            max_views: max_views.map(|m| m.max(0) as u32),
            revoked_at: row.try_get("revoked_at")?,
            content,
        }),
    })
}

/// Which rendering the client asked for: the HTML page ([`page`]) only when `Accept` gives
/// `text/html` (or `application/xhtml+xml`) a strictly higher quality than `application/json`
/// and a non-zero one; JSON otherwise (no `Accept`, `*/*`, `application/json`, a tie).
///
/// Each type's quality comes from the most specific range that matches it (RFC 9110 §12.5.1:
/// `text/html` over `text/*` over `*/*`). This is the hot route: no allocation, and a request
/// without `Accept` costs one header lookup.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Format::Json;
    }
    let (mut html, mut xhtml, mut json) = (Match::NONE, Match::NONE, Match::NONE);
    for value in values {
        // A value that is not visible ASCII cannot name our types; skip it.
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let Some((kind, subtype)) = media.split_once('/') else {
                continue;
            };
            let (kind, subtype) = (kind.trim(), subtype.trim());
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(value.trim());
                        break;
                    }
                }
            }
            let Some(q) = q else { continue };
            html.offer(kind, subtype, "text", "html", q);
            xhtml.offer(kind, subtype, "application", "xhtml+xml", q);
            json.offer(kind, subtype, "application", "json", q);
        }
    }
    let html_q = html.q().max(xhtml.q());
    if html_q > 0 && html_q > json.q() {
        Format::Html
    } else {
        Format::Json
    }
}

/// The most specific `Accept` range seen so far for one media type, and its quality.
#[derive(Clone, Copy)]
struct Match {
    /// 0: nothing matched; 1: `*/*`; 2: `type/*`; 3: `type/subtype`.
    specificity: u8,
    /// Thousandths (`q=0.8` is 800).
    q: u16,
}

impl Match {
    const NONE: Match = Match {
        specificity: 0,
        q: 0,
    };

    fn offer(&mut self, kind: &str, subtype: &str, want_kind: &str, want_subtype: &str, q: u16) {
        let specificity = if kind == "*" && subtype == "*" {
            1
        } else if !kind.eq_ignore_ascii_case(want_kind) {
            return;
        } else if subtype == "*" {
            2
        } else if subtype.eq_ignore_ascii_case(want_subtype) {
            3
        } else {
            return;
        };
        if specificity > self.specificity || (specificity == self.specificity && q > self.q) {
            *self = Match { specificity, q };
        }
    }

    fn q(self) -> u16 {
        self.q
    }
}

/// An RFC 9110 `qvalue` in thousandths: `0`, `0.5`, `1`, `1.000`; `None` if malformed.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for digit in fraction.bytes().chain(std::iter::repeat(b'0')).take(3) {
        thousandths = thousandths * 10 + u16::from(digit - b'0');
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The resolve route's path parameter, for its OpenAPI operation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct TokenParam {
    /// The raw share token from the share `url` (`shr_` + 32 lowercase hex). Anything else, like
    /// every dead link, is the one 404.
    #[param(pattern = r"^shr_[0-9a-f]{32}$")]
    token: String,
}

/// Open a shared link: a read-only view of the shared track or collection, with freshly signed
/// playback URLs and truthful licence facts. Public: no API key (one sent is ignored).
///
/// Rate limited per client IP (`RateLimit-*` headers on every answer) and audited. A request
/// whose `Accept` prefers `text/html` gets the same view as an HTML page, with the same limits.
/// A `link_only` share's answers, and every dead link's, also carry `X-Robots-Tag: noindex`.
/// Every dead cause (unknown, malformed, revoked, expired, over `max_views`) is one identical
/// 404; content the creator removed is a 200 with `available: false`.
#[utoipa::path(
    get,
    path = "/v1/music/shared/{token}",
    operation_id = "resolve_share",
    tag = "resolve",
    params(TokenParam),
    responses(
        (status = 200, description = "The resolved view (or `available: false` when the content was removed).",
            content((ResolvedView = "application/json"), (String = "text/html")),
            headers(
                ("Cache-Control" = String, description = "`no-store`."),
                ("RateLimit-Limit" = u32, description = "Resolves allowed per minute for this client IP."),
                ("RateLimit-Remaining" = u32, description = "Resolves left in the current burst."),
                ("RateLimit-Reset" = u64, description = "Whole seconds until the burst is full again."),
            )),
        (status = 404, description = "A dead link: \"This share link is no longer available.\"",
            content((ErrorEnvelope = "application/json"), (String = "text/html")),
            headers(
                ("Cache-Control" = String, description = "`no-store`."),
                ("RateLimit-Limit" = u32, description = "Resolves allowed per minute for this client IP."),
                ("RateLimit-Remaining" = u32, description = "Resolves left in the current burst."),
                ("RateLimit-Reset" = u64, description = "Whole seconds until the burst is full again."),
            )),
        (status = 429, description = "This client IP's resolve limit is spent; retry after `Retry-After` seconds.",
            content((ErrorEnvelope = "application/json"), (String = "text/html")),
            headers(
                ("Cache-Control" = String, description = "`no-store`."),
                ("RateLimit-Limit" = u32, description = "Resolves allowed per minute for this client IP."),
                ("RateLimit-Remaining" = u32, description = "Resolves left in the current burst."),
                ("RateLimit-Reset" = u64, description = "Whole seconds until a retry may pass."),
            )),
        (status = 503, description = "The database is down.", body = ErrorEnvelope,
            headers(
                ("Cache-Control" = String, description = "`no-store`."),
                ("RateLimit-Limit" = u32, description = "Resolves allowed per minute for this client IP."),
                ("RateLimit-Remaining" = u32, description = "Resolves left in the current burst."),
                ("RateLimit-Reset" = u64, description = "Whole seconds until the burst is full again."),
            )),
    ),
)]
pub async fn handler(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let now = Utc::now();
    let viewing = if method == Method::HEAD {
        Viewing::Peek
    } else {
        Viewing::Take
    };
    let ip = app.trusted_proxies.client_ip(peer.ip(), &headers);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let format = negotiate(&headers);
    let audit = |outcome| AuditEvent::new(outcome, format, ip, now).user_agent(user_agent);

    // A path that does not even decode is just another dead link: hash it all the same.
    let hash = match &token {
        Ok(Path(raw)) => TokenHash::of(raw),
        Err(_) => TokenHash::of(""),
    };
    drop(token);

    let limit = app.limit.check(ip).await;
    if !limit.allowed {
        app.auditor
            .record(audit(Outcome::RateLimited).to_be_matched(&hash));
        let mut response = match format {
            Format::Html => page::rate_limited(limit.reset_secs),
            Format::Json | Format::Media => {
                ApiError::rate_limited(limit.reset_secs).into_response()
            }
        };
        finish_headers(&mut response, &limit, None);
        return response;
    }

    let resolution = match app.resolver.resolve(&hash, now, viewing).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(status = e.status().as_u16(), "resolve failed");
            let mut response = match format {
                Format::Html => page::failure(&e),
                Format::Json | Format::Media => e.into_response(),
            };
            finish_headers(&mut response, &limit, None);
            return response;
        }
    };
    let row = resolution.row();
    app.auditor.record(audit(resolution.outcome).target(
        row.map(|r| r.share_id.as_str()),
        row.map(|r| r.target_type.as_str()),
        row.map(|r| r.target_id.as_str()),
    ));
    if resolution.outcome == Outcome::Ok && viewing == Viewing::Take {
        if let Some(row) = row {
            app.stats.record(&row.share_id, now);
        }
    }
    let mut response = match format {
        Format::Html => page::render(&app, &resolution, now),
        Format::Json | Format::Media => render_json(&app, &resolution, now),
    };
    let visibility = match resolution.outcome {
        Outcome::Ok | Outcome::Unavailable => row.map(|r| r.visibility),
        // Identical for every dead cause, so headers cannot tell them apart either.
        _ => Some(Visibility::LinkOnly),
    };
    finish_headers(&mut response, &limit, visibility);
    response
}

/// The JSON rendering: the source page's shape, or the one dead-link envelope.
pub fn render_json(app: &AppState, resolution: &Resolution, now: DateTime<Utc>) -> Response {
    match (resolution.outcome, resolution.row()) {
        (Outcome::Ok, Some(row)) => {
            let view = ResolvedView::live(row, |track_id| app.signer.mint(track_id, now));
            (StatusCode::OK, Json(view)).into_response()
        }
        (Outcome::Unavailable, Some(row)) => (
            StatusCode::OK,
            Json(ResolvedView::unavailable(row.target_type)),
        )
            .into_response(),
        _ => ApiError::dead_share_link().into_response(),
    }
}

fn finish_headers(
    response: &mut Response,
    limit: &crate::rate_limit::Decision,
    visibility: Option<Visibility>,
) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The same URL answers JSON or HTML by `Accept`; a shared cache must keep them apart.
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if visibility == Some(Visibility::LinkOnly) {
        headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    }
    limit.write_headers(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_for(accept: &[&str]) -> Format {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        negotiate(&headers)
    }

    #[test]
    fn html_only_when_it_is_strictly_preferred() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(format_for(&[browser]), Format::Html);
        assert_eq!(format_for(&["text/html"]), Format::Html);
        assert_eq!(format_for(&["application/xhtml+xml"]), Format::Html);
        assert_eq!(format_for(&["TEXT/HTML; Q=1"]), Format::Html);
        assert_eq!(format_for(&["text/*"]), Format::Html);
        assert_eq!(
            format_for(&["application/json;q=0.5, text/html"]),
            Format::Html
        );
        assert_eq!(
            format_for(&["application/json;q=0.5", "text/html"]),
            Format::Html
        );
        assert_eq!(format_for(&["*/*;q=0.1, text/html;q=0.2"]), Format::Html);

        assert_eq!(format_for(&[]), Format::Json);
        assert_eq!(format_for(&["*/*"]), Format::Json);
        assert_eq!(format_for(&["application/json"]), Format::Json);
        assert_eq!(
            format_for(&["text/html, application/json"]),
            Format::Json,
            "a tie"
        );
        assert_eq!(
            format_for(&["text/html;q=0.5, application/json"]),
            Format::Json
        );
        assert_eq!(format_for(&["text/html;q=0, */*"]), Format::Json);
        assert_eq!(format_for(&["text/html;q=0"]), Format::Json);
        assert_eq!(
            format_for(&["application/*, text/html;q=0.9"]),
            Format::Json
        );
        assert_eq!(format_for(&["text/plain"]), Format::Json);
        assert_eq!(format_for(&[""]), Format::Json);
        assert_eq!(format_for(&["garbage, ;;, /"]), Format::Json);
        // A malformed quality drops that range only.
        assert_eq!(format_for(&["text/html;q=2, */*"]), Format::Json);
        assert_eq!(format_for(&["text/html;q=0.x"]), Format::Json);
    }

    #[test]
    fn qvalues_parse_as_thousandths() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.8"), Some(800));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-1"), None);
        assert_eq!(parse_qvalue(""), None);
    }
}
