//! Collections over HTTP: create, add (idempotent, same organization only), remove, reorder,
//! delete; JSON errors; and many parallel adds to one collection, in one process and across two.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::command::{assert_timestamp, expect_error, expect_json, new_org, new_user, CommandApi};

/// The collection's order as its stream decides it: replays the events the way the contract
/// describes them.
async fn order_from_events(api: &CommandApi, collection: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for (event_type, payload, _, _) in api.events(&format!("collection-{collection}")).await {
        match event_type.as_str() {
            "CollectionTrackAdded" => order.push(payload["track_id"].as_str().expect("id").into()),
            "CollectionTrackRemoved" => {
                order.retain(|t| t != payload["track_id"].as_str().expect("id"))
            }
            "CollectionReordered" => {
                order = payload["track_ids"]
                    .as_array()
                    .expect("array")
                    .iter()
                    .map(|t| t.as_str().expect("id").to_owned())
                    .collect()
            }
            _ => {}
        }
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_is_created_filled_reordered_emptied_and_deleted() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let base = format!("/v1/music/{org}/collections");

    // Create: the collection object, field by field.
    let response = api
        .post_json(
            &key,
            &base,
            json!({"name": "Focus", "description": "for work", "extra": 1}),
        )
        .await;
    let created = expect_json(response, StatusCode::CREATED).await;
    let mut keys: Vec<&str> = created
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "id",
            "name",
            "organization_id",
            "owner_id",
            "track_count",
            "track_ids",
            "updated_at"
        ]
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(events::ids::CollectionId::parse(&id).is_ok(), "{id}");
    assert_eq!(created["organization_id"], org.as_str());
    assert_eq!(created["owner_id"], user.as_str());
    assert_eq!(created["name"], "Focus");
    assert_eq!(created["description"], "for work");
    assert_eq!(created["track_count"], 0);
    assert_eq!(created["track_ids"], json!([]));
    assert_eq!(
        assert_timestamp(&created["created_at"]),
        assert_timestamp(&created["updated_at"])
    );
    let no_description = expect_json(
        api.post_json(&key, &base, json!({"name": "Bare"})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(no_description["description"], Value::Null);

    // Add three tracks; adding one again is a 200 with no event.
    let tracks: Vec<String> = {
        let mut t = Vec::new();
        for _ in 0..3 {
            t.push(api.track(&key, &org).await);
        }
        t
    };
    let add = format!("{base}/{id}/tracks");
    for track in &tracks {
        let body = expect_json(
            api.post_json(&key, &add, json!({"track_id": track})).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(body["success"], true);
        assert_eq!(body["id"], id.as_str());
        assert!(body["detail"].is_string());
    }
    let again = expect_json(
        api.post_json(&key, &add, json!({"track_id": tracks[0]}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["success"], true);
    assert_eq!(
        order_from_events(&api, &id).await,
        tracks,
        "appended at the end, once each"
    );
    assert_eq!(api.events(&format!("collection-{id}")).await.len(), 4);

    // A track of another organization, a removed track, an absent one: 404 naming it.
    let other_org = new_org();
    let other_key = api.key(&user, &[&org, &other_org]).await;
    let foreign = api.track(&other_key, &other_org).await;
    let removed = api.track(&key, &org).await;
    expect_json(
        api.delete(&key, &format!("/v1/music/{org}/tracks/{removed}"))
            .await,
        StatusCode::OK,
    )
    .await;
    for track in [foreign.as_str(), removed.as_str(), "mtrack_000000000000"] {
        let body = expect_error(
            api.post_json(&key, &add, json!({"track_id": track})).await,
            404,
            "RESOURCE_NOT_FOUND",
        )
        .await;
        assert_eq!(body["error"]["details"]["track_id"], track);
    }
    // Body errors: malformed JSON, wrong content type, wrong types, missing fields.
    for (body, content_type, status, field) in [
        ("{\"track_id\": ", "application/json", 400, None),
        ("track_id=x", "application/x-www-form-urlencoded", 400, None),
        (
            "{\"track_id\": 42}",
            "application/json",
            422,
            Some("track_id"),
        ),
        (
            "{\"track_id\": \"nope\"}",
            "application/json",
            422,
            Some("track_id"),
        ),
        ("{}", "application/json", 422, Some("track_id")),
    ] {
        let response = api
            .http
            .post(api.url(&add))
            .header("x-api-key", &key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        let code = if status == 400 {
            "INVALID_REQUEST"
        } else {
            "VALIDATION_ERROR"
        };
        let envelope = expect_error(response, status, code).await;
        if let Some(field) = field {
            assert!(
                envelope["error"]["details"][field].is_string(),
                "{envelope}"
            );
        }
    }
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(513)}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"name": "ok", "description": ["no"]}), "description"),
        // PostgreSQL's jsonb, where events live, cannot hold U+0000 (found by schemathesis).
        (json!({"name": "a\u{0}b"}), "name"),
        (
            json!({"name": "ok", "description": "a\u{0}"}),
            "description",
        ),
        (json!({"name": "\u{3000}\u{2028}"}), "name"),
    ] {
        let envelope = expect_error(
            api.post_json(&key, &base, body).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            envelope["error"]["details"][field].is_string(),
            "{envelope}"
        );
    }

    // Reorder: listed first (unknown ids ignored), the rest keep their relative order.
    let order = format!("{base}/{id}/order");
    let body = expect_json(
        api.patch_json(
            &key,
            &order,
            json!({"ordered_track_ids": [tracks[2], "mtrack_ffffffffffff", "junk", tracks[1]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["success"], true);
    assert_eq!(
        order_from_events(&api, &id).await,
        [tracks[2].clone(), tracks[1].clone(), tracks[0].clone()]
    );
    let events = api.events(&format!("collection-{id}")).await;
    let last = events.last().expect("event");
    assert_eq!(last.0, "CollectionReordered");
    assert_eq!(
        last.1["track_ids"],
        json!([tracks[2], tracks[1], tracks[0]])
    );
    expect_error(
        api.patch_json(&key, &order, json!({"ordered_track_ids": "no"}))
            .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;

    // Remove a track; removing it again is a 200 with no event.
    let remove = format!("{base}/{id}/tracks/{}", tracks[1]);
    for _ in 0..2 {
        let body = expect_json(api.delete(&key, &remove).await, StatusCode::OK).await;
        assert_eq!(body["success"], true);
        assert_eq!(body["id"], id.as_str());
    }
    assert_eq!(
        order_from_events(&api, &id).await,
        [tracks[2].clone(), tracks[0].clone()]
    );
    let count = api.events(&format!("collection-{id}")).await.len();

    // Delete: ContentRemoved; after that the collection is gone for every command.
    let body = expect_json(
        api.delete(&key, &format!("{base}/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        body,
        json!({"success": true, "id": id, "detail": "Collection deleted."})
    );
    let events = api.events(&format!("collection-{id}")).await;
    assert_eq!(events.len(), count + 1);
    assert_eq!(events[count].0, "ContentRemoved");
    assert_eq!(
        events[count].1,
        json!({"target_type": "collection", "target_id": id, "organization_id": org})
    );
    expect_error(
        api.delete(&key, &format!("{base}/{id}")).await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
    expect_error(
        api.post_json(&key, &add, json!({"track_id": tracks[1]}))
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
    expect_error(
        api.post_empty(&key, &format!("{base}/{id}/share")).await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
}

/// Adds every track to the collection at once; a client retries a 503 as told.
async fn add_all_at_once(api: &CommandApi, urls: &[String], key: &str, tracks: &[String]) {
    let adds = tracks.iter().enumerate().map(|(i, track)| {
        let url = urls[i % urls.len()].clone();
        let http = api.http.clone();
        let (key, track) = (key.to_owned(), track.clone());
        async move {
            for _ in 0..20 {
                let response = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .json(&json!({"track_id": track}))
                    .send()
                    .await
                    .expect("send");
                match response.status() {
                    StatusCode::OK => return,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => panic!("{other}: {:?}", response.text().await),
                }
            }
            panic!("still refused after 20 tries");
        }
    });
    futures::future::join_all(adds).await;
}

fn assert_each_once(order: &[String], tracks: &[String]) {
    assert_eq!(order.len(), tracks.len(), "{order:?}");
    let unique: HashSet<&String> = order.iter().collect();
    assert_eq!(unique.len(), tracks.len(), "a track landed twice");
    assert_eq!(unique, tracks.iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_adds_to_one_collection_all_land_once() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let collection = api.collection(&key, &org).await;
    let mut tracks = Vec::new();
    for _ in 0..50 {
        tracks.push(api.track(&key, &org).await);
    }
    let url = api.url(&format!("/v1/music/{org}/collections/{collection}/tracks"));
    add_all_at_once(&api, std::slice::from_ref(&url), &key, &tracks).await;
    let events = api.events(&format!("collection-{collection}")).await;
    assert_eq!(
        events.len(),
        51,
        "one CollectionCreated and one add per track"
    );
    assert_each_once(&order_from_events(&api, &collection).await, &tracks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_between_two_processes_are_retried_and_nothing_lands_twice() {
    let api = CommandApi::start().await;
    let second = api.start_another().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let collection = api.collection(&key, &org).await;
    let mut tracks = Vec::new();
    // Not scaled down: fewer racers might never collide, and 40 small uploads are cheap.
    for _ in 0..40 {
        tracks.push(api.track(&key, &org).await);
    }
    let path = format!("/v1/music/{org}/collections/{collection}/tracks");
    let urls = [api.url(&path), second.url(&path)];
    add_all_at_once(&api, &urls, &key, &tracks).await;
    assert_each_once(&order_from_events(&api, &collection).await, &tracks);

    // The two processes raced for one stream: at least one lost a race and decided again.
    let mut conflicts = 0.0;
    for service in [&api.service, &second] {
        let metrics = service.metrics(&api.http).await;
        conflicts += metrics
            .lines()
            .filter(|l| l.starts_with("command_conflicts_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(conflicts > 0.0, "no conflict was ever retried");
}
