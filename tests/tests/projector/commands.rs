//! The projector's failure mode and its operator commands: an event it cannot project stops it
//! (naming the event, applying nothing past it); `replay` prints a stream upcast; `status`
//! prints checkpoint, head and lag.

use std::time::Duration;

use events::event::TargetType;
use events::licence::LicenceClass;
use events::{ExpectedVersion, NewEvent, StreamId};
use serde_json::{json, Value};
use tests::app::TestApp;
use tests::log::{self, at};
use tests::process::Bin;
use tests::read_model::checkpoint;
use uuid::Uuid;

async fn world() -> TestApp {
    TestApp::builder().build().await
}

fn raw(event_type: &str, schema_version: i32, payload: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version,
        payload,
        occurred_at: at(100),
        actor: "usr_0123456789ab".to_owned(),
        trace_id: "req_projectortest000000".to_owned(),
    }
}

/// Appends two good events, `bad`, and one more good event; starts the projector and expects it
/// to stop at `bad`, naming it, with the checkpoint right before it.
async fn stops_at(bad: NewEvent, expected_reason: &str) {
    let w = world().await;
    let store = w.store.as_ref();
    let good = log::track("Before", LicenceClass::Unclear);
    log::append(store, good.clone(), at(0)).await;
    let before = log::append(store, log::collection("Before too"), at(1)).await;
    let (bad_id, bad_type) = (bad.event_id, bad.event_type.clone());
    store
        .append(
            &StreamId::new("track-from-the-future"),
            ExpectedVersion::Any,
            vec![bad],
        )
        .await
        .expect("append the event this build cannot project");
    let after = log::track("After", LicenceClass::Unclear);
    log::append(store, after.clone(), at(2)).await;

    let mut projector = w.spawn(Bin::Projector).await;
    let status = projector
        .wait(Duration::from_secs(30))
        .await
        .expect("the projector stops by itself");
    assert!(!status.success(), "it must exit non-zero, not {status}");
    let logs = projector.logs();
    let stopped = logs
        .lines()
        .filter(|l| l.contains(&bad_id.to_string()) && l.contains(&bad_type))
        .collect::<Vec<_>>();
    assert!(
        !stopped.is_empty(),
        "neither the log nor stderr names event {bad_id} of type {bad_type}:\n{logs}"
    );
    assert!(
        stopped.iter().any(|l| l.contains(expected_reason)),
        "the reason {expected_reason:?} is missing:\n{logs}"
    );
    // The plain stderr line (not only the JSON log) carries it too.
    assert!(
        logs.lines()
            .any(|l| l.starts_with("projector: ") && l.contains(&bad_id.to_string())),
        "{logs}"
    );

    assert_eq!(
        checkpoint(&w.pool, "read_model").await,
        before.last_position,
        "the checkpoint stays right before the event"
    );
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM read_model.tracks")
        .fetch_all(&w.pool)
        .await
        .expect("tracks");
    assert_eq!(
        titles,
        vec!["Before".to_owned()],
        "nothing after it is applied"
    );

    // A restart does not skip it either.
    let mut again = w.spawn(Bin::Projector).await;
    let status = again
        .wait(Duration::from_secs(30))
        .await
        .expect("stops again");
    assert!(!status.success());
    assert_eq!(
        checkpoint(&w.pool, "read_model").await,
        before.last_position
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_type_stops_the_projector_naming_it() {
    stops_at(
        raw(
            "TrackRemixed",
            1,
            json!({"track_id": "mtrack_0123456789ab"}),
        ),
        "does not know the type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_stops_the_projector() {
    stops_at(
        raw(
            "ShareRevoked",
            9,
            json!({"share_id": "mslink_0123456789ab"}),
        ),
        "schema version 9",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_stops_the_projector() {
    stops_at(
        raw("ShareRevoked", 1, json!({"share_id": 42})),
        "malformed payload",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_licence_catalogue_stops_the_projector() {
    let mut track = log::track("Future licence", LicenceClass::CommercialCleared);
    track.licence_version = "2031-07".to_owned();
    let event = NewEvent::new(&track.into(), &log::metadata(at(50)));
    stops_at(event, "licence catalogue version \\\"2031-07\\\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_prints_a_stream_upcast_as_json_lines() {
    let w = world().await;
    let share_id = events::ids::ShareLinkId::generate();
    let stream = StreamId::share(&share_id);
    let hash = events::share_token::ShareToken::generate().hash();
    let created = raw(
        "ShareCreated",
        1,
        json!({
            "share_id": share_id, "token_hash": hash, "target_type": "track",
            "target_id": "mtrack_0123456789ab", "organization_id": "org_projector_test",
            "owner_id": "usr_0123456789ab", "public": false, "expires_at": null
        }),
    );
    let created_id = created.event_id;
    w.store
        .append(&stream, ExpectedVersion::NoStream, vec![created])
        .await
        .expect("append v1");
    log::append(w.store.as_ref(), log::revoked(&share_id), at(101)).await;
    // Another stream, which must not show up.
    log::append(w.store.as_ref(), log::collection("Elsewhere"), at(102)).await;

    let output = w
        .env
        .run(Bin::Projector, &["replay", "--stream", stream.as_str()])
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let first = &lines[0];
    assert_eq!(first["event_type"], "ShareCreated");
    assert_eq!(first["event_id"], created_id.to_string());
    assert_eq!(first["stream_id"], stream.as_str());
    assert_eq!(first["stream_version"], 1);
    assert_eq!(first["schema_version"], 2, "upcast to the current schema");
    assert_eq!(first["payload"]["visibility"], "link_only");
    assert_eq!(first["payload"]["max_views"], Value::Null);
    assert!(first["payload"].get("public").is_none(), "{first}");
    assert_eq!(first["payload"]["token_hash"], hash.as_str());
    assert_eq!(first["occurred_at"], "2026-06-28T10:31:40Z");
    assert!(first["global_position"].as_u64().is_some());
    assert_eq!(lines[1]["event_type"], "ShareRevoked");
    assert_eq!(lines[1]["payload"]["share_id"], share_id.as_str());
    assert_eq!(lines[1]["stream_version"], 2);

    // An event this build cannot upcast is printed as stored, and the command fails.
    let odd = StreamId::new("track-odd");
    let unknown = raw("TrackRemixed", 1, json!({"n": 1}));
    let unknown_id = unknown.event_id;
    w.store
        .append(&odd, ExpectedVersion::NoStream, vec![unknown])
        .await
        .expect("append");
    let output = w
        .env
        .run(Bin::Projector, &["replay", "--stream", "track-odd"])
        .await;
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let printed: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(printed["event_type"], "TrackRemixed");
    assert_eq!(printed["payload"]["n"], 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains(&unknown_id.to_string()));

    // An empty stream prints nothing.
    let output = w
        .env
        .run(Bin::Projector, &["replay", "--stream", "share-none"])
        .await;
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_checkpoint_head_and_lag() {
    let w = world().await;
    let mut last = 0;
    for i in 0..5 {
        let t = log::track(&format!("T{i}"), LicenceClass::Unclear);
        last = log::append(w.store.as_ref(), t.clone(), at(i))
            .await
            .last_position;
        log::append(
            w.store.as_ref(),
            log::share(TargetType::Track, t.track_id.as_str()),
            at(i),
        )
        .await;
    }
    let head = last + 1;

    let status = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The read models' lines; the analytics' follow (tests/tests/system/analytics.rs).
        let out = String::from_utf8(output.stdout).expect("utf-8");
        out.lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(
        status(w.env.run(Bin::Projector, &["status"]).await),
        format!("checkpoint: 0\nhead: {head}\nlag: {head}\n")
    );

    let mut projector = w.spawn(Bin::Projector).await;
    tests::read_model::wait_for_checkpoint(&w.pool, head, Duration::from_secs(30)).await;
    projector.terminate();
    // Gone before the next event, or it would still project it while shutting down.
    projector
        .wait(Duration::from_secs(30))
        .await
        .expect("the projector exits after SIGTERM");
    log::append(
        w.store.as_ref(),
        log::collection("After the projector stopped"),
        at(9),
    )
    .await;
    assert_eq!(
        status(w.env.run(Bin::Projector, &["status"]).await),
        format!("checkpoint: {head}\nhead: {}\nlag: 1\n", head + 1)
    );
}
