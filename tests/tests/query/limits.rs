//! `max_views` is exact across instances; the rate limit is per client IP, and a spoofed
//! `X-Forwarded-For` helps only through a trusted proxy.

use tests::query::{audio_bytes, QueryEnv, ShareOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_views_is_exact_across_two_instances() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Five plays", &audio_bytes(10)).await;
    let (token, share_id) = q
        .share(
            "track",
            &track,
            ShareOpts {
                max_views: Some(5),
                ..ShareOpts::default()
            },
        )
        .await;
    let roomy = [
        ("RESOLVE_BURST", "1000"),
        ("RESOLVE_RATE_PER_MINUTE", "60000"),
    ];
    let a = q.start_query(&roomy).await;
    let b = q.start_query(&roomy).await;

    let requests = (0..50).map(|i| {
        let url = if i % 2 == 0 { &a } else { &b }.url(&format!("/v1/music/shared/{token}"));
        let http = q.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("resolve")
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let dead = statuses.iter().filter(|s| **s == 404).count();
    assert_eq!((ok, dead), (5, 45), "{statuses:?}");

    let used: i64 =
        sqlx::query_scalar("SELECT used FROM query_side.share_usage WHERE share_id = $1")
            .bind(&share_id)
            .fetch_one(&q.pool)
            .await
            .expect("usage row");
    assert_eq!(used, 5);

    // Unlimited links pay nothing: no usage row at all.
    let (free, free_id) = q.share("track", &track, ShareOpts::default()).await;
    assert_eq!(q.resolve(&a, &free).await.0, 200);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM query_side.share_usage WHERE share_id = $1")
            .bind(&free_id)
            .fetch_one(&q.pool)
            .await
            .expect("count");
    assert_eq!(rows, 0);
}

async fn burst(
    q: &QueryEnv,
    api: &tests::process::Service,
    token: &str,
    xff: Option<&str>,
) -> Vec<reqwest::Response> {
    let mut out = Vec::new();
    for _ in 0..6 {
        let mut request = q.http.get(api.url(&format!("/v1/music/shared/{token}")));
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        out.push(request.send().await.expect("resolve"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_refuses_a_burst_and_ignores_spoofed_forwarding() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Popular", &audio_bytes(10)).await;
    let (token, _) = q.share("track", &track, ShareOpts::default()).await;
    let limits = [("RESOLVE_BURST", "5"), ("RESOLVE_RATE_PER_MINUTE", "6")];
    let api = q.start_query(&limits).await;

    let responses = burst(&q, &api, &token, None).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let remaining: Vec<&str> = responses[..5]
        .iter()
        .map(|r| r.headers()["ratelimit-remaining"].to_str().expect("ascii"))
        .collect();
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let refused = responses.into_iter().last().expect("the 429");
    let h = refused.headers().clone();
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], "6");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"], h["retry-after"]);
    let body: serde_json::Value = refused.json().await.expect("envelope");
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["status"], 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Spoofing X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = burst(&q, &api, &token, Some("198.51.100.7")).await;
    assert!(spoofed.iter().all(|r| r.status() == 429));

    // Health and metrics are never limited.
    assert_eq!(q.get(&api, "/healthz").await.status(), 200);

    // Behind a trusted proxy, each forwarded client has its own budget.
    let proxied = q
        .start_query(&[limits[0], limits[1], ("TRUSTED_PROXIES", "127.0.0.1/32")])
        .await;
    let first = burst(&q, &proxied, &token, Some("198.51.100.7")).await;
    assert_eq!(first.iter().filter(|r| r.status() == 200).count(), 5);
    assert_eq!(first[5].status(), 429);
    // A client cannot escape by prepending an address: the right-most untrusted entry counts.
    let prepended = burst(&q, &proxied, &token, Some("203.0.113.1, 198.51.100.7")).await;
    assert!(prepended.iter().all(|r| r.status() == 429));
    let other = burst(&q, &proxied, &token, Some("198.51.100.8")).await;
    assert_eq!(other.iter().filter(|r| r.status() == 200).count(), 5);
}
