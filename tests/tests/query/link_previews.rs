//! Views that a person took: link-preview agents and `HEAD` never use up a limited link, and the
//! page of a limited link is read-only until a person presses "Listen" (in headless Chromium).

use std::time::Duration;

use serde_json::{json, Value};
use tests::browser::Browser;
use tests::nats::PrivateNats;
use tests::stack::{Stack, ORG, USER};

const BOTS: &[&str] = &[
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
];
const PERSON: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_view_link_survives_previews_and_heads_then_serves_one_person() {
    let nats = PrivateNats::start();
    let stack = Stack::start_with(&nats.url(), |env| {
        env.set("RESOLVE_BURST", "1000");
    })
    .await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = stack
        .upload_track(&key, "Preview me", tests::audio::wav_tone_ms(1000))
        .await;
    let track_id = track["id"].as_str().expect("id").to_owned();
    let link = stack
        .share(&key, &format!("tracks/{track_id}"), json!({"max_views": 1}))
        .await;
    let token = link["token"].as_str().expect("token").to_owned();
    let url = stack.query.url(&format!("/v1/music/shared/{token}"));

    let mut attempts = 0u64;
    for bot in BOTS {
        // JSON: the facts, no playback URL.
        let response = stack
            .http
            .get(&url)
            .header("user-agent", *bot)
            .send()
            .await
            .expect("bot");
        assert_eq!(response.status(), 200, "{bot}");
        let view: Value = response.json().await.expect("view");
        assert_eq!(view["track"]["title"], "Preview me", "{bot}");
        assert_eq!(view["track"]["playback_url"], Value::Null, "{bot}");
        // HTML: Open Graph tags, no player.
        let response = stack
            .http
            .get(&url)
            .header("user-agent", *bot)
            .header("accept", "text/html")
            .send()
            .await
            .expect("bot page");
        assert_eq!(response.status(), 200, "{bot}");
        let html = response.text().await.expect("html");
        assert!(
            html.contains(r#"<meta property="og:title" content="Preview me">"#),
            "{html}"
        );
        assert!(
            !html.contains("<audio") && !html.contains("/v1/music/media/"),
            "{html}"
        );
        attempts += 2;
    }
    for _ in 0..10 {
        let response = stack
            .http
            .head(&url)
            .header("user-agent", PERSON)
            .send()
            .await
            .expect("head");
        assert_eq!(response.status(), 200);
        attempts += 1;
    }

    // Exactly one person.
    let person = || async {
        let response = stack
            .http
            .get(&url)
            .header("user-agent", PERSON)
            .send()
            .await
            .expect("person");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    };
    let (status, view) = person().await;
    assert_eq!(status, 200, "{view}");
    assert!(view["track"]["playback_url"]
        .as_str()
        .is_some_and(|u| u.contains("/v1/music/media/")));
    assert_eq!(person().await.0, 404, "the one view is taken");
    // A bot after that sees the dead link too (it looks, it does not revive).
    let response = stack
        .http
        .get(&url)
        .header("user-agent", BOTS[0])
        .send()
        .await
        .expect("bot");
    assert_eq!(response.status(), 404);
    attempts += 3;

    tests::audit::wait_for_count(&nats.url(), attempts, Duration::from_secs(30)).await;
    let audit = tests::audit::tail(&stack.env, &nats.url(), attempts).await;
    let outcomes: Vec<&str> = audit
        .iter()
        .map(|m| m["outcome"].as_str().expect("outcome"))
        .collect();
    let mut expected = vec!["preview"; BOTS.len() * 2 + 10];
    expected.extend(["ok", "over_limit", "over_limit"]);
    assert_eq!(outcomes, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_a_limited_link_plays_only_once_listen_is_pressed() {
    let port = tests::nats::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let stack = Stack::start_with(&tests::nats::shared_url(), |env| {
        env.set("QUERY_API_ADDR", format!("127.0.0.1:{port}"));
        env.set("MEDIA_BASE_URL", base.clone());
        env.set("PUBLIC_BASE_URL", base.clone());
        env.set("RESOLVE_BURST", "1000");
    })
    .await;
    let key = stack.api_key(USER, &[ORG]).await;
    let track = stack
        .upload_track(&key, "Press listen", tests::audio::wav_tone_ms(2000))
        .await;
    let track_id = track["id"].as_str().expect("id").to_owned();
    let link = stack
        .share(&key, &format!("tracks/{track_id}"), json!({"max_views": 1}))
        .await;
    let url = link["url"].as_str().expect("url").to_owned();

    let browser = Browser::start().await;
    for _ in 0..2 {
        // GET, twice: read-only, nothing taken.
        browser.goto(&url).await;
        let shown = browser
            .execute(
                "return {
                    h1: document.querySelector('h1')?.textContent ?? null,
                    audios: document.querySelectorAll('audio').length,
                    buttons: [...document.querySelectorAll('form[method=post] button')]
                        .map(b => b.textContent),
                    scripts: document.querySelectorAll('script').length,
                }",
                vec![],
            )
            .await;
        assert_eq!(shown["h1"], "Press listen", "{shown}");
        assert_eq!(shown["audios"], 0, "{shown}");
        assert_eq!(shown["buttons"], json!(["Listen"]), "{shown}");
        assert_eq!(shown["scripts"], 0, "{shown}");
    }

    // Press "Listen": the form POSTs to the same URL (allowed by the page's CSP) and the
    // answer is the page with the player, which loads and decodes the audio.
    browser
        .execute(
            "document.querySelector('form[method=post] button').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_until(
            "return document.querySelectorAll('audio').length === 1;",
            Duration::from_secs(20),
        )
        .await;
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
    let duration = browser
        .execute("return document.querySelector('audio').duration;", vec![])
        .await;
    assert!(
        (duration.as_f64().expect("duration") - 2.0).abs() < 0.05,
        "{duration}"
    );
    browser.quit().await;

    // The one view was taken by pressing "Listen".
    let response = stack.http.get(&url).send().await.expect("resolve");
    assert_eq!(response.status(), 404);
}
