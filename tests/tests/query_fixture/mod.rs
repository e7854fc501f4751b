//! Shared by the `query_*` tests: a database, query-API instances, and read-model rows written
//! directly (the projector is the only writer of `read_model` in production; a test fixture
//! writes rows to exercise the query side's reads on its own).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use events::share_token::{ShareToken, TokenHash};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tests::db::TestDb;
use tests::process::{Bin, Service, ServiceEnv};

pub struct QueryEnv {
    pub db: TestDb,
    pub pool: PgPool,
    pub dir: tempfile::TempDir,
    pub env: ServiceEnv,
    pub http: reqwest::Client,
}

pub const SIGNING_KEYS: &str =
    "k2:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f,\
     k1:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

impl QueryEnv {
    pub async fn new(nats_url: &str) -> QueryEnv {
        QueryEnv::new_on(TestDb::new().await, nats_url).await
    }

    /// The same on `db`, which may live on a private server (for outage tests).
    pub async fn new_on(db: TestDb, nats_url: &str) -> QueryEnv {
        let pool = migrations::prepare(&db.url, 4).await.expect("migrate");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = ServiceEnv::new(&db, nats_url, dir.path());
        env.set("PLAYBACK_SIGNING_KEYS", SIGNING_KEYS);
        env.set("MEDIA_BASE_URL", "http://media.test");
        QueryEnv {
            db,
            pool,
            dir,
            env,
            http: reqwest::Client::new(),
        }
    }

    pub fn media_dir(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    pub async fn start_query(&self, extra: &[(&str, &str)]) -> Service {
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.set(k, *v);
        }
        Service::start(Bin::QueryApi, &env, &self.dir.path().join("logs"), &[]).await
    }

    /// A track row (and its audio file under MEDIA_DIR); returns its id.
    pub async fn track(&self, title: &str, audio: &[u8]) -> String {
        let id = events::ids::TrackId::generate().as_str().to_owned();
        let sha = hex::encode(Sha256::digest(audio));
        let path = self.media_dir().join(&sha[..2]).join(&sha);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("media dir");
        std::fs::write(&path, audio).expect("write media");
        sqlx::query(
            "INSERT INTO read_model.tracks (track_id, organization_id, owner_id, title, engine, \
               mode, measured_duration_ms, instrumental, licence_class, licence_version, \
               commercial_use, requires_attribution, media_sha256, media_content_type, \
               media_bytes, created_at) \
             VALUES ($1, 'org_acme', 'usr_0000000000a1', $2, 'studio', 'creation', 120400, true, \
               'commercial_enterprise', '2026-01', true, true, $3, 'audio/wav', $4, now())",
        )
        .bind(&id)
        .bind(title)
        .bind(&sha)
        .bind(audio.len() as i64)
        .execute(&self.pool)
        .await
        .expect("insert track");
        id
    }

    pub async fn collection(&self, name: &str, tracks: &[&str]) -> String {
        let id = events::ids::CollectionId::generate().as_str().to_owned();
        sqlx::query(
            "INSERT INTO read_model.collections (collection_id, organization_id, owner_id, name, \
               description, created_at, updated_at) \
             VALUES ($1, 'org_acme', 'usr_0000000000a1', $2, 'Songs for later', now(), now())",
        )
        .bind(&id)
        .bind(name)
        .execute(&self.pool)
        .await
        .expect("insert collection");
        for (position, track) in tracks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO read_model.collection_tracks (collection_id, position, track_id) \
                 VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(position as i32)
            .bind(track)
            .execute(&self.pool)
            .await
            .expect("insert collection track");
        }
        id
    }

    /// A collection "Evening" holding `Last`, `Removed`, `First` in the owner's order, the
    /// middle one removed by its creator, shared `public`. Returns the raw token, the
    /// collection's id and the live tracks' ids in the owner's order (`Last`, `First`).
    pub async fn public_collection_with_a_removed_track(&self) -> (String, String, [String; 2]) {
        let first = self.track("First", &audio_bytes(10)).await;
        let gone = self.track("Removed", &audio_bytes(11)).await;
        let last = self.track("Last", &audio_bytes(12)).await;
        sqlx::query("UPDATE read_model.tracks SET removed_at = now() WHERE track_id = $1")
            .bind(&gone)
            .execute(&self.pool)
            .await
            .expect("remove");
        let collection = self.collection("Evening", &[&last, &gone, &first]).await;
        let (token, _) = self
            .share(
                "collection",
                &collection,
                ShareOpts {
                    visibility: Some("public"),
                    ..ShareOpts::default()
                },
            )
            .await;
        (token, collection, [last, first])
    }

    /// A share row for `target`; returns (raw token, share id).
    pub async fn share(
        &self,
        target_type: &str,
        target_id: &str,
        opts: ShareOpts,
    ) -> (String, String) {
        let token = ShareToken::generate();
        let share_id = events::ids::ShareLinkId::generate().as_str().to_owned();
        sqlx::query(
            "INSERT INTO read_model.share_links (token_hash, share_id, target_type, target_id, \
               organization_id, owner_id, visibility, expires_at, max_views, created_at, \
               revoked_at) \
             VALUES ($1, $2, $3, $4, 'org_acme', $5, $6, $7, $8, coalesce($9, now()), $10)",
        )
        .bind(token.hash().as_str())
        .bind(&share_id)
        .bind(target_type)
        .bind(target_id)
        .bind(opts.owner.unwrap_or("usr_0000000000a1"))
        .bind(opts.visibility.unwrap_or("link_only"))
        .bind(opts.expires_at)
        .bind(opts.max_views)
        .bind(opts.created_at)
        .bind(opts.revoked_at)
        .execute(&self.pool)
        .await
        .expect("insert share");
        (token.expose().to_owned(), share_id)
    }

    pub async fn get(&self, service: &Service, path: &str) -> reqwest::Response {
        self.http
            .get(service.url(path))
            .send()
            .await
            .expect("request")
    }

    /// The resolve's status and JSON body.
    pub async fn resolve(&self, service: &Service, token: &str) -> (u16, Value) {
        let response = self
            .get(service, &format!("/v1/music/shared/{token}"))
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// An API key for `user` in `org`, written straight into the identity tables.
    pub async fn api_key(&self, user: &str, org: &str) -> String {
        let raw = format!("msk_{}", hex::encode(rand::random::<[u8; 20]>()));
        let hash = hex::encode(Sha256::digest(raw.as_bytes()));
        for sql in [
            "INSERT INTO identity.organizations (organization_id) VALUES ($1) ON CONFLICT DO NOTHING",
        ] {
            sqlx::query(sql).bind(org).execute(&self.pool).await.expect("org");
        }
        sqlx::query("INSERT INTO identity.users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user)
            .execute(&self.pool)
            .await
            .expect("user");
        sqlx::query(
            "INSERT INTO identity.memberships (organization_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org)
        .bind(user)
        .execute(&self.pool)
        .await
        .expect("membership");
        sqlx::query("INSERT INTO identity.api_keys (key_hash, user_id) VALUES ($1, $2)")
            .bind(&hash)
            .bind(user)
            .execute(&self.pool)
            .await
            .expect("key");
        raw
    }
}

#[derive(Default, Clone, Copy)]
pub struct ShareOpts {
    pub owner: Option<&'static str>,
    pub visibility: Option<&'static str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_views: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub fn hash_of(token: &str) -> String {
    TokenHash::of(token).as_str().to_owned()
}

/// Query parameters of a URL, by name.
pub fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_owned()
}

/// The path and query of a playback URL (its host is MEDIA_BASE_URL, not the test server).
pub fn path_and_query(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/')
        .map(|i| rest[i..].to_owned())
        .unwrap_or_default()
}

pub fn audio_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

// Through the real command API (for the end-to-end tests and the latency benchmark).

pub const ORG: &str = "org_e2e_music";
pub const USER: &str = "usr_0000000000e1";

/// One second of silence as 16-bit mono PCM WAV.
pub fn wav() -> Vec<u8> {
    let rate = 8000u32;
    let data = vec![0u8; rate as usize * 2];
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Uploads one second of silence as a track; returns its id.
pub async fn upload_via_api(stack: &tests::stack::Stack, key: &str) -> String {
    let track = upload_audio_via_api(stack, key, "End to end", wav()).await;
    track["id"].as_str().expect("id").to_owned()
}

/// Uploads `audio` (a WAV) as an instrumental, personal-use track titled `title`; returns the
/// track object.
pub async fn upload_audio_via_api(
    stack: &tests::stack::Stack,
    key: &str,
    title: &str,
    audio: Vec<u8>,
) -> Value {
    let form = reqwest::multipart::Form::new()
        .part(
            "audio",
            reqwest::multipart::Part::bytes(audio)
                .file_name("track.wav")
                .mime_str("audio/wav")
                .expect("mime"),
        )
        .text("title", title.to_owned())
        .text("engine", "studio")
        .text("mode", "creation")
        .text("instrumental", "true")
        .text("licence_class", "personal_only");
    let response = stack
        .http
        .post(stack.command.url(&format!("/v1/music/{ORG}/tracks")))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.expect("track")
}

pub async fn share_via_api(
    stack: &tests::stack::Stack,
    key: &str,
    path: &str,
    body: Value,
) -> Value {
    let response = stack
        .http
        .post(stack.command.url(&format!("/v1/music/{ORG}/{path}/share")))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .expect("share");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.expect("share link")
}
