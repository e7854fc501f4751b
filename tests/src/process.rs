//! The real service binaries as child processes.
//!
//! A service is started with `*_ADDR=127.0.0.1:0`; its stderr (JSON log lines) goes to a file,
//! and the harness learns the bound address from the `listening` line. The log file is kept for
//! the test to inspect (the secrets tests read every line of it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::db::TestDb;

/// Which service binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    CommandApi,
    Projector,
    QueryApi,
}

impl Bin {
    pub fn name(self) -> &'static str {
        match self {
            Bin::CommandApi => "command-api",
            Bin::Projector => "projector",
            Bin::QueryApi => "query-api",
        }
    }

    /// The binary built for these tests: `test-<name>` beside the test executable's `deps/`.
    pub fn path(self) -> PathBuf {
        let file = format!("test-{}", self.name());
        if let Ok(dir) = std::env::var("MS_BIN_DIR") {
            return Path::new(&dir).join(file);
        }
        let exe = std::env::current_exe().expect("current test executable");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test executable lives in target/<profile>/deps");
        profile_dir.join(file)
    }

    fn addr_variable(self) -> &'static str {
        match self {
            Bin::CommandApi => "COMMAND_API_ADDR",
            Bin::Projector => "PROJECTOR_ADMIN_ADDR",
            Bin::QueryApi => "QUERY_API_ADDR",
        }
    }
}

/// Environment for the services of one test: its database, a NATS server, and private
/// directories for media and the audit spool.
#[derive(Clone, Debug)]
pub struct ServiceEnv {
    pub vars: BTreeMap<String, String>,
}

impl ServiceEnv {
    pub fn new(db: &TestDb, nats_url: &str, data_dir: &Path) -> ServiceEnv {
        let mut vars = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_owned(), v);
        };
        set("DATABASE_URL", db.url.clone());
        set("DATABASE_MAX_CONNECTIONS", "4".to_owned());
        set("NATS_URL", nats_url.to_owned());
        set("MEDIA_DIR", data_dir.join("media").display().to_string());
        set(
            "AUDIT_SPOOL_DIR",
            data_dir.join("audit-spool").display().to_string(),
        );
        set("RUST_LOG", "info".to_owned());
        set("NO_COLOR", "1".to_owned());
        ServiceEnv { vars }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.vars.insert(key.to_owned(), value.into());
        self
    }

    /// The command that runs `bin` with this environment (and nothing else from the test's).
    pub fn command(&self, bin: Bin, args: &[&str]) -> Command {
        let mut command = Command::new(bin.path());
        command.args(args).env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                command.env(key, v);
            }
        }
        command.envs(&self.vars);
        command
    }

    /// Runs a one-shot command (`admin create-key`, `projector status`, ...) to completion.
    pub async fn run(&self, bin: Bin, args: &[&str]) -> std::process::Output {
        self.command(bin, args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.name()))
    }
}

/// A running service process. Killed when dropped.
pub struct Service {
    pub bin: Bin,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    child: Child,
}

impl Service {
    /// Starts `bin` on an ephemeral port and waits until it is listening.
    pub async fn start(bin: Bin, env: &ServiceEnv, log_dir: &Path, args: &[&str]) -> Service {
        std::fs::create_dir_all(log_dir).expect("create the log directory");
        let log_path = unique_log_path(log_dir, bin.name());
        let log = std::fs::File::create(&log_path).expect("create the service log file");
        let mut command = env.command(bin, args);
        if !env.vars.contains_key(bin.addr_variable()) {
            command.env(bin.addr_variable(), "127.0.0.1:0");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.path().display()));

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = listening_addr(&log_path) {
                return Service {
                    bin,
                    addr,
                    log_path,
                    child,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    bin.name(),
                    read(&log_path)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start listening:\n{}",
                bin.name(),
                read(&log_path)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The service's `/metrics` exposition, as a scraper reads it.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Everything the service has logged so far.
    pub fn logs(&self) -> String {
        read(&self.log_path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM: ask for a graceful shutdown.
    pub fn terminate(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// SIGKILL: a crash.
    pub fn kill(&self) {
        signal(self.pid(), libc::SIGKILL);
    }

    /// Whether the process has exited (crashed, or stopped on its own).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid != 0 {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

fn unique_log_path(dir: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|n| {
            dir.join(if n == 0 {
                format!("{name}.log")
            } else {
                format!("{name}.{n}.log")
            })
        })
        .find(|p| !p.exists())
        .expect("some log name is free")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The address from the first `listening` log line, if there is one yet.
fn listening_addr(log_path: &Path) -> Option<SocketAddr> {
    read(log_path).lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = value.get("fields")?;
        if fields.get("message")?.as_str()? != "listening" {
            return None;
        }
        fields.get("addr")?.as_str()?.parse().ok()
    })
}
