//! Several query instances as one (CONTRACT.md): the resolve limit shared through Redis (and
//! counted alone while Redis is away), the audit stream replicated on a 3-node JetStream
//! cluster, and the replica count reported when it is not the configured one. Real binaries,
//! real Redis and NATS servers; outages use private servers started here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tests::command::TrackForm;
use tests::nats::PrivateNats;
use tests::nats_cluster::NatsCluster;
use tests::process::{Bin, Service};
use tests::redis::PrivateRedis;
use tests::stack::Stack;

/// A token no link has: every allowed attempt is a 404, every refused one a 429.
const UNKNOWN: &str = "/v1/music/shared/shr_00000000000000000000000000000000";

/// One resolve from `client` (the instances trust loopback's `X-Forwarded-For`); its status.
async fn status(http: &reqwest::Client, api: &Service, client: &str) -> u16 {
    http.get(api.url(UNKNOWN))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("resolve answers")
        .status()
        .as_u16()
}

/// The value of an unlabelled metric on `api`'s `/metrics`.
async fn metric(http: &reqwest::Client, api: &Service, name: &str) -> Option<f64> {
    let text = http
        .get(api.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// Sends `count` resolves from the one address `client`, round robin over `apis`, `parallel` at
/// a time; returns how many passed the limit. Any answer but 404 or 429 fails the test.
async fn spread(
    http: &reqwest::Client,
    apis: &[&Service],
    client: &str,
    count: usize,
    parallel: usize,
) -> usize {
    let statuses: Vec<u16> = futures::stream::iter(0..count)
        .map(|i| status(http, apis[i % apis.len()], client))
        .buffer_unordered(parallel)
        .collect()
        .await;
    for s in &statuses {
        assert!(*s == 404 || *s == 429, "a resolve answered {s}");
    }
    statuses.iter().filter(|s| **s == 404).count()
}

#[tokio::test]
async fn three_instances_let_one_ip_through_the_configured_rate_not_three_times_it() {
    let redis = tests::redis::shared_url();
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("RATE_LIMIT_REDIS_URL", redis.as_str());
        // A loaded CI machine must not push an instance into fallback: this is about sharing.
        env.set("RATE_LIMIT_REDIS_TIMEOUT_MS", "1000");
        env.set("RESOLVE_RATE_PER_MINUTE", "600");
        env.set("RESOLVE_BURST", "20");
        env.set("TRUSTED_PROXIES", "127.0.0.1/32");
    })
    .await;
    let second = stack.start_another(Bin::QueryApi).await;
    let third = stack.start_another(Bin::QueryApi).await;
    let apis = [&stack.query, &second, &third];
    let http = &stack.http;

    // The burst: 60 at once over three instances, 20 of them pass (one more may have been
    // earned meanwhile: one per 100 ms).
    let started = Instant::now();
    let burst = spread(http, &apis, "198.51.100.1", 60, 6).await;
    let earned = (started.elapsed().as_millis() / 100) as usize;
    assert!(
        (20..=20 + earned + 1).contains(&burst),
        "{burst} of a burst of 20 passed over three instances"
    );

    // The rate: 10 per second across all three for a few seconds, within 10%.
    let seconds = 5.0;
    let started = Instant::now();
    let mut passed = 0;
    while started.elapsed().as_secs_f64() < seconds {
        passed += spread(http, &apis, "198.51.100.1", 9, 3).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = elapsed * 10.0;
    assert!(
        (passed as f64 - expected).abs() <= expected * 0.1 + 1.0,
        "{passed} passed in {elapsed:.1} s at 10/s over three instances (expected {expected:.0})"
    );
    for api in apis {
        assert_eq!(
            metric(http, api, "rate_limit_fallback_active").await,
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn without_redis_each_instance_limits_alone_and_shares_again_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("RATE_LIMIT_REDIS_URL", redis.url());
        // Only the outage below may cause a fallback, not a slow answer on a loaded machine.
        env.set("RATE_LIMIT_REDIS_TIMEOUT_MS", "1000");
        env.set("RESOLVE_RATE_PER_MINUTE", "6");
        env.set("RESOLVE_BURST", "5");
        env.set("TRUSTED_PROXIES", "127.0.0.1/32");
    })
    .await;
    let second = stack.start_another(Bin::QueryApi).await;
    let apis = [&stack.query, &second];
    let http = &stack.http;
    for api in apis {
        assert_eq!(
            metric(http, api, "rate_limit_fallback_active").await,
            Some(0.0),
            "the gauge is there from the first scrape"
        );
    }

    // Shared: one burst of 5 over both instances (one earned back every 10 s).
    assert_eq!(spread(http, &apis, "198.51.100.2", 12, 2).await, 5);

    // Redis gone: never a 5xx, each instance counts alone (a fresh bucket of 5 each).
    redis.stop();
    let alone = spread(http, &apis, "198.51.100.3", 24, 2).await;
    assert_eq!(alone, 10, "each of two instances gives its own burst of 5");
    for api in apis {
        assert_eq!(
            metric(http, api, "rate_limit_fallback_active").await,
            Some(1.0)
        );
        let health = http.get(api.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), 200);
    }
    let logs = stack.all_logs();
    assert_eq!(
        logs.matches("Redis did not answer").count(),
        2,
        "one line per instance, not one per request"
    );

    // Redis back (empty): within 5 s both instances count through it again.
    redis.resume();
    let back = Instant::now();
    for api in apis {
        while metric(http, api, "rate_limit_fallback_active").await != Some(0.0) {
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "still in fallback 5 s after Redis returned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        spread(http, &apis, "198.51.100.4", 12, 2).await,
        5,
        "one shared burst again"
    );
    assert!(stack.all_logs().contains("limits are shared again"));
}

/// Every attempt's audit message, by user agent, read from the stream on `client`.
async fn audit_by_user_agent(client: &async_nats::Client, expect: usize) -> HashMap<String, u32> {
    let js = async_nats::jetstream::new(client.clone());
    // Just after a leader election the cluster may take a few tries to place a consumer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = loop {
        let attempt = async {
            js.get_stream("MUSIC_AUDIT")
                .await?
                .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(anyhow::Error::from)
        };
        match attempt.await {
            Ok(consumer) => break consumer,
            Err(e) => assert!(Instant::now() < deadline, "no consumer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen = HashMap::new();
    let mut read = 0;
    while read < expect {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        read += 1;
        let event: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("audit JSON");
        let agent = event["user_agent"].as_str().unwrap_or("").to_owned();
        *seen.entry(agent).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn killing_the_audit_streams_leader_under_load_loses_and_duplicates_nothing() {
    let mut cluster = NatsCluster::start(3);
    cluster.wait_for_jetstream(Duration::from_secs(30)).await;
    let stack = Stack::start_with(&cluster.url(), |env| {
        env.set("AUDIT_STREAM_REPLICAS", "3");
        env.set("RESOLVE_RATE_PER_MINUTE", "100000000");
        env.set("RESOLVE_BURST", "1000000");
        env.set("RUST_LOG", "warn,service_kit::server=info");
    })
    .await;
    let client = cluster.client().await;
    let js = async_nats::jetstream::new(client.clone());
    // The query API creates the stream at start, with three replicas.
    let deadline = Instant::now() + Duration::from_secs(20);
    let replicas = loop {
        if let Ok(mut stream) = js.get_stream("MUSIC_AUDIT").await {
            if let Ok(info) = stream.info().await {
                break info.config.num_replicas;
            }
        }
        assert!(Instant::now() < deadline, "no audit stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replicas, 3);
    let leader = cluster
        .stream_leader("MUSIC_AUDIT", Duration::from_secs(20))
        .await;

    let key = stack.api_key("usr_0000000000a1", &["org_acme"]).await;
    let link = live_link(&stack, &key).await;

    let total = tests::scale(2_000).max(200);
    let http = &stack.http;
    let resolve = |i: usize| {
        let url = link.clone();
        async move {
            http.get(url)
                .header("user-agent", format!("attempt-{i}"))
                .send()
                .await
                .expect("resolve answers")
                .status()
                .as_u16()
        }
    };
    let first: Vec<u16> = futures::stream::iter(0..total / 2)
        .map(resolve)
        .buffer_unordered(8)
        .collect()
        .await;
    cluster.kill(&leader);
    let second: Vec<u16> = futures::stream::iter(total / 2..total)
        .map(resolve)
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        first.iter().chain(&second).all(|s| *s == 200),
        "every resolve answered 200 with the leader gone"
    );

    // Every attempt exactly once, however long the stream took to elect a new leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = match js.get_stream("MUSIC_AUDIT").await {
            Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if stored >= total as u64 || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stored, total as u64, "messages in the stream");
    let seen = audit_by_user_agent(&client, total + 10).await;
    let missing: Vec<usize> = (0..total)
        .filter(|i| !seen.contains_key(&format!("attempt-{i}")))
        .collect();
    let doubled: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(doubled.is_empty(), "duplicated: {doubled:?}");
    assert_ne!(
        cluster
            .stream_leader("MUSIC_AUDIT", Duration::from_secs(20))
            .await,
        leader
    );
}

/// A live share link's URL, made through the real command API.
async fn live_link(stack: &Stack, key: &str) -> String {
    let form = TrackForm::valid()
        .with("title", "Replicated")
        .audio(tests::audio::wav_tone_ms(1_000), "track.wav");
    let track = stack.commands().create_track(key, "org_acme", form).await;
    let id = track["id"].as_str().expect("track id");
    let share = stack
        .commands()
        .share(
            key,
            "org_acme",
            &format!("tracks/{id}"),
            serde_json::json!({}),
        )
        .await;
    let token = share["token"].as_str().expect("token");
    stack.query.url(&format!("/v1/music/shared/{token}"))
}

#[tokio::test]
async fn an_audit_stream_with_another_replica_count_is_kept_and_reported() {
    let nats = PrivateNats::start();
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "MUSIC_AUDIT".to_owned(),
        subjects: vec!["music.audit.>".to_owned()],
        ..Default::default()
    })
    .await
    .expect("an existing one-replica stream");
    let stack = Stack::start_with(&nats.url(), |env| {
        env.set("AUDIT_STREAM_REPLICAS", "3");
        env.set("TRUSTED_PROXIES", "127.0.0.1/32");
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stack.query.logs().contains("another replica count") {
        assert!(
            Instant::now() < deadline,
            "not reported at start:\n{}",
            stack.query.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = stack
        .query
        .logs()
        .lines()
        .find(|l| l.contains("another replica count"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("\"replicas\":1") && line.contains("\"configured\":3"),
        "{line}"
    );
    // Kept, and used.
    assert_eq!(status(&stack.http, &stack.query, "192.0.2.1").await, 404);
    assert_eq!(
        tests::audit::wait_for_count(&nats.url(), 1, Duration::from_secs(10)).await,
        1
    );
    let mut stream = js.get_stream("MUSIC_AUDIT").await.expect("stream");
    assert_eq!(stream.info().await.expect("info").config.num_replicas, 1);
}

#[tokio::test]
async fn spooled_audit_messages_are_delivered_within_ten_seconds_of_nats_returning() {
    let mut nats = PrivateNats::start();
    let stack = Stack::start_with(&nats.url(), |env| {
        env.set("TRUSTED_PROXIES", "127.0.0.1/32");
    })
    .await;
    assert_eq!(status(&stack.http, &stack.query, "192.0.2.1").await, 404);
    assert_eq!(
        tests::audit::wait_for_count(&nats.url(), 1, Duration::from_secs(10)).await,
        1
    );
    nats.stop();
    let during = 20;
    for i in 0..during {
        assert_eq!(
            status(&stack.http, &stack.query, &format!("192.0.2.{}", 10 + i)).await,
            404
        );
    }
    // Let the publisher notice and spool them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.resume();
    let back = Instant::now();
    let want = 1 + during as u64;
    let stored = tests::audit::wait_for_count(&nats.url(), want, Duration::from_secs(10)).await;
    assert_eq!(stored, want, "after {:?}", back.elapsed());
}
