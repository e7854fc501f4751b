//! Tracks over HTTP: import with a measured duration, every invalid field, malformed and
//! oversized uploads, an upload cut off midway, and deletion.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tests::command::{
    assert_timestamp, expect_error, expect_json, new_org, new_user, CommandApi, TrackForm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every file under `dir`, recursively (empty if it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

async fn track_imports(api: &CommandApi) -> i64 {
    let pool = api.pool().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'TrackImported'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_measures_wav_and_flac_and_answers_the_track_object() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;

    let cases = [
        ("wav", tests::audio::wav_tone_ms(2_500), 2.5, "audio/wav"),
        (
            "flac",
            tests::audio::flac_tone_ms(3_210),
            3.21,
            "audio/flac",
        ),
        (
            "flac48k",
            tests::audio::flac(48_000, &tests::audio::tone(48_000, 48_000 * 7 + 24_000)),
            7.5,
            "audio/flac",
        ),
    ];
    for (name, bytes, seconds, content_type) in cases {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let response = api
            .upload(
                &key,
                &org,
                TrackForm::valid().audio(bytes, &format!("tone.{name}")),
            )
            .await;
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let track = expect_json(response, StatusCode::CREATED).await;

        let mut keys: Vec<&str> = track
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
                "engine",
                "id",
                "instrumental",
                "licence",
                "measured_duration_seconds",
                "mode",
                "organization_id",
                "owner_id",
                "title"
            ],
            "{track}"
        );
        let id = track["id"].as_str().expect("id");
        assert!(events::ids::TrackId::parse(id).is_ok(), "{id}");
        assert_eq!(track["organization_id"], org.as_str());
        assert_eq!(track["owner_id"], user.as_str());
        assert_eq!(track["title"], "Late Night Study");
        assert_eq!(track["engine"], "studio");
        assert_eq!(track["mode"], "creation");
        assert_eq!(track["instrumental"], true);
        let measured = track["measured_duration_seconds"].as_f64().expect("number");
        assert!(
            (measured - seconds).abs() <= 0.010,
            "{name}: measured {measured} s, expected {seconds} s"
        );
        assert_eq!(
            track["licence"],
            serde_json::json!({
                "licence_class": "personal_only",
                "licence_version": "2026-01",
                "commercial_use": false,
                "requires_attribution": false
            })
        );
        let created_at = assert_timestamp(&track["created_at"]);
        assert!((chrono::Utc::now() - created_at).num_seconds().abs() < 60);

        // The event: the measured facts, the media file, the request id and the actor.
        let events = api.events(&format!("track-{id}")).await;
        assert_eq!(events.len(), 1);
        let (event_type, payload, trace_id, actor) = &events[0];
        assert_eq!(event_type, "TrackImported");
        assert_eq!(trace_id, &request_id);
        assert_eq!(actor, &user);
        assert_eq!(
            payload["measured_duration_ms"].as_f64().expect("ms") / 1000.0,
            measured
        );
        assert_eq!(payload["media"]["sha256"], sha256.as_str());
        assert_eq!(payload["media"]["bytes"], size);
        assert_eq!(payload["media"]["content_type"], content_type);
        let stored = api.media_dir().join(&sha256[..2]).join(&sha256);
        let on_disk = std::fs::read(&stored).expect("the audio is stored under its hash");
        assert_eq!(hex::encode(Sha256::digest(&on_disk)), sha256);
    }
    assert!(files_under(&api.media_dir().join("tmp")).is_empty());

    // The licence facts come from the catalogue, whatever the class; instrumental defaults to false.
    for (class, commercial, attribution) in [
        ("commercial_cleared", true, false),
        ("commercial_enterprise", true, true),
        ("personal_only", false, false),
        ("unclear", false, false),
    ] {
        let form = TrackForm::valid()
            .with("licence_class", class)
            .without("instrumental");
        let track = expect_json(api.upload(&key, &org, form).await, StatusCode::CREATED).await;
        assert_eq!(track["licence"]["licence_class"], class);
        assert_eq!(track["licence"]["commercial_use"], commercial, "{class}");
        assert_eq!(
            track["licence"]["requires_attribution"], attribution,
            "{class}"
        );
        assert_eq!(track["instrumental"], false);
    }

    // The same bytes twice: two tracks, one file.
    let again = expect_json(
        api.upload(
            &key,
            &org,
            TrackForm::valid().audio(tests::audio::wav_tone_ms(2_500), "again.wav"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(again["id"].is_string());
    let stored: Vec<_> = files_under(&api.media_dir());
    assert_eq!(stored.len(), 4, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_field_is_a_422_naming_it() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;

    let long_title = "x".repeat(513);
    let text_as_mp3 = b"This is not audio at all, just some words in a text file.\n".repeat(50);
    let cases: Vec<(&str, TrackForm)> = vec![
        ("title", TrackForm::valid().without("title")),
        ("title", TrackForm::valid().with("title", "")),
        ("title", TrackForm::valid().with("title", "   ")),
        ("title", TrackForm::valid().with("title", &long_title)),
        ("engine", TrackForm::valid().without("engine")),
        ("engine", TrackForm::valid().with("engine", "")),
        ("engine", TrackForm::valid().with("engine", &"e".repeat(65))),
        ("mode", TrackForm::valid().without("mode")),
        ("mode", TrackForm::valid().with("mode", " ")),
        ("title", TrackForm::valid().with("title", "a\u{0}b")),
        ("engine", TrackForm::valid().with("engine", "\u{0}")),
        (
            "instrumental",
            TrackForm::valid().with("instrumental", "maybe"),
        ),
        ("licence_class", TrackForm::valid().without("licence_class")),
        (
            "licence_class",
            TrackForm::valid().with("licence_class", "free_for_all"),
        ),
        ("audio", TrackForm::valid().without("audio")),
        ("audio", TrackForm::valid().audio(text_as_mp3, "song.mp3")),
        ("audio", TrackForm::valid().audio(Vec::new(), "empty.wav")),
        (
            "audio",
            TrackForm::valid().audio(b"RIFF\x10\0\0\0WAVEjunk".to_vec(), "short.wav"),
        ),
    ];
    for (field, form) in cases {
        let body = expect_error(api.upload(&key, &org, form).await, 422, "VALIDATION_ERROR").await;
        let details = body["error"]["details"].as_object().expect("details");
        assert!(details.contains_key(field), "{field}: {body}");
        assert_eq!(details.len(), 1, "only {field} is wrong: {body}");
    }

    // Several wrong fields at once: each is named.
    let form = TrackForm::valid()
        .with("title", "")
        .with("licence_class", "nope")
        .audio(b"words".to_vec(), "x.mp3");
    let body = expect_error(api.upload(&key, &org, form).await, 422, "VALIDATION_ERROR").await;
    let details = body["error"]["details"].as_object().expect("details");
    for field in ["title", "licence_class", "audio"] {
        assert!(details[field].is_string(), "{field}: {body}");
    }

    assert_eq!(
        track_imports(&api).await,
        0,
        "no invalid upload became a track"
    );
    assert!(
        files_under(&api.media_dir()).is_empty(),
        "no file left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_are_400() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let url = api.url(&format!("/v1/music/{org}/tracks"));

    // JSON instead of multipart.
    let response = api
        .http
        .post(&url)
        .header("x-api-key", &key)
        .json(&serde_json::json!({"title": "x"}))
        .send()
        .await
        .expect("send");
    expect_error(response, 400, "INVALID_REQUEST").await;

    // Multipart without a boundary, and a body that is not the multipart it claims to be.
    for (content_type, body) in [
        ("multipart/form-data", "whatever".to_owned()),
        (
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nunterminated"
                .to_owned(),
        ),
        (
            "multipart/form-data; boundary=XyZ",
            "no boundary anywhere".to_owned(),
        ),
    ] {
        let response = api
            .http
            .post(&url)
            .header("x-api-key", &key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        expect_error(response, 400, "INVALID_REQUEST").await;
    }
    assert_eq!(track_imports(&api).await, 0);
    assert!(files_under(&api.media_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_are_413_and_leave_nothing() {
    const LIMIT: usize = 64 * 1024;
    let api = CommandApi::start_with(|env| {
        env.set("MAX_UPLOAD_BYTES", LIMIT.to_string());
    })
    .await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;

    // Exactly at the limit is fine.
    let samples = tests::audio::tone(44_100, ((LIMIT - 44) / 2) as u64);
    let at_limit = tests::audio::wav(44_100, &samples);
    assert_eq!(at_limit.len(), LIMIT);
    expect_json(
        api.upload(&key, &org, TrackForm::valid().audio(at_limit, "limit.wav"))
            .await,
        StatusCode::CREATED,
    )
    .await;

    // One byte over, found while streaming.
    let samples = tests::audio::tone(44_100, ((LIMIT - 44) / 2) as u64 + 1);
    let just_over = tests::audio::wav(44_100, &samples);
    let response = api
        .upload(&key, &org, TrackForm::valid().audio(just_over, "big.wav"))
        .await;
    let body = expect_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(body["error"]["type"], "client_error");

    // Far over: refused from Content-Length alone, before any of the body is sent.
    let mut socket = tokio::net::TcpStream::connect(api.service.addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /v1/music/{org}/tracks HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n",
        api.service.addr,
        50 * LIMIT
    );
    socket.write_all(request.as_bytes()).await.expect("headers");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"PAYLOAD_TOO_LARGE\""), "{answer}");
    assert_eq!(track_imports(&api).await, 1);
    assert!(files_under(&api.media_dir().join("tmp")).is_empty());
    assert_eq!(files_under(&api.media_dir()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_midway_leaves_no_track_and_no_file() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;

    let boundary = "CutOffBoundary7MA4YWxkTrZu0gW";
    let mut head = String::new();
    for (name, value) in [
        ("title", "Cut off"),
        ("engine", "studio"),
        ("mode", "creation"),
        ("licence_class", "unclear"),
    ] {
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    head.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    ));
    let audio = tests::audio::wav_tone_ms(20_000);
    let declared = head.len() + audio.len() + boundary.len() + 8;
    let request = format!(
        "POST /v1/music/{org}/tracks HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n",
        api.service.addr
    );
    let mut socket = tokio::net::TcpStream::connect(api.service.addr)
        .await
        .expect("connect");
    socket.write_all(request.as_bytes()).await.expect("headers");
    socket.write_all(head.as_bytes()).await.expect("fields");
    socket
        .write_all(&audio[..audio.len() / 2])
        .await
        .expect("half the audio");
    socket.flush().await.expect("flush");

    // The upload streams to a temporary file as it arrives...
    let tmp = api.media_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(15);
    while files_under(&tmp).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no temporary file appeared while uploading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and the client goes away.
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !files_under(&api.media_dir()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "files left behind: {:?}",
            files_under(&api.media_dir())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(track_imports(&api).await, 0);

    // The service is fine and the next upload works.
    let track = expect_json(
        api.upload(&key, &org, TrackForm::valid()).await,
        StatusCode::CREATED,
    )
    .await;
    assert!(track["id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_deletes_a_track_once() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    let id = api.track(&key, &org).await;
    let path = format!("/v1/music/{org}/tracks/{id}");

    let response = api.delete(&key, &path).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        body,
        serde_json::json!({"success": true, "id": id, "detail": "Track deleted."})
    );
    let events = api.events(&format!("track-{id}")).await;
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(types, ["TrackImported", "ContentRemoved"]);
    let (_, payload, trace_id, actor) = &events[1];
    assert_eq!(
        payload,
        &serde_json::json!({"target_type": "track", "target_id": id, "organization_id": org})
    );
    assert_eq!(trace_id, &request_id);
    assert_eq!(actor, &user);

    // Gone: a second delete, and sharing it, are 404s; no new event.
    let again = expect_error(api.delete(&key, &path).await, 404, "RESOURCE_NOT_FOUND").await;
    assert_eq!(again["error"]["details"]["track_id"], id.as_str());
    expect_error(
        api.post_empty(&key, &format!("{path}/share")).await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
    assert_eq!(api.events(&format!("track-{id}")).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_and_ogg_vorbis_are_measured_by_decoding() {
    let api = CommandApi::start().await;
    let (user, org) = (new_user(), new_org());
    let key = api.key(&user, &[&org]).await;
    for (bytes, name, content_type) in [
        (
            &include_bytes!("../../fixtures/tone-2500ms.mp3")[..],
            "tone.mp3",
            "audio/mpeg",
        ),
        (
            &include_bytes!("../../fixtures/tone-2500ms.ogg")[..],
            "tone.ogg",
            "audio/ogg",
        ),
    ] {
        let track = expect_json(
            api.upload(&key, &org, TrackForm::valid().audio(bytes.to_vec(), name))
                .await,
            StatusCode::CREATED,
        )
        .await;
        let measured = track["measured_duration_seconds"].as_f64().expect("number");
        assert!(
            (measured - 2.5).abs() <= 0.010,
            "{name}: measured {measured} s, expected 2.5 s"
        );
        let id = track["id"].as_str().expect("id");
        let events = api.events(&format!("track-{id}")).await;
        assert_eq!(events[0].1["media"]["content_type"], content_type);
    }
}
