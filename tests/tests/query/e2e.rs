//! The query API end to end: created through the command API, projected, resolved here.
//! Read your writes, revocation seen by two instances, `max_views` across two instances, an
//! expiry set in the past through the event log, and content its creator removed.

use std::time::{Duration, Instant};

use chrono::Utc;
use events::event::{ShareCreated, TargetType, TrackImported};
use events::ids::{OrganizationId, UserId};
use events::licence::LicenceClass;
use events::share_token::ShareToken;
use serde_json::{json, Value};
use tests::process::{Bin, Service};
use tests::stack::{upload_via_api as upload, wav, Stack, ORG, USER};

async fn resolve(stack: &Stack, api: &Service, token: &str) -> reqwest::Response {
    stack
        .http
        .get(api.url(&format!("/v1/music/shared/{token}")))
        .send()
        .await
        .expect("resolve")
}

async fn status(stack: &Stack, api: &Service, token: &str) -> u16 {
    resolve(stack, api, token).await.status().as_u16()
}

async fn roomy_stack() -> Stack {
    Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("RESOLVE_BURST", "100000");
        env.set("RESOLVE_RATE_PER_MINUTE", "6000000");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resolve_right_after_a_create_succeeds() {
    let stack = roomy_stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    for i in 0..tests::scale(50) {
        let link = stack
            .share(&key, &format!("tracks/{track}"), json!({}))
            .await;
        let token = link["token"].as_str().expect("token");
        let response = resolve(&stack, &stack.query, token).await;
        assert_eq!(
            response.status(),
            200,
            "share #{i} was not readable at once"
        );
        let body: Value = response.json().await.expect("view");
        assert_eq!(body["track"]["id"], track.as_str());
        assert_eq!(body["track"]["measured_duration_seconds"], json!(1.0));
        assert_eq!(body["track"]["licence"]["commercial_use"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_two_instances() {
    let stack = roomy_stack().await;
    let second = stack.start_another(Bin::QueryApi).await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let link = stack
        .share(&key, &format!("tracks/{track}"), json!({}))
        .await;
    let token = link["token"].as_str().expect("token").to_owned();
    let id = link["id"].as_str().expect("id").to_owned();
    // Both instances cache the live view.
    for api in [&stack.query, &second] {
        for _ in 0..3 {
            assert_eq!(status(&stack, api, &token).await, 200);
        }
    }
    let revoked = stack
        .http
        .delete(stack.command.url(&format!("/v1/music/{ORG}/share/{id}")))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    for api in [&stack.query, &second] {
        loop {
            let s = status(&stack, api, &token).await;
            if s == 404 {
                break;
            }
            assert_eq!(s, 200);
            assert!(
                Instant::now() < deadline,
                "an instance still serves a revoked link"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And it stays dead (no stale cache entry comes back).
    for api in [&stack.query, &second] {
        assert_eq!(status(&stack, api, &token).await, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_views_holds_across_two_instances_end_to_end() {
    let stack = roomy_stack().await;
    let second = stack.start_another(Bin::QueryApi).await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let link = stack
        .share(&key, &format!("tracks/{track}"), json!({"max_views": 5}))
        .await;
    let token = link["token"].as_str().expect("token").to_owned();
    let requests = (0..50).map(|i| {
        let api = if i % 2 == 0 { &stack.query } else { &second };
        status(&stack, api, &token)
    });
    let statuses = futures::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_in_the_past_set_through_the_event_log_is_dead() {
    let stack = roomy_stack().await;
    // The API refuses an expiry in the past, so the log gets one the way a clock that moved on
    // would leave it: events of two days ago, one link expired a minute ago, one live tomorrow.
    let two_days_ago = Utc::now() - chrono::Duration::days(2);
    let (org, user) = (
        OrganizationId::parse(ORG).expect("org"),
        UserId::parse(USER).expect("user"),
    );
    let track = TrackImported {
        organization_id: org.clone(),
        owner_id: user.clone(),
        ..tests::log::track("Expiring", LicenceClass::Unclear)
    };
    stack.append(track.clone(), two_days_ago).await;
    let mut tokens = Vec::new();
    let mut last = 0;
    for expires_at in [
        Utc::now() - chrono::Duration::minutes(1),
        Utc::now() + chrono::Duration::days(1),
    ] {
        let token = ShareToken::generate();
        let created = ShareCreated {
            token_hash: token.hash(),
            organization_id: org.clone(),
            owner_id: user.clone(),
            expires_at: Some(expires_at),
            ..tests::log::share(TargetType::Track, track.track_id.as_str())
        };
        last = stack.append(created, two_days_ago).await;
        tokens.push(token.expose().to_owned());
    }
    // Appended behind the command API's back, so nobody waited for the projector: do it here.
    stack.wait_projected(last).await;
    assert_eq!(status(&stack, &stack.query, &tokens[1]).await, 200);
    assert_eq!(status(&stack, &stack.query, &tokens[0]).await, 404);
}

/// Links created within one second (timestamps have whole seconds) are still listed newest
/// first: in the reverse of the order they were created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_list_is_newest_first_within_a_second_too() {
    let stack = roomy_stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = upload(&stack, &key).await;
    let mut created = Vec::new();
    for _ in 0..6 {
        let link = stack
            .share(&key, &format!("tracks/{track}"), json!({}))
            .await;
        created.push(link["id"].as_str().expect("id").to_owned());
    }
    created.reverse();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = stack.query.url(&format!("/v1/music/{ORG}/shares?limit=4"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = stack
            .http
            .get(url)
            .header("x-api-key", &key)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("page");
        for item in page["data"].as_array().expect("data") {
            listed.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, created);
}

/// Sends a command with `key`; asserts a 2xx and returns the body.
async fn command(stack: &Stack, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = stack.command.url(&format!("/v1/music/{ORG}/{path}"));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = stack.http.request(method, url).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("command");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Resolves `token` until `done` holds for its 200 view (notices evict at once, but the
/// command's 200 only waits for the projector, not for every query instance's cache).
async fn view_when(stack: &Stack, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = resolve(stack, &stack.query, token).await;
        assert_eq!(response.status(), 200);
        let view: Value = response.json().await.expect("view");
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "still {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn track_ids(view: &Value) -> Vec<String> {
    view["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Deleting a track or a collection through the command API: its links stay and resolve as
/// unavailable, with every key; a collection leaves its removed track out and keeps the owner's
/// order for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_content_resolves_as_unavailable_end_to_end() {
    let stack = roomy_stack().await;
    let key = stack.api_key(USER, &[ORG]).await;
    let mut ids = Vec::new();
    for title in ["First", "Second", "Third"] {
        let track = stack.upload_track(&key, title, wav()).await;
        ids.push(track["id"].as_str().expect("id").to_owned());
    }
    let collection = command(
        &stack,
        &key,
        "POST",
        "collections",
        Some(json!({"name": "Mix"})),
    )
    .await;
    let collection = collection["id"].as_str().expect("id").to_owned();
    for id in &ids {
        let path = format!("collections/{collection}/tracks");
        command(&stack, &key, "POST", &path, Some(json!({"track_id": id}))).await;
    }
    let order = json!({"ordered_track_ids": [&ids[2], &ids[0]]});
    let path = format!("collections/{collection}/order");
    command(&stack, &key, "PATCH", &path, Some(order)).await;
    let track_link = stack
        .share(&key, &format!("tracks/{}", ids[0]), json!({}))
        .await;
    let track_token = track_link["token"].as_str().expect("token").to_owned();
    let coll_link = stack
        .share(&key, &format!("collections/{collection}"), json!({}))
        .await;
    let coll_token = coll_link["token"].as_str().expect("token").to_owned();

    // Live first (and cached): the owner's order.
    let view = view_when(&stack, &coll_token, |_| true).await;
    assert_eq!(
        track_ids(&view),
        [ids[2].clone(), ids[0].clone(), ids[1].clone()]
    );
    let view = view_when(&stack, &track_token, |_| true).await;
    assert_eq!(view["available"], true);

    command(&stack, &key, "DELETE", &format!("tracks/{}", ids[0]), None).await;
    let unavailable = json!({
        "kind": "track", "available": false, "message": null, "share": null,
        "track": null, "collection": null, "tracks": null,
    });
    let view = view_when(&stack, &track_token, |v| v["available"] == false).await;
    assert!(
        view["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{view}"
    );
    let mut expected = unavailable.clone();
    expected["message"] = view["message"].clone();
    assert_eq!(view, expected);
    let view = view_when(&stack, &coll_token, |v| track_ids(v).len() == 2).await;
    assert_eq!(view["available"], true);
    assert_eq!(track_ids(&view), [ids[2].clone(), ids[1].clone()]);

    command(
        &stack,
        &key,
        "DELETE",
        &format!("collections/{collection}"),
        None,
    )
    .await;
    let view = view_when(&stack, &coll_token, |v| v["available"] == false).await;
    let mut expected = unavailable;
    expected["kind"] = json!("collection");
    expected["message"] = view["message"].clone();
    assert!(
        view["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{view}"
    );
    assert_eq!(view, expected);
}
