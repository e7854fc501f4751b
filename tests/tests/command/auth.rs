//! Who may do what: 401 for a missing, malformed or unknown key on every route (both header
//! styles), 404 for anyone outside the organization or not the creator on every route, 403 only
//! for another member deleting a track, and the envelope for unknown routes and methods.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::command::{expect_error, expect_json, new_org, new_user, CommandApi, TrackForm};

/// One request: method, path, and a JSON body (or `None`).
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Call {
    fn new(method: Method, path: String, body: Option<Value>) -> Call {
        Call { method, path, body }
    }

    async fn send(&self, api: &CommandApi, auth: Auth<'_>) -> reqwest::Response {
        let mut request = api.http.request(self.method.clone(), api.url(&self.path));
        request = match auth {
            Auth::None => request,
            Auth::Key(key) => request.header("x-api-key", key),
            Auth::Bearer(key) => request.header("authorization", format!("Bearer {key}")),
            Auth::Raw(name, value) => request.header(name, value),
        };
        if self.path.ends_with("/tracks") && self.method == Method::POST && self.body.is_none() {
            return request
                .multipart(TrackForm::valid().into_multipart())
                .send()
                .await
                .expect("send");
        }
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        request.send().await.expect("send")
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Key(&'a str),
    Bearer(&'a str),
    Raw(&'static str, &'a str),
}

async fn event_count(api: &CommandApi) -> i64 {
    let pool = api.pool().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_401_404_and_403_as_the_contract_says() {
    let api = CommandApi::start().await;
    let (owner, member, outsider) = (new_user(), new_user(), new_user());
    let (org, other_org) = (new_org(), new_org());
    let owner_key = api.key(&owner, &[&org]).await;
    let member_key = api.key(&member, &[&org]).await;
    let outsider_key = api.key(&outsider, &[&other_org]).await;

    // The owner's content: a track in a collection, a second track, and a share link.
    let track = api.track(&owner_key, &org).await;
    let spare = api.track(&owner_key, &org).await;
    let collection = api.collection(&owner_key, &org).await;
    let added = api
        .post_json(
            &owner_key,
            &format!("/v1/music/{org}/collections/{collection}/tracks"),
            json!({"track_id": track}),
        )
        .await;
    expect_json(added, StatusCode::OK).await;
    let share = expect_json(
        api.post_empty(&owner_key, &format!("/v1/music/{org}/tracks/{track}/share"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let share_id = share["id"].as_str().expect("share id").to_owned();
    let token = share["token"].as_str().expect("token").to_owned();

    // Every command route, as `org` (the path's organization) sees it.
    let routes = |org: &str| {
        vec![
            Call::new(Method::POST, format!("/v1/music/{org}/tracks"), None),
            Call::new(
                Method::DELETE,
                format!("/v1/music/{org}/tracks/{spare}"),
                None,
            ),
            Call::new(
                Method::POST,
                format!("/v1/music/{org}/collections"),
                Some(json!({"name": "n"})),
            ),
            Call::new(
                Method::POST,
                format!("/v1/music/{org}/collections/{collection}/tracks"),
                Some(json!({"track_id": spare})),
            ),
            Call::new(
                Method::DELETE,
                format!("/v1/music/{org}/collections/{collection}/tracks/{track}"),
                None,
            ),
            Call::new(
                Method::PATCH,
                format!("/v1/music/{org}/collections/{collection}/order"),
                Some(json!({"ordered_track_ids": [track]})),
            ),
            Call::new(
                Method::DELETE,
                format!("/v1/music/{org}/collections/{collection}"),
                None,
            ),
            Call::new(
                Method::POST,
                format!("/v1/music/{org}/tracks/{track}/share"),
                None,
            ),
            Call::new(
                Method::POST,
                format!("/v1/music/{org}/collections/{collection}/share"),
                Some(json!({})),
            ),
            Call::new(
                Method::DELETE,
                format!("/v1/music/{org}/share/{share_id}"),
                None,
            ),
        ]
    };
    let save = Call::new(Method::POST, format!("/v1/music/shared/{token}/save"), None);
    let before = event_count(&api).await;

    // 401: no key, a malformed key, an unknown key (in either header), another scheme.
    let unknown = format!("msk_{}", "0".repeat(40));
    for call in routes(&org).iter().chain([&save]) {
        for auth in [
            Auth::None,
            Auth::Key("msk_short"),
            Auth::Key(&unknown),
            Auth::Bearer(&unknown),
            Auth::Bearer("not-a-key"),
            Auth::Raw("authorization", &owner_key),
            Auth::Raw("authorization", "Basic dXNlcjpwYXNz"),
        ] {
            let body =
                expect_error(call.send(&api, auth).await, 401, "AUTHENTICATION_REQUIRED").await;
            assert_eq!(
                body["error"]["message"],
                "Authentication required. Please provide a valid API key.",
                "{} {}",
                call.method,
                call.path
            );
            assert_eq!(body["error"]["type"], "authentication_error");
        }
    }

    // 404: an outsider, on the owner's organization's paths and on their own organization's.
    let own_org_routes = routes(&other_org);
    // Creating (a track, a collection) in one's own organization is allowed: not in this list.
    let not_creating = own_org_routes
        .iter()
        .enumerate()
        .filter(|(i, _)| ![0, 2].contains(i))
        .map(|(_, call)| call);
    for call in routes(&org).iter().chain(not_creating) {
        let response = call.send(&api, Auth::Key(&outsider_key)).await;
        let body = expect_error(response, 404, "RESOURCE_NOT_FOUND").await;
        assert_eq!(body["error"]["type"], "client_error", "{}", call.path);
    }
    // 404: a member who is not the creator, on everything but creating (allowed) and deleting a
    // track (403).
    for call in routes(&org).iter().skip(3) {
        let body = expect_error(
            call.send(&api, Auth::Key(&member_key)).await,
            404,
            "RESOURCE_NOT_FOUND",
        )
        .await;
        assert!(
            body["error"]["details"]
                .as_object()
                .is_some_and(|d| !d.is_empty()),
            "the 404 names the resource: {body}"
        );
    }
    let delete_track = &routes(&org)[1];
    let body = expect_error(
        delete_track.send(&api, Auth::Key(&member_key)).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(body["error"]["details"]["track_id"], spare.as_str());
    assert_eq!(
        event_count(&api).await,
        before,
        "no refused call appended anything"
    );

    // Both header styles work for a valid key.
    let create = &routes(&org)[2];
    for auth in [Auth::Key(&owner_key), Auth::Bearer(&owner_key)] {
        expect_json(create.send(&api, auth).await, StatusCode::CREATED).await;
    }
    // A member may import into the organization and add their own tracks.
    expect_json(
        routes(&org)[0].send(&api, Auth::Key(&member_key)).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_unknown_routes_and_wrong_methods_answer_in_the_envelope() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let track = api.track(&key, &org).await;

    for (method, path, field) in [
        (
            Method::DELETE,
            format!("/v1/music/{org}/tracks/mtrack_XYZ"),
            Some("track_id"),
        ),
        (
            Method::DELETE,
            format!("/v1/music/{org}/tracks/mcoll_0123456789ab"),
            Some("track_id"),
        ),
        (
            Method::DELETE,
            format!("/v1/music/{org}/share/{track}"),
            Some("share_id"),
        ),
        (
            Method::DELETE,
            format!("/v1/music/{org}/collections/nope"),
            Some("collection_id"),
        ),
        (
            Method::POST,
            format!("/v1/music/{org}/tracks/nope/share"),
            Some("track_id"),
        ),
        (
            Method::DELETE,
            format!("/v1/music/org_NOPE/tracks/{track}"),
            Some("organization_id"),
        ),
        (
            Method::DELETE,
            format!("/v1/music/{org}/tracks/{track}/extra"),
            None,
        ),
        (Method::GET, "/v1/music/nothing/here".to_owned(), None),
    ] {
        let response = api
            .http
            .request(method.clone(), api.url(&path))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("send");
        let body = expect_error(response, 404, "RESOURCE_NOT_FOUND").await;
        if let Some(field) = field {
            assert!(
                body["error"]["details"][field].is_string(),
                "{method} {path}: {body}"
            );
        }
    }

    for (method, path) in [
        (Method::GET, format!("/v1/music/{org}/tracks")),
        (Method::PUT, format!("/v1/music/{org}/collections")),
        (Method::GET, format!("/v1/music/{org}/tracks/{track}")),
        (
            Method::POST,
            format!("/v1/music/{org}/collections/mcoll_0123456789ab/order"),
        ),
    ] {
        let response = api
            .http
            .request(method, api.url(&path))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("send");
        expect_error(response, 405, "METHOD_NOT_ALLOWED").await;
    }

    // A well-formed incoming request id is kept, on the response and on the event.
    let response = api
        .http
        .post(api.url(&format!("/v1/music/{org}/collections")))
        .header("x-api-key", &key)
        .header("x-request-id", "req_fromtheclient0001")
        .json(&json!({"name": "Kept"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "req_fromtheclient0001");
    let created = expect_json(response, StatusCode::CREATED).await;
    let events = api
        .events(&format!(
            "collection-{}",
            created["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(events[0].2, "req_fromtheclient0001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_key_prints_only_the_key_and_refuses_bad_ids() {
    let api = CommandApi::start().await;
    let (user, org, second) = (new_user(), new_org(), new_org());
    let output = api
        .env
        .run(
            tests::process::Bin::CommandApi,
            &[
                "admin",
                "create-key",
                "--user",
                &user,
                "--org",
                &org,
                "--org",
                &second,
            ],
        )
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let key = stdout.strip_suffix('\n').expect("one line");
    assert!(
        key.len() == 44
            && key.starts_with("msk_")
            && key[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "stdout is exactly the key: {stdout:?}"
    );
    // The key works in both organizations.
    for org in [&org, &second] {
        expect_json(
            api.post_json(
                key,
                &format!("/v1/music/{org}/collections"),
                json!({"name": "x"}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
    }
    // Running it again for the same user and organization adds a key, and nothing breaks.
    let another = api.key(&user, &[&org]).await;
    assert_ne!(another, key);

    for args in [
        vec!["admin", "create-key", "--user", "bob", "--org", "org_fine"],
        vec!["admin", "create-key", "--user", &user, "--org", "ORG_BAD"],
        vec!["admin", "create-key", "--user", &user, "--org", "org_x"],
    ] {
        let output = api.env.run(tests::process::Bin::CommandApi, &args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is not a"), "{stderr}");
    }
}
