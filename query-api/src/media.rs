//! `GET /v1/music/media/{track_id}?exp=&kid=&sig=`: the audio behind a signed playback URL.
//!
//! The signature is checked first (in constant time), and a bad, unknown-key or expired one is a
//! 403 whatever the track. Then the file is streamed from `MEDIA_DIR` (content-addressed by the
//! track's `media_sha256`), with single `Range` requests answered `206`. Every fetch is audited.

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use events::event::MediaFile;
use serde::Deserialize;
use service_kit::error::ErrorEnvelope;
use service_kit::ApiError;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::app::AppState;
use crate::audit::{AuditEvent, Format, Outcome};

/// The signature of a playback URL, as the resolve minted it. Any of them missing or wrong is the
/// one 403.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Signature {
    /// Expiry, Unix seconds.
    #[param(value_type = String, required = true)]
    exp: Option<String>,
    /// The id of the key that signed.
    #[param(value_type = String, required = true)]
    kid: Option<String>,
    /// Lowercase hex HMAC-SHA256 over `"{path}\n{exp}\n{kid}"`.
    #[param(value_type = String, required = true)]
    sig: Option<String>,
}

/// The `Range` header of the media route, for its OpenAPI operation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct RangeHeader {
    /// One byte range (`bytes=0-1023`, `bytes=1024-`, `bytes=-512`) is answered 206; a malformed
    /// value or several ranges get the whole file.
    #[param(rename = "Range", value_type = String, required = false)]
    range: Option<String>,
}

/// The audio behind a signed playback URL. Public: the signature is the credential.
///
/// The signature is checked first: a bad, unknown-key or expired one is a 403 whatever the track.
/// Every fetch is audited.
#[utoipa::path(
    get,
    path = "/v1/music/media/{track_id}",
    operation_id = "get_media",
    tag = "media",
    params(
        ("track_id" = String, Path, description = "The track whose audio the URL was signed for."),
        RangeHeader,
        Signature,
    ),
    responses(
        (status = 200, description = "The whole audio file.",
            content(("audio/wav"), ("audio/flac"), ("audio/mpeg"), ("audio/ogg")),
            headers(
                ("Accept-Ranges" = String, description = "`bytes`."),
                ("Content-Length" = u64, description = "The file's size in bytes."),
                ("Cache-Control" = String, description = "`private, no-store`."),
            )),
        (status = 206, description = "The requested byte range.",
            content(("audio/wav"), ("audio/flac"), ("audio/mpeg"), ("audio/ogg")),
            headers(
                ("Accept-Ranges" = String, description = "`bytes`."),
                ("Content-Length" = u64, description = "The range's size in bytes."),
                ("Content-Range" = String, description = "`bytes {first}-{last}/{size}`."),
                ("Cache-Control" = String, description = "`private, no-store`."),
            )),
        (status = 403, description = "The signature is missing, malformed, under an unknown key, wrong, or expired.", body = ErrorEnvelope),
        (status = 404, description = "No live track with audio of that id.", body = ErrorEnvelope),
        (status = 416, description = "The range starts beyond the end of the file.", body = ErrorEnvelope,
            headers(("Content-Range" = String, description = "`bytes */{size}`."))),
        (status = 503, description = "The database is down.", body = ErrorEnvelope),
    ),
)]
pub async fn handler(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    track_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    signature: Result<Query<Signature>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A segment that does not even decode names no track a signature could cover.
    let track_id = track_id.map(|Path(id)| id).unwrap_or_default();
    let now = Utc::now();
    let ip = app.trusted_proxies.client_ip(peer.ip(), &headers);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let signature = signature.map(|Query(s)| s).unwrap_or_default();
    let audit = |outcome| {
        AuditEvent::new(outcome, Format::Media, ip, now)
            .user_agent(user_agent)
            .target(None, Some("track"), Some(track_id.as_str()))
    };

    if let Err(refusal) = app.signer.verify(
        &track_id,
        signature.exp.as_deref(),
        signature.kid.as_deref(),
        signature.sig.as_deref(),
        now,
    ) {
        app.auditor
            .record(audit(Outcome::Forbidden).target(None, None, None));
        tracing::info!(?refusal, "media request refused");
        return ApiError::forbidden("The playback URL's signature is invalid or has expired")
            .into_response();
    }
    match serve(&app, &track_id, &headers, now).await {
        Ok(response) => {
            app.auditor.record(audit(Outcome::Ok));
            response
        }
        Err(e) => {
            let outcome = if e.status() == StatusCode::NOT_FOUND {
                Outcome::NotFound
            } else {
                Outcome::Unavailable
            };
            app.auditor.record(audit(outcome));
            e.into_response()
        }
    }
}

struct StoredMedia {
    file: MediaFile,
    removed_at: Option<DateTime<Utc>>,
}

async fn lookup(pool: &PgPool, track_id: &str) -> Result<Option<StoredMedia>, ApiError> {
    let row: Option<(String, String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT media_sha256, media_content_type, media_bytes, removed_at \
           FROM read_model.tracks WHERE track_id = $1",
    )
    .bind(track_id)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(sha256, content_type, bytes, removed_at)| StoredMedia {
            file: MediaFile {
                sha256,
                content_type,
                bytes: bytes.max(0) as u64,
            },
            removed_at,
        }),
    )
}

async fn serve(
    app: &AppState,
    track_id: &str,
    headers: &HeaderMap,
    _now: DateTime<Utc>,
) -> Result<Response, ApiError> {
    let not_found =
        || ApiError::not_found("No audio for this track").with_detail("track_id", track_id);
    let media = match lookup(&app.pool, track_id).await? {
        Some(m) if m.removed_at.is_none() => m,
        _ => return Err(not_found()),
    };
    let path: PathBuf = match media.file.relative_path() {
        Some(relative) => app.media_dir.join(relative),
        None => return Err(not_found()),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, track_id, "a track's audio file is missing from MEDIA_DIR");
            return Err(not_found());
        }
    };
    let len = file.metadata().await.map_err(ApiError::internal)?.len();

    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, end) = match range {
        None | Some(RangeRequest::Ignored) => (StatusCode::OK, 0, len),
        Some(RangeRequest::Unsatisfiable) => {
            let mut response = ApiError::range_not_satisfiable(len).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        Some(RangeRequest::Bytes { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(ApiError::internal)?;
    }
    let body = Body::from_stream(ReaderStream::new(file.take(end - start)));
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    let content_type = HeaderValue::from_str(&media.file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Malformed or several ranges: RFC 9110 lets a server answer the whole file instead.
    Ignored,
    Unsatisfiable,
    /// `start..end`, end exclusive.
    Bytes {
        start: u64,
        end: u64,
    },
}

fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if len > 0 => RangeRequest::Bytes {
                start: len.saturating_sub(n),
                end: len,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Ignored,
        },
        // bytes=N-: from N to the end.
        (false, true) => match parse(first) {
            Some(start) if start < len => RangeRequest::Bytes { start, end: len },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Ignored,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Bytes {
                        start,
                        end: last.saturating_add(1).min(len),
                    }
                }
            }
            _ => RangeRequest::Ignored,
        },
        (true, true) => RangeRequest::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes { start: 0, end: 10 });
        assert_eq!(
            parse_range("bytes=90-", 100),
            Bytes {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Bytes {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            parse_range("bytes=50-500", 100),
            Bytes {
                start: 50,
                end: 100
            }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=9-1", 100), Ignored);
    }
}
