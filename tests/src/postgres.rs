//! A private PostgreSQL server, for tests that stop and start the database (outages). It has
//! its own data directory and port, so stopping it never touches the shared server.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join("bin")
}

/// Runs a PostgreSQL tool as the `postgres` user (initdb and pg_ctl refuse to run as root).
fn as_postgres(tool: &str) -> Command {
    let path = bin_dir().join(tool);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PrivatePostgres {
    /// Initializes a new cluster and starts it on a free port.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("ms-pg-")
            .tempdir()
            .expect("temp dir");
        // SAFETY: getpwnam/chown with valid C strings; the directory is ours.
        unsafe {
            let user = libc::getpwnam(c"postgres".as_ptr());
            if !user.is_null() && libc::geteuid() == 0 {
                let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
                    .expect("path");
                libc::chown(path.as_ptr(), (*user).pw_uid, (*user).pw_gid);
            }
        }
        let server = PrivatePostgres {
            port: crate::nats::free_port(),
            dir,
        };
        let mut initdb = as_postgres("initdb");
        initdb
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(server.data_dir());
        run(initdb, "initdb");
        server.resume();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let mut pg_ctl = as_postgres("pg_ctl");
        pg_ctl
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .args(["-l"])
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options]);
        run(pg_ctl, "pg_ctl start");
    }

    /// Stops immediately (an outage: connections are cut, no checkpoint).
    pub fn stop(&self) {
        let mut pg_ctl = as_postgres("pg_ctl");
        pg_ctl
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data_dir());
        run(pg_ctl, "pg_ctl stop");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut pg_ctl = as_postgres("pg_ctl");
        pg_ctl
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir());
        let _ = pg_ctl.output();
    }
}
