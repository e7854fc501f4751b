//! The resolve's HTTP route: what one request does, in order, and the headers every answer
//! carries.
//!
//! Its own module because it is where the resolve meets the outside: the client IP and its rate
//! limit, the audit event of every attempt, the rendering the client asked for
//! ([`super::negotiate`]: JSON here, the HTML page in [`crate::page`]), and the OpenAPI
//! operation that documents (and registers) the route. Both renderings show the same
//! [`Resolution`] under the same limit and audit, with `format` telling them apart.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::Visibility;
use events::link::{LinkStatus, DEAD_LINK_MESSAGE, DEAD_LINK_REASON};
use events::password::SharePassword;
use events::share_token::TokenHash;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::negotiate::negotiate;
use super::resolver::{Refusal, Resolution, Viewing};
use crate::app::AppState;
use crate::audit::{AuditEvent, Format, Outcome};
use crate::page;
use crate::password_check::Check;
use crate::view::ResolvedView;

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

/// The header a protected link's password travels in (JSON resolve, `HEAD`).
pub const PASSWORD_HEADER: &str = "x-share-password";

/// The largest body the page's `POST` takes (a password form).
pub const FORM_LIMIT: usize = 16 * 1024;

/// Link-preview agents: a `User-Agent` containing any of these (case-insensitively) looks at a
/// link and never takes a view (CONTRACT.md, "Views that a person took").
const PREVIEW_AGENTS: &[&str] = &[
    "slackbot",
    "slack-imgproxy",
    "discordbot",
    "twitterbot",
    "facebookexternalhit",
    "whatsapp",
    "telegrambot",
    "linkedinbot",
    "skypeuripreview",
    "iframely",
    "embedly",
    "redditbot",
    "mastodon",
    "pinterest",
];

/// Whether `user_agent` is a link-preview agent's.
pub fn is_preview_agent(user_agent: Option<&str>) -> bool {
    let Some(user_agent) = user_agent else {
        return false;
    };
    let user_agent = user_agent.to_ascii_lowercase();
    PREVIEW_AGENTS
        .iter()
        .any(|agent| user_agent.contains(agent))
}

/// How a resolve request came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    Get,
    Head,
    /// The page's form (a password, or "Listen"): a person acting.
    Post,
}

/// What one request asks of a link.
struct Attempt {
    /// A `HEAD` or a link-preview agent: takes no view, ever.
    look_only: bool,
    /// The HTML page's `GET`: read-only for a limited link.
    page_get: bool,
    password: Option<SharePassword>,
    ip: IpAddr,
}

/// Judges the link behind `hash` for one attempt: dead, then the password gate (the guess
/// limit first, then the check), then the view. A protected link that is dead (out of views
/// included) answers as dead whatever password is sent; a missing or wrong password takes no
/// view.
async fn resolve(
    app: &AppState,
    hash: &TokenHash,
    now: DateTime<Utc>,
    attempt: Attempt,
) -> Result<Resolution, ApiError> {
    let record = app.resolver.record(hash).await?;
    let done = |status, refusal, preview| Resolution {
        status,
        record: record.clone(),
        refusal,
        preview,
    };
    let Some(row) = record.share.as_ref() else {
        return Ok(done(None, None, false));
    };
    let limited = row.max_views.is_some();
    if let Some(password_hash) = &row.password_hash {
        // Dead (a limited one's views peeked) before the password is asked for.
        let status = app.resolver.judge(row, now, Viewing::Peek).await?;
        if !matches!(status, LinkStatus::Active | LinkStatus::Unavailable) {
            return Ok(done(Some(status), None, false));
        }
        if let Some(wait) = app.password_guard.blocked(attempt.ip, &row.share_id).await {
            return Ok(done(
                Some(status),
                Some(Refusal::TooManyGuesses(wait)),
                false,
            ));
        }
        let Some(password) = attempt.password else {
            return Ok(done(Some(status), Some(Refusal::PasswordRequired), false));
        };
        match app
            .passwords
            .check(&row.share_id, password_hash, password)
            .await
        {
            Check::Right => {}
            Check::Wrong => {
                app.password_guard
                    .wrong_guess(attempt.ip, &row.share_id)
                    .await;
                return Ok(done(Some(status), Some(Refusal::PasswordInvalid), false));
            }
            Check::Busy => {
                return Ok(done(Some(status), Some(Refusal::TooManyGuesses(1)), false));
            }
        }
    }
    let viewing = if attempt.look_only || (attempt.page_get && limited) {
        Viewing::Peek
    } else {
        Viewing::Take
    };
    let status = app.resolver.judge(row, now, viewing).await?;
    Ok(done(Some(status), None, viewing == Viewing::Peek))
}

/// Open a shared link: a read-only view of the shared track or collection, with freshly signed
/// playback URLs and truthful licence facts. Public: no API key (one sent is ignored).
///
/// Rate limited per client IP (`RateLimit-*` headers on every answer) and audited. A request
/// whose `Accept` prefers `text/html` gets the same view as an HTML page, with the same limits.
/// A `link_only` share's answers, and every dead link's, also carry `X-Robots-Tag: noindex`.
/// Every dead cause (unknown, malformed, revoked, expired, over `max_views`) is one identical
/// 404; content the creator removed is a 200 with `available: false`.
///
/// A password-protected link needs `X-Share-Password` (401 `PASSWORD_REQUIRED` without it,
/// `INVALID_PASSWORD` when wrong; the page shows a password form instead); 5 wrong passwords
/// from one client IP for one link within 60 s refuse that IP on that link (429) until 60 s
/// after the first. `HEAD` and link-preview agents (Slackbot, Discordbot, facebookexternalhit,
/// …) never take a view of a limited link: previews get `playback_url: null`. The HTML page of
/// a limited link is read-only on `GET` (a "Listen" button POSTs to this URL and takes the view).
#[utoipa::path(
    get,
    path = "/v1/music/shared/{token}",
    operation_id = "resolve_share",
    tag = "resolve",
    params(
        TokenParam,
        ("X-Share-Password" = Option<String>, Header,
            description = "The link's password, if it has one."),
    ),
    // Every answer's headers (`finish_headers`) are documented by `operation`, not per response.
    responses(
        (status = 200, description = "The resolved view (or `available: false` when the content was removed); for a link-preview agent, `playback_url` is null. The HTML page of a limited link is read-only (no player).",
            content((ResolvedView = "application/json"), (String = "text/html"))),
        (status = 401, description = "A protected link: `X-Share-Password` missing (`PASSWORD_REQUIRED`) or wrong (`INVALID_PASSWORD`); the page shows a password form. Nothing of the share.",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 404, description = "A dead link: \"This share link is no longer available.\"",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 429, description = "This client IP's resolve limit is spent, or its password guesses on this link; retry after `Retry-After` seconds.",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 503, description = "The database is down.", body = ErrorEnvelope),
    ),
)]
pub async fn handler(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let password = header_password(&headers);
    let asked = if method == Method::HEAD {
        Asked::Head
    } else {
        Asked::Get
    };
    respond(app, peer, asked, headers, token, password).await
}

/// A person acting on the share page: its password form (`password=…`) or its "Listen" button.
/// Takes one view of a limited link and answers the page with the player (or the JSON view, if
/// `Accept` prefers JSON), under the same rate limit, password rules and audit as `GET`.
#[utoipa::path(
    post,
    path = "/v1/music/shared/{token}",
    operation_id = "open_share",
    tag = "resolve",
    params(
        TokenParam,
        ("X-Share-Password" = Option<String>, Header,
            description = "The link's password, if it has one and the form does not carry it."),
    ),
    request_body(content = PasswordForm, content_type = "application/x-www-form-urlencoded",
        description = "The page's form: `password` for a protected link, nothing for \"Listen\"."),
    responses(
        (status = 200, description = "The view, with its playback URLs: one view taken.",
            content((ResolvedView = "application/json"), (String = "text/html"))),
        (status = 401, description = "A protected link: no password (`PASSWORD_REQUIRED`) or a wrong one (`INVALID_PASSWORD`); the page shows the form again.",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 404, description = "A dead link: \"This share link is no longer available.\"",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 413, description = "The form is larger than 16 KiB.", body = ErrorEnvelope),
        (status = 429, description = "This client IP's resolve limit is spent, or its password guesses on this link; retry after `Retry-After` seconds.",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 503, description = "The database is down.", body = ErrorEnvelope),
    ),
)]
pub async fn submit(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::payload_too_large(FORM_LIMIT as u64).into_response()
        }
        Err(_) => Bytes::new(),
    };
    // A form that does not parse carries no password: the answer says one is required.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let password = form
        .into_iter()
        .find(|(name, _)| name == "password")
        .map(|(_, value)| SharePassword::new(value))
        .or_else(|| header_password(&headers));
    respond(app, peer, Asked::Post, headers, token, password).await
}

/// The page's form, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PasswordForm {
    /// The link's password (a protected link); absent for "Listen".
    password: Option<String>,
}

fn header_password(headers: &HeaderMap) -> Option<SharePassword> {
    headers
        .get(PASSWORD_HEADER)
        .map(|v| SharePassword::new(String::from_utf8_lossy(v.as_bytes())))
}

async fn respond(
    app: AppState,
    peer: SocketAddr,
    asked: Asked,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    password: Option<SharePassword>,
) -> Response {
    let now = Utc::now();
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

    let attempt = Attempt {
        look_only: asked == Asked::Head || is_preview_agent(user_agent),
        page_get: asked == Asked::Get && format == Format::Html,
        password,
        ip,
    };
    let resolution = match resolve(&app, &hash, now, attempt).await {
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
    let outcome = resolution.outcome();
    app.auditor.record(audit(outcome).target(
        row.map(|r| r.share_id.as_str()),
        row.map(|r| r.target_type.as_str()),
        row.map(|r| r.target_id.as_str()),
    ));
    if outcome == Outcome::Ok {
        if let Some(row) = row {
            app.stats.record(&row.share_id, now);
        }
    }
    let mut response = match format {
        Format::Html => page::render(&app, &resolution, now),
        Format::Json | Format::Media => render_json(&app, &resolution, now),
    };
    let visibility = match outcome {
        Outcome::Ok | Outcome::Unavailable | Outcome::Preview => row.map(|r| r.visibility),
        // Identical for every dead cause, so headers cannot tell them apart either; a
        // protected link's refusals show nothing of it, its visibility included.
        _ => Some(Visibility::LinkOnly),
    };
    finish_headers(&mut response, &limit, visibility);
    response
}

/// The resolve route with its OpenAPI operation, every response of which documents the headers
/// [`finish_headers`] writes on every answer (one list here instead of one per response).
pub fn operation() -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, router) = routes!(handler, submit);
    let operations = paths
        .paths
        .values_mut()
        .flat_map(|item| [item.get.as_mut(), item.post.as_mut()])
        .flatten();
    for operation in operations {
        for (status, response) in operation.responses.responses.iter_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            let reset = if status == "429" {
                "Whole seconds until a retry may pass."
            } else {
                "Whole seconds until the burst is full again."
            };
            for (name, schema, description) in [
                ("Cache-Control", String::schema(), "`no-store`."),
                (
                    "RateLimit-Limit",
                    u32::schema(),
                    "Resolves allowed per minute for this client IP.",
                ),
                (
                    "RateLimit-Remaining",
                    u32::schema(),
                    "Resolves left in the current burst.",
                ),
                ("RateLimit-Reset", u64::schema(), reset),
            ] {
                let header = HeaderBuilder::new()
                    .schema(schema)
                    .description(Some(description))
                    .build();
                response.headers.insert(name.to_owned(), header);
            }
        }
    }
    (schemas, paths, router)
}

/// The JSON rendering: the source page's shape, or the one dead-link envelope.
pub fn render_json(app: &AppState, resolution: &Resolution, now: DateTime<Utc>) -> Response {
    match resolution.refusal {
        Some(Refusal::PasswordRequired) => return ApiError::password_required().into_response(),
        Some(Refusal::PasswordInvalid) => return ApiError::invalid_password().into_response(),
        Some(Refusal::TooManyGuesses(wait)) => return ApiError::rate_limited(wait).into_response(),
        None => {}
    }
    match (resolution.status, resolution.row()) {
        (Some(LinkStatus::Active), Some(row)) if resolution.preview => {
            (StatusCode::OK, Json(ResolvedView::live(row, |_| None))).into_response()
        }
        (Some(LinkStatus::Active), Some(row)) => {
            let view = ResolvedView::live(row, |track_id| Some(app.signer.mint(track_id, now)));
            (StatusCode::OK, Json(view)).into_response()
        }
        (Some(LinkStatus::Unavailable), Some(row)) => (
            StatusCode::OK,
            Json(ResolvedView::unavailable(row.target_type)),
        )
            .into_response(),
        _ => dead_link().into_response(),
    }
}

/// The one answer of every dead link (see [`events::link::DEAD_LINK_MESSAGE`]).
pub fn dead_link() -> ApiError {
    ApiError::not_found_saying(DEAD_LINK_MESSAGE, DEAD_LINK_REASON)
}

fn finish_headers(
    response: &mut Response,
    limit: &crate::rate_limit::Decision,
    visibility: Option<Visibility>,
) {
    // The password-guess limit's wait, when it refused (the resolve limit allowed).
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The same URL answers JSON or HTML by `Accept`; a shared cache must keep them apart.
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if visibility == Some(Visibility::LinkOnly) {
        headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    }
    limit.write_headers(headers);
    if let Some(retry_after) = retry_after {
        headers.insert(header::RETRY_AFTER, retry_after);
    }
}
