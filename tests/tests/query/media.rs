//! Signed media: a minted URL streams the uploaded bytes, `Range` works, and a tampered,
//! expired or unknown-key signature is a 403 envelope.

use tests::query::{audio_bytes, path_and_query, query_param, QueryEnv, ShareOpts, SIGNING_KEYS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_stream_the_audio_and_bad_signatures_are_forbidden() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let audio = audio_bytes(100_000);
    let track = q.track("Streamed", &audio).await;
    let (token, _) = q.share("track", &track, ShareOpts::default()).await;
    let api = q.start_query(&[]).await;

    let (status, view) = q.resolve(&api, &token).await;
    assert_eq!(status, 200);
    let url = path_and_query(view["track"]["playback_url"].as_str().expect("url"));

    let whole = q.get(&api, &url).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(
        whole.headers()["content-length"],
        audio.len().to_string().as_str()
    );
    assert_eq!(
        whole.bytes().await.expect("body").as_ref(),
        audio.as_slice()
    );

    let part = q
        .http
        .get(api.url(&url))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(part.headers()["content-length"], "1000");
    assert_eq!(
        part.bytes().await.expect("body").as_ref(),
        &audio[1000..2000]
    );

    let tail = q
        .http
        .get(api.url(&url))
        .header("range", "bytes=-10")
        .send()
        .await
        .expect("suffix range");
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.expect("body").as_ref(),
        &audio[audio.len() - 10..]
    );

    let beyond = q
        .http
        .get(api.url(&url))
        .header("range", "bytes=200000-")
        .send()
        .await
        .expect("unsatisfiable");
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */100000");
    let request_id = beyond.headers()["x-request-id"].clone();
    let body: serde_json::Value = beyond.json().await.expect("the error envelope");
    assert_eq!(body["error"]["code"], "RANGE_NOT_SATISFIABLE");
    assert_eq!(body["error"]["status"], 416);
    assert_eq!(body["error"]["trace_id"], request_id.to_str().expect("id"));

    // Tampering with any part of the URL, or an unknown key, or an expired one: 403.
    let exp = query_param(&url, "exp");
    let sig = query_param(&url, "sig");
    let other = q.track("Other", &audio_bytes(10)).await;
    let mut flipped = sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("hex");
    let later = (exp.parse::<i64>().expect("exp") + 60).to_string();
    let bad = [
        (
            "another track",
            format!("/v1/music/media/{other}?exp={exp}&kid=k2&sig={sig}"),
        ),
        (
            "flipped signature",
            format!("/v1/music/media/{track}?exp={exp}&kid=k2&sig={flipped}"),
        ),
        (
            "later expiry",
            format!("/v1/music/media/{track}?exp={later}&kid=k2&sig={sig}"),
        ),
        (
            "other key id",
            format!("/v1/music/media/{track}?exp={exp}&kid=k1&sig={sig}"),
        ),
        (
            "unknown key",
            format!("/v1/music/media/{track}?exp={exp}&kid=k9&sig={sig}"),
        ),
        ("no signature", format!("/v1/music/media/{track}")),
        ("expired", expired_url(&track)),
    ];
    for (what, path) in bad {
        let response = q.get(&api, &path).await;
        assert_eq!(response.status(), 403, "{what}");
        let body: serde_json::Value = response.json().await.expect("envelope");
        assert_eq!(body["error"]["code"], "FORBIDDEN", "{what}");
    }
}

/// A URL correctly signed with key `k2` that expired a minute ago.
fn expired_url(track: &str) -> String {
    use hmac::{Hmac, Mac};
    let secret = hex::decode(
        SIGNING_KEYS
            .split(',')
            .next()
            .and_then(|k| k.split_once(':'))
            .map(|(_, s)| s.trim())
            .expect("k2"),
    )
    .expect("hex");
    let exp = (chrono::Utc::now().timestamp() - 60).to_string();
    let path = format!("/v1/music/media/{track}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("key");
    mac.update(format!("{path}\n{exp}\nk2").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("{path}?exp={exp}&kid=k2&sig={sig}")
}
