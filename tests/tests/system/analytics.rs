//! Per-link statistics from the audit stream, over the real binaries, PostgreSQL and NATS: a
//! scripted mix of attempts counted by the contract's rules and shown to the link's creator
//! only; every attempt counted exactly once while the folding projector is killed again and
//! again, and after the stream's duplicate window has passed; a rebuild that reproduces the
//! live model; no raw client IP anywhere in the database; the analysts' tail.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::nats::PrivateNats;
use tests::process::{Bin, Service};
use tests::stack::{upload_via_api as upload, Stack, ORG, USER};

const VISITOR_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A stack whose query API believes `X-Forwarded-For` from loopback, so a test can be many
/// client IPs, with the rate limit given.
async fn stack_on(nats_url: &str, burst: &str, per_minute: &str) -> Stack {
    let (burst, per_minute) = (burst.to_owned(), per_minute.to_owned());
    Stack::start_with(nats_url, move |env| {
        env.set("TRUSTED_PROXIES", "127.0.0.1/32");
        env.set("RESOLVE_BURST", burst);
        env.set("RESOLVE_RATE_PER_MINUTE", per_minute);
        env.set("ANALYTICS_VISITOR_KEY", VISITOR_KEY);
    })
    .await
}

/// The MUSIC_AUDIT stream as the query API creates it, with a duplicate window of our choice.
async fn create_audit_stream(nats_url: &str, duplicate_window: Option<Duration>) {
    let js = jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let mut config = stream::Config {
        name: "MUSIC_AUDIT".to_owned(),
        subjects: vec!["music.audit.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    if let Some(window) = duplicate_window {
        config.duplicate_window = window;
    }
    js.create_stream(config).await.expect("create the stream");
}

/// Publishes audit messages as another process would (say, a query instance of a newer build).
async fn publish(nats_url: &str, messages: &[Value]) {
    let js = jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    for message in messages {
        js.publish("music.audit.share.resolve", message.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}

fn attempt(outcome: &str, share_id: &str, ip: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7(),
        "occurred_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "outcome": outcome,
        "client_ip": ip,
        "user_agent": "Slackbot-LinkExpanding 1.0",
        "share_id": share_id,
        "target_type": "track",
        "target_id": "mtrack_000000000000",
        "format": "json",
        "trace_id": "req_0000000000000000",
    })
}

async fn resolve_as(stack: &Stack, api: &Service, token: &str, ip: &str, html: bool) -> u16 {
    let mut request = stack
        .http
        .get(api.url(&format!("/v1/music/shared/{token}")))
        .header("x-forwarded-for", ip);
    if html {
        request = request.header("accept", "text/html");
    }
    request.send().await.expect("resolve").status().as_u16()
}

async fn stats(stack: &Stack, key: Option<&str>, org: &str, share_id: &str) -> (u16, Value) {
    let mut request = stack.http.get(
        stack
            .query
            .url(&format!("/v1/music/{org}/share/{share_id}/stats")),
    );
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.expect("stats");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls the stats of `share_id` until `done` holds (or a generous deadline passes: the
/// contract's 5 s is a figure for the benchmark, not a timed test); returns the last answer.
async fn stats_when(
    stack: &Stack,
    key: &str,
    share_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = stats(stack, Some(key), ORG, share_id).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counts(body: &Value) -> (i64, i64, i64, i64) {
    let n = |k: &str| body[k].as_i64().unwrap_or(-1);
    (n("views"), n("previews"), n("unique_visitors"), n("denied"))
}

/// (start, folded) of the live analytics model.
async fn position(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT start_sequence, folded_sequence FROM analytics.position")
        .fetch_one(pool)
        .await
        .expect("the analytics position")
}

/// Waits until the live model has folded the whole stream as it is now.
async fn wait_folded(pool: &PgPool, nats_url: &str) -> i64 {
    let last = tests::audit::stream_last_sequence(nats_url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, folded) = position(pool).await;
        if folded as u64 >= last || Instant::now() > deadline {
            return folded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Links and the expected numbers of the scripted mix.
struct Mix {
    stack: Stack,
    nats: PrivateNats,
    key: String,
    viewed: String,
    limited: String,
    revoked: String,
    foreign_messages: i64,
}

/// On a private NATS server whose stream already holds other stacks' attempts:
/// - `viewed`: 3 views from 203.0.113.1 (its burst), then 2 rate-limited; 2 JSON views from
///   203.0.113.2 and 1 HTML view from 203.0.113.3; the media fetch of one playback URL; and,
///   published as a newer query build would, 2 `preview`s and 1 `password_invalid`;
/// - `limited` (`max_views` 2): 3 attempts from 203.0.113.4, the last over its limit;
/// - `revoked`: one attempt after revocation;
/// - an unknown token, which matches no link.
async fn scripted_mix() -> Mix {
    let nats = PrivateNats::start();
    create_audit_stream(&nats.url(), None).await;
    let foreign: Vec<Value> = (0..30)
        .map(|i| attempt("ok", "mslink_f0f0f0f0f0f0", &format!("192.0.2.{i}")))
        .collect();
    publish(&nats.url(), &foreign).await;
    let stack = stack_on(&nats.url(), "3", "1").await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let link = |body: Value| {
        (
            body["token"].as_str().expect("token").to_owned(),
            body["id"].as_str().expect("id").to_owned(),
        )
    };
    let path = format!("tracks/{track}");
    let (viewed_token, viewed) = link(stack.share(&key, &path, json!({})).await);
    let (limited_token, limited) = link(stack.share(&key, &path, json!({"max_views": 2})).await);
    let (revoked_token, revoked) = link(stack.share(&key, &path, json!({})).await);
    let revoke = stack
        .http
        .delete(
            stack
                .command
                .url(&format!("/v1/music/{ORG}/share/{revoked}")),
        )
        .header("x-api-key", &key)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), 200);

    let q = &stack.query;
    for _ in 0..3 {
        assert_eq!(
            resolve_as(&stack, q, &viewed_token, "203.0.113.1", false).await,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            resolve_as(&stack, q, &viewed_token, "203.0.113.1", false).await,
            429
        );
    }
    for _ in 0..2 {
        assert_eq!(
            resolve_as(&stack, q, &viewed_token, "203.0.113.2", false).await,
            200
        );
    }
    assert_eq!(
        resolve_as(&stack, q, &viewed_token, "203.0.113.3", true).await,
        200
    );
    let view: Value = stack
        .http
        .get(q.url(&format!("/v1/music/shared/{viewed_token}")))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    // That view counts too (a fourth visitor); its playback URL is fetched as media.
    let playback = view["track"]["playback_url"]
        .as_str()
        .expect("playback url");
    let media_path = &playback[playback.find("/v1/music/media/").expect("media path")..];
    let media = stack
        .http
        .get(q.url(media_path))
        .send()
        .await
        .expect("media");
    assert_eq!(media.status(), 200);
    publish(
        &nats.url(),
        &[
            attempt("preview", &viewed, "203.0.113.5"),
            attempt("preview", &viewed, "203.0.113.5"),
            attempt("password_invalid", &viewed, "203.0.113.6"),
        ],
    )
    .await;
    for expected in [200, 200, 404] {
        assert_eq!(
            resolve_as(&stack, q, &limited_token, "203.0.113.4", false).await,
            expected
        );
    }
    assert_eq!(
        resolve_as(&stack, q, &revoked_token, "203.0.113.7", false).await,
        404
    );
    let unknown = format!("shr_{}", "0".repeat(32));
    assert_eq!(
        resolve_as(&stack, q, &unknown, "203.0.113.8", false).await,
        404
    );

    Mix {
        stack,
        nats,
        key,
        viewed,
        limited,
        revoked,
        foreign_messages: foreign.len() as i64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_mix_is_counted_by_the_rules_and_shown_to_the_links_creator_only() {
    let mix = scripted_mix().await;
    let Mix { stack, key, .. } = &mix;

    let viewed = stats_when(stack, key, &mix.viewed, |b| counts(b) == (7, 2, 4, 3)).await;
    assert_eq!(counts(&viewed), (7, 2, 4, 3), "{viewed}");
    assert_eq!(viewed["share_id"], mix.viewed.as_str());
    let today = Utc::now().date_naive().to_string();
    assert_eq!(
        viewed["daily"],
        json!([{"date": today, "views": 7, "previews": 2, "unique_visitors": 4, "denied": 3}])
    );
    let last_viewed: chrono::DateTime<Utc> = viewed["last_viewed_at"]
        .as_str()
        .expect("last_viewed_at")
        .parse()
        .expect("a time");
    assert!((Utc::now() - last_viewed).num_seconds().abs() < 120);
    assert!(!viewed["last_viewed_at"]
        .as_str()
        .unwrap_or("")
        .contains('.'));

    let limited = stats_when(stack, key, &mix.limited, |b| counts(b) == (2, 0, 1, 1)).await;
    assert_eq!(counts(&limited), (2, 0, 1, 1), "{limited}");
    let revoked = stats_when(stack, key, &mix.revoked, |b| counts(b) == (0, 0, 0, 1)).await;
    assert_eq!(counts(&revoked), (0, 0, 0, 1), "{revoked}");
    assert_eq!(revoked["last_viewed_at"], Value::Null);

    // Counting started after the other stacks' messages already in the stream.
    let pool = stack.db.pool().await;
    assert_eq!(position(&pool).await.0, mix.foreign_messages);
    let foreign: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM analytics.links WHERE share_id = 'mslink_f0f0f0f0f0f0'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(foreign, 0);

    // The share list's view count (kept on the request path) agrees once both have caught up:
    // the HTML and JSON views count there too; the previews were never views.
    let deadline = Instant::now() + Duration::from_secs(30);
    let list_views = loop {
        let list: Value = stack
            .http
            .get(stack.query.url(&format!("/v1/music/{ORG}/shares")))
            .header("x-api-key", key)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let item = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|i| i["id"] == mix.viewed.as_str())
            .cloned()
            .expect("the link is listed");
        if item["view_count"] == 7 || Instant::now() > deadline {
            break item["view_count"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(list_views, json!(7));

    // Only the creator: another member of the organization, a stranger, no key, a malformed
    // or unknown link all get nothing.
    let colleague = stack.api_key("usr_0000000000e2", &[ORG]).await;
    let stranger = stack.api_key("usr_0000000000e3", &["org_elsewhere"]).await;
    for (caller, org, link, status) in [
        (Some(colleague.as_str()), ORG, mix.viewed.as_str(), 404),
        (Some(stranger.as_str()), ORG, mix.viewed.as_str(), 404),
        (
            Some(stranger.as_str()),
            "org_elsewhere",
            mix.viewed.as_str(),
            404,
        ),
        (None, ORG, mix.viewed.as_str(), 401),
        (Some(key.as_str()), ORG, "mslink_nothex", 404),
        (Some(key.as_str()), ORG, "mslink_0123456789ab", 404),
        (
            Some(key.as_str()),
            "org_elsewhere",
            mix.viewed.as_str(),
            404,
        ),
    ] {
        let (got, body) = stats(stack, caller, org, link).await;
        assert_eq!(got, status, "{org}/{link}: {body}");
        assert!(body.get("views").is_none(), "{body}");
    }

    // No raw client IP anywhere in the database.
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", &stack.db.url])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains(&mix.viewed), "the dump holds the data");
    for i in 1..=9 {
        let ip = format!("203.0.113.{i}");
        assert!(!dump.contains(&ip), "{ip} is in the database dump");
    }

    // Operating it: the lag on /metrics and in `projector status`.
    let metrics = stack
        .http
        .get(stack.projector.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("analytics_lag_messages"), "{metrics}");
    let folded = wait_folded(&pool, &mix.nats.url()).await;
    let status = stack.env.run(Bin::Projector, &["status"]).await;
    assert!(status.status.success());
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("analytics folded sequence: {folded}")),
        "{status}"
    );
    assert!(status.contains("analytics lag: 0"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reproduces_the_live_model_and_the_tail_summarises_the_window() {
    let mix = scripted_mix().await;
    let Mix { stack, key, .. } = &mix;
    stats_when(stack, key, &mix.limited, |b| counts(b) == (2, 0, 1, 1)).await;
    let pool = stack.db.pool().await;
    wait_folded(&pool, &mix.nats.url()).await;
    let live = tests::read_model::checksums(&pool, "analytics").await;

    let rebuilt = stack
        .env
        .run(Bin::Projector, &["analytics", "rebuild"])
        .await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(String::from_utf8_lossy(&rebuilt.stdout).contains("rebuilt the analytics"));
    assert_eq!(tests::read_model::checksums(&pool, "analytics").await, live);
    let (status, body) = stats(stack, Some(key), ORG, &mix.viewed).await;
    assert_eq!((status, counts(&body)), (200, (7, 2, 4, 3)), "{body}");
    // The live consumer carries on in the swapped-in tables.
    let token_less = attempt("ok", &mix.viewed, "203.0.113.10");
    publish(&mix.nats.url(), &[token_less]).await;
    let after = stats_when(stack, key, &mix.viewed, |b| counts(b).0 == 8).await;
    assert_eq!(counts(&after), (8, 2, 5, 3), "{after}");

    // The analysts' tail: filtered lines, and the window's outcomes per link.
    let mut env = stack.env.clone();
    env.set("NATS_URL", mix.nats.url());
    let lines = env
        .run(
            Bin::QueryApi,
            &[
                "audit",
                "tail",
                "--since",
                "1h",
                "--share",
                &mix.limited,
                "--outcome",
                "ok,over_limit",
                "--limit",
                "3",
            ],
        )
        .await;
    assert!(
        lines.status.success(),
        "{}",
        String::from_utf8_lossy(&lines.stderr)
    );
    let outcomes: Vec<String> = String::from_utf8_lossy(&lines.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["outcome"]
                .as_str()
                .expect("outcome")
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "over_limit"]);
    let summary = env
        .run(
            Bin::QueryApi,
            &["audit", "tail", "--since", "1h", "--summary"],
        )
        .await;
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    let summary = String::from_utf8_lossy(&summary.stdout);
    let row = |link: &str| -> Vec<String> {
        summary
            .lines()
            .find(|l| l.starts_with(link))
            .unwrap_or_else(|| panic!("no row for {link}:\n{summary}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let header = row("share_id");
    let cell = |link: &str, outcome: &str| -> String {
        let column = header
            .iter()
            .position(|h| h == outcome)
            .unwrap_or_else(|| panic!("no {outcome} column:\n{summary}"));
        row(link)[column].clone()
    };
    assert_eq!(cell(&mix.limited, "ok"), "2");
    assert_eq!(cell(&mix.limited, "over_limit"), "1");
    assert_eq!(cell(&mix.revoked, "revoked"), "1");
    assert_eq!(cell(&mix.viewed, "rate_limited"), "2");
    assert_eq!(cell(&mix.viewed, "preview"), "2");
    assert_eq!(cell("(none)", "not_found"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_counts_once_while_the_folders_are_killed_again_and_again() {
    let attempts = tests::scale(2000).max(200);
    let nats_url = tests::nats::shared_url();
    let mut stack = stack_on(&nats_url, "100000", "6000000").await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let path = format!("tracks/{track}");
    let open = stack.share(&key, &path, json!({})).await;
    let limit = attempts / 10;
    let limited = stack
        .share(&key, &path, json!({ "max_views": limit }))
        .await;
    let tokens = [
        open["token"].as_str().expect("token").to_owned(),
        limited["token"].as_str().expect("token").to_owned(),
    ];
    let second_query = stack.start_another(Bin::QueryApi).await;
    let (logs, env) = (stack.logs_dir(), stack.env.clone());
    // A second copy of the folder from the start: it stands by, and takes over when the first
    // is killed (and the other way round).
    let mut second_projector = stack.start_another(Bin::Projector).await;

    // The attempts go out in rounds; in each, one folder (the two take turns) is killed while
    // the round's messages are being published and folded, and started again.
    const ROUNDS: usize = 8;
    let apis = [stack.query.url(""), second_query.url("")];
    let mut answers = Vec::with_capacity(attempts);
    for round in 0..ROUNDS {
        let range = (round * attempts / ROUNDS)..((round + 1) * attempts / ROUNDS);
        let sending = {
            let (http, apis, tokens) = (stack.http.clone(), apis.clone(), tokens.clone());
            tokio::spawn(async move {
                let mut answers = Vec::with_capacity(range.len());
                for i in range {
                    let token = &tokens[usize::from(i % 5 == 0)];
                    let ip = format!("198.51.100.{}", i % 37);
                    let response = http
                        .get(format!("{}/v1/music/shared/{token}", apis[i % 2]))
                        .header("x-forwarded-for", &ip)
                        .send()
                        .await
                        .expect("resolve");
                    answers.push((i % 5 == 0, response.status().as_u16(), ip));
                }
                answers
            })
        };
        tokio::time::sleep(Duration::from_millis(20 + (round as u64 * 37) % 100)).await;
        let victim = if round % 2 == 0 {
            &mut stack.projector
        } else {
            &mut second_projector
        };
        victim.kill();
        victim.wait(Duration::from_secs(10)).await;
        let fresh = Service::start(Bin::Projector, &env, &logs, &[]).await;
        *victim = fresh;
        answers.extend(sending.await.expect("the attempts"));
    }

    let views = |limited: bool| {
        answers
            .iter()
            .filter(|(l, s, _)| *l == limited && *s == 200)
            .count() as i64
    };
    let denied = |limited: bool| {
        answers
            .iter()
            .filter(|(l, s, _)| *l == limited && *s != 200)
            .count() as i64
    };
    assert_eq!(
        views(false) + denied(false) + views(true) + denied(true),
        attempts as i64
    );
    assert_eq!(denied(false), 0);
    assert_eq!(views(true), limit as i64);
    let visitors = |limited: bool| {
        answers
            .iter()
            .filter(|(l, s, _)| *l == limited && *s == 200)
            .map(|(_, _, ip)| ip.as_str())
            .collect::<HashSet<_>>()
            .len() as i64
    };
    for (link, limited) in [(&open, false), (&limited, true)] {
        let id = link["id"].as_str().expect("id");
        let want = (views(limited), 0, visitors(limited), denied(limited));
        let body = stats_when(&stack, &key, id, |b| counts(b) == want).await;
        assert_eq!(counts(&body), want, "{id}: {body}");
    }
    // And nothing more arrives later: every message was counted once, not at least once.
    let pool = stack.db.pool().await;
    wait_folded(&pool, &nats_url).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total: i64 = sqlx::query_scalar("SELECT sum(views + denied)::bigint FROM analytics.links")
        .fetch_one(&pool)
        .await
        .expect("total");
    assert_eq!(total, attempts as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_restarted_after_the_duplicate_window_counts_nothing_twice() {
    let nats = PrivateNats::start();
    create_audit_stream(&nats.url(), Some(Duration::from_secs(1))).await;
    let mut stack = stack_on(&nats.url(), "100000", "6000000").await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let link = stack
        .share(&key, &format!("tracks/{track}"), json!({}))
        .await;
    let token = link["token"].as_str().expect("token");
    let id = link["id"].as_str().expect("id");
    let before = tests::scale(100).max(20);
    for i in 0..before {
        let ip = format!("198.51.100.{}", i % 7);
        assert_eq!(
            resolve_as(&stack, &stack.query, token, &ip, false).await,
            200
        );
    }
    stats_when(&stack, &key, id, |b| counts(b).0 == before as i64).await;

    // The folder dies, and the consumer's state on the server is lost with it: the durable
    // consumer now delivers the whole stream again, and JetStream's duplicate window, which
    // could have told a re-publisher what it had seen, is long closed.
    stack.projector.kill();
    stack.projector.wait(Duration::from_secs(10)).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let audit = js.get_stream("MUSIC_AUDIT").await.expect("stream");
    let name = format!("music-share-analytics-{}", stack.db.name);
    let _ = audit.delete_consumer(&name).await;
    audit
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(name),
            filter_subject: "music.audit.share.resolve".to_owned(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("reset the durable consumer");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = tests::scale(50).max(10);
    for i in 0..after {
        let ip = format!("198.51.100.{}", 100 + i % 3);
        assert_eq!(
            resolve_as(&stack, &stack.query, token, &ip, false).await,
            200
        );
    }
    stack.projector = stack.start_another(Bin::Projector).await;

    let want = (before + after) as i64;
    stats_when(&stack, &key, id, |b| counts(b).0 >= want).await;
    let pool = stack.db.pool().await;
    wait_folded(&pool, &nats.url()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, body) = stats(&stack, Some(&key), ORG, id).await;
    assert_eq!(counts(&body), (want, 0, 10, 0), "{body}");
}
