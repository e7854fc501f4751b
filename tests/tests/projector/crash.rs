//! Crash safety: the projector killed with SIGKILL at random moments (during a rebuild, and
//! while projecting live) and restarted ends with exactly the read models of a run that was
//! never interrupted, compared table by table with checksums.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;
use tests::app::TestApp;
use tests::process::{Bin, ServiceEnv};
use tests::read_model::{checkpoint, checksums, indexes, wait_for_checkpoint};

/// A fresh app whose log holds `len` synthetic events (copied in: nobody else appends to it),
/// and the log's head.
async fn log_of(len: usize) -> (TestApp, u64) {
    let app = TestApp::builder().build().await;
    let head = tests::log::copy_into_log(&app.pool, &tests::log::synthetic(len, 7))
        .await
        .expect("write the synthetic log");
    (app, head)
}

/// Runs `projector rebuild` to completion and returns its stdout.
async fn rebuild(env: &ServiceEnv) -> String {
    let output = env.run(Bin::Projector, &["rebuild"]).await;
    assert!(
        output.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

async fn rebuild_checkpoint(pool: &PgPool) -> Option<u64> {
    sqlx::query_scalar::<_, i64>("SELECT position FROM read_model_rebuild.checkpoint")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .map(|p| p as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_at_random_moments_resumes_to_the_same_read_models() {
    let (mut app, head) = log_of(tests::scale(100_000)).await;
    let pool = app.pool.clone();
    let env = &mut app.env;
    // Some forty commits per rebuild, whatever the scale: room for kills between them.
    env.set(
        "PROJECTOR_REBUILD_BATCH_SIZE",
        (head / 40).max(50).to_string(),
    );

    let started = Instant::now();
    let summary = rebuild(env).await;
    let uninterrupted = started.elapsed();
    assert!(
        summary.contains(&format!("up to position {head}")),
        "{summary}"
    );
    let expected = checksums(&pool, "read_model").await;
    let expected_indexes = indexes(&pool, "read_model").await;
    assert_eq!(
        expected["checkpoint"].0, 1,
        "the rebuild swapped in a checkpointed schema"
    );

    // The same rebuild again, killed at random moments, then restarted until it finishes.
    // Every other kill comes at a random time (start-up, catch-up, index building, swap); the
    // others once the rebuild has passed a random point of what is left, plus a few
    // milliseconds (mid-batch, for sure).
    let mut rng = rand::rng();
    let mut progress = Vec::new();
    let mut fresh = true;
    let landed_mid_rebuild = |progress: &[Option<u64>]| {
        progress
            .iter()
            .any(|p| p.is_some_and(|p| p > 0 && p < head))
    };
    for attempt in 0.. {
        let args: &[&str] = if std::mem::take(&mut fresh) {
            &["rebuild", "--fresh"]
        } else {
            &["rebuild"]
        };
        let mut child = env
            .command(Bin::Projector, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the rebuild");
        let kill = async {
            if attempt % 2 == 0 {
                tokio::time::sleep(uninterrupted.mul_f64(rng.random_range(0.05..1.0))).await;
            } else {
                let from = rebuild_checkpoint(&pool).await.unwrap_or(0);
                let target = rng.random_range(from..head.max(from + 1));
                while rebuild_checkpoint(&pool).await.unwrap_or(0) < target {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
        };
        let finished = if attempt < 8 || (attempt < 24 && !landed_mid_rebuild(&progress)) {
            tokio::select! {
                status = child.wait() => Some(status),
                _ = kill => None,
            }
        } else {
            Some(child.wait().await)
        };
        match finished {
            Some(status) => {
                let status = status.expect("wait for the rebuild");
                assert!(status.success(), "rebuild exited with {status}");
                if landed_mid_rebuild(&progress) || attempt >= 24 {
                    break;
                }
                // Finished before any kill hit it mid-way (a fast machine, a small scale):
                // start over, or the test would prove nothing.
                fresh = true;
            }
            None => {
                child.start_kill().expect("SIGKILL");
                child.wait().await.expect("reap the killed rebuild");
                progress.push(rebuild_checkpoint(&pool).await);
            }
        }
    }
    assert!(
        landed_mid_rebuild(&progress),
        "no kill landed in the middle of the rebuild ({progress:?} of {head}); the test proved nothing"
    );
    assert_eq!(checksums(&pool, "read_model").await, expected);
    assert_eq!(indexes(&pool, "read_model").await, expected_indexes);
    assert_eq!(
        rebuild_checkpoint(&pool).await,
        None,
        "the rebuild schema was swapped in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_projector_killed_at_random_moments_neither_skips_nor_repeats() {
    let (mut app, head) = log_of(tests::scale(100_000)).await;
    let pool = app.pool.clone();
    // Small batches: many commits to land a kill between.
    app.env.set("PROJECTOR_BATCH_SIZE", "211");

    let mut rng = rand::rng();
    let mut checkpoints = Vec::new();
    for _ in 0..6 {
        let projector = app.spawn(Bin::Projector).await;
        // Kill once it has passed a random point of what is left, a random few milliseconds
        // later: anywhere in the life of a batch (reading, applying, committing, notifying).
        let from = checkpoint(&pool, "read_model").await;
        if from + 2 >= head {
            break;
        }
        let target = rng.random_range(from + 1..head);
        while checkpoint(&pool, "read_model").await < target {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        projector.kill();
        checkpoints.push(checkpoint(&pool, "read_model").await);
        drop(projector);
    }
    assert!(
        checkpoints.iter().any(|&c| c > 0 && c < head),
        "no kill landed mid-projection ({checkpoints:?} of {head}); the test proved nothing"
    );
    let _projector = app.spawn(Bin::Projector).await;
    wait_for_checkpoint(&pool, head, Duration::from_secs(300)).await;
    let live = checksums(&pool, "read_model").await;

    // What one uninterrupted pass over the same log builds.
    rebuild(&app.env).await;
    assert_eq!(checksums(&pool, "read_model").await, live);
}
