//! What the command API tests share: the command API alone on a fresh database (no projector, so
//! no command waits for one), API keys, and small request helpers that keep each test about the
//! behaviour it checks.

#![allow(dead_code)] // each test file uses a different part

use std::path::PathBuf;

use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tests::db::TestDb;
use tests::process::{Bin, Service, ServiceEnv};

pub struct Api {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub env: ServiceEnv,
    pub service: Service,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut ServiceEnv)) -> Api {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = ServiceEnv::new(&db, &tests::nats::shared_url(), dir.path());
        customize(&mut env);
        let service = Service::start(Bin::CommandApi, &env, &dir.path().join("logs"), &[]).await;
        Api {
            db,
            dir,
            env,
            service,
            http: reqwest::Client::new(),
        }
    }

    /// Another command API process on the same database.
    pub async fn start_another(&self) -> Service {
        Service::start(
            Bin::CommandApi,
            &self.env,
            &self.dir.path().join("logs"),
            &[],
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    pub async fn key(&self, user: &str, orgs: &[&str]) -> String {
        tests::stack::create_api_key(&self.env, user, orgs).await
    }

    pub fn media_dir(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// Every log line written so far by every process of this test.
    pub fn all_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            for entry in entries.flatten() {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    /// A small pool on the test database, to observe what the service wrote.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db.url)
            .await
            .expect("connect to the test database")
    }

    /// `(event_type, payload, trace_id, actor)` of every event of `stream`, in order.
    pub async fn events(&self, stream: &str) -> Vec<(String, Value, String, String)> {
        let pool = self.pool().await;
        let rows: Vec<(String, Value, String, String)> = sqlx::query_as(
            "SELECT event_type, payload, trace_id, actor FROM event_store.events \
             WHERE stream_id = $1 ORDER BY stream_version",
        )
        .bind(stream)
        .fetch_all(&pool)
        .await
        .expect("read events");
        pool.close().await;
        rows
    }

    pub async fn upload(&self, key: &str, org: &str, form: TrackForm) -> Response {
        self.http
            .post(self.url(&format!("/v1/music/{org}/tracks")))
            .header("x-api-key", key)
            .multipart(form.into_multipart())
            .send()
            .await
            .expect("upload")
    }

    /// A track (a short WAV) created by `key`'s user; returns its id.
    pub async fn track(&self, key: &str, org: &str) -> String {
        let response = self.upload(key, org, TrackForm::valid()).await;
        let body = expect_json(response, StatusCode::CREATED).await;
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

    pub async fn post_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_empty(&self, key: &str, path: &str) -> Response {
        self.http
            .post(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.http
            .patch(self.url(path))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, key: &str, path: &str) -> Response {
        self.http
            .delete(self.url(path))
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
    pub fn valid() -> TrackForm {
        TrackForm {
            fields: vec![
                ("title".into(), "Late Night Study".into()),
                ("engine".into(), "studio".into()),
                ("mode".into(), "creation".into()),
                ("instrumental".into(), "true".into()),
                ("licence_class".into(), "personal_only".into()),
            ],
            audio: Some((tests::audio::wav_tone_ms(250), "tone.wav".into())),
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
