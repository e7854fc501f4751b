//! The whole system for one test: its own database, the three services, a shared or private
//! NATS server, private media and spool directories, and an HTTP client.

use std::path::PathBuf;

use crate::db::TestDb;
use crate::process::{Bin, Service, ServiceEnv};

pub struct Stack {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub env: ServiceEnv,
    pub command: Service,
    pub projector: Service,
    pub query: Service,
    pub http: reqwest::Client,
}

impl Stack {
    /// All three services on the shared NATS server.
    pub async fn start() -> Stack {
        Stack::start_with(&crate::nats::shared_url(), |_| {}).await
    }

    /// All three services on `nats_url`, after `customize` has adjusted their environment.
    pub async fn start_with(nats_url: &str, customize: impl FnOnce(&mut ServiceEnv)) -> Stack {
        Stack::start_on(TestDb::new().await, nats_url, customize).await
    }

    /// All three services on `db` (which may live on a private server) and `nats_url`.
    pub async fn start_on(
        db: TestDb,
        nats_url: &str,
        customize: impl FnOnce(&mut ServiceEnv),
    ) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = ServiceEnv::new(&db, nats_url, dir.path());
        customize(&mut env);
        let logs = dir.path().join("logs");
        // The projector first: it creates the read models the query API reads.
        let projector = Service::start(Bin::Projector, &env, &logs, &[]).await;
        let command = Service::start(Bin::CommandApi, &env, &logs, &[]).await;
        let query = Service::start(Bin::QueryApi, &env, &logs, &[]).await;
        Stack {
            db,
            dir,
            env,
            command,
            projector,
            query,
            http: reqwest::Client::new(),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Starts one more instance of a service on this stack's database (say, a second query API).
    pub async fn start_another(&self, bin: Bin) -> Service {
        Service::start(bin, &self.env, &self.logs_dir(), &[]).await
    }

    /// A fresh API key for `user` in `orgs` (created if missing), via `command-api admin create-key`.
    pub async fn api_key(&self, user: &str, orgs: &[&str]) -> String {
        create_api_key(&self.env, user, orgs).await
    }

    /// Every log line every service of this stack has written so far.
    pub fn all_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.logs_dir()) {
            for entry in entries.flatten() {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

/// A fresh API key for `user` in `orgs` on `env`'s database, via `command-api admin create-key`
/// (for tests that start the command API alone).
pub async fn create_api_key(env: &ServiceEnv, user: &str, orgs: &[&str]) -> String {
    let mut args = vec!["admin", "create-key", "--user", user];
    for org in orgs {
        args.extend(["--org", org]);
    }
    let output = env.run(Bin::CommandApi, &args).await;
    assert!(
        output.status.success(),
        "create-key failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8 key")
        .trim()
        .to_owned()
}
