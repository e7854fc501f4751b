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
use chrono::{DateTime, Utc};
use events::event::{ContentRemoved, MediaFile, TargetType, TrackImported};
use events::ids::{OrganizationId, TrackId};
use events::licence::{self, LicenceClass};
use events::{ExpectedVersion, MusicEvent, StreamId};
use futures::StreamExt;
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::audio;
use crate::decide::{self, rfc3339, Attempt, CommandContext, History};
use crate::media::TempUpload;
use crate::params::{docs, not_found, path_id, PathParams};
use crate::text;

pub const TITLE_MAX_CHARS: usize = 512;
/// `engine` and `mode` are short keys (`studio`, `creation`).
pub const KEY_MAX_CHARS: usize = 64;
/// A text field of the form larger than this is refused without reading further.
const TEXT_FIELD_MAX_BYTES: usize = 16 * 1024;
/// Room for the form's text fields and boundaries on top of the audio itself.
pub const FORM_OVERHEAD_BYTES: u64 = 256 * 1024;

/// A track as decided from its stream.
#[derive(Clone, Debug)]
pub struct Track {
    pub imported: TrackImported,
    pub created_at: DateTime<Utc>,
    pub removed: bool,
}

impl Track {
    /// Folds a track stream; `None` if it holds no `TrackImported`.
    pub fn from_history(history: &History) -> Option<Track> {
        let mut track: Option<Track> = None;
        for recorded in &history.events {
            match &recorded.event {
                MusicEvent::TrackImported(imported) => {
                    track = Some(Track {
                        imported: imported.clone(),
                        created_at: recorded.occurred_at,
                        removed: false,
                    })
                }
                MusicEvent::ContentRemoved(_) => {
                    if let Some(track) = &mut track {
                        track.removed = true;
                    }
                }
                _ => {}
            }
        }
        track
    }

    /// Live and in `org`: what every command that points at a track requires.
    pub fn is_live_in(&self, org: &OrganizationId) -> bool {
        !self.removed && &self.imported.organization_id == org
    }
}

/// Reads a track's stream.
pub async fn load(state: &AppState, id: &TrackId) -> Result<(Option<Track>, History), ApiError> {
    let history = decide::read(state.store.as_ref(), &StreamId::track(id)).await?;
    Ok((Track::from_history(&history), history))
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
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 404, description = "The caller is not a member of the organization.", body = ErrorEnvelope),
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

/// Validates the received form, measures the audio, stores it and appends `TrackImported`.
async fn import_form(
    state: &AppState,
    caller: &Caller,
    org: OrganizationId,
    form: Form,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(caller);
    let (fields, mut upload) = form.validate();
    let mut problems = fields.as_ref().err().cloned().unwrap_or_default();

    let measured = match &mut upload {
        Some(upload) => {
            let sha256 = upload.finish().await.map_err(ApiError::internal)?;
            let path = upload.path().to_owned();
            // The decoder runs on a blocking thread; keep it in the request's span so what it
            // logs carries the request id.
            let span = tracing::Span::current();
            let measured =
                tokio::task::spawn_blocking(move || span.in_scope(|| audio::measure(&path)))
                    .await
                    .unwrap_or_else(|panic| {
                        tracing::warn!(error = %panic, "the audio decoder panicked");
                        Err(audio::NotAudio("could not be decoded".to_owned()))
                    });
            match measured {
                Ok(measured) => Some((measured, sha256, upload.bytes())),
                Err(why) => {
                    problems.push(("audio".to_owned(), why.0));
                    None
                }
            }
        }
        None => {
            problems.push(("audio".to_owned(), "is required (an audio file)".to_owned()));
            None
        }
    };
    let (Ok(fields), Some((measured, sha256, bytes)), Some(upload)) = (fields, measured, upload)
    else {
        problems.sort();
        return Err(ApiError::validation(problems));
    };

    let media = MediaFile {
        sha256,
        content_type: measured.content_type.to_owned(),
        bytes,
    };
    let relative = media
        .relative_path()
        .ok_or_else(|| ApiError::internal("a SHA-256 that is not 64 hex"))?;
    upload
        .persist(&state.settings.media_dir.join(relative))
        .await
        .map_err(ApiError::internal)?;

    let (ctx, org, fields, media) = (&ctx, &org, &fields, &media);
    let duration_ms = measured.duration_ms;
    let imported = decide::new_stream(state, ctx, move || async move {
        // A fresh id per attempt: the only conflict a new stream can meet is an id collision.
        let imported = TrackImported {
            track_id: TrackId::generate(),
            organization_id: org.clone(),
            owner_id: ctx.actor.clone(),
            title: fields.title.clone(),
            engine: fields.engine.clone(),
            mode: fields.mode.clone(),
            instrumental: fields.instrumental,
            licence_class: fields.licence_class,
            licence_version: licence::CURRENT_VERSION.to_owned(),
            measured_duration_ms: duration_ms,
            media: media.clone(),
        };
        let stream = StreamId::track(&imported.track_id);
        let event = MusicEvent::TrackImported(imported.clone());
        decide::append(state, ctx, &stream, ExpectedVersion::NoStream, &[event]).await?;
        Ok(imported)
    })
    .await?;
    let track = Track {
        imported,
        created_at: ctx.now(),
        removed: false,
    };
    Ok((StatusCode::CREATED, Json(track_view(&track)?)).into_response())
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
        (status = 401, description = "No API key, or an unknown one.", body = ErrorEnvelope),
        (status = 403, description = "A member of the organization, but not the track's creator.", body = ErrorEnvelope),
        (status = 404, description = "No such live track in an organization of the caller.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the track kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, track_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("track_id", &track_id, TrackId::parse)?;
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id) = (&state, &ctx, &org, &id);
    let stream = &StreamId::track(id);
    decide::on_stream(state, ctx, stream, move || async move {
        let (track, history) = load(state, id).await?;
        let track = track
            .filter(|t| t.is_live_in(org))
            .ok_or_else(|| not_found("track_id", id.as_str()))?;
        if track.imported.owner_id != ctx.actor {
            return Err(
                ApiError::forbidden("Only the track's creator may delete it")
                    .with_detail("track_id", id.as_str())
                    .into(),
            );
        }
        let removed = MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Track,
            target_id: id.to_string(),
            organization_id: org.clone(),
        });
        decide::append(state, ctx, stream, history.expected(), &[removed]).await?;
        Ok::<_, Attempt>(())
    })
    .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Track deleted."))
}

/// Field name and why it is wrong, for a 422's `details`.
type Problems = Vec<(String, String)>;

/// The form as received: text fields as sent, the audio on disk, and what was already wrong.
#[derive(Default)]
struct Form {
    title: Option<String>,
    engine: Option<String>,
    mode: Option<String>,
    instrumental: Option<String>,
    licence_class: Option<String>,
    audio: Option<TempUpload>,
    problems: Vec<(String, String)>,
}

/// The text fields, valid.
struct TrackFields {
    title: String,
    engine: String,
    mode: String,
    instrumental: bool,
    licence_class: LicenceClass,
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
                form.problems.push((name, "must be given once".to_owned()));
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
            "title" => &mut form.title,
            "engine" => &mut form.engine,
            "mode" => &mut form.mode,
            "instrumental" => &mut form.instrumental,
            "licence_class" => &mut form.licence_class,
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
            form.problems.push((name, problem.to_owned()));
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

impl Form {
    /// The valid text fields, or every problem found (the audio is checked by the caller).
    fn validate(self) -> (Result<TrackFields, Problems>, Option<TempUpload>) {
        let mut problems = self.problems;
        let mut problem = |field: &str, why: &str| {
            if !problems.iter().any(|(f, _)| f == field) {
                problems.push((field.to_owned(), why.to_owned()));
            }
        };
        let title = match self.title {
            None => {
                problem("title", "is required");
                None
            }
            Some(t) => match text::non_blank_problem(&t, TITLE_MAX_CHARS) {
                Some(why) => {
                    problem("title", &why);
                    None
                }
                None => Some(t),
            },
        };
        let mut key = |field: &str, value: Option<String>| match value {
            None => {
                problem(field, "is required");
                None
            }
            Some(v) => match text::non_blank_problem(&v, KEY_MAX_CHARS) {
                Some(why) => {
                    problem(field, &why);
                    None
                }
                None => Some(v),
            },
        };
        let engine = key("engine", self.engine);
        let mode = key("mode", self.mode);
        let instrumental = match self.instrumental.as_deref().map(str::trim) {
            None => Some(false),
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                problem("instrumental", "must be true or false");
                None
            }
        };
        let licence_class = match self.licence_class.as_deref() {
            None => {
                problem("licence_class", "is required");
                None
            }
            Some(raw) => LicenceClass::parse(raw.trim()).or_else(|| {
                let known: Vec<_> = LicenceClass::ALL.iter().map(|c| c.as_str()).collect();
                problem(
                    "licence_class",
                    &format!("must be one of {}", known.join(", ")),
                );
                None
            }),
        };
        let fields = match (title, engine, mode, instrumental, licence_class) {
            (Some(title), Some(engine), Some(mode), Some(instrumental), Some(licence_class))
                if problems.is_empty() =>
            {
                Ok(TrackFields {
                    title,
                    engine,
                    mode,
                    instrumental,
                    licence_class,
                })
            }
            _ => Err(problems),
        };
        (fields, self.audio)
    }
}
