//! `scripts/stack` starts anywhere: from a fresh clone, with nothing listening where
//! `DATABASE_URL` and `NATS_URL` point (free ports, so the shared servers are not used), it
//! starts private PostgreSQL and NATS servers under `./data/`, runs the stack, serves the demo
//! link, and stops everything on Ctrl-C.
//!
//! The script normally builds release binaries first; here `STACK_BIN_DIR` hands it the binaries
//! these tests already built (a release build would cost CI minutes and prove nothing more).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::nats::free_port;
use tests::process::Bin;

/// Stops whatever the script left behind if the test fails half way.
struct Cleanup {
    clone: PathBuf,
    script: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.script.take() {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.clone.join("data/nats.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on a pid the script recorded for its own NATS server.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let data = self.clone.join("data/postgres");
        if data.join("postmaster.pid").exists() {
            let _ = as_postgres(
                &pg_ctl(),
                &["-D", &data.display().to_string(), "-m", "immediate", "stop"],
            );
        }
    }
}

fn pg_ctl() -> String {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin/pg_ctl")).collect())
        .unwrap_or_default();
    bins.sort();
    bins.pop()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "pg_ctl".to_owned())
}

fn as_postgres(program: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        Command::new("runuser")
            .args(["-u", "postgres", "--", program])
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the process group this test created for the script.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn fresh_clone(into: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let clone = into.join("music-share");
    let output = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(repo)
        .arg(&clone)
        .output()
        .expect("git clone");
    assert!(
        output.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    clone
}

#[tokio::test]
async fn scripts_stack_starts_its_own_servers_from_a_fresh_clone_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The private PostgreSQL runs as the postgres user, who must reach ./data/postgres.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let clone = fresh_clone(dir.path());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    for b in [Bin::CommandApi, Bin::Projector, Bin::QueryApi] {
        std::os::unix::fs::symlink(b.path(), bin.join(b.name())).expect("symlink");
    }

    let (pg, nats, command, query, projector) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut script = Command::new("bash");
    script
        .arg("scripts/stack")
        .current_dir(&clone)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{pg}/music_share"),
        )
        .env("NATS_URL", format!("nats://127.0.0.1:{nats}"))
        .env("COMMAND_API_ADDR", format!("127.0.0.1:{command}"))
        .env("QUERY_API_ADDR", format!("127.0.0.1:{query}"))
        .env("PROJECTOR_ADMIN_ADDR", format!("127.0.0.1:{projector}"))
        .env("STACK_BIN_DIR", &bin)
        .env_remove("PUBLIC_BASE_URL")
        .env_remove("MEDIA_BASE_URL")
        .env_remove("RATE_LIMIT_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, as a terminal's foreground job: Ctrl-C signals the group.
        .process_group(0);
    let mut child = script.spawn().expect("run scripts/stack");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mut cleanup = Cleanup {
        clone: clone.clone(),
        script: Some(child),
    };
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The demo link, once the script prints it.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut printed = String::new();
    let share_url = loop {
        match lines_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.trim().starts_with("http") && line.contains("/v1/music/shared/shr_") {
                    break line.trim().to_owned();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the script ended before printing a link:\n{printed}")
            }
        }
        assert!(
            Instant::now() < deadline,
            "no demo link in time:\n{printed}"
        );
    };
    assert!(printed.contains("private PostgreSQL"), "{printed}");
    assert!(printed.contains("private NATS"), "{printed}");
    assert!(clone.join("data/postgres/PG_VERSION").exists());
    assert!(clone.join("data/nats").is_dir());

    let response = reqwest::get(&share_url)
        .await
        .expect("the demo link answers");
    assert_eq!(response.status(), 200);
    let view: serde_json::Value = response.json().await.expect("view");
    assert_eq!(view["track"]["title"], "Demo Arpeggio", "{view}");

    // Ctrl-C: everything stops, the private servers last, and the script exits cleanly.
    let child = cleanup.script.as_mut().expect("script");
    signal_group(child.id(), libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            // Say which service did not stop: the last lines of each one's log.
            let mut logs = String::new();
            for service in ["command-api", "projector", "query-api"] {
                let log = std::fs::read_to_string(clone.join(format!("data/logs/{service}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                logs.push_str(&format!("--- {service}:\n"));
                for line in tail.into_iter().rev() {
                    logs.push_str(line);
                    logs.push('\n');
                }
            }
            panic!("the script did not stop after Ctrl-C\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cleanup.script = None;
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(1)) {
        printed.push_str(&line);
        printed.push('\n');
    }
    let errors = errors.join().unwrap_or_default();
    assert!(status.success(), "exit {status}:\n{printed}\n{errors}");
    assert!(
        printed.contains("Stopped the private NATS server."),
        "{printed}"
    );
    assert!(
        printed.contains("Stopped the private PostgreSQL server."),
        "{printed}"
    );
    assert!(!errors.contains("stopped unexpectedly"), "{errors}");
    for port in [pg, nats, command, query, projector] {
        assert!(!port_open(port), "port {port} still open after the stop");
    }
    assert!(!clone.join("data/postgres/postmaster.pid").exists());
}
