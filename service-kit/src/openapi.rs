//! What both APIs' OpenAPI documents share, and serving them on `GET /openapi.json`.
//!
//! Each API documents its operations next to its handlers (`#[utoipa::path]`) and registers them
//! with `utoipa_axum::routes!`, which takes the path and method from that same attribute: the
//! route table and the document cannot drift apart. This module adds what is true of every
//! response because a shared layer makes it so, rather than repeating it on each operation:
//!
//! - `X-Request-Id` on every response ([`crate::request_id::propagate`] sets it);
//! - `Retry-After` on every 429 and 503 ([`crate::ApiError`] sets it);
//! - on every authenticated operation (one with `security`), the errors of
//!   [`crate::auth::Caller`]: 401, 503, and 404 on an organization's path, unless the operation
//!   documents its own (a 404 or 503 that says more);
//! - the two security schemes of [`crate::auth`]: `X-API-Key` and `Authorization: Bearer`.
//!
//! Every response header a document names is marked `required`: the APIs document only headers
//! they always send. The error envelope ([`crate::error::ErrorEnvelope`]) and the acknowledgement
//! ([`crate::server::Ack`]) are the shared schemas.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorEnvelope;

/// The name of the `X-API-Key` security scheme, for `security((...))` on operations.
pub const API_KEY: &str = "api_key";
/// The name of the `Authorization: Bearer msk_…` security scheme.
pub const BEARER: &str = "bearer";

/// The finished document, serialized once at start.
#[derive(Clone)]
struct Document(Arc<str>);

/// This document: the API's operations, schemas and security schemes (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_json",
    tag = "operations",
    responses((
        status = 200,
        description = "This OpenAPI 3.1 document.",
        body = Object,
        content_type = "application/json",
    )),
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    let mut response = document.0.to_string().into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Adds `GET /openapi.json` to `api`, serving the document of everything `api` routes (itself
/// included), finished by [`finish`].
pub fn serve(api: OpenApiRouter) -> Router {
    let (router, document) = api.routes(routes!(openapi_json)).split_for_parts();
    let json = finish(document).to_string();
    router.layer(Extension(Document(json.into())))
}

/// The document [`serve`] would serve for routes documented by `operations`, without serving it
/// (for tests, which have no state to build the routes with).
pub fn document(operations: OpenApi) -> Value {
    let api: OpenApiRouter = OpenApiRouter::with_openapi(operations);
    finish(api.routes(routes!(openapi_json)).into_openapi())
}

/// The operations every process serves beside its own ([`crate::server::health_api`] and
/// [`serve`]): each API's route table lists only its own.
pub const SHARED_ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// [`document`] for an API whose own operations are `operations`, with the health routes every
/// process serves: what `GET /openapi.json` serves, built without a running application.
pub fn document_with_health(operations: OpenApi) -> Value {
    let ready = crate::server::ready_check(|| async { Ok(()) });
    let mut operations = operations;
    operations.merge(crate::server::health_api::<()>(ready).into_openapi());
    document(operations)
}

/// Adds the security schemes and the headers every response carries (see the module docs).
pub fn finish(mut document: OpenApi) -> Value {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "An API key, `msk_` followed by 40 lowercase hex.",
        ))),
    );
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The same API key, as `Authorization: Bearer msk_…`."))
                .build(),
        ),
    );
    // The answers of the authenticated routes refer to the envelope, whatever else they list.
    let mut envelope = vec![(ErrorEnvelope::name().into_owned(), ErrorEnvelope::schema())];
    ErrorEnvelope::schemas(&mut envelope);
    components.schemas.extend(envelope);
    let mut value = serde_json::to_value(&document)
        .expect("an OpenAPI document is plain data and always serializes");
    let operations = value
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .filter_map(|(path, item)| Some((path, item.as_object_mut()?)))
        .flat_map(|(path, item)| item.iter_mut().map(move |op| (path, op)))
        .filter(|(_, (method, _))| HTTP_METHODS.contains(&method.as_str()))
        .map(|(path, (_, operation))| (path, operation));
    for (path, operation) in operations {
        let authenticated = operation.get("security").is_some_and(Value::is_array);
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if authenticated {
            add_caller_errors(path, responses);
        }
        for (status, response) in responses.iter_mut() {
            let Some(response) = response.as_object_mut() else {
                continue;
            };
            add_common_headers(status, response);
        }
    }
    value
}

/// The answers [`crate::auth::Caller`] gives on every authenticated route, unless the operation
/// documents its own: 401 without a known key, 503 when the key cannot be checked, and on a path
/// of an organization, 404 when the caller is not a member ([`crate::auth::Caller::member_of`]).
fn add_caller_errors(path: &str, responses: &mut Map<String, Value>) {
    let mut errors = vec![
        ("401", "No API key, or an unknown one."),
        ("503", "The database is down."),
    ];
    if path.contains("{org}") {
        errors.push(("404", "The caller is not a member of the organization."));
    }
    for (status, description) in errors {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ErrorEnvelope",
                }}},
            })
        });
    }
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn add_common_headers(status: &str, response: &mut Map<String, Value>) {
    let headers = response
        .entry("headers")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(headers) = headers.as_object_mut() else {
        return;
    };
    headers.insert(
        "X-Request-Id".to_owned(),
        json!({
            "description": "This request's id; equals the error envelope's `trace_id`. A \
                            well-formed incoming `X-Request-Id` is kept.",
            "schema": {"type": "string", "pattern": "^req_[A-Za-z0-9]{16,64}$"},
        }),
    );
    if status == "429" || status == "503" {
        headers.insert(
            "Retry-After".to_owned(),
            json!({
                "description": "Whole seconds to wait before retrying (at least 1).",
                "schema": {"type": "integer", "minimum": 1},
            }),
        );
    }
    for header in headers.values_mut() {
        if let Some(header) = header.as_object_mut() {
            header.insert("required".to_owned(), Value::Bool(true));
        }
    }
}

/// Every `(method, path)` a served document lists, sorted.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| (method.clone(), path.clone()))
        })
        .collect();
    listed.sort();
    listed
}

/// `routes` as [`operations`] lists them.
fn sorted_routes(routes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut sorted: Vec<(String, String)> = routes
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    sorted.sort();
    sorted
}

/// Panics unless `document` is OpenAPI 3.1 and lists exactly `routes` and [`SHARED_ROUTES`]: what
/// each API's unit test holds its document to. With `MS_DUMP_OPENAPI=FILE` the document is also written there, to read.
pub fn assert_lists_exactly(document: &Value, routes: &[(&str, &str)]) {
    if let Ok(path) = std::env::var("MS_DUMP_OPENAPI") {
        std::fs::write(
            path,
            serde_json::to_string_pretty(document).unwrap_or_default(),
        )
        .ok();
    }
    assert_eq!(document["openapi"], "3.1.0");
    let all: Vec<(&str, &str)> = routes.iter().chain(SHARED_ROUTES).copied().collect();
    assert_eq!(operations(document), sorted_routes(&all));
}

/// Panics unless `document` lists exactly `routes` (with [`SHARED_ROUTES`]), exactly those for
/// which `authenticated(path)` holds name a security requirement (the shared routes are
/// public), and every response of each names its `X-Request-Id`.
pub fn assert_routes(document: &Value, routes: &[(&str, &str)], authenticated: fn(&str) -> bool) {
    assert_lists_exactly(document, routes);
    for &(method, path) in routes.iter().chain(SHARED_ROUTES) {
        let operation = &document["paths"][path][method];
        let expected = authenticated(path) && !SHARED_ROUTES.contains(&(method, path));
        assert_eq!(
            operation["security"].is_array(),
            expected,
            "{method} {path}: security"
        );
        for (status, response) in operation["responses"].as_object().into_iter().flatten() {
            assert_eq!(
                response["headers"]["X-Request-Id"]["required"], true,
                "{method} {path} {status}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{health_api, ready_check};

    #[test]
    fn every_response_names_its_request_id_and_throttled_ones_retry_after() {
        let api: OpenApiRouter = health_api(ready_check(|| async { Ok(()) }));
        let doc = document(api.into_openapi());
        assert_eq!(doc["openapi"], "3.1.0");
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let responses = &doc["paths"][path]["get"]["responses"];
            let header = &responses["200"]["headers"]["X-Request-Id"];
            assert_eq!(header["required"], true, "{path}: {responses}");
        }
        let unavailable = &doc["paths"]["/readyz"]["get"]["responses"]["503"];
        assert_eq!(unavailable["headers"]["Retry-After"]["required"], true);
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["name"],
            "X-API-Key"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
