//! The public resolve: the source page's shape field by field, one identical answer for every
//! dead link, removed content, expiry judged at request time.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tests::query::{audio_bytes, query_param, QueryEnv, ShareOpts};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn check_track_view(view: &Value, id: &str, title: &str) {
    assert_eq!(
        keys(view),
        [
            "engine",
            "id",
            "instrumental",
            "licence",
            "measured_duration_seconds",
            "mode",
            "playback_url",
            "title"
        ]
    );
    assert_eq!(view["id"], id);
    assert_eq!(view["title"], title);
    assert_eq!(view["engine"], "studio");
    assert_eq!(view["mode"], "creation");
    assert_eq!(view["measured_duration_seconds"], json!(120.4));
    assert_eq!(view["instrumental"], true);
    assert_eq!(
        view["licence"],
        json!({
            "licence_class": "commercial_enterprise",
            "licence_version": "2026-01",
            "commercial_use": true,
            "requires_attribution": true
        })
    );
    let url = view["playback_url"].as_str().expect("playback_url");
    assert!(
        url.starts_with(&format!("http://media.test/v1/music/media/{id}?exp=")),
        "{url}"
    );
    assert_eq!(query_param(url, "kid"), "k2", "the first key signs");
    let exp: i64 = query_param(url, "exp").parse().expect("exp");
    let ttl = exp - Utc::now().timestamp();
    assert!((295..=301).contains(&ttl), "ttl {ttl}");
    let sig = query_param(url, "sig");
    assert_eq!(sig.len(), 64);
    assert!(sig
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_share_resolves_to_exactly_the_source_page_shape() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Late Night Study", &audio_bytes(1000)).await;
    let expires = (Utc::now() + Duration::days(30))
        .with_timezone(&Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let expires_at = chrono::DateTime::parse_from_rfc3339(&expires)
        .expect("time")
        .with_timezone(&Utc);
    let (token, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                expires_at: Some(expires_at),
                ..ShareOpts::default()
            },
        )
        .await;
    let api = q.start_query(&[]).await;

    // An API key sent is ignored (even a bogus one).
    let response = q
        .http
        .get(api.url(&format!("/v1/music/shared/{token}")))
        .header("x-api-key", "msk_not_a_key")
        .send()
        .await
        .expect("resolve");
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-robots-tag"], "noindex", "link_only is not indexed");
    assert_eq!(h["ratelimit-limit"], "60");
    assert_eq!(h["ratelimit-remaining"], "19");
    assert!(h["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("application/json"));
    let body: Value = response.json().await.expect("json");

    assert_eq!(
        keys(&body),
        [
            "available",
            "collection",
            "kind",
            "message",
            "share",
            "track",
            "tracks"
        ]
    );
    assert_eq!(body["kind"], "track");
    assert_eq!(body["available"], true);
    assert_eq!(body["message"], Value::Null);
    assert_eq!(
        body["share"],
        json!({"target_type": "track", "visibility": "link_only", "expires_at": expires})
    );
    assert_eq!(body["collection"], Value::Null);
    assert_eq!(body["tracks"], Value::Null);
    check_track_view(&body["track"], &track, "Late Night Study");

    // Served again (from the cache), the playback URL is minted afresh, never cached.
    let (status, again) = q.resolve(&api, &token).await;
    assert_eq!(status, 200);
    assert_eq!(again["track"]["id"], body["track"]["id"]);
    let logs = api.logs();
    assert!(!logs.contains(&token), "a raw token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_share_lists_live_tracks_in_the_owners_order() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let (token, collection, [last, first]) = q.public_collection_with_a_removed_track().await;
    let api = q.start_query(&[]).await;

    let response = q.get(&api, &format!("/v1/music/shared/{token}")).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-robots-tag").is_none(),
        "public links may be indexed"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["kind"], "collection");
    assert_eq!(body["available"], true);
    assert_eq!(body["message"], Value::Null);
    assert_eq!(body["track"], Value::Null);
    assert_eq!(
        body["share"],
        json!({"target_type": "collection", "visibility": "public", "expires_at": null})
    );
    assert_eq!(
        body["collection"],
        json!({"id": collection, "name": "Evening", "description": "Songs for later"})
    );
    let tracks = body["tracks"].as_array().expect("tracks");
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    check_track_view(&tracks[0], &last, "Last");
    check_track_view(&tracks[1], &first, "First");
}

/// The body without the two fields that differ per request.
fn stable(mut body: Value) -> Value {
    let error = body["error"].as_object_mut().expect("error envelope");
    assert!(error.remove("trace_id").is_some());
    assert!(error.remove("timestamp").is_some());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_link_gets_the_identical_answer() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Dead ends", &audio_bytes(10)).await;
    let (revoked, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                revoked_at: Some(Utc::now() - Duration::hours(1)),
                ..ShareOpts::default()
            },
        )
        .await;
    let (expired, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                expires_at: Some(Utc::now() - Duration::seconds(1)),
                ..ShareOpts::default()
            },
        )
        .await;
    let (limited, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                max_views: Some(1),
                ..ShareOpts::default()
            },
        )
        .await;
    let api = q.start_query(&[("RESOLVE_BURST", "100")]).await;
    assert_eq!(
        q.resolve(&api, &limited).await.0,
        200,
        "the one allowed view"
    );

    let unknown = events::share_token::ShareToken::generate()
        .expose()
        .to_owned();
    let long = "a".repeat(3000);
    let causes: Vec<(&str, String)> = vec![
        ("unknown", unknown),
        ("malformed", "nope".to_owned()),
        ("malformed hex", "shr_XYZ".to_owned()),
        ("long", long),
        ("bad utf-8", "%FF%FE".to_owned()),
        ("revoked", revoked),
        ("expired", expired),
        ("over max_views", limited),
    ];
    let mut reference: Option<(Value, Vec<String>)> = None;
    for (cause, token) in causes {
        let response = q.get(&api, &format!("/v1/music/shared/{token}")).await;
        assert_eq!(response.status(), 404, "{cause}");
        let mut header_names: Vec<String> = response
            .headers()
            .iter()
            .map(|(k, v)| match k.as_str() {
                "x-request-id" | "date" | "ratelimit-remaining" | "ratelimit-reset" => {
                    k.to_string()
                }
                _ => format!("{k}: {}", v.to_str().unwrap_or("?")),
            })
            .collect();
        header_names.sort();
        let body = stable(response.json().await.expect("json"));
        assert_eq!(
            body["error"]["message"], "This share link is no longer available.",
            "{cause}"
        );
        assert_eq!(body["error"]["code"], "RESOURCE_NOT_FOUND");
        match &reference {
            None => reference = Some((body, header_names)),
            Some((body0, headers0)) => {
                assert_eq!(&body, body0, "{cause}: body differs");
                assert_eq!(&header_names, headers0, "{cause}: headers differ");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_content_answers_unavailable_with_every_key() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Gone", &audio_bytes(10)).await;
    let collection = q.collection("Gone too", &[&track]).await;
    let (track_token, _) = q.share("track", &track, ShareOpts::default()).await;
    let (coll_token, _) = q
        .share("collection", &collection, ShareOpts::default())
        .await;
    q.remove("track", &track).await;
    q.remove("collection", &collection).await;
    let api = q.start_query(&[]).await;

    for (kind, token) in [("track", &track_token), ("collection", &coll_token)] {
        let (status, body) = q.resolve(&api, token).await;
        assert_eq!(status, 200, "{kind}");
        assert_eq!(
            keys(&body),
            [
                "available",
                "collection",
                "kind",
                "message",
                "share",
                "track",
                "tracks"
            ]
        );
        assert_eq!(body["kind"], kind);
        assert_eq!(body["available"], false);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        for key in ["share", "track", "collection", "tracks"] {
            assert_eq!(body[key], Value::Null, "{kind}: {key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_judged_when_the_request_arrives() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Soon gone", &audio_bytes(10)).await;
    let (past, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                expires_at: Some(Utc::now() - Duration::milliseconds(10)),
                ..ShareOpts::default()
            },
        )
        .await;
    let api = q.start_query(&[]).await;
    assert_eq!(q.resolve(&api, &past).await.0, 404);
}

/// Once a limited link has run out, an instance answers it the way it answers any cached dead
/// link: from memory, without the counter's round trip (whose time would tell the cause apart).
/// Shown from outside by stopping PostgreSQL: the run-out link still gets the dead-link 404,
/// exactly like a revoked one, where a round trip would have been a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_out_link_answers_without_a_round_trip_like_any_dead_link() {
    let pg = tests::postgres::PrivatePostgres::start();
    let db = tests::db::TestDb::new_on(&pg.url("postgres")).await;
    let q = QueryEnv::new_on(db, &tests::nats::shared_url()).await;
    let track = q.track("Twice", &audio_bytes(10)).await;
    let (limited, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                max_views: Some(2),
                ..ShareOpts::default()
            },
        )
        .await;
    let (revoked, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                revoked_at: Some(Utc::now()),
                ..ShareOpts::default()
            },
        )
        .await;
    let api = q.start_query(&[("RESOLVE_BURST", "100")]).await;
    assert_eq!(q.resolve(&api, &limited).await.0, 200);
    assert_eq!(q.resolve(&api, &limited).await.0, 200);
    assert_eq!(q.resolve(&api, &limited).await.0, 404, "run out");
    assert_eq!(q.resolve(&api, &revoked).await.0, 404);

    pg.stop();
    let (status, run_out) = q.resolve(&api, &limited).await;
    assert_eq!(status, 404, "{run_out}");
    let (status, dead) = q.resolve(&api, &revoked).await;
    assert_eq!(status, 404, "{dead}");
    let without_ids = |mut v: Value| {
        v["error"]["trace_id"] = Value::Null;
        v["error"]["timestamp"] = Value::Null;
        v
    };
    assert_eq!(without_ids(run_out), without_ids(dead));
}

/// `HEAD` (link checkers, preview probes) answers like `GET` but never spends a view of a
/// limited link, nor counts as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_tells_whether_a_limited_link_is_alive_without_spending_a_view() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Once", &audio_bytes(10)).await;
    let (once, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                max_views: Some(1),
                ..ShareOpts::default()
            },
        )
        .await;
    let api = q.start_query(&[("RESOLVE_BURST", "100")]).await;
    let url = api.url(&format!("/v1/music/shared/{once}"));
    let head = || async {
        let response = q.http.head(&url).send().await.expect("head");
        (
            response.status().as_u16(),
            response.bytes().await.expect("body").len(),
        )
    };
    assert_eq!(head().await, (200, 0));
    assert_eq!(head().await, (200, 0));
    assert_eq!(
        q.resolve(&api, &once).await.0,
        200,
        "the one view is still there"
    );
    assert_eq!(head().await.0, 404);
    assert_eq!(q.resolve(&api, &once).await.0, 404);
}
