//! The command API started alone on a fresh database ([`CommandApi`]), typed calls to any
//! running command API ([`CommandCalls`]), and the checks every command test makes of an answer
//! (the contract's envelope, whole-second timestamps).
//!
//! Without a projector no command waits for one, so each test is about the command side only.

use std::ops::Deref;
use std::path::PathBuf;

use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::app::TestApp;
use crate::process::{Bin, Service};

/// The command API alone on its own database. Derefs to its [`TestApp`] (database, directory,
/// environment, HTTP client).
pub struct CommandApi {
    app: TestApp,
    pub service: Service,
}

impl Deref for CommandApi {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl CommandApi {
    /// On the shared NATS server, with the default environment.
    pub async fn start() -> CommandApi {
        TestApp::builder().command_api().await
    }

    /// After `customize` has adjusted the environment.
    pub async fn start_with(customize: impl FnOnce(&mut crate::process::ServiceEnv)) -> CommandApi {
        let mut app = TestApp::builder().build().await;
        customize(&mut app.env);
        CommandApi::on(app).await
    }

    /// The command API on `app`.
    pub async fn on(app: TestApp) -> CommandApi {
        let service = app.spawn(Bin::CommandApi).await;
        CommandApi { app, service }
    }

    /// Another command API process on the same database.
    pub async fn start_another(&self) -> Service {
        self.app.spawn(Bin::CommandApi).await
    }

    /// Typed calls to this command API.
    pub fn calls(&self) -> CommandCalls<'_> {
        CommandCalls::new(&self.app.http, &self.service)
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    /// A fresh API key for `user` in `orgs` ([`TestApp::api_key`]).
    pub async fn key(&self, user: &str, orgs: &[&str]) -> String {
        self.app.api_key(user, orgs).await
    }

    pub fn media_dir(&self) -> PathBuf {
        self.app.media_dir()
    }

    /// A small pool of its own on the test database (a test may close it).
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.app.db.url)
            .await
            .expect("connect to the test database")
    }

    // The calls, on this command API ([`CommandCalls`] has their docs).

    pub async fn upload(&self, key: &str, org: &str, form: TrackForm) -> Response {
        self.calls().upload(key, org, form).await
    }

    pub async fn track(&self, key: &str, org: &str) -> String {
        self.calls().track(key, org).await
    }

    pub async fn collection(&self, key: &str, org: &str) -> String {
        self.calls().collection(key, org).await
    }

    pub async fn post_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.calls().post_json(key, path, body).await
    }

    pub async fn post_empty(&self, key: &str, path: &str) -> Response {
        self.calls().post_empty(key, path).await
    }

    pub async fn patch_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.calls().patch_json(key, path, body).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> Response {
        self.calls().delete(key, path).await
    }
}

/// Typed calls to one running command API: raw requests for tests about answers, and
/// `create`-style helpers that assert success and return what was made, for tests that only
/// need the thing to exist.
#[derive(Clone, Copy)]
pub struct CommandCalls<'a> {
    http: &'a reqwest::Client,
    service: &'a Service,
}

impl<'a> CommandCalls<'a> {
    pub fn new(http: &'a reqwest::Client, service: &'a Service) -> Self {
        CommandCalls { http, service }
    }

    pub async fn upload(&self, key: &str, org: &str, form: TrackForm) -> Response {
        self.http
            .post(self.service.url(&format!("/v1/music/{org}/tracks")))
            .header("x-api-key", key)
            .multipart(form.into_multipart())
            .send()
            .await
            .expect("upload")
    }

    /// A track made from `form`; returns the track object.
    pub async fn create_track(&self, key: &str, org: &str, form: TrackForm) -> Value {
        expect_json(self.upload(key, org, form).await, StatusCode::CREATED).await
    }

    /// A track (a short WAV) created by `key`'s user; returns its id.
    pub async fn track(&self, key: &str, org: &str) -> String {
        let body = self.create_track(key, org, TrackForm::valid()).await;
        body["id"].as_str().expect("track id").to_owned()
    }

    /// A collection created by `key`'s user; returns its id.
    pub async fn collection(&self, key: &str, org: &str) -> String {
        let response = self
            .post_json(
                key,
                &format!("/v1/music/{org}/collections"),
                serde_json::json!({"name": "Mix"}),
            )
            .await;
        let body = expect_json(response, StatusCode::CREATED).await;
        body["id"].as_str().expect("collection id").to_owned()
    }

    /// A share link of `target` (`tracks/{id}` or `collections/{id}`) with `body`; returns the
    /// share link object, raw token included.
    pub async fn share(&self, key: &str, org: &str, target: &str, body: Value) -> Value {
        let response = self
            .post_json(key, &format!("/v1/music/{org}/{target}/share"), body)
            .await;
        expect_json(response, StatusCode::CREATED).await
    }

    pub async fn post_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.http
            .post(self.service.url(path))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_empty(&self, key: &str, path: &str) -> Response {
        self.http
            .post(self.service.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.http
            .patch(self.service.url(path))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, key: &str, path: &str) -> Response {
        self.http
            .delete(self.service.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("DELETE")
    }
}

/// A fresh user id.
pub fn new_user() -> String {
    format!("usr_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh organization id.
pub fn new_org() -> String {
    format!("org_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The multipart form of a track upload; [`TrackForm::valid`] then change what a test needs.
#[derive(Clone)]
pub struct TrackForm {
    pub fields: Vec<(String, String)>,
    pub audio: Option<(Vec<u8>, String)>,
}

impl TrackForm {
    /// A short WAV tone, "Late Night Study", instrumental, personal use only.
    pub fn valid() -> TrackForm {
        TrackForm {
            fields: vec![
                ("title".into(), "Late Night Study".into()),
                ("engine".into(), "studio".into()),
                ("mode".into(), "creation".into()),
                ("instrumental".into(), "true".into()),
                ("licence_class".into(), "personal_only".into()),
            ],
            audio: Some((crate::audio::wav_tone_ms(250), "tone.wav".into())),
        }
    }

    pub fn with(mut self, name: &str, value: &str) -> TrackForm {
        self.fields.retain(|(n, _)| n != name);
        self.fields.push((name.into(), value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> TrackForm {
        self.fields.retain(|(n, _)| n != name);
        if name == "audio" {
            self.audio = None;
        }
        self
    }

    pub fn audio(mut self, bytes: Vec<u8>, file_name: &str) -> TrackForm {
        self.audio = Some((bytes, file_name.into()));
        self
    }

    pub fn into_multipart(self) -> Form {
        let mut form = Form::new();
        for (name, value) in self.fields {
            form = form.text(name, value);
        }
        if let Some((bytes, name)) = self.audio {
            form = form.part(
                "audio",
                Part::bytes(bytes)
                    .file_name(name)
                    .mime_str("application/octet-stream")
                    .expect("mime"),
            );
        }
        form
    }
}

/// The JSON body of a response that must have `status`.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks the contract's error envelope (and that `X-Request-Id` is its `trace_id`); returns it.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response carries X-Request-Id");
    let body = expect_json(response, StatusCode::from_u16(status).expect("status")).await;
    let error = &body["error"];
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["status"], status, "{body}");
    assert_eq!(error["trace_id"], request_id.as_str(), "{body}");
    for field in ["message", "system_message", "type", "timestamp"] {
        assert!(error[field].is_string(), "{field} missing: {body}");
    }
    assert!(error["details"].is_object(), "{body}");
    body
}

/// An RFC 3339 timestamp in whole seconds with `Z`.
pub fn assert_timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(
        text.len() == 20 && text.ends_with('Z'),
        "not RFC 3339 in whole seconds with Z: {text}"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&chrono::Utc)
}
