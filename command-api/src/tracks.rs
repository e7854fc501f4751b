//! Tracks: import (a multipart upload, measured) and delete.
//!
//! A track's stream is `track-{id}`: `TrackImported`, then perhaps `ContentRemoved`. Import is the
//! only command that takes a file; the file is streamed to disk, measured by decoding it, and
//! moved into the content-addressed media directory before the event is appended, so a track
//! never exists without its audio.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::event::MediaFile;
use events::format::rfc3339;
use events::ids::{OrganizationId, TrackId};
use events::licence::{self, LicenceClass};
use events::{ExpectedVersion, StreamId};
use futures::StreamExt;
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::audio;
use crate::domain::track::{self, Audio, Track, TrackCommand, TrackForm};
use crate::media::TempUpload;
use crate::params::{docs, PathParams, Resource};
use crate::runner::{CommandContext, Decision};

/// A text field of the form larger than this is refused without reading further.
const TEXT_FIELD_MAX_BYTES: usize = 16 * 1024;
/// Room for the form's text fields and boundaries on top of the audio itself.
pub const FORM_OVERHEAD_BYTES: u64 = 256 * 1024;

/// Reads a track's stream.
pub async fn load(state: &AppState, id: &TrackId) -> Result<Option<Track>, ApiError> {
    let history = state.runner.read(&StreamId::track(id)).await?;
    Ok(track::from_history(&history.events))
}

/// The multipart form of `POST /v1/music/{org}/tracks`, for the OpenAPI document only: the form
/// itself is streamed and read field by field ([`read_form`]). Unknown fields are ignored.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TrackUpload {
    /// The audio file: WAV, FLAC, MP3 or OGG/Vorbis. It is decoded to measure its duration;
    /// anything that does not decode is a 422 on `audio`, anything above `MAX_UPLOAD_BYTES` a 413.
    #[schema(value_type = String, format = Binary)]
    audio: Vec<u8>,
    /// 1 to 512 characters, not blank (Unicode `White_Space` only), no NUL.
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    title: String,
    /// The engine key the track was generated with (1 to 64 characters, not blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 64,
        example = "studio",
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    engine: String,
    /// The generation mode (1 to 64 characters, not blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 64,
        example = "creation",
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    mode: String,
    /// `true` or `false`; absent means `false`.
    #[schema(value_type = bool, required = false, default = false)]
    instrumental: Option<bool>,
    /// The licence class; its facts come from the catalogue, never from the client.
    licence_class: LicenceClass,
}

/// The track object of CONTRACT.md.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackObject {
    #[schema(example = "mtrack_b4d9e1c6a72f")]
    pub id: String,
    #[schema(example = "org_acme")]
    pub organization_id: String,
    #[schema(example = "usr_0123456789ab")]
    pub owner_id: String,
    pub title: String,
    pub engine: String,
    pub mode: String,
    /// Measured by decoding the uploaded audio, in seconds (3 decimals).
    #[schema(minimum = 0)]
    pub measured_duration_seconds: f64,
    pub instrumental: bool,
    pub licence: LicenceObject,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Truthful licence facts from the versioned catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct LicenceObject {
    pub licence_class: LicenceClass,
    #[schema(example = "2026-01")]
    pub licence_version: String,
    pub commercial_use: bool,
    pub requires_attribution: bool,
}

/// Import a track: upload its audio and facts; the duration is measured from the audio.
//
// Authentication and the path are checked by hand rather than by extractors, so that a refused
// upload can still read (and discard) the body it refuses: a server that answers early and
// closes a connection the client is still writing to makes most clients lose the answer.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/tracks",
    operation_id = "import_track",
    tag = "tracks",
    params(docs::Org),
    request_body(content = TrackUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "The track, measured.", body = TrackObject),
        (status = 400, description = "Not a `multipart/form-data` body with a boundary, or a malformed one.", body = ErrorEnvelope),
        (status = 413, description = "The audio is larger than `MAX_UPLOAD_BYTES`.", body = ErrorEnvelope),
        (status = 422, description = "A field is missing or wrong (audio that does not decode included); `details` names each.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn import(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let limit = state.settings.max_upload_bytes;
    let body_limit = limit.saturating_add(FORM_OVERHEAD_BYTES);
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let admitted = async {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        let PathParams(org) = PathParams::<String>::from_request_parts(&mut parts, &state).await?;
        let org = caller.member_of(&org)?;
        if !is_multipart(&parts.headers) {
            return Err(ApiError::bad_request(
                "Expected a multipart/form-data body with a boundary",
            ));
        }
        Ok((caller, org))
    }
    .await;
    if declared.is_some_and(|n| n > body_limit) {
        // Far too large to read just to refuse it; clients that send `Expect: 100-continue`
        // get this answer before sending the body.
        return admitted
            .err()
            .unwrap_or_else(|| ApiError::payload_too_large(limit))
            .into_response();
    }
    let (caller, org) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => {
            discard_body(body, body_limit).await;
            return refused.into_response();
        }
    };
    let request = Request::from_parts(parts, body);
    let mut multipart = match Multipart::from_request(request, &state).await {
        Ok(multipart) => multipart,
        Err(_) => {
            return ApiError::bad_request("Expected a multipart/form-data body with a boundary")
                .into_response()
        }
    };
    let form = match read_form(&mut multipart, &state).await {
        Ok(form) => form,
        Err(refused) => {
            discard_fields(&mut multipart).await;
            return refused.into_response();
        }
    };
    import_form(&state, &caller, org, form)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// How long a refused upload may take to send the rest of its body.
const DISCARD_FOR: Duration = Duration::from_secs(30);

fn is_multipart(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
        .is_some_and(|v| v.starts_with("multipart/form-data") && v.contains("boundary="))
}

/// Reads and drops up to `limit` bytes of a body nobody will use.
async fn discard_body(body: Body, limit: u64) {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// Reads and drops what is left of a refused form (bounded by the route's body limit).
async fn discard_fields(multipart: &mut Multipart) {
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    })
    .await;
}

/// Measures the audio, decides, stores the audio and appends `TrackImported`.
async fn import_form(
    state: &AppState,
    caller: &Caller,
    org: OrganizationId,
    mut form: Form,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(caller);
    let decider = ctx.decider();
    let audio = match &mut form.audio {
        None => Audio::Missing,
        Some(upload) => measure(upload).await?,
    };
    let import = |track_id| TrackCommand::Import {
        org: org.clone(),
        track_id,
        form: form.text.clone(),
        audio: audio.clone(),
    };
    // Decided once before the audio is kept: a refused import leaves no file.
    track::decide(&None, import(TrackId::generate()), &decider)?;
    if let (Audio::Measured { media, .. }, Some(upload)) = (&audio, form.audio) {
        let relative = media
            .relative_path()
            .ok_or_else(|| ApiError::internal("a SHA-256 that is not 64 hex"))?;
        upload
            .persist(&state.settings.media_dir.join(relative))
            .await
            .map_err(ApiError::internal)?;
    }
    let (import, ctx_ref, decider) = (&import, &ctx, &decider);
    let track = state
        .runner
        .new_stream(&ctx, move || async move {
            // A fresh id per attempt: the only conflict a new stream can meet is a collision.
            let track_id = TrackId::generate();
            let stream = StreamId::track(&track_id);
            let events = track::decide(&None, import(track_id), decider)?;
            let track = track::from_history(&ctx_ref.recorded(&events))
                .ok_or_else(|| ApiError::internal("an import decided without TrackImported"))?;
            Ok(Decision {
                stream,
                expected: ExpectedVersion::NoStream,
                events,
                claim: None,
                answer: track,
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(track_view(&track)?)).into_response())
}

/// Decodes the received audio on a blocking thread and measures it.
async fn measure(upload: &mut TempUpload) -> Result<Audio, ApiError> {
    let sha256 = upload.finish().await.map_err(ApiError::internal)?;
    let path = upload.path().to_owned();
    // The decoder runs on a blocking thread; keep it in the request's span so what it logs
    // carries the request id.
    let span = tracing::Span::current();
    let measured = tokio::task::spawn_blocking(move || span.in_scope(|| audio::measure(&path)))
        .await
        .unwrap_or_else(|panic| {
            tracing::warn!(error = %panic, "the audio decoder panicked");
            Err(audio::NotAudio("could not be decoded".to_owned()))
        });
    Ok(match measured {
        Ok(measured) => Audio::Measured {
            duration_ms: measured.duration_ms,
            media: MediaFile {
                sha256,
                content_type: measured.content_type.to_owned(),
                bytes: upload.bytes(),
            },
        },
        Err(why) => Audio::Refused(why.0),
    })
}

/// The track object of CONTRACT.md.
pub fn track_view(track: &Track) -> Result<TrackObject, ApiError> {
    let t = &track.imported;
    let facts = licence::facts(t.licence_class, &t.licence_version)
        .ok_or_else(|| ApiError::internal("a licence version this build does not know"))?;
    Ok(TrackObject {
        id: t.track_id.to_string(),
        organization_id: t.organization_id.to_string(),
        owner_id: t.owner_id.to_string(),
        title: t.title.clone(),
        engine: t.engine.clone(),
        mode: t.mode.clone(),
        measured_duration_seconds: t.measured_duration_ms as f64 / 1000.0,
        instrumental: t.instrumental,
        licence: LicenceObject {
            licence_class: facts.licence_class,
            licence_version: facts.licence_version,
            commercial_use: facts.commercial_use,
            requires_attribution: facts.requires_attribution,
        },
        created_at: rfc3339(track.created_at),
    })
}

/// Delete a track: only its creator; another member of the organization gets a 403 (as the
/// source docs say), anyone else a 404. Its shares stay and resolve as unavailable.
#[utoipa::path(
    delete,
    path = "/v1/music/{org}/tracks/{track_id}",
    operation_id = "delete_track",
    tag = "tracks",
    params(docs::Org, docs::Track),
    responses(
        (status = 200, description = "Deleted (`detail`: \"Track deleted.\").", body = Ack),
        (status = 403, description = "A member of the organization, but not the track's creator.", body = ErrorEnvelope),
        (status = 404, description = "No such live track in an organization of the caller.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the track kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    Resource { caller, org, id }: Resource<TrackId>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let (decider, command) = (
        ctx.decider(),
        TrackCommand::Remove {
            org,
            track_id: id.clone(),
        },
    );
    state
        .runner
        .on_stream(&ctx, &StreamId::track(&id), |history| {
            let track = track::from_history(&history.events);
            Ok((track::decide(&track, command.clone(), &decider)?, ()))
        })
        .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Track deleted."))
}

/// The form as received: its text fields, and the audio on disk.
#[derive(Default)]
struct Form {
    text: TrackForm,
    audio: Option<TempUpload>,
}

async fn read_form(multipart: &mut Multipart, state: &AppState) -> Result<Form, ApiError> {
    let limit = state.settings.max_upload_bytes;
    let mut form = Form::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(multipart_error(limit))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "audio" {
            if form.audio.is_some() {
                form.text
                    .problems
                    .push((name, "must be given once".to_owned()));
                continue;
            }
            let mut upload = TempUpload::create(&state.settings.media_dir)
                .await
                .map_err(ApiError::internal)?;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error(limit))? {
                if upload.bytes() + chunk.len() as u64 > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                upload.write(&chunk).await.map_err(ApiError::internal)?;
            }
            form.audio = Some(upload);
            continue;
        }
        let slot = match name.as_str() {
            "title" => &mut form.text.title,
            "engine" => &mut form.text.engine,
            "mode" => &mut form.text.mode,
            "instrumental" => &mut form.text.instrumental,
            "licence_class" => &mut form.text.licence_class,
            // Unknown fields are ignored, like unknown JSON fields; their bytes still count
            // against the body limit.
            _ => {
                while field
                    .chunk()
                    .await
                    .map_err(multipart_error(limit))?
                    .is_some()
                {}
                continue;
            }
        };
        let mut text = Vec::new();
        let mut too_long = false;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error(limit))? {
            if text.len() + chunk.len() > TEXT_FIELD_MAX_BYTES {
                too_long = true;
            } else {
                text.extend_from_slice(&chunk);
            }
        }
        let problem = if slot.is_some() {
            Some("must be given once")
        } else if too_long {
            Some("is too long")
        } else {
            match String::from_utf8(text) {
                Ok(text) => {
                    *slot = Some(text);
                    None
                }
                Err(_) => Some("must be UTF-8 text"),
            }
        };
        if let Some(problem) = problem {
            form.text.problems.push((name, problem.to_owned()));
        }
    }
    Ok(form)
}

fn multipart_error(limit: u64) -> impl Fn(axum::extract::multipart::MultipartError) -> ApiError {
    move |e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(limit)
        } else if service_kit::connection::is_body_timeout(&e) {
            service_kit::connection::body_timeout_error()
        } else {
            ApiError::bad_request("The multipart body is malformed or ended early")
        }
    }
}
