//! One test's world, and the one way to start it: [`TestApp::builder`].
//!
//! A `TestApp` is a fresh database (migrated), a private directory for media, audit spools and
//! logs, the environment the real binaries run with, and an HTTP client. Which processes run is
//! the test's choice, made once on the builder:
//!
//! - [`AppBuilder::stack`]: all three services ([`crate::stack::Stack`]);
//! - [`AppBuilder::command_api`]: the command API alone ([`crate::command::CommandApi`]);
//! - [`AppBuilder::read_side`]: the projector, with query API instances started by the test
//!   ([`crate::query::QueryEnv`]);
//! - [`AppBuilder::build`]: none yet; [`TestApp::spawn`] starts any of them, and `Stack::on`,
//!   `CommandApi::on` or `QueryEnv::on` start those shapes on an app whose environment the test
//!   adjusted in code.
//!
//! State is seeded the way production makes it: through the command API, or by appending
//! events to the store ([`TestApp::append`]) and letting the real projector project them. No
//! fixture writes the projector's tables.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::store::postgres::PostgresEventStore;
use events::{EventStore, MusicEvent, Position};
use serde_json::Value;
use sqlx::PgPool;

use crate::db::TestDb;
use crate::process::{Bin, Service, ServiceEnv};

/// How long a seed may take to reach the read models before the test fails.
const PROJECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`TestApp`]: where its database and NATS are, and the environment its processes get.
#[must_use]
pub struct AppBuilder {
    db: Option<TestDb>,
    nats_url: Option<String>,
    vars: Vec<(String, String)>,
}

impl AppBuilder {
    /// NATS at `url` (a [`crate::nats::PrivateNats`] for tests that stop it); the shared server
    /// otherwise.
    pub fn nats(mut self, url: &str) -> Self {
        self.nats_url = Some(url.to_owned());
        self
    }

    /// This database (say, on a [`crate::postgres::PrivatePostgres`]) instead of a fresh one on
    /// the shared server.
    pub fn database(mut self, db: TestDb) -> Self {
        self.db = Some(db);
        self
    }

    /// One environment variable for every process this app starts.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.push((key.to_owned(), value.into()));
        self
    }

    /// The world, with no process started yet.
    pub async fn build(self) -> TestApp {
        let db = match self.db {
            Some(db) => db,
            None => TestDb::new().await,
        };
        // Migrated here, once, so processes started side by side never race to migrate.
        let pool = migrations::prepare(&db.url, 4)
            .await
            .expect("migrate the test database");
        let dir = tempfile::tempdir().expect("temp dir");
        let nats_url = self.nats_url.unwrap_or_else(crate::nats::shared_url);
        let mut env = ServiceEnv::new(&db, &nats_url, dir.path());
        for (key, value) in self.vars {
            env.set(&key, value);
        }
        let store: Arc<dyn EventStore> = Arc::new(PostgresEventStore::new(pool.clone()));
        TestApp {
            db,
            pool,
            store,
            dir,
            env,
            http: reqwest::Client::new(),
        }
    }

    /// The whole system: projector, command API and query API.
    pub async fn stack(self) -> crate::stack::Stack {
        crate::stack::Stack::on(self.build().await).await
    }

    /// The command API alone (no projector, so no command waits for one).
    pub async fn command_api(self) -> crate::command::CommandApi {
        crate::command::CommandApi::on(self.build().await).await
    }

    /// The projector running, query API instances started by the test.
    pub async fn read_side(self) -> crate::query::QueryEnv {
        crate::query::QueryEnv::on(self.build().await).await
    }
}

/// One test's database, directory, environment and HTTP client; see the module docs.
pub struct TestApp {
    pub db: TestDb,
    /// A migrated pool on [`TestApp::db`], to append fixtures and observe what processes wrote.
    pub pool: PgPool,
    /// The event store on that database (PostgreSQL, as the services use it by default), to
    /// append fixtures the way the command API does.
    pub store: Arc<dyn EventStore>,
    pub dir: tempfile::TempDir,
    pub env: ServiceEnv,
    pub http: reqwest::Client,
}

impl TestApp {
    pub fn builder() -> AppBuilder {
        AppBuilder {
            db: None,
            nats_url: None,
            vars: Vec::new(),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// `MEDIA_DIR` of every process of this app.
    pub fn media_dir(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// Starts one more process of `bin` on this app's database, waiting until it listens.
    pub async fn spawn(&self, bin: Bin) -> Service {
        Service::start(bin, &self.env, &self.logs_dir(), &[]).await
    }

    /// The same, with `extra` variables for this process only.
    pub async fn spawn_with(&self, bin: Bin, extra: &[(&str, &str)]) -> Service {
        let mut env = self.env.clone();
        for (key, value) in extra {
            env.set(key, *value);
        }
        Service::start(bin, &env, &self.logs_dir(), &[]).await
    }

    /// A fresh API key for `user` in `orgs` (created if missing), via `command-api admin
    /// create-key`, the way an operator makes one.
    pub async fn api_key(&self, user: &str, orgs: &[&str]) -> String {
        crate::stack::create_api_key(&self.env, user, orgs).await
    }

    /// Every log line every process of this app has written so far.
    pub fn all_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.logs_dir()) {
            for entry in entries.flatten() {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    /// Appends one domain event to its stream, as if it had happened at `occurred_at`; returns
    /// its position. Nothing waits for the projector: see [`TestApp::wait_projected`].
    pub async fn append(
        &self,
        event: impl Into<MusicEvent>,
        occurred_at: DateTime<Utc>,
    ) -> Position {
        crate::log::append(self.store.as_ref(), event, occurred_at)
            .await
            .last_position
    }

    /// Waits until the running projector has applied the log up to `position`.
    pub async fn wait_projected(&self, position: Position) {
        crate::read_model::wait_for_checkpoint(&self.pool, position, PROJECTION_TIMEOUT).await;
    }

    /// `(event_type, payload, trace_id, actor)` of every event of `stream`, in order.
    pub async fn events(&self, stream: &str) -> Vec<(String, Value, String, String)> {
        sqlx::query_as(
            "SELECT event_type, payload, trace_id, actor FROM event_store.events \
             WHERE stream_id = $1 ORDER BY stream_version",
        )
        .bind(stream)
        .fetch_all(&self.pool)
        .await
        .expect("read events")
    }

    /// A resolve on `service`: its status and JSON body.
    pub async fn resolve(&self, service: &Service, token: &str) -> (u16, Value) {
        let response = self
            .get(service, &format!("/v1/music/shared/{token}"))
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// A plain `GET` of `path` on `service`.
    pub async fn get(&self, service: &Service, path: &str) -> reqwest::Response {
        self.http
            .get(service.url(path))
            .send()
            .await
            .expect("request")
    }
}
