//! Both APIs' `GET /openapi.json` against what the APIs do.
//!
//! The real stack is started and seeded (a track, a collection holding it, a share of each), both
//! documents are fetched and checked by hand (OpenAPI 3.1 JSON, exactly the contract's routes,
//! each of them really served), then schemathesis (`st`, from PyPI) fuzzes each running API from
//! its own document and fails the test on anything it reports: a 5xx, a status, content type,
//! header or body the document does not allow, a request the document forbids that the API
//! accepts, or one it allows that the API refuses.
//!
//! Seeded ids are pinned for some parameters (the organization everywhere, a signed playback URL
//! for the media route, the live share's token for the resolve and save routes) so that the
//! fuzzer reaches the success paths instead of stopping at "not a member" or "bad signature".
//! Everything else is drawn by schemathesis. The query API is fuzzed first: the command API's
//! run deletes the pinned track and collection.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode, Url};
use serde_json::{json, Value};
use tests::stack::Stack;

/// The schemathesis release this test is written against (its checks, flags and config).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Checks: every check schemathesis has (its default, set in the config files below, since a
/// `--checks` flag would override the per-operation settings), except:
///
/// - `object_level_authorization`: it replays one identity's reads as other identities, which
///   need a Web Fuzzing Commons auth file with several users; this run has one key. Owners
///   seeing only their own links and collections is what `query_shares` and `command_*` test.
/// - `positive_data_acceptance` on three operations, each for a reason JSON Schema cannot
///   express: a track upload whose `audio` is not decodable audio is a 422 by design (random
///   bytes are schema-valid `format: binary`), and the share bodies take only JSON integer
///   *literals* (`2.0` is refused, tested in `command_shares`, while JSON Schema's `integer`
///   admits it); the settings body also refuses `{}` (at least one field), which JSON Schema
///   cannot say without listing every combination.
/// - `negative_data_rejection` on the share page's form (`open_share`): every form value is
///   text, so a "wrong type" the fuzzer draws arrives as a string like any other, and a form
///   without the password is a request for the open link's player, not an error. On the media route it stays on, with 416 among the accepted answers: a
///   well-formed `Range` that starts past the end of the file is refused as RFC 9110 says.
///
/// `max_response_time` is no check here: it needs a limit, and timing on a shared CI machine
/// says nothing about the API. `use_after_free` and `ensure_resource_availability` run in the
/// stateful phase on the links schemathesis infers.
const CHECKS: &str = "[checks]\nobject_level_authorization.enabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_match_their_openapi_documents() {
    let st = schemathesis();
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        // Room for the fuzzer's resolves to reach the views, not only the limiter; the limiter's
        // 429 is documented and still met (the burst is far below what a run sends).
        env.set("RESOLVE_RATE_PER_MINUTE", "600");
        env.set("RESOLVE_BURST", "60");
        // The pinned playback URL must outlive the run.
        env.set("PLAYBACK_URL_TTL_SECONDS", "7200");
    })
    .await;
    let http = Client::new();
    let org = format!("org_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let user = format!("usr_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = stack.api_key(&user, &[&org]).await;
    let seed = Seed::create(&stack, &http, &key, &org).await;

    let command_doc = fetch_document(&http, &stack.command.url("/openapi.json")).await;
    let query_doc = fetch_document(&http, &stack.query.url("/openapi.json")).await;
    check_document(
        &command_doc,
        command_api::openapi::CONTRACT_ROUTES,
        &stack.command.url(""),
        &http,
    )
    .await;
    check_document(
        &query_doc,
        query_api::openapi::CONTRACT_ROUTES,
        &stack.query.url(""),
        &http,
    )
    .await;

    let dir = tempfile::tempdir().expect("temp dir for schemathesis");
    let query_config = dir.path().join("query.toml");
    std::fs::write(&query_config, query_config_toml(&org, &seed)).expect("write config");
    let command_config = dir.path().join("command.toml");
    std::fs::write(&command_config, command_config_toml(&org, &seed)).expect("write config");

    // The two runs are separate processes, each with its own time budget and working directory
    // (hypothesis keeps its example database there): side by side they take one budget of wall
    // time instead of two.
    let (query_dir, command_dir) = (dir.path().join("query"), dir.path().join("command"));
    for cwd in [&query_dir, &command_dir] {
        std::fs::create_dir(cwd).expect("working directory for schemathesis");
    }
    let (query_doc_url, command_doc_url) = (
        stack.query.url("/openapi.json"),
        stack.command.url("/openapi.json"),
    );
    let (query, command) = tokio::join!(
        run_schemathesis(&st, &query_config, &query_doc_url, &key, &query_dir),
        run_schemathesis(&st, &command_config, &command_doc_url, &key, &command_dir),
    );
    let mut failures = Vec::new();
    for (api, run) in [("query API", query), ("command API", command)] {
        if run.success {
            // Shown with `--nocapture`.
            println!("schemathesis against the {api}:\n{}", run.output);
        } else {
            failures.push(format!(
                "schemathesis found problems in the {api}:\n{}",
                run.output
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `st`, at the pinned version.
fn schemathesis() -> String {
    let install = format!("python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION}");
    let output = std::process::Command::new("st")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("schemathesis (`st`) is not on PATH ({e}): {install}"));
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        version.contains(SCHEMATHESIS_VERSION),
        "schemathesis {SCHEMATHESIS_VERSION} is needed, `st --version` says {version:?}: {install}"
    );
    "st".to_owned()
}

/// The seeded resources whose ids are pinned for the fuzzer.
struct Seed {
    track: String,
    collection: String,
    token: String,
    /// The collection's share, for the settings and rotation routes (not the pinned token's
    /// share, which a rotation would kill).
    managed: String,
    /// `track_id`, `exp`, `kid`, `sig` of a playback URL of the track.
    media: (String, String, String, String),
}

impl Seed {
    async fn create(stack: &Stack, http: &Client, key: &str, org: &str) -> Seed {
        let command = |path: &str| stack.command.url(path);
        let form = Form::new()
            .text("title", "Late Night Study")
            .text("engine", "studio")
            .text("mode", "creation")
            .text("licence_class", "personal_only")
            .part(
                "audio",
                Part::bytes(tests::audio::wav_tone_ms(250))
                    .file_name("tone.wav")
                    .mime_str("audio/wav")
                    .expect("mime"),
            );
        let track = http
            .post(command(&format!("/v1/music/{org}/tracks")))
            .header("x-api-key", key)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let track = id_of(expect(track, StatusCode::CREATED).await);
        let collection = http
            .post(command(&format!("/v1/music/{org}/collections")))
            .header("x-api-key", key)
            .json(&json!({"name": "Mix"}))
            .send()
            .await
            .expect("create a collection");
        let collection = id_of(expect(collection, StatusCode::CREATED).await);
        let added = http
            .post(command(&format!(
                "/v1/music/{org}/collections/{collection}/tracks"
            )))
            .header("x-api-key", key)
            .json(&json!({"track_id": track}))
            .send()
            .await
            .expect("add the track");
        expect(added, StatusCode::OK).await;
        let mut managed = String::new();
        for path in [
            format!("/v1/music/{org}/tracks/{track}/share"),
            format!("/v1/music/{org}/collections/{collection}/share"),
        ] {
            let shared = http
                .post(command(&path))
                .header("x-api-key", key)
                .send()
                .await
                .expect("share");
            managed = id_of(expect(shared, StatusCode::CREATED).await);
        }
        // The track share pinned for the fuzzer: created last, resolved once for a playback URL.
        let shared = http
            .post(command(&format!("/v1/music/{org}/tracks/{track}/share")))
            .header("x-api-key", key)
            .json(&json!({"visibility": "public"}))
            .send()
            .await
            .expect("share the track");
        let token = expect(shared, StatusCode::CREATED).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let view = http
            .get(stack.query.url(&format!("/v1/music/shared/{token}")))
            .send()
            .await
            .expect("resolve");
        let view = expect(view, StatusCode::OK).await;
        let url = Url::parse(
            view["track"]["playback_url"]
                .as_str()
                .expect("playback_url"),
        )
        .expect("a URL");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("{name} in {url}"))
        };
        let media = (track.clone(), param("exp"), param("kid"), param("sig"));
        Seed {
            track,
            collection,
            token,
            managed,
            media,
        }
    }
}

async fn expect(response: reqwest::Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn id_of(body: Value) -> String {
    body["id"].as_str().expect("id").to_owned()
}

async fn fetch_document(http: &Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("GET /openapi.json");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {text}"))
}

/// The document is OpenAPI 3.1 and lists exactly `routes`; each of them is really served: a
/// request to it (with no key and placeholder ids) is answered by its route, neither by the
/// unknown-path 404 nor by a 405.
async fn check_document(doc: &Value, routes: &[(&str, &str)], base: &str, http: &Client) {
    service_kit::openapi::assert_lists_exactly(doc, routes);
    for (method, path) in routes.iter().chain(service_kit::openapi::SHARED_ROUTES) {
        let concrete = path
            .replace("{org}", "org_nobody")
            .replace("{track_id}", "mtrack_000000000000")
            .replace("{collection_id}", "mcoll_000000000000")
            .replace("{share_id}", "mslink_000000000000")
            .replace("{token}", "shr_00000000000000000000000000000000");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response = http
            .request(method.clone(), format!("{base}{concrete}"))
            .send()
            .await
            .expect("request");
        let status = response.status();
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
        let body = response.text().await.unwrap_or_default();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert!(
            !body.contains("No route matches this path"),
            "{method} {path} is documented but not routed: {body}"
        );
    }
}

/// What both runs share: the checks, and the organization pinned (a member's, so requests get
/// past membership).
fn common_config(org: &str) -> String {
    format!(
        "{CHECKS}\n[parameters]\n\"path.org\" = \"{org}\"\n\n\
         [generation]\ndatabase = \"none\"\n"
    )
}

fn query_config_toml(org: &str, seed: &Seed) -> String {
    let (track_id, exp, kid, sig) = &seed.media;
    format!(
        "{common}\n\
         [[operations]]\ninclude-operation-id = \"get_media\"\n\
         parameters = {{ \"path.track_id\" = \"{track_id}\", \"query.exp\" = \"{exp}\", \
         \"query.kid\" = \"{kid}\", \"query.sig\" = \"{sig}\" }}\n\
         # See CHECKS.\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"416\", \"429\", \"5xx\"]\n\n\
         [[operations]]\ninclude-operation-id = [\"resolve_share\", \"open_share\"]\n\
         parameters = {{ \"path.token\" = \"{token}\" }}\n\n\
         # See CHECKS.\n\
         [[operations]]\ninclude-operation-id = \"open_share\"\n\
         checks.negative_data_rejection.enabled = false\n",
        common = common_config(org),
        token = seed.token,
    )
}

fn command_config_toml(org: &str, seed: &Seed) -> String {
    format!(
        "{common}\n\
         [[operations]]\ninclude-operation-id = \"save_shared_track\"\n\
         parameters = {{ \"path.token\" = \"{token}\" }}\n\n\
         [[operations]]\ninclude-path-regex = \"collection_id\"\n\
         parameters = {{ \"path.collection_id\" = \"{collection}\" }}\n\n\
         [[operations]]\ninclude-operation-id = [\"share_track\", \"delete_track\"]\n\
         parameters = {{ \"path.track_id\" = \"{track}\" }}\n\n\
         [[operations]]\ninclude-operation-id = [\"change_share_settings\", \"rotate_share_token\"]\n\
         parameters = {{ \"path.share_id\" = \"{managed}\" }}\n\n\
         # See CHECKS.\n\
         [[operations]]\ninclude-operation-id = [\"import_track\", \"share_track\", \"share_collection\", \"change_share_settings\"]\n\
         checks.positive_data_acceptance.enabled = false\n",
        common = common_config(org),
        token = seed.token,
        collection = seed.collection,
        track = seed.track,
        managed = seed.managed,
    )
}

struct Run {
    success: bool,
    output: String,
}

async fn run_schemathesis(st: &str, config: &Path, schema_url: &str, key: &str, cwd: &Path) -> Run {
    // With a time budget, fuzzing and stateful testing repeat until it is spent: about a minute
    // per API in CI (MS_TEST_SCALE=0.1), five at full scale.
    let max_examples = tests::scale(100).to_string();
    let max_time = tests::scale(300).max(60).to_string();
    let mut command = tokio::process::Command::new(st);
    command
        .current_dir(cwd)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(schema_url)
        .args(["--header", &format!("X-API-Key: {key}")])
        .args(["--seed", "20260628"])
        .args(["--max-examples", &max_examples])
        .args(["--max-time", &max_time])
        // One worker: with two, a run once ended in an internal error (`ast.parse` inside
        // hypothesis, from both threads at once) instead of a verdict.
        .args(["--workers", "1"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(900), command.output())
        .await
        .expect("schemathesis finished in time")
        .expect("run schemathesis");
    Run {
        success: output.status.success(),
        output: format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}
