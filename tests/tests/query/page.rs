//! The share page: a resolve whose `Accept` prefers HTML gets a page of the same view. In a real
//! headless Chromium the audio plays from the signed URL (the media route answers 206); over
//! plain HTTP: negotiation, collections in order, escaping, one page for every dead cause,
//! removed content, the 429 and 503 pages, and the audit's `format`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use events::licence::LicenceClass;
use serde_json::{json, Value};
use tests::browser::Browser;
use tests::nats::PrivateNats;
use tests::postgres::PrivatePostgres;
use tests::process::{Bin, Service};
use tests::query::{audio_bytes, query_param, QueryEnv, ShareOpts};
use tests::stack::{Stack, ORG, USER};

/// What Chromium and Firefox send when a person opens a link.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

const DEAD_MESSAGE: &str = "This share link is no longer available.";

async fn get(
    http: &reqwest::Client,
    api: &Service,
    token: &str,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut request = http.get(api.url(&format!("/v1/music/shared/{token}")));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.expect("resolve")
}

/// A resolve asked for as a browser asks: status, headers and the page.
async fn page(
    http: &reqwest::Client,
    api: &Service,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = get(http, api, token, Some(BROWSER_ACCEPT)).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("page body"))
}

fn assert_html_headers(h: &reqwest::header::HeaderMap) {
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["vary"], "Accept");
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script is allowed: {csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
}

/// Undoes askama's escaping (`&#38;`, `&#60;`, ... and the named five).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `content` of `<meta {attr}="{name}" content="...">`, unescaped.
fn meta(body: &str, attr: &str, name: &str) -> Option<String> {
    let needle = format!(r#"<meta {attr}="{name}" content=""#);
    let start = body.find(&needle)? + needle.len();
    let end = body[start..].find('"')? + start;
    Some(unescape(&body[start..end]))
}

/// Every `<audio>`'s `src`, in document order, unescaped.
fn audio_srcs(body: &str) -> Vec<String> {
    body.match_indices("<audio ")
        .map(|(at, _)| {
            let tag = &body[at..at + body[at..].find('>').expect("tag end")];
            assert!(tag.contains("controls"), "{tag}");
            assert!(tag.contains(r#"preload="metadata""#), "{tag}");
            let start = tag.find(r#"src=""#).expect("src") + 5;
            let end = tag[start..].find('"').expect("src end") + start;
            unescape(&tag[start..end])
        })
        .collect()
}

/// The link-preview tags: none may carry the page's token or a playback URL.
fn assert_previews_carry_no_urls(body: &str, token: &str) {
    let previews: Vec<&str> = body
        .lines()
        .filter(|l| l.contains("property=\"og:") || l.contains("name=\"twitter:"))
        .collect();
    assert!(previews.len() >= 7, "{previews:?}");
    for line in previews {
        for forbidden in [token, "/v1/music/", "sig=", "http"] {
            assert!(
                !line.contains(forbidden),
                "{forbidden} in a preview: {line}"
            );
        }
    }
}

const ROBOTS_NOINDEX: &str = r#"<meta name="robots" content="noindex">"#;

// ---------------------------------------------------------------------------------------------
// In a browser.

/// `<workspace>/target`, from this test executable's path (`target/<profile>/deps/...`), as
/// `tests/src/process.rs` finds the service binaries.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .expect("the test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The query API's count of `GET` media requests answered with `status`.
async fn media_requests(stack: &Stack, status: u16) -> u64 {
    let metrics = stack.query.metrics(&stack.http).await;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(r#"method="GET""#)
                && l.contains(r#"route="/v1/music/media/{track_id}""#)
                && l.contains(&format!(r#"status="{status}""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_the_share_page_and_the_audio_becomes_playable() {
    // The page's playback URLs and share URLs must point at this very query API.
    let port = tests::nats::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("QUERY_API_ADDR", format!("127.0.0.1:{port}"));
        env.set("MEDIA_BASE_URL", base.clone());
        env.set("PUBLIC_BASE_URL", base.clone());
    })
    .await;
    let key = stack.api_key(USER, &[ORG]).await;
    let title = "Evening Tone";
    // A real, decodable WAV: three seconds of a 440 Hz tone.
    let track = stack
        .upload_track(&key, title, tests::audio::wav_tone_ms(3000))
        .await;
    let track_id = track["id"].as_str().expect("id").to_owned();
    assert_eq!(track["measured_duration_seconds"], json!(3.0));
    let path = format!("tracks/{track_id}");
    let link_only = stack.share(&key, &path, json!({})).await;
    let public = stack
        .share(&key, &path, json!({"visibility": "public"}))
        .await;
    let link_only_url = link_only["url"].as_str().expect("url").to_owned();
    let public_url = public["url"].as_str().expect("url").to_owned();
    assert!(link_only_url.starts_with(&base), "{link_only_url}");
    assert_eq!(media_requests(&stack, 206).await, 0);

    let browser = Browser::start().await;
    browser.goto(&link_only_url).await;
    let shown = browser
        .execute(
            "return {
                title: document.title,
                h1: document.querySelector('h1').textContent,
                robots: document.querySelector('meta[name=robots]')?.content ?? null,
                ogType: document.querySelector('meta[property=\"og:type\"]')?.content ?? null,
                audios: document.querySelectorAll('audio').length,
                text: document.body.innerText,
            }",
            vec![],
        )
        .await;
    assert_eq!(shown["h1"], title, "{shown}");
    assert!(
        shown["title"].as_str().expect("title").contains(title),
        "{shown}"
    );
    assert_eq!(
        shown["robots"], "noindex",
        "link_only pages are not indexed"
    );
    assert_eq!(shown["ogType"], "music.song");
    assert_eq!(shown["audios"], 1);
    let text = shown["text"].as_str().expect("text");
    for fact in [
        "0:03",
        "Personal use only",
        "No attribution required",
        "personal_only",
        "2026-01",
    ] {
        assert!(text.contains(fact), "{fact} not on the page: {text}");
    }

    // The player loads the signed URL and decodes the WAV to a playable state.
    browser
        .execute(
            "const audio = document.querySelector('audio');
             window.__canplay = false;
             audio.addEventListener('canplay', () => { window.__canplay = true; });
             audio.muted = true;
             audio.play().catch(() => {});
             return true;",
            vec![],
        )
        .await;
    browser
        .wait_until(
            "const audio = document.querySelector('audio');
             return audio.error === null && (audio.readyState >= 3 || window.__canplay === true);",
            Duration::from_secs(30),
        )
        .await;
    let audio = browser
        .execute(
            "const a = document.querySelector('audio');
             return { src: a.currentSrc, duration: a.duration, readyState: a.readyState };",
            vec![],
        )
        .await;
    let src = audio["src"].as_str().expect("src");
    assert!(
        src.starts_with(&format!("{base}/v1/music/media/{track_id}?exp=")),
        "{audio}"
    );
    let duration = audio["duration"].as_f64().expect("duration");
    assert!((duration - 3.0).abs() < 0.05, "decoded duration {duration}");

    // Seen from outside: the media route answered the browser's range requests with 206.
    let deadline = Instant::now() + Duration::from_secs(10);
    while media_requests(&stack, 206).await == 0 {
        assert!(Instant::now() < deadline, "no 206 from the media route");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Screenshots kept as test artefacts (paused at the start): desktop, then a phone's width.
    browser
        .execute(
            "const a = document.querySelector('audio'); a.pause(); a.currentTime = 0; return true;",
            vec![],
        )
        .await;
    let artefacts = target_dir().join("test-artefacts");
    let desktop = artefacts.join("share-page.png");
    browser.screenshot(&desktop).await;
    assert_eq!(
        &std::fs::read(&desktop).expect("screenshot")[..8],
        b"\x89PNG\r\n\x1a\n"
    );
    browser.set_window_size(390, 844).await;
    browser
        .screenshot(&artefacts.join("share-page-mobile.png"))
        .await;

    // A public share may be indexed: no robots meta.
    browser.goto(&public_url).await;
    let robots = browser
        .execute(
            "return [document.querySelector('h1')?.textContent ?? null,
                     document.querySelector('meta[name=robots]')?.content ?? null]",
            vec![],
        )
        .await;
    assert_eq!(robots, json!([title, null]), "public pages may be indexed");
    browser.quit().await;

    let logs = stack.all_logs();
    for token in [&link_only["token"], &public["token"]] {
        let token = token.as_str().expect("token");
        assert!(!logs.contains(token), "a raw token reached a log");
    }
}

// ---------------------------------------------------------------------------------------------
// Over plain HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_chooses_the_page_or_the_unchanged_json() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Late Night Study", &audio_bytes(1000)).await;
    let expires_at = chrono::DateTime::parse_from_rfc3339("2099-07-28T10:30:00Z")
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

    // A browser's Accept: the page.
    let (status, h, body) = page(&q.http, &api, &token).await;
    assert_eq!(status, 200);
    assert_html_headers(&h);
    assert_eq!(h["x-robots-tag"], "noindex", "link_only, as the JSON route");
    assert_eq!(h["ratelimit-limit"], "60");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains(ROBOTS_NOINDEX), "{body}");
    assert!(body.contains(r#"<meta name="viewport""#));
    assert!(!body.contains("<script"), "no JavaScript");
    assert!(body.contains("<style>"));
    assert_eq!(
        meta(&body, "property", "og:title").as_deref(),
        Some("Late Night Study")
    );
    assert_eq!(
        meta(&body, "property", "og:type").as_deref(),
        Some("music.song")
    );
    assert_eq!(
        meta(&body, "property", "og:site_name").as_deref(),
        Some("Music Share")
    );
    let description = meta(&body, "property", "og:description").expect("og:description");
    assert_eq!(
        description,
        "Track · 2:00 · Instrumental · Commercial use allowed · Attribution required"
    );
    assert_eq!(
        meta(&body, "name", "twitter:card").as_deref(),
        Some("summary")
    );
    assert_eq!(
        meta(&body, "name", "twitter:title").as_deref(),
        Some("Late Night Study")
    );
    assert_eq!(
        meta(&body, "name", "twitter:description"),
        Some(description)
    );
    assert_previews_carry_no_urls(&body, &token);
    assert!(!body.contains(&token), "the page never repeats its token");

    let srcs = audio_srcs(&body);
    assert_eq!(srcs.len(), 1, "{body}");
    assert!(
        srcs[0].starts_with(&format!("http://media.test/v1/music/media/{track}?exp=")),
        "{}",
        srcs[0]
    );
    assert_eq!(query_param(&srcs[0], "kid"), "k2");
    // The fixture's track: 120.4 s, commercial_enterprise (commercial, attribution), instrumental.
    for fact in [
        "<h1>Late Night Study</h1>",
        ">2:00</time>",
        "120.4 seconds",
        "Commercial use allowed",
        "Attribution required",
        "commercial_enterprise",
        "2026-01",
        "<dt>Instrumental</dt><dd>Yes</dd>",
        "studio",
        "creation",
        "2099-07-28 10:30 UTC",
    ] {
        assert!(body.contains(fact), "{fact} missing from the page:\n{body}");
    }
    assert!(!body.contains("Personal use only"));
    assert!(!body.contains("No attribution required"));

    // The other licence facts, in plain words: a personal-use track with vocals.
    let mut personal = q.track_event("Late Night Study", &audio_bytes(1000));
    personal.licence_class = LicenceClass::PersonalOnly;
    personal.instrumental = false;
    let personal = q.import(personal).await;
    let (personal_token, _) = q.share("track", &personal, ShareOpts::default()).await;
    let (_, _, body) = page(&q.http, &api, &personal_token).await;
    for fact in [
        "Personal use only",
        "No attribution required",
        "personal_only",
        "<dt>Instrumental</dt><dd>No</dd>",
    ] {
        assert!(body.contains(fact), "{fact} missing from the page:\n{body}");
    }
    for fact in [
        "Commercial use allowed",
        "Attribution required",
        "commercial_enterprise",
    ] {
        assert!(
            !body.contains(fact),
            "{fact} on a personal-use page:\n{body}"
        );
    }

    // Everything else: the JSON, exactly as before.
    let mut reference: Option<Value> = None;
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("text/html, application/json"),
        Some("text/html;q=0.5, application/json"),
        Some("application/json, text/html;q=0.9, */*;q=0.1"),
    ] {
        let response = get(&q.http, &api, &token, accept).await;
        assert_eq!(response.status(), 200, "{accept:?}");
        let h = response.headers().clone();
        assert!(
            h["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("application/json"),
            "{accept:?}"
        );
        assert_eq!(h["vary"], "Accept");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-robots-tag"], "noindex");
        assert!(h.get("content-security-policy").is_none());
        let mut body: Value = response.json().await.expect("json");
        let url = body["track"]
            .as_object_mut()
            .and_then(|t| t.remove("playback_url"))
            .expect("playback_url");
        assert!(url.as_str().is_some_and(|u| u.contains("sig=")));
        assert_eq!(body["kind"], "track");
        assert_eq!(body["track"]["title"], "Late Night Study");
        match &reference {
            None => reference = Some(body),
            Some(first) => assert_eq!(&body, first, "{accept:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_page_plays_its_live_tracks_in_the_owners_order() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let (token, _, [last, first]) = q.public_collection_with_a_removed_track().await;
    let api = q.start_query(&[]).await;

    let (status, h, body) = page(&q.http, &api, &token).await;
    assert_eq!(status, 200);
    assert_html_headers(&h);
    assert!(
        h.get("x-robots-tag").is_none(),
        "public links may be indexed"
    );
    assert!(
        !body.contains(r#"name="robots""#),
        "public links may be indexed"
    );
    assert_eq!(
        meta(&body, "property", "og:type").as_deref(),
        Some("music.playlist")
    );
    assert_eq!(
        meta(&body, "property", "og:title").as_deref(),
        Some("Evening")
    );
    assert_eq!(
        meta(&body, "property", "og:description").as_deref(),
        Some("Songs for later")
    );
    assert_previews_carry_no_urls(&body, &token);
    assert!(body.contains("<h1>Evening</h1>"));
    assert!(body.contains("<p>Songs for later</p>"));
    assert!(body.contains("2 tracks"));
    assert!(!body.contains("Removed one"), "removed tracks are left out");

    let srcs = audio_srcs(&body);
    assert_eq!(srcs.len(), 2, "one player per live track: {srcs:?}");
    assert!(
        srcs[0].contains(&format!("/v1/music/media/{last}?")),
        "{srcs:?}"
    );
    assert!(
        srcs[1].contains(&format!("/v1/music/media/{first}?")),
        "{srcs:?}"
    );
    let (at_last, at_first) = (
        body.find("</span> Last</h2>").expect("Last"),
        body.find("</span> First</h2>").expect("First"),
    );
    assert!(at_last < at_first, "the owner's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_text_is_shown_as_text_never_as_markup() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let hostile = r#"<script>alert("x")</script> & 'quoted' <b>bold</b>"#;
    let track = q.track(hostile, &audio_bytes(10)).await;
    let mut collection = q.collection_event("<img src=x onerror=alert(1)>");
    collection.description = Some(r#""><script>alert(2)</script>"#.to_owned());
    let collection = q.create_collection(collection, &[&track]).await;
    let (track_token, _) = q.share("track", &track, ShareOpts::default()).await;
    let (coll_token, _) = q
        .share("collection", &collection, ShareOpts::default())
        .await;
    let api = q.start_query(&[]).await;

    for token in [&track_token, &coll_token] {
        let (status, _, body) = page(&q.http, &api, token).await;
        assert_eq!(status, 200);
        for markup in ["<script", "<img", "<b>", "onerror=alert(1)>", "\"><"] {
            assert!(!body.contains(markup), "{markup} reached the page:\n{body}");
        }
        assert!(body.contains("&#60;script&#62;alert("), "{body}");
    }
    let (_, _, body) = page(&q.http, &api, &track_token).await;
    assert!(
        body.contains("<h1>&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;quoted&#39; &#60;b&#62;bold&#60;/b&#62;</h1>"),
        "{body}"
    );
    // Unescaped, the preview says exactly what the owner wrote.
    assert_eq!(
        meta(&body, "property", "og:title").as_deref(),
        Some(hostile)
    );
    let (_, _, body) = page(&q.http, &api, &coll_token).await;
    assert_eq!(
        meta(&body, "property", "og:description").as_deref(),
        Some(r#""><script>alert(2)</script>"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_link_gets_the_identical_page() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Dead ends", &audio_bytes(10)).await;
    let (revoked, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                revoked_at: Some(Utc::now() - chrono::Duration::hours(1)),
                ..ShareOpts::default()
            },
        )
        .await;
    let (expired, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
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
    // A limited link's page is read-only on GET; the JSON GET takes the one view.
    assert_eq!(q.resolve(&api, &limited).await.0, 200, "the one view");

    let unknown = events::share_token::ShareToken::generate()
        .expose()
        .to_owned();
    let causes: Vec<(&str, String)> = vec![
        ("unknown", unknown),
        ("malformed", "nope".to_owned()),
        ("malformed hex", "shr_XYZ".to_owned()),
        ("long", "a".repeat(3000)),
        ("bad utf-8", "%FF%FE".to_owned()),
        ("revoked", revoked),
        ("expired", expired),
        ("over max_views", limited),
    ];
    let mut reference: Option<(String, Vec<String>)> = None;
    for (cause, token) in causes {
        let (status, h, body) = page(&q.http, &api, &token).await;
        assert_eq!(status, 404, "{cause}");
        assert_html_headers(&h);
        assert_eq!(h["x-robots-tag"], "noindex", "{cause}");
        let mut headers: Vec<String> = h
            .iter()
            .map(|(k, v)| match k.as_str() {
                "x-request-id" | "date" | "ratelimit-remaining" | "ratelimit-reset" => {
                    k.to_string()
                }
                _ => format!("{k}: {}", v.to_str().unwrap_or("?")),
            })
            .collect();
        headers.sort();
        assert!(body.contains(DEAD_MESSAGE), "{cause}: {body}");
        assert!(body.contains(ROBOTS_NOINDEX), "{cause}");
        assert!(!body.contains("<audio"), "{cause}");
        assert!(
            !body.contains("req_"),
            "{cause}: a request id on the dead page"
        );
        assert!(!body.contains("Dead ends"), "{cause}: the content leaked");
        match &reference {
            None => reference = Some((body, headers)),
            Some((body0, headers0)) => {
                assert_eq!(&body, body0, "{cause}: the page differs");
                assert_eq!(&headers, headers0, "{cause}: headers differ");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_content_gets_a_friendly_page() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Gone", &audio_bytes(10)).await;
    let collection = q.collection("Gone too", &[&track]).await;
    let (track_token, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                visibility: Some("public"),
                ..ShareOpts::default()
            },
        )
        .await;
    let (coll_token, _) = q
        .share("collection", &collection, ShareOpts::default())
        .await;
    q.remove("track", &track).await;
    q.remove("collection", &collection).await;
    let api = q.start_query(&[]).await;

    for (kind, token) in [("track", &track_token), ("collection", &coll_token)] {
        let (status, h, body) = page(&q.http, &api, token).await;
        assert_eq!(status, 200, "{kind}: as the JSON's available:false");
        assert_html_headers(&h);
        assert!(
            body.contains(&format!("This {kind} was removed")),
            "{kind}: {body}"
        );
        assert!(body.contains("The creator removed this content."), "{body}");
        assert!(body.contains(ROBOTS_NOINDEX), "{kind}");
        assert!(!body.contains("<audio"), "{kind}");
        assert!(!body.contains("Gone"), "{kind}: the removed content's name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limited_page_carries_the_json_headers() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let track = q.track("Popular", &audio_bytes(10)).await;
    let (token, _) = q.share("track", &track, ShareOpts::default()).await;
    let api = q
        .start_query(&[("RESOLVE_BURST", "2"), ("RESOLVE_RATE_PER_MINUTE", "6")])
        .await;

    assert_eq!(page(&q.http, &api, &token).await.0, 200);
    assert_eq!(page(&q.http, &api, &token).await.0, 200);
    let (status, h, body) = page(&q.http, &api, &token).await;
    assert_eq!(status, 429);
    assert_html_headers(&h);
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], "6");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"], h["retry-after"]);
    assert!(body.contains("Too many requests"), "{body}");
    assert!(
        body.contains(&format!("try again in {retry} second")),
        "{body}"
    );
    assert!(body.contains(ROBOTS_NOINDEX));
    assert!(!body.contains("<audio"));

    // The JSON 429 right after: the same limit headers.
    let json = get(&q.http, &api, &token, None).await;
    assert_eq!(json.status(), 429);
    let jh = json.headers().clone();
    for name in [
        "ratelimit-limit",
        "ratelimit-remaining",
        "cache-control",
        "vary",
    ] {
        assert_eq!(jh[name], h[name], "{name}");
    }
    let json_retry: u64 = jh["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("s");
    assert!(json_retry.abs_diff(retry) <= 1, "{json_retry} vs {retry}");
    assert_eq!(jh["ratelimit-reset"], jh["retry-after"]);
    let names = |h: &reqwest::header::HeaderMap| {
        let mut n: Vec<String> = h
            .keys()
            .map(|k| k.to_string())
            .filter(|k| {
                !matches!(
                    k.as_str(),
                    "content-security-policy" | "referrer-policy" | "x-content-type-options"
                )
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&h),
        names(&jh),
        "the same headers apart from the page's own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_gets_a_friendly_503_page() {
    let pg = PrivatePostgres::start();
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let database_url = pg.url("music_share_page");
    let api = q
        .start_query(&[
            ("DATABASE_URL", database_url.as_str()),
            ("RESOLVE_CACHE_DISABLED", "true"),
        ])
        .await;
    let token = events::share_token::ShareToken::generate()
        .expose()
        .to_owned();
    assert_eq!(page(&q.http, &api, &token).await.0, 404, "up: a dead link");

    pg.stop();
    let (status, h, body) = page(&q.http, &api, &token).await;
    assert_eq!(status, 503, "{body}");
    assert_html_headers(&h);
    assert_eq!(h["retry-after"], "2");
    assert!(body.contains("Temporarily unavailable"), "{body}");
    assert!(body.contains(ROBOTS_NOINDEX));
    let request_id = h["x-request-id"].to_str().expect("id");
    assert!(
        body.contains(request_id),
        "the page names its request for support"
    );

    let json = get(&q.http, &api, &token, None).await;
    assert_eq!(json.status(), 503);
    assert_eq!(json.headers()["retry-after"], "2");
    let envelope: Value = json.json().await.expect("envelope");
    assert_eq!(envelope["error"]["code"], "SERVICE_UNAVAILABLE");
}

// ---------------------------------------------------------------------------------------------
// The audit.

async fn audit_count(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream("MUSIC_AUDIT").await else {
        return 0;
    };
    stream.info().await.map(|i| i.state.messages).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_resolves_are_audited_as_html() {
    let nats = PrivateNats::start();
    let q = QueryEnv::new(&nats.url()).await;
    let track = q.track("Audited page", &audio_bytes(10)).await;
    let (token, share_id) = q.share("track", &track, ShareOpts::default()).await;
    let api = q
        .start_query(&[("RESOLVE_BURST", "3"), ("RESOLVE_RATE_PER_MINUTE", "1")])
        .await;
    let unknown = events::share_token::ShareToken::generate()
        .expose()
        .to_owned();

    let (status, h, _) = page(&q.http, &api, &token).await;
    assert_eq!(status, 200);
    let trace_id = h["x-request-id"].to_str().expect("id").to_owned();
    assert_eq!(get(&q.http, &api, &token, None).await.status(), 200);
    assert_eq!(page(&q.http, &api, &unknown).await.0, 404);
    assert_eq!(page(&q.http, &api, &token).await.0, 429);
    assert_eq!(page(&q.http, &api, &unknown).await.0, 429);

    let deadline = Instant::now() + Duration::from_secs(30);
    while audit_count(&nats.url()).await < 5 {
        assert!(
            Instant::now() < deadline,
            "the audit messages did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut env = q.env.clone();
    env.set("NATS_URL", nats.url());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        env.run(
            Bin::QueryApi,
            &["audit", "tail", "--from-start", "--limit", "5"],
        ),
    )
    .await
    .expect("audit tail finishes");
    assert!(output.status.success());
    let messages: Vec<Value> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON message per line"))
        .collect();
    let seen: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["format"].as_str().expect("format"),
                m["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("html", "ok"),
            ("json", "ok"),
            ("html", "not_found"),
            ("html", "rate_limited"),
            ("html", "rate_limited")
        ]
    );
    assert_eq!(messages[0]["trace_id"], trace_id.as_str());
    // The share is named whenever the token matched one, even when the limiter refused it.
    for m in [&messages[0], &messages[3]] {
        assert_eq!(m["share_id"], share_id.as_str(), "{m}");
        assert_eq!(m["target_type"], "track", "{m}");
        assert_eq!(m["target_id"], track.as_str(), "{m}");
    }
    for m in [&messages[2], &messages[4]] {
        assert_eq!(m["share_id"], Value::Null, "{m}");
        assert_eq!(m["target_id"], Value::Null, "{m}");
    }
    let raw = serde_json::to_string(&messages).expect("json");
    assert!(!raw.contains(&token) && !raw.contains(&unknown));
}
