//! Change notices, as a NATS subscriber hears them: published after the read model shows the
//! change, naming every share link whose view changed; heartbeats while idle; a `rebuilt`
//! notice after a rebuild; and projection that carries on while NATS is down.

use std::time::{Duration, Instant};

use events::event::TargetType;
use events::licence::LicenceClass;
use events::notice::{self, ChangeNotice};
use events::share_token::TokenHash;
use futures::StreamExt;
use tests::app::TestApp;
use tests::log::{self, at};
use tests::nats::PrivateNats;
use tests::process::{Bin, Service};
use tests::read_model::{checkpoint, wait_for_checkpoint};

async fn world(nats_url: &str) -> TestApp {
    TestApp::builder().nats(nats_url).build().await
}

async fn projector(w: &TestApp) -> Service {
    w.spawn(Bin::Projector).await
}

/// Notices of `w`'s namespace (the database name, by default).
async fn listen(w: &TestApp, nats_url: &str) -> async_nats::Subscriber {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let subscriber = client
        .subscribe(notice::subject(&w.db.name))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush the subscription");
    subscriber
}

/// The next notice that satisfies `wanted`, within `timeout`.
async fn next_notice(
    subscriber: &mut async_nats::Subscriber,
    timeout: Duration,
    wanted: impl Fn(&ChangeNotice) -> bool,
) -> ChangeNotice {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, subscriber.next())
            .await
            .expect("no such notice arrived in time")
            .expect("subscription ended");
        let notice: ChangeNotice =
            serde_json::from_slice(&message.payload).expect("a notice is a ChangeNotice");
        if wanted(&notice) {
            return notice;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_announced_after_the_read_model_shows_it() {
    let url = tests::nats::shared_url();
    let w = world(&url).await;
    let _projector = projector(&w).await;
    let mut notices = listen(&w, &url).await;
    let store = w.store.as_ref();

    let track = log::track("Shared then revoked", LicenceClass::PersonalOnly);
    log::append(store, track.clone(), at(0)).await;
    let share = log::share(TargetType::Track, track.track_id.as_str());
    log::append(store, share.clone(), at(1)).await;
    let created = next_notice(&mut notices, Duration::from_secs(30), |n| {
        n.share_ids.contains(&share.share_id)
    })
    .await;
    assert!(created.token_hashes.contains(&share.token_hash));

    let revoke = log::append(store, log::revoked(&share.share_id), at(2)).await;
    let notice = next_notice(&mut notices, Duration::from_secs(30), |n| {
        n.token_hashes.contains(&share.token_hash)
    })
    .await;
    // Read at once, as a cache would after evicting: the revocation must already be there.
    let revoked_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM read_model.share_links WHERE token_hash = $1")
            .bind(share.token_hash.as_str())
            .fetch_one(&w.pool)
            .await
            .expect("the share link");
    assert_eq!(revoked_at, Some(at(2)));
    assert!(notice.position >= revoke.last_position, "{notice:?}");
    assert!(notice.share_ids.contains(&share.share_id));
    assert!(!notice.rebuilt && !notice.is_heartbeat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_track_names_every_link_that_shows_it() {
    let url = tests::nats::shared_url();
    let w = world(&url).await;
    let _projector = projector(&w).await;
    let mut notices = listen(&w, &url).await;
    let store = w.store.as_ref();

    let removed = log::track("Removed", LicenceClass::Unclear);
    let kept = log::track("Kept", LicenceClass::Unclear);
    let holding = log::collection("Holds the removed track");
    let other = log::collection("Holds only the kept track");
    for t in [&removed, &kept] {
        log::append(store, t.clone(), at(0)).await;
    }
    for c in [&holding, &other] {
        log::append(store, c.clone(), at(1)).await;
    }
    log::append(
        store,
        log::added(&holding.collection_id, &kept.track_id),
        at(2),
    )
    .await;
    log::append(
        store,
        log::added(&holding.collection_id, &removed.track_id),
        at(2),
    )
    .await;
    log::append(
        store,
        log::added(&other.collection_id, &kept.track_id),
        at(2),
    )
    .await;
    let of_removed = log::share(TargetType::Track, removed.track_id.as_str());
    let of_holding = log::share(TargetType::Collection, holding.collection_id.as_str());
    let of_kept = log::share(TargetType::Track, kept.track_id.as_str());
    let of_other = log::share(TargetType::Collection, other.collection_id.as_str());
    let mut last = 0;
    for s in [&of_removed, &of_holding, &of_kept, &of_other] {
        last = log::append(store, s.clone(), at(3)).await.last_position;
    }
    next_notice(&mut notices, Duration::from_secs(30), |n| {
        n.position >= last
    })
    .await;

    log::append(
        store,
        log::content_removed(TargetType::Track, removed.track_id.as_str()),
        at(4),
    )
    .await;
    let notice = next_notice(&mut notices, Duration::from_secs(30), |n| {
        n.track_ids.contains(&removed.track_id)
    })
    .await;
    let mut expected: Vec<TokenHash> = vec![of_removed.token_hash, of_holding.token_hash];
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(
        notice.token_hashes, expected,
        "the track's own link and the link of the collection holding it, and no other"
    );

    // A collection's membership change names the collection's links.
    log::append(
        store,
        log::removed_from(&other.collection_id, &kept.track_id),
        at(5),
    )
    .await;
    let notice = next_notice(&mut notices, Duration::from_secs(30), |n| {
        n.collection_ids.contains(&other.collection_id)
    })
    .await;
    assert_eq!(notice.token_hashes, vec![of_other.token_hash]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_projector_sends_heartbeats_with_its_position() {
    let url = tests::nats::shared_url();
    let w = world(&url).await;
    let last = log::append(w.store.as_ref(), log::collection("Only"), at(0))
        .await
        .last_position;
    let _projector = projector(&w).await;
    wait_for_checkpoint(&w.pool, last, Duration::from_secs(30)).await;
    let mut notices = listen(&w, &url).await;
    let started = Instant::now();
    for _ in 0..3 {
        let beat = next_notice(&mut notices, Duration::from_secs(5), |_| true).await;
        assert!(beat.is_heartbeat(), "{beat:?}");
        assert_eq!(beat.position, last);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "three heartbeats in {elapsed:?}: about one a second, not a flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_announces_the_swap() {
    let url = tests::nats::shared_url();
    let w = world(&url).await;
    let last = log::append(w.store.as_ref(), log::collection("Only"), at(0))
        .await
        .last_position;
    let mut notices = listen(&w, &url).await;
    let output = w.env.run(Bin::Projector, &["rebuild"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let notice = next_notice(&mut notices, Duration::from_secs(10), |n| n.rebuilt).await;
    assert_eq!(notice.position, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_goes_on_while_nats_is_down() {
    let mut nats = PrivateNats::start();
    let w = world(&nats.url()).await;
    let projector = projector(&w).await;
    let first = log::append(w.store.as_ref(), log::collection("Before"), at(0))
        .await
        .last_position;
    wait_for_checkpoint(&w.pool, first, Duration::from_secs(30)).await;

    nats.stop();
    let mut last = 0;
    for i in 0..20 {
        last = log::append(
            w.store.as_ref(),
            log::collection(&format!("During {i}")),
            at(i),
        )
        .await
        .last_position;
    }
    wait_for_checkpoint(&w.pool, last, Duration::from_secs(30)).await;

    nats.resume();
    let mut notices = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match async_nats::connect(nats.url()).await {
                Ok(client) => {
                    let s = client
                        .subscribe(notice::subject(&w.db.name))
                        .await
                        .expect("subscribe");
                    client.flush().await.expect("flush");
                    break s;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("the private NATS did not come back: {e}"),
            }
        }
    };
    let beat = next_notice(&mut notices, Duration::from_secs(20), |n| {
        n.position >= last
    })
    .await;
    assert_eq!(beat.position, checkpoint(&w.pool, "read_model").await);
    assert!(
        !projector.logs().contains("\"level\":\"ERROR\""),
        "{}",
        projector.logs()
    );
}
