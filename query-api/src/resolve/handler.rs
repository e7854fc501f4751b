//! The resolve's HTTP route: what one request does, in order, and the headers every answer
//! carries.
//!
//! Its own module because it is where the resolve meets the outside: the client IP and its rate
//! limit, the audit event of every attempt, the rendering the client asked for
//! ([`super::negotiate`]: JSON here, the HTML page in [`crate::page`]), and the OpenAPI
//! operation that documents (and registers) the route. Both renderings show the same
//! [`Resolution`] under the same limit and audit, with `format` telling them apart.

use std::net::SocketAddr;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::Visibility;
use events::link::{LinkStatus, DEAD_LINK_MESSAGE, DEAD_LINK_REASON};
use events::share_token::TokenHash;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::negotiate::negotiate;
use super::resolver::{Resolution, Viewing};
use crate::app::AppState;
use crate::audit::{AuditEvent, Format, Outcome};
use crate::page;
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
    // Every answer's headers (`finish_headers`) are documented by `operation`, not per response.
    responses(
        (status = 200, description = "The resolved view (or `available: false` when the content was removed).",
            content((ResolvedView = "application/json"), (String = "text/html"))),
        (status = 404, description = "A dead link: \"This share link is no longer available.\"",
            content((ErrorEnvelope = "application/json"), (String = "text/html"))),
        (status = 429, description = "This client IP's resolve limit is spent; retry after `Retry-After` seconds.",
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
    app.auditor
        .record(audit(Outcome::of_link(resolution.status)).target(
            row.map(|r| r.share_id.as_str()),
            row.map(|r| r.target_type.as_str()),
            row.map(|r| r.target_id.as_str()),
        ));
    if resolution.status == Some(LinkStatus::Active) && viewing == Viewing::Take {
        if let Some(row) = row {
            app.stats.record(&row.share_id, now);
        }
    }
    let mut response = match format {
        Format::Html => page::render(&app, &resolution, now),
        Format::Json | Format::Media => render_json(&app, &resolution, now),
    };
    let visibility = match resolution.status {
        Some(LinkStatus::Active | LinkStatus::Unavailable) => row.map(|r| r.visibility),
        // Identical for every dead cause, so headers cannot tell them apart either.
        _ => Some(Visibility::LinkOnly),
    };
    finish_headers(&mut response, &limit, visibility);
    response
}

/// The resolve route with its OpenAPI operation, every response of which documents the headers
/// [`finish_headers`] writes on every answer (one list here instead of one per response).
pub fn operation() -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, router) = routes!(handler);
    let operations = paths
        .paths
        .values_mut()
        .filter_map(|item| item.get.as_mut());
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
    match (resolution.status, resolution.row()) {
        (Some(LinkStatus::Active), Some(row)) => {
            let view = ResolvedView::live(row, |track_id| app.signer.mint(track_id, now));
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
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The same URL answers JSON or HTML by `Accept`; a shared cache must keep them apart.
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if visibility == Some(Visibility::LinkOnly) {
        headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    }
    limit.write_headers(headers);
}
