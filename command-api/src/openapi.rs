//! The command API's OpenAPI document, served on `GET /openapi.json`.
//!
//! The operations are documented on their handlers (`#[utoipa::path]`) and collected by
//! [`crate::app::routes`], which registers each route from its operation. This module holds the
//! document's own parts (title, tags) and builds the whole document without serving it;
//! `service_kit::openapi` adds what every response carries (`X-Request-Id`, `Retry-After`) and the
//! security schemes.

use serde_json::Value;
use utoipa::OpenApi;

use crate::domain::share::ShareRequest;

/// The parts of the document that belong to no operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "music-share command API",
        description = "Authenticated writes: tracks, collections, share links and saving shared \
                       tracks. Every `/v1` route needs an API key (`X-API-Key: msk_…` or \
                       `Authorization: Bearer msk_…`). Errors use one envelope. A documented path \
                       asked with a method it does not take answers 405 with an `Allow` header; \
                       an unknown path, 404.",
    ),
    tags(
        (name = "tracks", description = "Upload (measured) and delete tracks."),
        (name = "collections", description = "Ordered collections of an organization's tracks."),
        (name = "shares", description = "Share links for a track or a collection."),
        (name = "library", description = "Saving a shared track."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    ),
    // Referenced by the share routes' optional body (see `shares::share_track`).
    components(schemas(ShareRequest)),
)]
pub struct ApiDoc;

/// The document `GET /openapi.json` serves, built without a running application.
pub fn document() -> Value {
    service_kit::openapi::document_with_health(crate::app::routes(0).into_openapi())
}

/// Every route of CONTRACT.md's command table (beside [`service_kit::openapi::SHARED_ROUTES`]).
pub const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/music/{org}/tracks"),
    ("delete", "/v1/music/{org}/tracks/{track_id}"),
    ("post", "/v1/music/{org}/collections"),
    ("post", "/v1/music/{org}/collections/{collection_id}/tracks"),
    (
        "delete",
        "/v1/music/{org}/collections/{collection_id}/tracks/{track_id}",
    ),
    ("patch", "/v1/music/{org}/collections/{collection_id}/order"),
    ("delete", "/v1/music/{org}/collections/{collection_id}"),
    ("post", "/v1/music/{org}/tracks/{track_id}/share"),
    ("post", "/v1/music/{org}/collections/{collection_id}/share"),
    ("delete", "/v1/music/{org}/share/{share_id}"),
    ("patch", "/v1/music/{org}/share/{share_id}"),
    ("post", "/v1/music/{org}/share/{share_id}/rotate"),
    ("post", "/v1/music/shared/{token}/save"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_command_routes() {
        let doc = document();
        // Every command takes an API key.
        service_kit::openapi::assert_routes(&doc, CONTRACT_ROUTES, |_| true);
    }

    /// The documented patterns are the ones the handlers enforce.
    #[test]
    fn documented_patterns_are_the_enforced_ones() {
        use events::ids::{CollectionId, ShareLinkId, TrackId};

        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [
            ("CreateCollection", "name"),
            ("TrackUpload", "title"),
            ("TrackUpload", "engine"),
            ("TrackUpload", "mode"),
        ] {
            assert_eq!(
                schemas[schema]["properties"][field]["pattern"],
                crate::text::NON_BLANK_PATTERN,
                "{schema}.{field}"
            );
        }
        assert_eq!(
            schemas["CreateCollection"]["properties"]["description"]["pattern"],
            crate::text::NUL_FREE_PATTERN
        );
        let hex12 = |prefix: &str| format!("^{prefix}[0-9a-f]{{12}}$");
        let expected = [
            ("track_id", hex12(TrackId::PREFIX)),
            ("collection_id", hex12(CollectionId::PREFIX)),
            ("share_id", hex12(ShareLinkId::PREFIX)),
            ("token", "^shr_[0-9a-f]{32}$".to_owned()),
            ("org", "^org_[a-z0-9_]{3,40}$".to_owned()),
        ];
        let mut seen = 0;
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, i)| i)
        {
            for operation in item.as_object().into_iter().flatten().map(|(_, o)| o) {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "header" {
                        continue;
                    }
                    let name = parameter["name"].as_str().unwrap_or_default();
                    let (_, pattern) = expected
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap_or_else(|| panic!("unexpected parameter {name}"));
                    assert_eq!(parameter["schema"]["pattern"], pattern.as_str(), "{name}");
                    seen += 1;
                }
            }
        }
        assert!(seen > 10, "{seen}");
        assert_eq!(
            schemas["AddTrack"]["properties"]["track_id"]["pattern"],
            hex12(TrackId::PREFIX)
        );
    }
}
