//! What an operator sees: every process's `/metrics` in Prometheus text with the figures the
//! operator needs from the first scrape on, and JSON log lines carrying the request id.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::process::Service;
use tests::read_model::metric;
use tests::stack::Stack;
use tests::stack::{upload_via_api, ORG, USER};

async fn scrape(http: &reqwest::Client, service: &Service) -> String {
    let response = http
        .get(service.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("text")
}

/// Every name is exposed with a help line and a type, as Prometheus text.
fn assert_exposes(exposition: &str, service: &Service, names: &[&str]) {
    for name in names {
        assert!(
            exposition.contains(&format!("# HELP {name} ")),
            "{} has no HELP for {name}:\n{exposition}",
            service.bin.name()
        );
        assert!(
            exposition.contains(&format!("# TYPE {name} ")),
            "{} has no TYPE for {name}",
            service.bin.name()
        );
    }
}

/// The sample of `name` whose labels include every one of `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let rest = key.strip_prefix(name)?;
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (rest.starts_with('{') && all)
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_exposes_its_figures_and_logs_json_with_the_request_id() {
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("RESOLVE_BURST", "3");
        env.set("RESOLVE_RATE_PER_MINUTE", "1");
    })
    .await;
    let http = reqwest::Client::new();

    // Before any traffic, the counters an operator alerts on are already there, at zero.
    let query = scrape(&http, &stack.query).await;
    assert_exposes(
        &query,
        &stack.query,
        &[
            "resolve_cache_hits_total",
            "resolve_cache_misses_total",
            "resolve_rate_limited_total",
            "audit_spool_depth",
            "audit_publish_failures_total",
            "audit_dropped_total",
        ],
    );
    assert_eq!(metric(&query, "audit_publish_failures_total"), 0.0);
    assert_eq!(
        sample(&query, "audit_dropped_total", &[("reason", "spool_full")]),
        Some(0.0)
    );

    // Some traffic: a share created with a known request id, then resolved until limited.
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload_via_api(&stack, &key).await;
    let request_id = "req_observability0000000001";
    let created = http
        .post(
            stack
                .command
                .url(&format!("/v1/music/{ORG}/tracks/{track}/share")),
        )
        .header("x-api-key", &key)
        .header("x-request-id", request_id)
        .json(&json!({}))
        .send()
        .await
        .expect("share");
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], request_id);
    let link: Value = created.json().await.expect("link");
    let token = link["token"].as_str().expect("token");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = http
            .get(stack.query.url(&format!("/v1/music/shared/{token}")))
            .send()
            .await
            .expect("resolve");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    let command = scrape(&http, &stack.command).await;
    assert_exposes(
        &command,
        &stack.command,
        &["http_requests_total", "http_request_duration_seconds"],
    );
    let share_route = [
        ("method", "POST"),
        ("route", "/v1/music/{org}/tracks/{track_id}/share"),
        ("status", "201"),
    ];
    assert_eq!(
        sample(&command, "http_requests_total", &share_route),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &command,
            "http_request_duration_seconds_count",
            &share_route
        ),
        Some(1.0)
    );
    assert!(sample(
        &command,
        "http_request_duration_seconds_bucket",
        &share_route
    )
    .is_some());
    assert!(metric(&command, "events_appended_total") >= 2.0);

    let query = scrape(&http, &stack.query).await;
    let resolve = |status| {
        [
            ("method", "GET"),
            ("route", "/v1/music/shared/{token}"),
            ("status", status),
        ]
    };
    assert_eq!(
        sample(&query, "http_requests_total", &resolve("200")),
        Some(3.0)
    );
    assert_eq!(
        sample(&query, "http_requests_total", &resolve("429")),
        Some(2.0)
    );
    assert_eq!(metric(&query, "resolve_rate_limited_total"), 2.0);
    assert_eq!(metric(&query, "resolve_cache_misses_total"), 1.0);
    assert_eq!(metric(&query, "resolve_cache_hits_total"), 2.0);
    // The five attempts are audited: published, nothing left waiting in the spool.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let query = scrape(&http, &stack.query).await;
        let published = metric(&query, "audit_published_total");
        if published >= 5.0 && metric(&query, "audit_spool_depth") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "audit not delivered:\n{query}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The projector: checkpoint, head and lag, caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let projector = scrape(&http, &stack.projector).await;
        assert_exposes(
            &projector,
            &stack.projector,
            &[
                "projector_checkpoint_position",
                "projector_head_position",
                "projector_lag_positions",
            ],
        );
        let checkpoint = metric(&projector, "projector_checkpoint_position");
        let head = metric(&projector, "projector_head_position");
        if checkpoint > 0.0 && checkpoint == head {
            assert_eq!(metric(&projector, "projector_lag_positions"), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projector not caught up:\n{projector}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Logs: every line of every process is one JSON object, and the share's lines carry its
    // request id.
    let logs = stack.all_logs();
    let mut with_request_id = 0;
    for line in logs.lines() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        let spans = entry["spans"].as_array().cloned().unwrap_or_default();
        if spans.iter().any(|s| s["request_id"] == request_id) {
            with_request_id += 1;
        }
    }
    assert!(
        with_request_id >= 1,
        "no log line carries the request id {request_id}"
    );
}
