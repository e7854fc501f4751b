//! Hostile clients (CONTRACT: "Hostile clients"), over real sockets against the real binaries:
//! slow headers, stalled bodies and idle keep-alive connections are cut off on both APIs while
//! a fast client is served meanwhile; what the HTTP layer refuses itself answers in the
//! envelope; a JSON body is UTF-8 throughout; odd audio is a 422 and the log stays JSON; and a
//! used-up link's first refusal takes no longer than a revoked link's.
//!
//! The connection clocks are shortened through `HTTP_*_TIMEOUT_MS` so the tests need not wait
//! a minute; the contract's own numbers are the defaults (unit-tested in service-kit).

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::command::TrackForm;
use tests::process::{Bin, Service};
use tests::stack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "org_hostile";
const USER: &str = "usr_0123456789ab";

const HEADER_MS: u64 = 1_000;
const BODY_MS: u64 = 1_500;
const IDLE_MS: u64 = 2_000;
/// How late past its limit a connection may be cut (the watcher's tick, a busy machine).
const SLACK_MS: u64 = 1_500;

async fn stack() -> Stack {
    Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("HTTP_HEADER_TIMEOUT_MS", HEADER_MS.to_string());
        env.set("HTTP_BODY_TIMEOUT_MS", BODY_MS.to_string());
        env.set("HTTP_IDLE_TIMEOUT_MS", IDLE_MS.to_string());
        env.set("RESOLVE_RATE_PER_MINUTE", "1000000");
        env.set("RESOLVE_BURST", "100000");
    })
    .await
}

/// An answer read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error envelope, checked whole: its status, its code, and a `trace_id` equal to the
    /// `X-Request-Id` header.
    fn assert_envelope(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let body: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["status"], status, "{body}");
        assert_eq!(body["error"]["type"], "client_error", "{body}");
        let id = self.header("x-request-id").expect("X-Request-Id");
        assert!(id.starts_with("req_") && id.len() >= 20, "{id}");
        assert_eq!(body["error"]["trace_id"], id, "{body}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
    }
}

/// Reads one response (head, then `content-length` bytes of body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Raw {
        status,
        headers,
        body,
    })
}

/// [`read_response`] on the read half of a split connection.
async fn read_half_response(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Option<Raw> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Raw {
        status,
        headers,
        body: buf[head_end..].to_vec(),
    })
}

/// Sends `request` on a fresh connection and reads the answer.
async fn raw(service: &Service, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(service.addr).await.expect("connect");
    // A refused request may close before everything is sent; the answer is what counts.
    let _ = stream.write_all(request).await;
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("an answer within 10 s")
        .unwrap_or_else(|| {
            panic!(
                "no answer to {:?}",
                String::from_utf8_lossy(&request[..60.min(request.len())])
            )
        })
}

/// Waits until the peer closes `stream` (EOF or reset), at most `within`; how long it took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// A fast client, served normally while the slow ones hang on.
async fn fast_client_is_served(http: &reqwest::Client, service: &Service) {
    let started = Instant::now();
    let response = http
        .get(service.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(HEADER_MS / 2),
        "a fast client waited {:?} beside slow ones",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_stalled_bodies_are_cut_off_on_both_apis() {
    let stack = stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    for service in [&stack.command, &stack.query] {
        let name = service.bin.name();
        // Headers dribbled a byte at a time, for longer than the limit allows; the answer is
        // read as it comes, while the dribbling goes on.
        let slow_headers = async {
            let stream = TcpStream::connect(service.addr).await.expect("connect");
            let (mut reader, mut writer) = stream.into_split();
            let started = Instant::now();
            let dribble = async move {
                let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for byte in request {
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let answer = async {
                let answer = tokio::time::timeout(
                    Duration::from_millis(HEADER_MS + SLACK_MS + 3_000),
                    read_half_response(&mut reader),
                )
                .await
                .expect("the slow client gets an answer or a close");
                (started.elapsed(), answer)
            };
            tokio::select! {
                answer = answer => answer,
                () = dribble => panic!("{name}: the whole dribbled request was read"),
            }
        };
        // A body that stops after 10 of its 100 bytes.
        let stalled_body = async {
            let mut stream = TcpStream::connect(service.addr).await.expect("connect");
            let path = match service.bin {
                Bin::CommandApi => format!("/v1/music/{ORG}/collections"),
                _ => "/v1/music/shared/shr_00000000000000000000000000000000".to_owned(),
            };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":\"a"
            );
            stream.write_all(head.as_bytes()).await.expect("send");
            let started = Instant::now();
            let answer = tokio::time::timeout(
                Duration::from_millis(BODY_MS + SLACK_MS + 3_000),
                read_response(&mut stream),
            )
            .await
            .expect("a stalled body is answered or closed in time");
            let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
            (started.elapsed(), answer, closed)
        };
        let fast = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fast_client_is_served(&stack.http, service).await;
        };
        let ((headers_took, headers_answer), (body_took, body_answer, body_closed), ()) =
            tokio::join!(slow_headers, stalled_body, fast);

        assert!(
            headers_took >= Duration::from_millis(HEADER_MS - 100)
                && headers_took <= Duration::from_millis(HEADER_MS + SLACK_MS),
            "{name}: slow headers cut after {headers_took:?}"
        );
        let answer = headers_answer.expect("a 408 answer before the close");
        answer.assert_envelope(408, "REQUEST_TIMEOUT");

        assert!(
            body_closed.is_some(),
            "{name}: the connection of a stalled body stays open"
        );
        match service.bin {
            Bin::CommandApi => {
                // The route reads the body: it is abandoned after BODY_MS of silence.
                assert!(
                    body_took >= Duration::from_millis(BODY_MS - 100)
                        && body_took <= Duration::from_millis(BODY_MS + SLACK_MS),
                    "{name}: stalled body answered after {body_took:?}"
                );
                body_answer
                    .expect("a 408 answer")
                    .assert_envelope(408, "REQUEST_TIMEOUT");
            }
            _ => {
                // The share page's POST (a password or "Listen") judges the link before it
                // reads a form: a dead link is the one 404 at once, and the connection, whose
                // body will never be read, is closed.
                let answer = body_answer.expect("an answer");
                answer.assert_envelope(404, "RESOURCE_NOT_FOUND");
                assert!(body_took <= Duration::from_millis(BODY_MS + SLACK_MS));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_kept() {
    let stack = stack().await;
    let connections = tests::scale(200).max(20);
    for service in [&stack.command, &stack.query] {
        let name = service.bin.name();
        let mut idle = Vec::new();
        for _ in 0..connections {
            let mut stream = TcpStream::connect(service.addr).await.expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("send");
            let answer = read_response(&mut stream).await.expect("answer");
            assert_eq!(answer.status, 200);
            idle.push((stream, Instant::now()));
        }
        let opened = Instant::now();
        // One connection asks again every half limit: it is never idle that long.
        let mut busy = TcpStream::connect(service.addr).await.expect("connect");
        let keep_busy = async {
            while opened.elapsed() < Duration::from_millis(IDLE_MS * 2) {
                busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("the busy connection stays open");
                let answer = read_response(&mut busy)
                    .await
                    .expect("busy connection closed");
                assert_eq!(answer.status, 200);
                tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
            }
        };
        let idle_closed = futures::future::join_all(idle.iter_mut().map(|(s, last)| {
            let last = *last;
            async move {
                closed_within(s, Duration::from_millis(IDLE_MS + SLACK_MS + 2_000))
                    .await
                    .map(|_| last.elapsed())
            }
        }));
        let ((), closed) = tokio::join!(keep_busy, idle_closed);
        for idle_for in closed {
            let idle_for =
                idle_for.unwrap_or_else(|| panic!("{name}: an idle connection stayed open"));
            assert!(
                idle_for >= Duration::from_millis(IDLE_MS - 100)
                    && idle_for <= Duration::from_millis(IDLE_MS + SLACK_MS),
                "{name}: an idle connection closed after {idle_for:?} of idleness"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_http_layer_answer_in_the_envelope() {
    let stack = stack().await;
    for service in [&stack.command, &stack.query] {
        let get = |target: &str, headers: &str| {
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
        };
        // 414: over the contract's 8 KiB, and far over what hyper itself reads (64 KiB).
        for len in [8 * 1024 + 1, 100 * 1024] {
            let target = format!("/v1/music/shared/shr_{}", "a".repeat(len));
            raw(service, &get(&target, ""))
                .await
                .assert_envelope(414, "URI_TOO_LONG");
        }
        // At the limit: served as usual (a dead link, or no route).
        let target = format!("/v1/music/shared/{}", "a".repeat(8 * 1024 - 17));
        assert_eq!(target.len(), 8 * 1024);
        assert_eq!(raw(service, &get(&target, "")).await.status, 404);

        // 431: too many fields (over 100, and over what hyper itself parses), or too many bytes.
        for fields in [101, 2_000] {
            let headers: String = (0..fields).map(|i| format!("X-F{i}: v\r\n")).collect();
            raw(service, &get("/healthz", &headers))
                .await
                .assert_envelope(431, "HEADERS_TOO_LARGE");
        }
        let headers = format!("X-Big: {}\r\n", "v".repeat(65 * 1024));
        raw(service, &get("/healthz", &headers))
            .await
            .assert_envelope(431, "HEADERS_TOO_LARGE");
        let headers = format!("X-Big: {}\r\n", "v".repeat(1024 * 1024));
        raw(service, &get("/healthz", &headers))
            .await
            .assert_envelope(431, "HEADERS_TOO_LARGE");
        let headers: String = (0..99).map(|i| format!("X-F{i}: v\r\n")).collect();
        assert_eq!(raw(service, &get("/healthz", &headers)).await.status, 200);

        // 400: a control byte in a header, a malformed request line, a bad header name.
        for request in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ] {
            raw(service, request)
                .await
                .assert_envelope(400, "INVALID_REQUEST");
        }
        // The process is unharmed.
        fast_client_is_served(&stack.http, service).await;
    }
}

async fn upload(stack: &Stack, key: &str, audio: Vec<u8>) -> reqwest::Response {
    let form = TrackForm::valid()
        .with("title", "Odd")
        .audio(audio, "a.wav");
    stack.commands().upload(key, ORG, form).await
}

async fn track(stack: &Stack, key: &str) -> String {
    stack.commands().track(key, ORG).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_audio_is_a_422_on_audio_and_every_log_line_stays_json() {
    let stack = stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    for (rate, channels, why) in [
        (0, 1, "sample rate 0"),
        (1, 1, "sample rate 1 Hz"),
        (7_999, 1, "just under 8 kHz"),
        (400_000, 1, "400 kHz"),
        (44_100, 0, "no channels"),
        (44_100, 33, "33 channels"),
    ] {
        let response = upload(
            &stack,
            &key,
            tests::audio::wav_declaring(rate, channels, 4_410),
        )
        .await;
        assert_eq!(response.status(), 422, "{why}");
        let body: Value = response.json().await.expect("envelope");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{why}: {body}");
        assert!(
            body["error"]["details"]["audio"].is_string(),
            "{why}: {body}"
        );
    }
    // The edges of the rates are accepted (32 channels is within the contract's range, but
    // no PCM WAV layout symphonia decodes has that many).
    for (rate, channels) in [(8_000, 1), (384_000, 2)] {
        let response = upload(
            &stack,
            &key,
            tests::audio::wav_declaring(rate, channels, 4_000),
        )
        .await;
        assert_eq!(response.status(), 201, "{rate} Hz, {channels} channels");
    }
    // Every line every process wrote is one JSON object.
    let logs = stack.all_logs();
    assert!(logs.lines().count() > 10);
    for line in logs.lines() {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "a log line that is not a JSON object: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_anywhere_in_a_json_body_is_a_400() {
    let stack = stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = track(&stack, &key).await;
    let share = |body: &'static [u8]| {
        stack
            .http
            .post(
                stack
                    .command
                    .url(&format!("/v1/music/{ORG}/tracks/{track}/share")),
            )
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        &b"{\"zz\":\"\xff\xfe\"}"[..],
        b"{\"visibility\":\"public\",\"zz\xc3\":1}",
        b"{\"max_views\":3,\"note\":[\"ok\",\"\xed\xa0\x80\"]}",
    ] {
        let response = share(body).await.expect("share");
        assert_eq!(
            response.status(),
            400,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        let envelope: Value = response.json().await.expect("envelope");
        assert_eq!(envelope["error"]["code"], "INVALID_REQUEST");
    }
    // Valid UTF-8 in an ignored field is still ignored.
    let response = share("{\"zz\":\"déjà vu\"}".as_bytes())
        .await
        .expect("share");
    assert_eq!(response.status(), 201);
    // No link was created by the refused bodies.
    let shares: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'ShareCreated'",
    )
    .fetch_one(&stack.db.pool().await)
    .await
    .expect("count");
    assert_eq!(shares, 1);
}

/// How long the test lets a used-up announcement, once it has heard it on NATS itself, take to
/// be applied by another query instance subscribed to the same subject.
const ANNOUNCEMENT_DELIVERY: Duration = Duration::from_millis(50);

/// The view-counter round trips `service` has made so far.
async fn counter_round_trips(http: &reqwest::Client, service: &Service) -> f64 {
    let exposition = service.metrics(http).await;
    tests::read_model::metric(&exposition, "resolve_view_counter_round_trips_total")
}

/// Waits (at most 10 s) until the announcement that `share_id` is used up has gone through NATS.
async fn heard_used_up(announcements: &mut async_nats::Subscriber, share_id: &str) {
    use futures::StreamExt;
    let wait = async {
        while let Some(message) = announcements.next().await {
            let announced: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
            if announced["share_id"] == share_id {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the used-up announcement went through NATS");
}

/// The median of `samples` (the upper one of an even count), in microseconds.
fn median_us(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

/// How much slower `a` is than `b`, in µs, from samples taken side by side in each round: the
/// median of `a[k] - b[k]` over the rounds where `a` went first (`first(k)`), and over those
/// where it went second, averaged. Pairing cancels a neighbour's load that slows a whole round;
/// averaging the two orders cancels what going first or second costs.
fn paired_difference_us(a: &[Duration], b: &[Duration], first: impl Fn(usize) -> bool) -> f64 {
    let median = |went_first: bool| {
        let mut differences: Vec<f64> = a
            .iter()
            .zip(b)
            .enumerate()
            .filter(|(k, _)| first(*k) == went_first)
            .map(|(_, (a, b))| (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
            .collect();
        differences.sort_by(f64::total_cmp);
        differences[differences.len() / 2]
    };
    (median(true) + median(false)) / 2.0
}

async fn timed(request: reqwest::RequestBuilder, expect: u16) -> Duration {
    let started = Instant::now();
    let response = request.send().await.expect("resolve");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    let took = started.elapsed();
    assert_eq!(status, expect);
    took
}

/// Creates a limited (or unlimited) link to `track`; `(token, share id)`.
async fn share(stack: &Stack, key: &str, track: &str, max_views: Option<u32>) -> (String, String) {
    let body = match max_views {
        Some(n) => serde_json::json!({ "max_views": n }),
        None => serde_json::json!({}),
    };
    let link = stack
        .commands()
        .share(key, ORG, &format!("tracks/{track}"), body)
        .await;
    (
        link["token"].as_str().expect("token").to_owned(),
        link["id"].as_str().expect("id").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_links_first_refusal_takes_no_longer_than_a_revoked_links() {
    let stack = stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = track(&stack, &key).await;
    let a = &stack.query;
    let b = stack.start_another(Bin::QueryApi).await;
    let rounds = tests::scale(300).max(60);
    let http = reqwest::Client::new();
    let resolve = |service: &Service, token: &str| {
        http.get(service.url(&format!("/v1/music/shared/{token}")))
    };
    let peek = |service: &Service, token: &str| {
        http.head(service.url(&format!("/v1/music/shared/{token}")))
    };

    // A link whose every HEAD reads its counter: what one counter round trip costs, beside a
    // revoked link's HEAD, on the same instances in the same run.
    let (counted, _) = share(&stack, &key, &track, Some(1_000_000)).await;

    // [instance] → samples; A took the last view, B only heard of it.
    let mut used_up = [Vec::new(), Vec::new()];
    let mut revoked = [Vec::new(), Vec::new()];
    let mut with_counter = Vec::new();
    let mut without_counter = Vec::new();
    // The instances announce used-up links on the namespace of their database.
    let nats = async_nats::connect(tests::nats::shared_url())
        .await
        .expect("nats");
    let mut announcements = nats
        .subscribe(format!("music.usage.{}.used_up", stack.db.name))
        .await
        .expect("subscribe");
    for round in 0..rounds {
        let (once, once_id) = share(&stack, &key, &track, Some(1)).await;
        let (dead, dead_id) = share(&stack, &key, &track, None).await;
        let response = stack
            .http
            .delete(
                stack
                    .command
                    .url(&format!("/v1/music/{ORG}/share/{dead_id}")),
            )
            .header("x-api-key", &key)
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 200);
        // Both records in both instances' caches, as any link someone resolves is.
        for service in [a, &b] {
            timed(peek(service, &once), 200).await;
            timed(peek(service, &dead), 404).await;
            timed(peek(service, &counted), 200).await;
        }
        // The last view, on A; then each instance's first refusal of the link beside a revoked
        // link's, in alternating order.
        timed(resolve(a, &once), 200).await;
        for (i, on) in [a, &b].into_iter().enumerate() {
            if i == 1 {
                // The announcement's way through NATS to B: once this test has heard it, B has
                // too, give or take its scheduling, allowed for on this shared machine. Without
                // it B would pay the round trip however long it waited, having neither viewed
                // nor refused the link before.
                heard_used_up(&mut announcements, &once_id).await;
                tokio::time::sleep(ANNOUNCEMENT_DELIVERY).await;
            }
            let round_trips = counter_round_trips(&http, on).await;
            if round % 2 == 0 {
                used_up[i].push(timed(resolve(on, &once), 404).await);
                revoked[i].push(timed(resolve(on, &dead), 404).await);
            } else {
                revoked[i].push(timed(resolve(on, &dead), 404).await);
                used_up[i].push(timed(resolve(on, &once), 404).await);
            }
            // What the timing below shows on average, each refusal shows for itself: the
            // used-up link was refused from memory, without reading its counter.
            assert_eq!(
                counter_round_trips(&http, on).await,
                round_trips,
                "round {round}: instance {i} read the view counter to refuse a used-up link"
            );
        }
        let on = if round % 2 == 0 { a } else { &b };
        if round % 4 < 2 {
            with_counter.push(timed(peek(on, &counted), 200).await);
            without_counter.push(timed(peek(on, &dead), 404).await);
        } else {
            without_counter.push(timed(peek(on, &dead), 404).await);
            with_counter.push(timed(peek(on, &counted), 200).await);
        }
    }
    let round_trip = paired_difference_us(&with_counter, &without_counter, |round| round % 4 < 2);
    // The comparison would be meaningless if a round trip did not show in these medians.
    assert!(
        round_trip >= 60.0,
        "a counter round trip costs only {round_trip:.0} µs here; the comparison cannot tell"
    );
    for (i, instance) in ["the instance that took the last view", "another instance"]
        .into_iter()
        .enumerate()
    {
        // Paired by round, so load from tests running beside this one cancels out.
        let slower = paired_difference_us(&used_up[i], &revoked[i], |round| round % 2 == 0);
        let used_up = median_us(&mut used_up[i]);
        let revoked = median_us(&mut revoked[i]);
        println!(
            "{instance}, medians over {rounds} rounds: first refusal of a used-up link \
             {used_up:.0} µs, revoked link {revoked:.0} µs (paired difference {slower:.0} µs); \
             one counter round trip {round_trip:.0} µs"
        );
        // Each refusal was shown above to make no counter round trip; what is left to bound is
        // any other difference, here below one round trip (paired medians of a debug build
        // beside other tests swing by a few hundred µs: half a round trip failed CI on noise).
        assert!(
            slower < round_trip,
            "{instance}: a used-up link's first refusal takes {slower:.0} µs longer than a revoked \
             link's ({used_up:.0} µs and {revoked:.0} µs; a counter round trip: {round_trip:.0} µs)"
        );
    }
}
