//! Faults an operator meets: PostgreSQL restarting under load, and SIGTERM under load.
//!
//! Each test owns what it breaks (a private PostgreSQL or NATS server), so the shared servers
//! keep serving the tests that run beside it. Load runs for fixed, short times; these tests are
//! about what every answer was, not about how fast it came.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::db::TestDb;
use tests::nats::PrivateNats;
use tests::postgres::PrivatePostgres;
use tests::process::Service;
use tests::query::{audio_bytes, path_and_query, QueryEnv, ShareOpts};
use tests::stack::{upload_via_api, Stack, ORG, USER};

/// What one request of a load task got back: a status with its headers and body, or `None` for
/// a transport error (no answer at all).
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    retry_after: Option<String>,
    request_id: Option<String>,
    body: Value,
}

impl Answer {
    async fn of(result: reqwest::Result<reqwest::Response>) -> Answer {
        let Ok(response) = result else {
            return Answer {
                status: None,
                retry_after: None,
                request_id: None,
                body: Value::Null,
            };
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (retry_after, request_id) = (header("retry-after"), header("x-request-id"));
        let status = Some(response.status().as_u16());
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            request_id,
            body,
        }
    }

    /// A 503 as the contract has it: the envelope, its trace id, and a `Retry-After`.
    fn assert_unavailable_envelope(&self) {
        assert_eq!(self.status, Some(503));
        assert_eq!(
            self.body["error"]["code"], "SERVICE_UNAVAILABLE",
            "{}",
            self.body
        );
        assert_eq!(
            self.body["error"]["trace_id"].as_str(),
            self.request_id.as_deref(),
            "{}",
            self.body
        );
        let seconds: u64 = self
            .retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a 503 without a Retry-After: {}", self.body));
        assert!(seconds >= 1);
    }
}

/// Runs `request` in a loop on `tasks` tasks until `stop`, keeping every answer.
fn load<F, Fut>(
    tasks: usize,
    stop: &Arc<AtomicBool>,
    request: F,
) -> Vec<tokio::task::JoinHandle<Vec<Answer>>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send,
{
    (0..tasks)
        .map(|task| {
            let (stop, request) = (stop.clone(), request.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = Answer::of(request(task).await).await;
                    if answer.status.is_none() {
                        // Refused (the server is gone): do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    answers.push(answer);
                }
                answers
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>) -> Vec<Answer> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The share ids that have a `ShareCreated` in the event log.
async fn shares_in_log(pool: &PgPool) -> HashSet<String> {
    let streams: Vec<String> = sqlx::query_scalar(
        "SELECT stream_id FROM event_store.events WHERE event_type = 'ShareCreated'",
    )
    .fetch_all(pool)
    .await
    .expect("read the event log");
    streams
        .into_iter()
        .filter_map(|s| s.strip_prefix("share-").map(str::to_owned))
        .collect()
}

async fn wait_ready(http: &reqwest::Client, service: &Service, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let status = http
            .get(service.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(200) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{} is not ready again after the outage ({status:?}):\n{}",
            service.bin.name(),
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn roomy(env: &mut tests::process::ServiceEnv) {
    env.set("RESOLVE_BURST", "1000000");
    env.set("RESOLVE_RATE_PER_MINUTE", "60000000");
}

/// PostgreSQL goes down for a few seconds while shares are being created and links resolved.
/// During the outage writes answer 503 with `Retry-After` (never a 500, never silence); every
/// write that was acknowledged is in the event log afterwards; and the same three processes,
/// never restarted, are ready again and serve every acknowledged link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_acknowledged_write_and_needs_no_restart() {
    let postgres = PrivatePostgres::start();
    let db = TestDb::new_on(&postgres.url("postgres")).await;
    let mut stack = Stack::start_on(db, &tests::nats::shared_url(), roomy).await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload_via_api(&stack, &key).await;
    let first = stack
        .share(&key, &format!("tracks/{track}"), json!({}))
        .await;
    let first_token = first["token"].as_str().expect("token").to_owned();

    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let share_url = stack
        .command
        .url(&format!("/v1/music/{ORG}/tracks/{track}/share"));
    let writers = load(4, &stop, {
        let (http, key, created) = (http.clone(), key.clone(), created.clone());
        move |_| {
            let (http, key, url, created) = (
                http.clone(),
                key.clone(),
                share_url.clone(),
                created.clone(),
            );
            async move {
                let response = http
                    .post(url)
                    .header("x-api-key", key)
                    .json(&json!({}))
                    .send()
                    .await;
                if response.as_ref().is_ok_and(|r| r.status() == 201) {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                response
            }
        }
    });
    // One reader keeps opening a link that exists, one keeps trying links that do not.
    let resolve_base = stack.query.url("/v1/music/shared/");
    let readers = load(2, &stop, {
        let http = http.clone();
        move |task| {
            let token = if task == 0 {
                first_token.clone()
            } else {
                events::share_token::ShareToken::generate()
                    .expose()
                    .to_owned()
            };
            http.get(format!("{resolve_base}{token}")).send()
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    postgres.resume();
    // Keep the load on until writes have gone through again for a while.
    let after_outage = created.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while created.load(Ordering::Relaxed) < after_outage + 20 {
        assert!(
            Instant::now() < deadline,
            "writes did not succeed again after PostgreSQL returned:\n{}",
            stack.command.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = collect(writers).await;
    let reads = collect(readers).await;

    // Every write was answered, either done or refused as unavailable.
    for write in &writes {
        match write.status {
            Some(201) => {}
            Some(503) => write.assert_unavailable_envelope(),
            other => panic!("a write during the restart got {other:?}: {}", write.body),
        }
    }
    let refused = writes.iter().filter(|w| w.status == Some(503)).count();
    assert!(
        refused > 0,
        "no write met the outage ({} writes)",
        writes.len()
    );
    for read in &reads {
        match read.status {
            Some(200 | 404) => {}
            Some(503) => read.assert_unavailable_envelope(),
            other => panic!("a resolve during the restart got {other:?}: {}", read.body),
        }
    }

    // Nothing acknowledged was lost.
    let acknowledged: Vec<(&str, &str)> = writes
        .iter()
        .filter(|w| w.status == Some(201))
        .map(|w| {
            (
                w.body["id"].as_str().expect("share id"),
                w.body["token"].as_str().expect("token"),
            )
        })
        .collect();
    let pool = PgPool::connect(&stack.db.url).await.expect("connect");
    let logged = shares_in_log(&pool).await;
    let lost: Vec<&str> = acknowledged
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !logged.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");

    // The same processes recovered on their own, and the read side caught up with every write.
    for service in [&mut stack.command, &mut stack.projector, &mut stack.query] {
        assert!(
            !service.has_exited(),
            "{} exited:\n{}",
            service.bin.name(),
            service.logs()
        );
    }
    for service in [&stack.command, &stack.projector, &stack.query] {
        wait_ready(&http, service, Duration::from_secs(30)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, token) in &acknowledged {
        loop {
            let status = http
                .get(stack.query.url(&format!("/v1/music/shared/{token}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok();
            if status == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "share {id} (acknowledged) does not resolve after the outage: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// NATS is down while links are resolved, so their audit events wait in the spool; NATS comes
/// back and the query API gets SIGTERM at once, while the load goes on. It must exit cleanly
/// with every attempt it answered already in the stream, once: nothing is left behind for a next
/// start (a replaced instance's spool may not survive it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_audit_spool_before_exit() {
    let mut nats = PrivateNats::start();
    let q = QueryEnv::new(&nats.url()).await;
    let track = q.track("Audited", &audio_bytes(10)).await;
    let (token, _) = q.share("track", &track, ShareOpts::default()).await;
    let roomy = [
        ("RESOLVE_BURST", "1000000"),
        ("RESOLVE_RATE_PER_MINUTE", "60000000"),
    ];
    let mut api = q.start_query(&roomy).await;
    let http = client();
    let url = api.url(&format!("/v1/music/shared/{token}"));
    let resolve = move |_| http.get(&url).send();

    // Enough spooled events that delivering them takes several batches.
    nats.stop();
    let spooled = Arc::new(AtomicBool::new(false));
    let during_outage = load(4, &spooled, resolve.clone());
    let end = Instant::now() + Duration::from_secs(60);
    while metric(&q, &api, "audit_spool_depth").await < 3000.0 {
        assert!(
            Instant::now() < end,
            "the spool did not fill:\n{}",
            api.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spooled.store(true, Ordering::Relaxed);
    let mut answers = collect(during_outage).await;
    assert!(answers.iter().all(|a| a.status == Some(200)));

    // NATS returns and SIGTERM follows at once, with the load still on: the spool is then
    // delivered during shutdown, not before it.
    nats.resume();
    let stop = Arc::new(AtomicBool::new(false));
    let after = load(4, &stop, resolve);
    tokio::time::sleep(Duration::from_millis(50)).await;
    api.terminate();
    let status = api
        .wait(Duration::from_secs(30))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", api.logs());
    assert!(
        !api.logs().contains("did not stop in time"),
        "the audit publisher was cut off at exit:\n{}",
        api.logs()
    );
    stop.store(true, Ordering::Relaxed);
    answers.extend(collect(after).await);

    // Every answered attempt is already in the stream, each once.
    let answered: Vec<&str> = answers
        .iter()
        .filter(|a| a.status.is_some())
        .map(|a| a.request_id.as_deref().expect("x-request-id"))
        .collect();
    let count = tests::audit::stream_count(&nats.url())
        .await
        .expect("the stream");
    let messages = tests::audit::tail(&q.env, &nats.url(), count).await;
    let event_ids: HashSet<&str> = messages
        .iter()
        .map(|m| m["event_id"].as_str().expect("event id"))
        .collect();
    assert_eq!(
        event_ids.len(),
        messages.len(),
        "an event was delivered twice"
    );
    let traced: HashSet<&str> = messages
        .iter()
        .map(|m| m["trace_id"].as_str().expect("trace id"))
        .collect();
    let missing = answered.iter().filter(|id| !traced.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} answered attempts were not in the stream when the process exited",
        answered.len()
    );

    // Nothing was left in the spool: a new instance on the same spool has nothing to deliver.
    let next = q.start_query(&roomy).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tests::audit::stream_count(&nats.url()).await,
        Some(count),
        "the next instance found undelivered events:\n{}",
        next.logs()
    );
}

/// The sum of a metric's samples on `api`'s `/metrics` (0 when absent).
async fn metric(q: &QueryEnv, api: &Service, name: &str) -> f64 {
    let Ok(response) = q.http.get(api.url("/metrics")).send().await else {
        return 0.0;
    };
    tests::read_model::metric(&response.text().await.unwrap_or_default(), name)
}

/// SIGTERM while requests are in flight: a slow upload to the command API and a slow download
/// from the query API both finish, with share creations going on meanwhile; every write that was
/// acknowledged is in the log, and both processes then exit cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut stack = Stack::start_with(&tests::nats::shared_url(), roomy).await;
    let key = stack.api_key(USER, &[ORG]).await;
    let http = client();

    // A long track to download slowly (larger than the socket buffers can hold).
    let long = tests::audio::wav(8_000, &vec![0; 8_000 * 2_400]);
    let track = upload(&http, &stack, &key, long.clone(), false).await;
    let link = stack
        .share(&key, &format!("tracks/{track}"), json!({}))
        .await;
    let view: Value = http
        .get(stack.query.url(&format!(
            "/v1/music/shared/{}",
            link["token"].as_str().expect("token")
        )))
        .send()
        .await
        .expect("resolve")
        .json()
        .await
        .expect("view");
    let playback = stack.query.url(&path_and_query(
        view["track"]["playback_url"]
            .as_str()
            .expect("playback url"),
    ));

    // The command API: share creations under way, and a slow upload in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let share_url = stack
        .command
        .url(&format!("/v1/music/{ORG}/tracks/{track}/share"));
    let writers = load(4, &stop, {
        let (http, key) = (http.clone(), key.clone());
        move |_| {
            http.post(&share_url)
                .header("x-api-key", &key)
                .json(&json!({}))
                .send()
        }
    });
    let short = tests::audio::wav(8_000, &tests::audio::tone(8_000, 8_000 * 60));
    let slow_upload = tokio::spawn({
        let (http, url, key) = (
            http.clone(),
            stack.command.url(&format!("/v1/music/{ORG}/tracks")),
            key.clone(),
        );
        async move { upload_to(&http, &url, &key, short, true).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.command.terminate();
    let uploaded = slow_upload.await.expect("upload task");
    let status = stack
        .command
        .wait(Duration::from_secs(30))
        .await
        .expect("the command API exits after SIGTERM");
    assert!(status.success(), "{status}:\n{}", stack.command.logs());
    stop.store(true, Ordering::Relaxed);
    let writes = collect(writers).await;
    assert_eq!(
        uploaded.status,
        Some(201),
        "the upload in flight at SIGTERM: {}",
        uploaded.body
    );
    for write in &writes {
        assert!(
            matches!(write.status, Some(201) | None),
            "a write during shutdown got {:?}: {}",
            write.status,
            write.body
        );
    }
    let pool = PgPool::connect(&stack.db.url).await.expect("connect");
    let logged = shares_in_log(&pool).await;
    for write in writes.iter().filter(|w| w.status == Some(201)) {
        let id = write.body["id"].as_str().expect("share id");
        assert!(
            logged.contains(id),
            "share {id} was acknowledged but is not in the log"
        );
    }
    let uploaded_id = uploaded.body["id"].as_str().expect("track id");
    let imported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events \
          WHERE stream_id = $1 AND event_type = 'TrackImported'",
    )
    .bind(format!("track-{uploaded_id}"))
    .fetch_one(&pool)
    .await
    .expect("read the log");
    assert_eq!(imported, 1, "the upload's track is not in the log");

    // The query API: a download in flight at SIGTERM is served to its last byte.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let download = tokio::spawn({
        let http = http.clone();
        async move {
            let response = http.get(&playback).send().await.expect("media");
            assert_eq!(response.status(), 200);
            let mut body = response.bytes_stream();
            let mut bytes = Vec::new();
            let mut started = Some(started_tx);
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(&chunk.expect("the download was cut off"));
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                // Slowly: about 40 MB/s at most, so the transfer outlives the signal.
                tokio::time::sleep(Duration::from_micros(400)).await;
            }
            bytes
        }
    });
    started_rx.await.expect("the download started");
    stack.query.terminate();
    let bytes = download.await.expect("download task");
    assert!(
        bytes == long,
        "downloaded {} of {} bytes",
        bytes.len(),
        long.len()
    );
    let status = stack
        .query
        .wait(Duration::from_secs(30))
        .await
        .expect("the query API exits after SIGTERM");
    assert!(status.success(), "{status}:\n{}", stack.query.logs());
}

async fn upload(
    http: &reqwest::Client,
    stack: &Stack,
    key: &str,
    wav: Vec<u8>,
    slowly: bool,
) -> String {
    let url = stack.command.url(&format!("/v1/music/{ORG}/tracks"));
    let answer = upload_to(http, &url, key, wav, slowly).await;
    assert_eq!(answer.status, Some(201), "{}", answer.body);
    answer.body["id"].as_str().expect("track id").to_owned()
}

/// Uploads `wav` as a track; `slowly` sends it in small pieces over about two seconds.
async fn upload_to(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    wav: Vec<u8>,
    slowly: bool,
) -> Answer {
    let len = wav.len() as u64;
    let part = if slowly {
        let pieces: Vec<Vec<u8>> = wav
            .chunks(wav.len().div_ceil(40))
            .map(<[u8]>::to_vec)
            .collect();
        let stream = futures::stream::iter(pieces).then(|piece| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(piece)
        });
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
    } else {
        reqwest::multipart::Part::bytes(wav)
    };
    let form = reqwest::multipart::Form::new()
        .part(
            "audio",
            part.file_name("tone.wav")
                .mime_str("audio/wav")
                .expect("mime"),
        )
        .text("title", "Under SIGTERM")
        .text("engine", "studio")
        .text("mode", "creation")
        .text("licence_class", "personal_only");
    Answer::of(
        http.post(url)
            .header("x-api-key", key)
            .multipart(form)
            .send()
            .await,
    )
    .await
}
