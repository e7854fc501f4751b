//! Request ids: every response carries `X-Request-Id`, equal to the error envelope's `trace_id`,
//! to the `trace_id` of the events the request appended, and to the `request_id` of its log lines.
//!
//! A well-formed incoming id (`req_` + 16 to 64 alphanumerics) is kept, so a caller or a proxy can
//! follow one request through every process. The id lives in a task-local for the duration of
//! the request, which is how [`crate::ApiError`] finds it without every handler passing it along.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, if called from inside one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A fresh id: `req_` and 32 lowercase hex.
pub fn generate() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

pub fn is_well_formed(id: &str) -> bool {
    id.strip_prefix("req_").is_some_and(|rest| {
        (16..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Middleware: choose the id, make it current for the request, put it on the response.
pub async fn propagate(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed() {
        assert!(is_well_formed(&generate()));
        assert!(is_well_formed("req_abc123xyz0000000"));
        assert!(!is_well_formed("req_short"));
        assert!(!is_well_formed("abc123xyz0000000000"));
        assert!(!is_well_formed("req_abc123xyz00000-0"));
    }
}
