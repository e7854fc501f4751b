//! The query API's OpenAPI document, served on `GET /openapi.json`.
//!
//! The operations are documented on their handlers (`#[utoipa::path]`) and collected by
//! [`crate::app::routes`], which registers each route from its operation. This module holds the
//! document's own parts (title, tags) and builds the whole document without serving it;
//! `service_kit::openapi` adds what every response carries (`X-Request-Id`, `Retry-After`) and the
//! security schemes.

use serde_json::Value;
use utoipa::OpenApi;

/// The parts of the document that belong to no operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "music-share query API",
        description = "Reads: the public resolve of share links (no API key; rate limited per \
                       client IP and audited), signed media, and the owner's share list (API \
                       key: `X-API-Key: msk_…` or `Authorization: Bearer msk_…`). Errors use one \
                       envelope. A documented path asked with a method it does not take answers \
                       405 with an `Allow` header; an unknown path, 404.",
    ),
    tags(
        (name = "resolve", description = "Opening a share link (public)."),
        (name = "media", description = "Audio behind signed playback URLs (public, signed)."),
        (name = "shares", description = "The caller's share links and their statistics."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
pub struct ApiDoc;

/// The document `GET /openapi.json` serves, built without a running application.
pub fn document() -> Value {
    service_kit::openapi::document_with_health(crate::app::routes().into_openapi())
}

/// Every route of CONTRACT.md's query table (beside [`service_kit::openapi::SHARED_ROUTES`]).
pub const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/music/shared/{token}"),
    ("post", "/v1/music/shared/{token}"),
    ("get", "/v1/music/media/{track_id}"),
    ("get", "/v1/music/{org}/shares"),
    ("get", "/v1/music/{org}/share/{share_id}/stats"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_query_routes() {
        let doc = document();
        // Only the owner's routes take an API key; the resolve and media routes are public.
        service_kit::openapi::assert_routes(&doc, CONTRACT_ROUTES, |path| {
            path.starts_with("/v1/music/{org}/")
        });
        let resolve = &doc["paths"]["/v1/music/shared/{token}"]["get"]["responses"];
        for status in ["200", "404", "429"] {
            assert!(
                resolve[status]["content"]["text/html"].is_object(),
                "{status}"
            );
            for header in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                assert_eq!(resolve[status]["headers"][header]["required"], true);
            }
        }
        assert_eq!(resolve["429"]["headers"]["Retry-After"]["required"], true);
    }
}
