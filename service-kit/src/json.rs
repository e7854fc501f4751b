//! JSON bodies that fail in the contract's envelope: malformed JSON or a wrong content type is a
//! 400, a well-formed body with a field of the wrong type is a 422 whose `details` names the field.
//!
//! Axum's own `Json` rejections answer in plain text and cannot name the field, hence these.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A required JSON body.
pub struct ValidJson<T>(pub T);

/// An optional JSON body: no body, an empty body or no `Content-Type` at all means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(&request) {
            return Err(ApiError::bad_request(
                "Expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = body_bytes(request, state).await?;
        parse(&bytes).map(ValidJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let has_content_type = request.headers().contains_key(CONTENT_TYPE);
        if has_content_type && !has_json_content_type(&request) {
            return Err(ApiError::bad_request(
                "Expected a JSON body with Content-Type: application/json, or no body",
            ));
        }
        let bytes = body_bytes(request, state).await?;
        if !has_content_type || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

fn has_json_content_type(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(DEFAULT_JSON_LIMIT as u64)
            } else if crate::connection::is_body_timeout(&rejection) {
                crate::connection::body_timeout_error()
            } else {
                ApiError::bad_request("The request body could not be read")
            }
        })
}

/// Axum's default body limit, which JSON routes keep.
const DEFAULT_JSON_LIMIT: usize = 2 * 1024 * 1024;

/// Parses `bytes`: syntax errors are 400, type errors are 422 naming the field's path.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // JSON text is UTF-8 throughout (RFC 8259). serde_json checks only the strings it reads,
    // so a field the type ignores could otherwise carry any bytes past us.
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(format!(
            "Malformed JSON: invalid UTF-8 at byte {}",
            e.valid_up_to()
        )));
    }
    // Every body of the contract is an object; serde would otherwise read `[5]` as a struct
    // whose first field is 5.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{' && (b.is_ascii_digit() || b"[\"-tfn".contains(b))) {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner();
        if inner.is_data() {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            ApiError::invalid_field(&field, describe(inner))
        } else {
            ApiError::bad_request(format!("Malformed JSON: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON: {e}")))?;
    Ok(value)
}

/// serde's message without its "at line 1 column 9" suffix, which means nothing to a field.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        expires_in_days: Option<u32>,
    }

    #[test]
    fn syntax_errors_are_400_and_type_errors_name_the_field() {
        let e = parse::<Body>(b"{not json").expect_err("malformed");
        assert_eq!(e.status().as_u16(), 400);
        let e = parse::<Body>(br#"{"expires_in_days": "3"}"#).expect_err("wrong type");
        assert_eq!(e.status().as_u16(), 422);
        assert!(
            e.details().contains_key("expires_in_days"),
            "{:?}",
            e.details()
        );
        let e = parse::<Body>(br#"[1]"#).expect_err("not an object");
        assert_eq!(e.status().as_u16(), 422);
        assert!(parse::<Body>(br#"{"unknown": 1}"#).is_ok());
    }

    #[test]
    fn invalid_utf8_is_400_even_in_an_ignored_field() {
        let e = parse::<Body>(b"{\"zz\":\"\xff\xfe\"}").expect_err("invalid UTF-8");
        assert_eq!(e.status().as_u16(), 400);
        let e = parse::<Body>(b"{\"expires_in_days\":1,\"zz\xc3\":2}").expect_err("in a key");
        assert_eq!(e.status().as_u16(), 400);
        assert!(parse::<Body>("{\"zz\":\"d\u{e9}j\u{e0} vu\"}".as_bytes()).is_ok());
    }
}
