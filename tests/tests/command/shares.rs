//! Share links over HTTP: creating them exactly as the source pages say, every invalid body,
//! revoking idempotently, and saving a shared track (with every kind of dead link).

use chrono::Duration;
use events::ids::ShareLinkId;
use events::share_token::ShareToken;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tests::command::{assert_timestamp, expect_error, expect_json, new_org, new_user, CommandApi};

const BASE_URL: &str = "https://share.example.test";

async fn share(api: &CommandApi, key: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    match body {
        Some(body) => api.post_json(key, path, body).await,
        None => api.post_empty(key, path).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_are_created_as_the_source_pages_say() {
    let api = CommandApi::start_with(|env| {
        env.set("PUBLIC_BASE_URL", format!("{BASE_URL}/"));
    })
    .await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let track = api.track(&key, &org).await;
    let collection = api.collection(&key, &org).await;
    let track_share = format!("/v1/music/{org}/tracks/{track}/share");
    let collection_share = format!("/v1/music/{org}/collections/{collection}/share");

    // No body at all: the defaults.
    let response = share(&api, &key, &track_share, None).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let link = expect_json(response, StatusCode::CREATED).await;
    let mut keys: Vec<&str> = link
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
            "expires_at",
            "id",
            "label",
            "max_views",
            "password_protected",
            "target_id",
            "target_type",
            "token",
            "url",
            "visibility"
        ]
    );
    let id = link["id"].as_str().expect("id");
    assert!(ShareLinkId::parse(id).is_ok(), "{id}");
    let token = link["token"].as_str().expect("token");
    assert!(ShareToken::parse(token).is_some(), "{token}");
    assert_eq!(link["url"], format!("{BASE_URL}/v1/music/shared/{token}"));
    assert_eq!(link["target_type"], "track");
    assert_eq!(link["target_id"], track.as_str());
    assert_eq!(link["visibility"], "link_only");
    assert_eq!(link["expires_at"], Value::Null);
    assert_eq!(link["max_views"], Value::Null);
    assert_timestamp(&link["created_at"]);

    // The event and the index hold the token's hash only.
    let token_hash = hex::encode(Sha256::digest(token.as_bytes()));
    let events = api.events(&format!("share-{id}")).await;
    assert_eq!(events.len(), 1);
    let (event_type, payload, trace_id, actor) = &events[0];
    assert_eq!(event_type, "ShareCreated");
    assert_eq!(trace_id, &request_id);
    assert_eq!(actor, &user);
    assert_eq!(
        payload,
        &json!({
            "share_id": id,
            "token_hash": token_hash,
            "target_type": "track",
            "target_id": track,
            "organization_id": org,
            "owner_id": user,
            "visibility": "link_only",
            "expires_at": null,
            "max_views": null
        })
    );
    let pool = api.pool().await;
    let indexed: String =
        sqlx::query_scalar("SELECT share_id FROM command_side.share_tokens WHERE token_hash = $1")
            .bind(&token_hash)
            .fetch_one(&pool)
            .await
            .expect("the token's hash is indexed");
    assert_eq!(indexed, id);
    pool.close().await;

    // A JSON content type with an empty body, and nulls, are the defaults too.
    for (content_type, body) in [
        ("application/json", ""),
        (
            "application/json",
            "{\"visibility\": null, \"expires_in_days\": null, \"max_views\": null}",
        ),
    ] {
        let response = api
            .http
            .post(api.url(&track_share))
            .header("x-api-key", &key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        let link = expect_json(response, StatusCode::CREATED).await;
        assert_eq!(link["visibility"], "link_only");
        assert_eq!(link["expires_at"], Value::Null);
        assert_eq!(link["max_views"], Value::Null);
    }

    // A collection, public, expiring; unknown fields ignored.
    let link = expect_json(
        share(
            &api,
            &key,
            &collection_share,
            Some(json!({"visibility": "public", "expires_in_days": 7, "max_views": 3, "colour": "red"})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(link["target_type"], "collection");
    assert_eq!(link["target_id"], collection.as_str());
    assert_eq!(link["visibility"], "public");
    assert_eq!(link["max_views"], 3);
    let created = assert_timestamp(&link["created_at"]);
    assert_eq!(
        assert_timestamp(&link["expires_at"]),
        created + Duration::days(7)
    );

    // Expiry: exactly N days of 24 hours, clamped to 90.
    for (days, expected) in [(1, 1), (90, 90), (91, 90), (3650, 90), (i64::MAX, 90)] {
        let link = expect_json(
            share(
                &api,
                &key,
                &track_share,
                Some(json!({"expires_in_days": days})),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let created = assert_timestamp(&link["created_at"]);
        assert_eq!(
            assert_timestamp(&link["expires_at"]) - created,
            Duration::hours(24 * expected),
            "{days} days"
        );
    }

    // An integer literal of any size is still a number of days above 90: clamped.
    let response = api
        .http
        .post(api.url(&track_share))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body("{\"expires_in_days\": 100000000000000000000000}")
        .send()
        .await
        .expect("send");
    let link = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(
        assert_timestamp(&link["expires_at"]) - assert_timestamp(&link["created_at"]),
        Duration::hours(24 * 90)
    );

    // Every share is a new link with a new token.
    let a = expect_json(
        share(&api, &key, &track_share, None).await,
        StatusCode::CREATED,
    )
    .await;
    let b = expect_json(
        share(&api, &key, &track_share, None).await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["token"], b["token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_share_bodies_are_refused() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let track = api.track(&key, &org).await;
    let path = format!("/v1/music/{org}/tracks/{track}/share");

    for (body, field) in [
        (json!({"expires_in_days": "3"}), "expires_in_days"),
        (json!({"expires_in_days": 0}), "expires_in_days"),
        (json!({"expires_in_days": -1}), "expires_in_days"),
        (json!({"expires_in_days": 2.5}), "expires_in_days"),
        (json!({"expires_in_days": true}), "expires_in_days"),
        (json!({"max_views": 0}), "max_views"),
        (json!({"max_views": "5"}), "max_views"),
        (json!({"max_views": 1.5}), "max_views"),
        (json!({"max_views": -3}), "max_views"),
        (json!({"max_views": 2_147_483_648u64}), "max_views"),
        (json!({"visibility": "private"}), "visibility"),
        (json!({"visibility": 1}), "visibility"),
    ] {
        let envelope = expect_error(
            api.post_json(&key, &path, body.clone()).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        let details = envelope["error"]["details"].as_object().expect("details");
        assert!(details[field].is_string(), "{body}: {envelope}");
        assert_eq!(details.len(), 1, "{body}: {envelope}");
    }
    // All wrong at once: each named.
    let envelope = expect_error(
        api.post_json(
            &key,
            &path,
            json!({"visibility": "x", "expires_in_days": 0, "max_views": 0}),
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        envelope["error"]["details"]
            .as_object()
            .expect("details")
            .len(),
        3
    );
    // A fraction written as 2.0, or an exponent, is not a JSON integer either; nor is a limit
    // beyond 64 bits.
    for (body, field) in [
        ("{\"expires_in_days\": 2.0}", "expires_in_days"),
        ("{\"expires_in_days\": 1e3}", "expires_in_days"),
        ("{\"max_views\": 100000000000000000000000}", "max_views"),
    ] {
        let response = api
            .http
            .post(api.url(&path))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        let envelope = expect_error(response, 422, "VALIDATION_ERROR").await;
        assert!(
            envelope["error"]["details"][field].is_string(),
            "{body}: {envelope}"
        );
    }
    // Not an object.
    expect_error(
        api.post_json(&key, &path, json!([1])).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    // Malformed JSON, and a body that is not JSON at all.
    for (content_type, body) in [
        ("application/json", "{\"visibility\":"),
        ("text/plain", "public"),
    ] {
        let response = api
            .http
            .post(api.url(&path))
            .header("x-api-key", &key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        expect_error(response, 400, "INVALID_REQUEST").await;
    }
    assert_eq!(
        api.events(&format!("track-{track}")).await.len(),
        1,
        "nothing but the import"
    );
    let pool = api.pool().await;
    let shares: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'ShareCreated'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(shares, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_is_idempotent() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let track = api.track(&key, &org).await;
    let link = expect_json(
        api.post_empty(&key, &format!("/v1/music/{org}/tracks/{track}/share"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = link["id"].as_str().expect("id");
    let path = format!("/v1/music/{org}/share/{id}");
    for _ in 0..2 {
        let body = expect_json(api.delete(&key, &path).await, StatusCode::OK).await;
        assert_eq!(
            body,
            json!({"success": true, "id": id, "detail": "Share link revoked."})
        );
    }
    let types: Vec<String> = api
        .events(&format!("share-{id}"))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["ShareCreated", "ShareRevoked"]);
    let body = expect_error(
        api.delete(&key, &format!("/v1/music/{org}/share/mslink_000000000000"))
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
    assert_eq!(body["error"]["details"]["share_id"], "mslink_000000000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_shared_track_adds_one_edge_and_dead_links_are_404() {
    let api = CommandApi::start().await;
    let (owner, org) = (new_user(), new_org());
    let owner_key = api.key(&owner, &[&org]).await;
    let track = api.track(&owner_key, &org).await;
    let create = |path: String, body: Option<Value>| {
        let api = &api;
        let key = owner_key.clone();
        async move {
            let link = expect_json(share(api, &key, &path, body).await, StatusCode::CREATED).await;
            (
                link["id"].as_str().expect("id").to_owned(),
                link["token"].as_str().expect("token").to_owned(),
            )
        }
    };
    let track_share = format!("/v1/music/{org}/tracks/{track}/share");
    let (share_id, token) = create(track_share.clone(), None).await;
    let save = |token: &str| format!("/v1/music/shared/{token}/save");

    // Anyone signed in may save, in any organization or none.
    let saver = new_user();
    let saver_key = api.key(&saver, &[]).await;
    let response = api.post_empty(&saver_key, &save(&token)).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let edge = expect_json(response, StatusCode::CREATED).await;
    let mut keys: Vec<&str> = edge
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["created_at", "id", "share_link_id", "source", "track_id"]
    );
    assert!(events::ids::LibraryItemId::parse(edge["id"].as_str().expect("id")).is_ok());
    assert_eq!(edge["track_id"], track.as_str());
    assert_eq!(edge["source"], "shared");
    assert_eq!(edge["share_link_id"], share_id.as_str());
    assert_timestamp(&edge["created_at"]);

    // Again, and through another link to the same track: the same edge, 200.
    let (_, second_token) = create(track_share.clone(), None).await;
    for token in [&token, &second_token] {
        let again = expect_json(
            api.post_empty(&saver_key, &save(token)).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(again, edge);
    }
    let library = api.events(&format!("library-{saver}")).await;
    assert_eq!(library.len(), 1);
    assert_eq!(library[0].0, "SharedTrackSaved");
    assert_eq!(library[0].2, request_id);
    assert_eq!(
        library[0].1,
        json!({"library_item_id": edge["id"], "user_id": saver, "track_id": track, "share_link_id": share_id})
    );

    // Dead links, all the same 404.
    let collection = api.collection(&owner_key, &org).await;
    let (_, collection_token) = create(
        format!("/v1/music/{org}/collections/{collection}/share"),
        None,
    )
    .await;
    let (revoked_id, revoked_token) = create(track_share.clone(), None).await;
    expect_json(
        api.delete(&owner_key, &format!("/v1/music/{org}/share/{revoked_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let (_, expired_token) =
        tests::log::expired_track_share(&api.pool().await, &track, &org, &owner).await;
    let (limited_id, limited_token) =
        create(track_share.clone(), Some(json!({"max_views": 2}))).await;
    let removed_track = api.track(&owner_key, &org).await;
    let (_, removed_token) = create(
        format!("/v1/music/{org}/tracks/{removed_track}/share"),
        None,
    )
    .await;
    expect_json(
        api.delete(
            &owner_key,
            &format!("/v1/music/{org}/tracks/{removed_track}"),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Under its view limit a limited link saves; at the limit it is dead.
    let pool = api.pool().await;
    let set_used = |used: i64| {
        let pool = pool.clone();
        let limited_id = limited_id.clone();
        async move {
            sqlx::query(
                "INSERT INTO query_side.share_usage (share_id, used) VALUES ($1, $2) \
                 ON CONFLICT (share_id) DO UPDATE SET used = excluded.used",
            )
            .bind(&limited_id)
            .bind(used)
            .execute(&pool)
            .await
            .expect("usage");
        }
    };
    set_used(1).await;
    let early = api.key(&new_user(), &[]).await;
    expect_json(
        api.post_empty(&early, &save(&limited_token)).await,
        StatusCode::CREATED,
    )
    .await;
    set_used(2).await;

    let late = api.key(&new_user(), &[]).await;
    for dead in [
        "shr_nope".to_owned(),
        format!("shr_{}", "0".repeat(32)),
        collection_token,
        revoked_token,
        expired_token,
        limited_token,
        removed_token,
    ] {
        let body = expect_error(
            api.post_empty(&late, &save(&dead)).await,
            404,
            "RESOURCE_NOT_FOUND",
        )
        .await;
        assert_eq!(
            body["error"]["message"],
            "This share link is no longer available."
        );
        assert_eq!(body["error"]["details"], json!({}));
    }

    // Revoking the link later never removes the saved edge.
    expect_json(
        api.delete(&owner_key, &format!("/v1/music/{org}/share/{share_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(api.events(&format!("library-{saver}")).await.len(), 1);
}
