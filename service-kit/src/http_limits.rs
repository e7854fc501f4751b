//! The contract's limits on a request's head: a target over 8 KiB is a 414, more than 100 header
//! fields or more than 64 KiB of them a 431, both in the envelope.
//!
//! hyper's own limits sit above these (see [`crate::connection`]) so that an ordinary oversized
//! request reaches this middleware and gets a request id, an access line and the envelope like
//! any other error; what even hyper refuses is rewritten at the connection.

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The longest request target served, in bytes.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most header fields a request may carry.
pub const MAX_HEADER_FIELDS: usize = 100;
/// The most bytes a request's header fields may take, each counted as `name: value\r\n`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Middleware: refuses a request whose head is over the contract's limits.
pub async fn enforce(request: Request, next: Next) -> Response {
    match check(&request) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

fn check(request: &Request) -> Result<(), ApiError> {
    if target_len(request.uri()) > MAX_TARGET_BYTES {
        return Err(ApiError::uri_too_long(MAX_TARGET_BYTES));
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(ApiError::headers_too_large(format!(
            "The request has {} header fields; at most {MAX_HEADER_FIELDS} are accepted",
            headers.len()
        ))
        .with_detail("max_fields", MAX_HEADER_FIELDS));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::headers_too_large(format!(
            "The request's header fields take {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        ))
        .with_detail("max_bytes", MAX_HEADER_BYTES));
    }
    Ok(())
}

/// The request target as it came on the request line (origin form, or absolute form).
fn target_len(uri: &Uri) -> usize {
    let path_and_query = uri.path_and_query().map_or(0, |p| p.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    path_and_query + authority + scheme
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(target: &str, headers: &[(String, String)]) -> Request {
        let mut builder = Request::builder().uri(target);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn limits_are_the_contracts() {
        let at_limit = format!("/{}", "a".repeat(MAX_TARGET_BYTES - 1));
        assert!(check(&request(&at_limit, &[])).is_ok());
        let over = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(
            check(&request(&over, &[])).unwrap_err().status().as_u16(),
            414
        );

        let fields = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("x-f{i}"), "v".to_owned()))
                .collect()
        };
        assert!(check(&request("/", &fields(100))).is_ok());
        let e = check(&request("/", &fields(101))).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (431, "HEADERS_TOO_LARGE"));

        let big = vec![("x-big".to_owned(), "v".repeat(MAX_HEADER_BYTES))];
        assert_eq!(
            check(&request("/", &big)).unwrap_err().status().as_u16(),
            431
        );
        let fits = vec![("x-big".to_owned(), "v".repeat(MAX_HEADER_BYTES - 9))];
        assert!(check(&request("/", &fits)).is_ok());
    }
}
