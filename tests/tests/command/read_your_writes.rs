//! Read your writes, with a stand-in projector: the test publishes change notices on a private
//! namespace. A command waits for the projector to reach its event while one is heard, answers at
//! once when none is, and the command API starts and serves without NATS at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::notice::{self, ChangeNotice};
use reqwest::StatusCode;
use serde_json::json;
use tests::command::{expect_json, new_org, new_user, CommandApi};

/// Publishes a heartbeat at `position` every 100 ms until `stop` is set.
fn stand_in_projector(
    client: async_nats::Client,
    subject: String,
    position: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while stop.load(Ordering::SeqCst) == 0 {
            let notice = ChangeNotice::heartbeat(position.load(Ordering::SeqCst));
            let payload = serde_json::to_vec(&notice).expect("json");
            let _ = client.publish(subject.clone(), payload.into()).await;
            let _ = client.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn head(api: &CommandApi) -> u64 {
    let pool = api.pool().await;
    let head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM event_store.events")
            .fetch_one(&pool)
            .await
            .expect("head");
    pool.close().await;
    head as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_answers_once_the_projector_has_its_event() {
    let namespace = format!("ryw_{}", uuid::Uuid::new_v4().simple());
    let api = CommandApi::start_with(|env| {
        env.set("NOTICE_NAMESPACE", namespace.clone());
        env.set("READ_YOUR_WRITES_TIMEOUT_MS", "30000");
    })
    .await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;

    // Before any notice is heard, nothing waits.
    let started = Instant::now();
    expect_json(
        api.post_json(
            &key,
            &format!("/v1/music/{org}/collections"),
            json!({"name": "a"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));

    let deadline = Instant::now() + Duration::from_secs(15);
    while !api
        .all_logs()
        .contains("listening for the projector's change notices")
    {
        assert!(
            Instant::now() < deadline,
            "never subscribed:\n{}",
            api.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = async_nats::connect(tests::nats::shared_url())
        .await
        .expect("nats");
    let position = Arc::new(AtomicU64::new(head(&api).await));
    let stop = Arc::new(AtomicU64::new(0));
    let projector = stand_in_projector(
        client,
        notice::subject(&namespace),
        position.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A command with a live projector behind: it holds its answer until the projector has
    // reached its event.
    let http = api.http.clone();
    let url = api.url(&format!("/v1/music/{org}/collections"));
    let key2 = key.clone();
    let command = tokio::spawn(async move {
        http.post(url)
            .header("x-api-key", key2)
            .json(&json!({"name": "waits"}))
            .send()
            .await
            .expect("send")
    });
    let before = position.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    let appended = loop {
        let now = head(&api).await;
        if now > before {
            break now;
        }
        assert!(Instant::now() < deadline, "the command appended nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !command.is_finished(),
        "answered before the projector reached its event"
    );

    position.store(appended, Ordering::SeqCst);
    let response = tokio::time::timeout(Duration::from_secs(10), command)
        .await
        .expect("answered once the projector caught up")
        .expect("task");
    expect_json(response, StatusCode::CREATED).await;

    // The projector goes quiet: after a few seconds it counts as down and nothing waits.
    stop.store(1, Ordering::SeqCst);
    projector.await.expect("stand-in stopped");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let started = Instant::now();
    expect_json(
        api.post_json(
            &key,
            &format!("/v1/music/{org}/collections"),
            json!({"name": "c"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for a projector that is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_api_serves_without_nats() {
    let unreachable = format!("nats://127.0.0.1:{}", tests::nats::free_port());
    let api = CommandApi::start_with(|env| {
        env.set("NATS_URL", unreachable);
    })
    .await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let track = api.track(&key, &org).await;
    let link = expect_json(
        api.post_empty(&key, &format!("/v1/music/{org}/tracks/{track}/share"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(link["token"].is_string());
    assert!(api.all_logs().contains("cannot reach NATS"));
}
