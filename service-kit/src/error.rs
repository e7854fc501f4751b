//! [`ApiError`]: the one error type of both APIs, rendered as the envelope of the source pages.
//!
//! `message` is for people and stays generic; `system_message` says what went wrong in terms a
//! developer can act on, but never carries internals (SQL, file paths, stack traces): those go to
//! the log, under the same request id the client sees as `trace_id`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::request_id::current_request_id;

/// The `code` of an error envelope: one per status of CONTRACT.md's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    AuthenticationRequired,
    PasswordRequired,
    InvalidPassword,
    Forbidden,
    ResourceNotFound,
    MethodNotAllowed,
    Conflict,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    HeadersTooLarge,
    ValidationError,
    RateLimitExceeded,
    InternalError,
    ServiceUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            ErrorCode::PasswordRequired => "PASSWORD_REQUIRED",
            ErrorCode::InvalidPassword => "INVALID_PASSWORD",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UriTooLong => "URI_TOO_LONG",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

/// The `type` of an error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ClientError,
    AuthenticationError,
    RateLimitError,
    ServerError,
}

/// Every error response of both APIs: `{"success":false,"error":{…}}`, as the source pages show.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    #[schema(value_type = bool, example = false)]
    pub success: bool,
    pub error: ErrorObject,
}

/// What went wrong. `details` names each offending field (422) or the id that was not found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// For people; generic.
    pub message: String,
    /// For developers; never internals.
    pub system_message: String,
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
    /// Equals the response's `X-Request-Id`.
    #[schema(pattern = r"^req_[A-Za-z0-9]{16,64}$")]
    pub trace_id: String,
    /// UTC, whole seconds (`2026-06-28T10:30:00Z`).
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// Boxed so that `Result<T, ApiError>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorBody>);

#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub kind: ErrorKind,
    pub message: String,
    pub system_message: String,
    pub details: Map<String, Value>,
    /// Seconds, for 429 and 503 (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: ErrorCode,
        kind: ErrorKind,
        message: &str,
        system_message: impl Into<String>,
    ) -> Self {
        Self(Box::new(ErrorBody {
            status,
            code,
            kind,
            message: message.to_owned(),
            system_message: system_message.into(),
            details: Map::new(),
            retry_after: None,
        }))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &'static str {
        self.0.code.as_str()
    }

    pub fn details(&self) -> &Map<String, Value> {
        &self.0.details
    }

    /// The `Retry-After` seconds the response carries (429 and 503), for other renderings.
    pub fn retry_after(&self) -> Option<u64> {
        self.0.retry_after
    }

    /// 400: the request could not be parsed (malformed JSON, wrong content type, bad multipart).
    pub fn bad_request(system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            ErrorKind::ClientError,
            "The request could not be understood.",
            system_message,
        )
    }

    /// 401, exactly as the source pages show it.
    pub fn authentication_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthenticationRequired,
            ErrorKind::AuthenticationError,
            "Authentication required. Please provide a valid API key.",
            "Missing or invalid authorization header",
        )
    }

    /// 401 for a password-protected share link resolved without `X-Share-Password` (or the
    /// page's form). Carries nothing of the share.
    pub fn password_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::PasswordRequired,
            ErrorKind::AuthenticationError,
            "This share link is protected by a password.",
            "Send the link's password in the X-Share-Password header",
        )
    }

    /// 401 for a wrong share-link password.
    pub fn invalid_password() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidPassword,
            ErrorKind::AuthenticationError,
            "The password is not correct.",
            "The X-Share-Password header does not match the link's password",
        )
    }

    /// 409: the resource is in a state that refuses the change (a revoked share link).
    pub fn conflict(message: &str, system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            ErrorKind::ClientError,
            message,
            system_message,
        )
    }

    /// 403: known to the caller, but not theirs to do this to (or a bad media signature).
    pub fn forbidden(system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            ErrorKind::ClientError,
            "You do not have permission to perform this action.",
            system_message,
        )
    }

    /// 404: absent, not the caller's, or not the caller's organization. One answer for all, so a
    /// stranger cannot tell which.
    pub fn not_found(system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ResourceNotFound,
            ErrorKind::ClientError,
            "The requested resource was not found.",
            system_message,
        )
    }

    /// 404 in words of the caller's own, for a product whose one answer to several causes is
    /// not "resource not found" (the dead share link: `events::link::DEAD_LINK_MESSAGE`).
    pub fn not_found_saying(message: &str, system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ResourceNotFound,
            ErrorKind::ClientError,
            message,
            system_message,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            ErrorKind::ClientError,
            "This method is not allowed for this resource.",
            "The path exists but does not accept this HTTP method",
        )
    }

    /// 408: the client stopped sending a request (its headers, or its body) part way.
    pub fn request_timeout(system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            ErrorKind::ClientError,
            "The request took too long to arrive.",
            system_message,
        )
    }

    /// 414: the request target is longer than the server reads.
    pub fn uri_too_long(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            ErrorKind::ClientError,
            "The request address is too long.",
            format!("The request target exceeds the limit of {limit_bytes} bytes"),
        )
        .with_detail("limit_bytes", limit_bytes)
    }

    /// 431: too many header fields, or too many bytes of them.
    pub fn headers_too_large(system_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            ErrorKind::ClientError,
            "The request headers are too large.",
            system_message,
        )
    }

    pub fn payload_too_large(limit_bytes: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            ErrorKind::ClientError,
            "The request body is too large.",
            format!("The request body exceeds the limit of {limit_bytes} bytes"),
        )
        .with_detail("limit_bytes", limit_bytes)
    }

    /// 416: a `Range` the file cannot satisfy (the caller adds `Content-Range: bytes */LEN`).
    pub fn range_not_satisfiable(len: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeNotSatisfiable,
            ErrorKind::ClientError,
            "The requested range is not available.",
            format!("The Range header lies outside the file's {len} bytes"),
        )
        .with_detail("length", len)
    }

    /// 422 with one entry per invalid field: `details` maps the field to why.
    pub fn validation(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationError,
            ErrorKind::ClientError,
            "The request contains invalid fields.",
            "One or more fields failed validation",
        );
        for (field, reason) in fields {
            error.0.details.insert(field, Value::String(reason));
        }
        error
    }

    /// 422 for a single field.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        Self::validation([(field.to_owned(), reason.into())])
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimitExceeded,
            ErrorKind::RateLimitError,
            "Too many requests. Please try again later.",
            "Share resolve rate limit exceeded for client IP",
        );
        error.0.retry_after = Some(retry_after_secs.max(1));
        error
    }

    /// 503: a dependency is down. Nothing was changed; the client should retry.
    pub fn unavailable(system_message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            ErrorKind::ServerError,
            "The service is temporarily unavailable. Please try again shortly.",
            system_message,
        );
        error.0.retry_after = Some(2);
        error
    }

    /// 500: a bug. The cause goes to the log; the client learns only the request id.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            ErrorKind::ServerError,
            "An internal error occurred.",
            "Internal server error",
        )
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    /// The envelope, with the current request's id as `trace_id`.
    pub fn body(&self) -> ErrorEnvelope {
        let e = &self.0;
        ErrorEnvelope {
            success: false,
            error: ErrorObject {
                code: e.code,
                message: e.message.clone(),
                system_message: e.system_message.clone(),
                kind: e.kind,
                status: e.status.as_u16(),
                details: e.details.clone(),
                trace_id: current_request_id().unwrap_or_else(crate::request_id::generate),
                timestamp: events::format::rfc3339(Utc::now()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = &self.0;
        if e.status.is_server_error() {
            tracing::warn!(status = e.status.as_u16(), code = e.code.as_str(), system_message = %e.system_message, "request failed");
        }
        let mut response = (e.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = e.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<events::StoreError> for ApiError {
    fn from(e: events::StoreError) -> Self {
        match e {
            events::StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "event store unavailable");
                ApiError::unavailable("The event store is unavailable")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if events::store::postgres::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::unavailable("The database is unavailable")
        } else {
            ApiError::internal(e)
        }
    }
}
