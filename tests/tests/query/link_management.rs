//! Owners manage their links after sharing them, over the real services: settings changes
//! (`PATCH`), token rotation, passwords (JSON header and the page's form, the guess limit, the
//! common 404), and what no raw password may reach (tables, logs, the audit stream).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::share_token::ShareToken;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tests::nats::PrivateNats;
use tests::process::{Bin, Service};
use tests::stack::Stack;

const ORG: &str = "org_link_mgmt";
const USER: &str = "usr_00000000a11c";
const STRANGER: &str = "usr_00000000bad1";
const PASSWORD: &str = "correct horse battery";

/// A stack with a roomy resolve limit, client IPs taken from `X-Forwarded-For` (so a test can
/// be several clients), an owner's key and one uploaded track.
struct World {
    stack: Stack,
    key: String,
    track: String,
}

impl World {
    async fn start(nats_url: &str) -> World {
        let stack = Stack::start_with(nats_url, |env| {
            env.set("RESOLVE_BURST", "100000");
            env.set("RESOLVE_RATE_PER_MINUTE", "6000000");
            env.set("TRUSTED_PROXIES", "127.0.0.1/32");
        })
        .await;
        let key = stack.api_key(USER, &[ORG]).await;
        let form = reqwest::multipart::Form::new()
            .part(
                "audio",
                reqwest::multipart::Part::bytes(tests::audio::wav_tone_ms(1500))
                    .file_name("track.wav")
                    .mime_str("audio/wav")
                    .expect("mime"),
            )
            .text("title", "Managed song")
            .text("engine", "studio")
            .text("mode", "creation")
            .text("licence_class", "personal_only");
        let response = stack
            .http
            .post(stack.command.url(&format!("/v1/music/{ORG}/tracks")))
            .header("x-api-key", &key)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 201);
        let track: Value = response.json().await.expect("track");
        let track = track["id"].as_str().expect("id").to_owned();
        World { stack, key, track }
    }

    /// A track link with `body`; returns the share link object.
    async fn share(&self, body: Value) -> Value {
        let response = self
            .stack
            .http
            .post(
                self.stack
                    .command
                    .url(&format!("/v1/music/{ORG}/tracks/{}/share", self.track)),
            )
            .header("x-api-key", &self.key)
            .json(&body)
            .send()
            .await
            .expect("share");
        assert_eq!(response.status(), 201);
        response.json().await.expect("link")
    }

    async fn patch_as(&self, key: &str, share_id: &str, body: &str) -> (u16, Value) {
        let response = self
            .stack
            .http
            .patch(
                self.stack
                    .command
                    .url(&format!("/v1/music/{ORG}/share/{share_id}")),
            )
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("patch");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn patch(&self, share_id: &str, body: Value) -> (u16, Value) {
        self.patch_as(&self.key, share_id, &body.to_string()).await
    }

    async fn rotate_as(&self, key: &str, share_id: &str) -> (u16, Value) {
        let response = self
            .stack
            .http
            .post(
                self.stack
                    .command
                    .url(&format!("/v1/music/{ORG}/share/{share_id}/rotate")),
            )
            .header("x-api-key", key)
            .send()
            .await
            .expect("rotate");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn revoke(&self, share_id: &str) {
        let response = self
            .stack
            .http
            .delete(
                self.stack
                    .command
                    .url(&format!("/v1/music/{ORG}/share/{share_id}")),
            )
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 200);
    }

    async fn save(&self, token: &str, password: Option<&str>) -> (u16, Value) {
        let mut request = self
            .stack
            .http
            .post(
                self.stack
                    .command
                    .url(&format!("/v1/music/shared/{token}/save")),
            )
            .header("x-api-key", &self.key);
        if let Some(password) = password {
            request = request.header("x-share-password", password);
        }
        let response = request.send().await.expect("save");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The owner's share list item of `share_id`.
    async fn listed(&self, share_id: &str) -> Value {
        let page: Value = self
            .stack
            .http
            .get(
                self.stack
                    .query
                    .url(&format!("/v1/music/{ORG}/shares?limit=100")),
            )
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("page");
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|item| item["id"] == share_id)
            .cloned()
            .unwrap_or_else(|| panic!("{share_id} not listed: {page}"))
    }
}

/// One resolve request as a client: `ip` (via `X-Forwarded-For`), and optional headers.
fn resolve_request(
    http: &reqwest::Client,
    api: &Service,
    token: &str,
    ip: &str,
) -> reqwest::RequestBuilder {
    http.get(api.url(&format!("/v1/music/shared/{token}")))
        .header("x-forwarded-for", ip)
}

async fn json_of(request: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn resolve(w: &World, token: &str) -> (u16, Value) {
    let (status, _, body) = json_of(resolve_request(
        &w.stack.http,
        &w.stack.query,
        token,
        "198.51.100.1",
    ))
    .await;
    (status, body)
}

async fn resolve_with_password(w: &World, token: &str, ip: &str, password: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        resolve_request(&w.stack.http, &w.stack.query, token, ip)
            .header("x-share-password", password),
    )
    .await;
    (status, body)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn instant(v: &Value, key: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(str_of(v, key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .with_timezone(&Utc)
}

/// The error envelope without what differs per request.
fn stable_error(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(error) = body["error"].as_object_mut() {
        error.remove("trace_id");
        error.remove("timestamp");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_changes_and_every_bad_field_is_named() {
    let w = World::start(&tests::nats::shared_url()).await;
    let link = w.share(json!({"label": "for the band"})).await;
    assert_eq!(link["password_protected"], false);
    assert_eq!(link["label"], "for the band");
    let id = str_of(&link, "id").to_owned();
    let token = str_of(&link, "token").to_owned();

    // Visibility, read by the next resolve (read your writes).
    let (status, settings) = w.patch(&id, json!({"visibility": "public"})).await;
    assert_eq!(status, 200, "{settings}");
    let mut keys: Vec<&str> = settings
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
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
            "updated_at",
            "visibility"
        ]
    );
    assert_eq!(settings["visibility"], "public");
    assert_eq!(settings["label"], "for the band", "unchanged fields stay");
    assert_eq!(resolve(&w, &token).await.1["share"]["visibility"], "public");

    // Expiry counts from the change, clamped to 90 days; null is never.
    let before = Utc::now();
    let (status, settings) = w.patch(&id, json!({"expires_in_days": 91})).await;
    assert_eq!(status, 200);
    let expires = instant(&settings, "expires_at");
    let updated = instant(&settings, "updated_at");
    assert_eq!(expires - updated, chrono::Duration::days(90), "clamped");
    assert!(updated >= before - chrono::Duration::seconds(1));
    assert_eq!(
        resolve(&w, &token).await.1["share"]["expires_at"],
        settings["expires_at"]
    );
    let (_, settings) = w.patch(&id, json!({"expires_in_days": null})).await;
    assert_eq!(settings["expires_at"], Value::Null);

    // Label: set, then cleared; never shown to recipients.
    let (_, settings) = w.patch(&id, json!({"label": "ünïcode ✓"})).await;
    assert_eq!(settings["label"], "ünïcode ✓");
    let view = resolve(&w, &token).await.1;
    assert!(!view.to_string().contains("ünïcode"), "{view}");
    let (_, settings) = w.patch(&id, json!({"label": null, "unknown": 1})).await;
    assert_eq!(settings["label"], Value::Null);

    // max_views and password, and the list shows all of it.
    let (_, settings) = w
        .patch(&id, json!({"max_views": 7, "password": PASSWORD}))
        .await;
    assert_eq!(settings["max_views"], 7);
    assert_eq!(settings["password_protected"], true);
    let item = w.listed(&id).await;
    assert_eq!(item["password_protected"], true);
    assert_eq!(item["label"], Value::Null);
    assert_eq!(item["max_views"], 7);
    assert_eq!(item["updated_at"], settings["updated_at"]);
    settled(&w, &token, 401).await;
    assert_eq!(resolve(&w, &token).await.0, 401);
    let (_, settings) = w
        .patch(&id, json!({"max_views": null, "password": null}))
        .await;
    assert_eq!(settings["max_views"], Value::Null);
    assert_eq!(settings["password_protected"], false);
    settled(&w, &token, 200).await;
    assert_eq!(resolve(&w, &token).await.0, 200);

    // Every bad field is named, all at once.
    for (body, fields) in [
        ("{}", vec!["body"]),
        (r#"{"unknown": true}"#, vec!["body"]),
        (r#"{"visibility": "secret"}"#, vec!["visibility"]),
        (r#"{"visibility": null}"#, vec!["visibility"]),
        (r#"{"expires_in_days": "3"}"#, vec!["expires_in_days"]),
        (r#"{"expires_in_days": 0}"#, vec!["expires_in_days"]),
        (r#"{"expires_in_days": 2.5}"#, vec!["expires_in_days"]),
        (r#"{"max_views": 0}"#, vec!["max_views"]),
        (r#"{"max_views": 2147483648}"#, vec!["max_views"]),
        (r#"{"password": "short"}"#, vec!["password"]),
        (r#"{"password": 12345678}"#, vec!["password"]),
        (
            &format!(r#"{{"password": "{}"}}"#, "p".repeat(129)),
            vec!["password"],
        ),
        (
            &format!(r#"{{"label": "{}"}}"#, "l".repeat(201)),
            vec!["label"],
        ),
        (r#"{"label": 5}"#, vec!["label"]),
        (
            r#"{"visibility": 1, "max_views": -1, "label": []}"#,
            vec!["label", "max_views", "visibility"],
        ),
    ] {
        let (status, error) = w.patch_as(&w.key, &id, body).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["code"], "VALIDATION_ERROR");
        let mut named: Vec<&str> = error["error"]["details"]
            .as_object()
            .expect("details")
            .keys()
            .map(String::as_str)
            .collect();
        named.sort_unstable();
        assert_eq!(named, fields, "{body}");
    }
    let (status, _) = w.patch_as(&w.key, &id, "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = w
        .patch_as(
            &w.key,
            &id,
            &format!(r#"{{"label": "{}"}}"#, "l".repeat(200)),
        )
        .await;
    assert_eq!(status, 200, "200 characters are allowed");

    // Owner only (404 whatever the body), and a revoked link is a 409 for both routes.
    let stranger = w.stack.api_key(STRANGER, &[ORG]).await;
    let (status, error) = w.patch_as(&stranger, &id, "{}").await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["details"]["share_id"], id.as_str());
    assert_eq!(w.rotate_as(&stranger, &id).await.0, 404);
    assert_eq!(w.rotate_as(&w.key, "mslink_000000000000").await.0, 404);
    let (status, _) = w
        .patch_as(&w.key, "mslink_000000000000", r#"{"label": null}"#)
        .await;
    assert_eq!(status, 404);
    w.revoke(&id).await;
    let (status, error) = w.patch(&id, json!({"label": "late"})).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "CONFLICT");
    assert_eq!(error["error"]["message"], "This share link is revoked.");
    assert_eq!(w.rotate_as(&w.key, &id).await.0, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_revives_and_views_taken_still_count() {
    let w = World::start(&tests::nats::shared_url()).await;
    let pool = w.stack.db.pool().await;
    let (id, token) = tests::log::expired_track_share(&pool, &w.track, ORG, USER).await;
    let id = id.to_string();
    // The projector picks the appended event up by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while projected_share(&pool, &id).await.is_none() {
        assert!(Instant::now() < deadline, "never projected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(resolve(&w, &token).await.0, 404, "expired");
    let (status, settings) = w.patch(&id, json!({"expires_in_days": 1})).await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(resolve(&w, &token).await.0, 200, "revived");

    // max_views: 2 views taken, a limit of 2 makes it over its limit; raising it gives views
    // again (the instance's memory of a run-out link is per limit); null lifts it.
    let link = w.share(json!({"max_views": 3})).await;
    let (id, token) = (str_of(&link, "id"), str_of(&link, "token"));
    assert_eq!(resolve(&w, token).await.0, 200);
    assert_eq!(resolve(&w, token).await.0, 200);
    assert_eq!(w.patch(id, json!({"max_views": 2})).await.0, 200);
    settled(&w, token, 404).await;
    assert_eq!(resolve(&w, token).await.0, 404, "at the limit");
    assert_eq!(resolve(&w, token).await.0, 404);
    assert_eq!(w.patch(id, json!({"max_views": 1})).await.0, 200);
    settled(&w, token, 404).await;
    assert_eq!(resolve(&w, token).await.0, 404, "below the views taken");
    assert_eq!(w.patch(id, json!({"max_views": 3})).await.0, 200);
    settled(&w, token, 200).await;
    assert_eq!(resolve(&w, token).await.0, 200, "one view left");
    assert_eq!(resolve(&w, token).await.0, 404);
    assert_eq!(w.patch(id, json!({"max_views": null})).await.0, 200);
    settled(&w, token, 200).await;
    assert_eq!(resolve(&w, token).await.0, 200, "unlimited");
}

/// Waits (at most 5 s) until a `HEAD`, which never takes a view, answers `status`: the query
/// instance applies a change notice a moment after the command API has heard the same notice
/// and answered, and a GET sent inside that moment would take a view under the old limit.
async fn settled(w: &World, token: &str, status: u16) {
    let url = w.stack.query.url(&format!("/v1/music/shared/{token}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = w
            .stack
            .http
            .head(&url)
            .header("x-forwarded-for", "198.51.100.1")
            .send()
            .await
            .expect("head")
            .status()
            .as_u16();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "HEAD still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn projected_share(pool: &sqlx::PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT share_id FROM read_model.share_links WHERE share_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("read model")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_kills_the_old_token_at_once_on_every_instance_and_keeps_the_link() {
    let w = World::start(&tests::nats::shared_url()).await;
    let second = w.stack.start_another(Bin::QueryApi).await;
    let link = w.share(json!({"max_views": 4, "label": "rotating"})).await;
    let id = str_of(&link, "id").to_owned();
    let old = str_of(&link, "token").to_owned();

    // A saved edge and a view, before.
    let (status, edge) = w.save(&old, None).await;
    assert_eq!(status, 201, "{edge}");
    assert_eq!(resolve(&w, &old).await.0, 200);

    // Resolves of the old token on both instances, all through the rotation. Each is stamped
    // with the moment it was sent; none sent after the 201 may succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let mut loops = Vec::new();
    for api in [w.stack.query.url(""), second.url("")] {
        let (stop, seen, http, old) = (
            stop.clone(),
            seen.clone(),
            w.stack.http.clone(),
            old.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let sent = Instant::now();
                // HEAD: looks without taking a view, so the limit is not used up by the loop.
                let response = http
                    .head(format!("{api}/v1/music/shared/{old}"))
                    .header("x-forwarded-for", "198.51.100.9")
                    .send()
                    .await
                    .expect("resolve");
                seen.lock()
                    .expect("lock")
                    .push((sent, response.status().as_u16()));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, rotated) = w.rotate_as(&w.key, &id).await;
    let answered = Instant::now();
    assert_eq!(status, 201, "{rotated}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for task in loops {
        task.await.expect("loop");
    }
    let seen = seen.lock().expect("lock").clone();
    let before_ok = seen
        .iter()
        .filter(|(t, s)| *t < answered && *s == 200)
        .count();
    let after: Vec<u16> = seen
        .iter()
        .filter(|(t, _)| *t > answered)
        .map(|(_, s)| *s)
        .collect();
    assert!(before_ok > 0, "the loops resolved the old token before");
    assert!(!after.is_empty(), "the loops ran after the 201");
    assert!(
        after.iter().all(|s| *s == 404),
        "an old-token resolve succeeded after the 201: {after:?}"
    );

    // Same id, settings and created_at; a new token and url, shown once.
    let new = str_of(&rotated, "token").to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id.as_str());
    assert_eq!(rotated["max_views"], 4);
    assert_eq!(rotated["label"], "rotating");
    assert_eq!(rotated["created_at"], link["created_at"]);
    assert!(str_of(&rotated, "url").ends_with(&new));
    for api in [&w.stack.query, &second] {
        let (status, _, _) =
            json_of(resolve_request(&w.stack.http, api, &new, "198.51.100.2")).await;
        assert_eq!(status, 200, "the new token on {}", api.url(""));
    }
    // Views taken stay taken: 1 before, 2 just now, so one is left of 4.
    assert_eq!(resolve(&w, &new).await.0, 200);
    assert_eq!(resolve(&w, &new).await.0, 404);
    // The saved edge stays, and saving follows the token.
    let (status, again) = w.save(&new, None).await;
    assert_eq!(
        (status, &again["id"]),
        (404, &Value::Null),
        "over its limit now"
    );
    assert_eq!(
        w.save(&old, None).await.0,
        404,
        "the old token saves nothing"
    );
    let (status, _) = w.patch(&id, json!({"max_views": null})).await;
    assert_eq!(status, 200);
    let (status, again) = w.save(&new, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], edge["id"], "the same edge");
    assert_eq!(w.save(&old, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_json_and_html_with_a_guess_limit_and_the_common_404() {
    let w = World::start(&tests::nats::shared_url()).await;
    let link = w.share(json!({"password": PASSWORD, "max_views": 2})).await;
    assert_eq!(link["password_protected"], true);
    let token = str_of(&link, "token").to_owned();

    // JSON: missing, wrong (no view taken by either), right.
    let (status, body) = resolve(&w, &token).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "PASSWORD_REQUIRED");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(!body.to_string().contains("Managed song"), "{body}");
    let (status, body) = resolve_with_password(&w, &token, "198.51.100.3", "wrong guess!").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "INVALID_PASSWORD");
    let (status, view) = resolve_with_password(&w, &token, "198.51.100.4", PASSWORD).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["track"]["title"], "Managed song");

    // HTML: the form without the title; a wrong password shows it again; the right one plays.
    let page = |method: reqwest::Method, form: Option<&str>| {
        let mut request = w
            .stack
            .http
            .request(
                method,
                w.stack.query.url(&format!("/v1/music/shared/{token}")),
            )
            .header("accept", "text/html")
            .header("x-forwarded-for", "198.51.100.5");
        if let Some(form) = form {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_owned());
        }
        async move {
            let response = request.send().await.expect("page");
            let status = response.status().as_u16();
            let csp = response.headers()["content-security-policy"]
                .to_str()
                .expect("csp")
                .to_owned();
            (status, csp, response.text().await.expect("html"))
        }
    };
    let (status, csp, html) = page(reqwest::Method::GET, None).await;
    assert_eq!(status, 401);
    assert!(
        csp.contains("form-action 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(
        html.contains(r#"name="password""#) && html.contains(r#"method="post""#),
        "{html}"
    );
    assert!(
        !html.contains("Managed song") && !html.contains("<audio"),
        "{html}"
    );
    let (status, _, html) = page(reqwest::Method::POST, Some("password=nope+nope")).await;
    assert_eq!(status, 401);
    assert!(html.contains("not correct"), "{html}");
    let encoded = PASSWORD.replace(' ', "+");
    let (status, _, html) = page(reqwest::Method::POST, Some(&format!("password={encoded}"))).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Managed song") && html.contains("<audio"),
        "{html}"
    );
    // Both views are taken now (one JSON, one page): dead, whatever is sent.
    let (status, dead_body) = resolve_with_password(&w, &token, "198.51.100.4", PASSWORD).await;
    assert_eq!(status, 404);
    let unknown = ShareToken::generate().expose().to_owned();
    let (_, unknown_body) = resolve(&w, &unknown).await;
    assert_eq!(stable_error(&dead_body), stable_error(&unknown_body));
    assert_eq!(
        resolve(&w, &token).await.0,
        404,
        "no password: still the common 404"
    );

    // The guess limit: 5 wrong from one IP on one link, then 429 even with the right password;
    // other IPs and other links from that IP are untouched. A missing password is no guess.
    let link = w.share(json!({"password": PASSWORD})).await;
    let (guarded_id, guarded) = (
        str_of(&link, "id").to_owned(),
        str_of(&link, "token").to_owned(),
    );
    let other = w.share(json!({"password": PASSWORD})).await;
    let other = str_of(&other, "token").to_owned();
    let guesser = "203.0.113.66";
    for _ in 0..3 {
        assert_eq!(
            json_of(resolve_request(
                &w.stack.http,
                &w.stack.query,
                &guarded,
                guesser
            ))
            .await
            .0,
            401
        );
    }
    for n in 0..5 {
        let (status, _) =
            resolve_with_password(&w, &guarded, guesser, &format!("guess {n} wrong")).await;
        assert_eq!(status, 401, "guess {n}");
    }
    let (status, headers, body) = json_of(
        resolve_request(&w.stack.http, &w.stack.query, &guarded, guesser)
            .header("x-share-password", PASSWORD),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        resolve_with_password(&w, &guarded, "203.0.113.67", PASSWORD)
            .await
            .0,
        200
    );
    assert_eq!(
        resolve_with_password(&w, &other, guesser, PASSWORD).await.0,
        200
    );

    // A revoked protected link is the common 404, whatever password is sent.
    w.revoke(&guarded_id).await;
    for password in [None, Some(PASSWORD), Some("wrong wrong")] {
        let mut request = resolve_request(&w.stack.http, &w.stack.query, &guarded, "203.0.113.68");
        if let Some(p) = password {
            request = request.header("x-share-password", p);
        }
        let (status, _, body) = json_of(request).await;
        assert_eq!(status, 404, "{password:?}");
        assert_eq!(stable_error(&body), stable_error(&unknown_body));
    }

    // Saving a protected track link needs its password too.
    let link = w.share(json!({"password": PASSWORD})).await;
    let token = str_of(&link, "token");
    let (status, body) = w.save(token, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("PASSWORD_REQUIRED"))
    );
    let (status, body) = w.save(token, Some("wrong wrong")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("INVALID_PASSWORD"))
    );
    assert!(matches!(w.save(token, Some(PASSWORD)).await.0, 200 | 201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_password_reaches_a_table_a_log_or_the_audit_stream() {
    let nats = PrivateNats::start();
    let w = World::start(&nats.url()).await;
    let secret = format!("pw-{}", hex::encode(rand::random::<[u8; 8]>()));
    let replaced = format!("pw2-{}", hex::encode(rand::random::<[u8; 8]>()));
    let link = w
        .share(json!({"password": secret, "label": "secret test"}))
        .await;
    let (id, token) = (
        str_of(&link, "id").to_owned(),
        str_of(&link, "token").to_owned(),
    );
    let mut attempts = 0u64;
    for password in [secret.as_str(), "wrong password", secret.as_str()] {
        resolve_with_password(&w, &token, "198.51.100.20", password).await;
        attempts += 1;
    }
    let form = format!("password={secret}");
    w.stack
        .http
        .post(w.stack.query.url(&format!("/v1/music/shared/{token}")))
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("form");
    attempts += 1;
    assert_eq!(w.patch(&id, json!({"password": replaced})).await.0, 200);
    resolve_with_password(&w, &token, "198.51.100.20", &replaced).await;
    attempts += 1;
    w.save(&token, Some(&replaced)).await;

    // Tables: every text-like column of every schema. The hash is there (the scan works).
    let pool = w.stack.db.pool().await;
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text, column_name::text \
           FROM information_schema.columns \
          WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
            AND data_type IN ('text', 'character varying', 'json', 'jsonb')",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    let mut hash_found = false;
    for (schema, table, column) in columns {
        for (needle, must_not) in [
            (secret.as_str(), true),
            (replaced.as_str(), true),
            ("$argon2id$", false),
        ] {
            let sql = format!(
                "SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE strpos(\"{column}\"::text, $1) > 0"
            );
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(needle)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            if must_not {
                assert_eq!(n, 0, "a raw password in {schema}.{table}.{column}");
            } else if n > 0 {
                hash_found = true;
            }
        }
    }
    assert!(
        hash_found,
        "the password hashes are stored (the scan can find things)"
    );

    // Logs and the audit stream.
    let logs = w.stack.all_logs();
    assert!(logs.len() > 1000, "the services logged");
    for needle in [&secret, &replaced] {
        assert!(
            !logs.contains(needle.as_str()),
            "a raw password in the logs"
        );
    }
    tests::audit::wait_for_count(&nats.url(), attempts, Duration::from_secs(30)).await;
    let audit = tests::audit::tail(&w.stack.env, &nats.url(), attempts).await;
    let outcomes: Vec<&str> = audit.iter().map(|m| str_of(m, "outcome")).collect();
    assert_eq!(outcomes, ["ok", "password_invalid", "ok", "ok", "ok"]);
    let text = serde_json::to_string(&audit).expect("json");
    for needle in [&secret, &replaced] {
        assert!(
            !text.contains(needle.as_str()),
            "a raw password in the audit stream"
        );
    }
}
