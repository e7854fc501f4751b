//! Every event type's effect on the read models, observed in PostgreSQL while the real
//! projector process runs (with small batches, so effects meet both inside a batch and across
//! batches).

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::event::{TargetType, Visibility};
use events::licence::LicenceClass;
use events::{ExpectedVersion, NewEvent, StreamId};
use serde_json::json;
use sqlx::{PgPool, Row};
use tests::app::TestApp;
use tests::log::{self, at};
use tests::process::{Bin, Service};
use tests::read_model::wait_for_checkpoint;
use uuid::Uuid;

/// The projector running with batches of `batch_size` on a fresh app.
async fn start(batch_size: &str) -> (TestApp, Service) {
    let app = TestApp::builder()
        .env("PROJECTOR_BATCH_SIZE", batch_size)
        .build()
        .await;
    let projector = app.spawn(Bin::Projector).await;
    (app, projector)
}

async fn membership(pool: &PgPool, collection: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT position, track_id FROM read_model.collection_tracks \
         WHERE collection_id = $1 ORDER BY position",
    )
    .bind(collection)
    .fetch_all(pool)
    .await
    .expect("read membership")
}

async fn stamp(pool: &PgPool, sql: &str, id: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_shapes_the_read_models() {
    let (app, projector) = start("3").await;
    let (pool, store) = (app.pool.clone(), app.store.clone());
    let store = store.as_ref();

    // Tracks, one per licence class: every column of the track view, with catalogue facts.
    let classes = [
        (LicenceClass::CommercialCleared, true, false),
        (LicenceClass::CommercialEnterprise, true, true),
        (LicenceClass::PersonalOnly, false, false),
        (LicenceClass::Unclear, false, false),
    ];
    let mut tracks = Vec::new();
    for (i, (class, _, _)) in classes.iter().enumerate() {
        let mut t = log::track(&format!("Track {i}"), *class);
        t.instrumental = i % 2 == 0;
        t.measured_duration_ms = 1000 + i as u64;
        log::append(store, t.clone(), at(i as i64)).await;
        tracks.push(t);
    }
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| tracks[i].track_id.clone());

    // Collections and their ordered membership.
    let x = log::collection("Late night");
    let mut y = log::collection("Removed later");
    y.description = None;
    log::append(store, x.clone(), at(10)).await;
    log::append(store, y.clone(), at(11)).await;
    let xid = x.collection_id.clone();
    log::append(store, log::added(&xid, &a), at(12)).await;
    log::append(store, log::added(&xid, &b), at(13)).await;
    log::append(store, log::added(&xid, &c), at(14)).await;
    let after_adds = log::append(store, log::added(&xid, &a), at(15)).await;
    wait_for_checkpoint(&pool, after_adds.last_position, Duration::from_secs(30)).await;
    assert_eq!(
        membership(&pool, xid.as_str()).await,
        vec![(0, a.to_string()), (1, b.to_string()), (2, c.to_string())],
        "adds append in order; adding a member again changes nothing"
    );
    log::append(store, log::removed_from(&xid, &b), at(16)).await;
    let removed = log::append(store, log::removed_from(&xid, &b), at(17)).await;
    wait_for_checkpoint(&pool, removed.last_position, Duration::from_secs(30)).await;
    assert_eq!(
        membership(&pool, xid.as_str()).await,
        vec![(0, a.to_string()), (1, c.to_string())],
        "a removal closes the gap"
    );
    log::append(store, log::reordered(&xid, &[&c, &a]), at(18)).await;
    log::append(store, log::added(&xid, &d), at(19)).await;

    // Shares: a v2 track share with every option, a v1 collection share (upcast on the way).
    let mut s1 = log::share(TargetType::Track, a.as_str());
    s1.visibility = Visibility::Public;
    s1.expires_at = Some(at(86_400 * 7));
    s1.max_views = Some(5);
    log::append(store, s1.clone(), at(20)).await;
    let s2_id = events::ids::ShareLinkId::generate();
    let s2_hash = events::share_token::ShareToken::generate().hash();
    let v1 = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ShareCreated".to_owned(),
        schema_version: 1,
        payload: json!({
            "share_id": s2_id, "token_hash": s2_hash, "target_type": "collection",
            "target_id": xid, "organization_id": log::org(), "owner_id": log::user(),
            "public": true, "expires_at": null
        }),
        occurred_at: at(21),
        actor: "usr_0123456789ab".to_owned(),
        trace_id: "req_projectortest000000".to_owned(),
    };
    store
        .append(
            &StreamId::share(&s2_id),
            ExpectedVersion::NoStream,
            vec![v1],
        )
        .await
        .expect("append a v1 share");

    // Revocation (the first one counts), removals, a save.
    log::append(store, log::revoked(&s1.share_id), at(22)).await;
    log::append(store, log::revoked(&s1.share_id), at(23)).await;
    log::append(
        store,
        log::content_removed(TargetType::Track, c.as_str()),
        at(24),
    )
    .await;
    log::append(
        store,
        log::content_removed(TargetType::Collection, y.collection_id.as_str()),
        at(25),
    )
    .await;
    let saver = events::ids::UserId::generate();
    let save = log::saved(&saver, &a, &s1.share_id);
    let last = log::append(store, save.clone(), at(26)).await;
    wait_for_checkpoint(&pool, last.last_position, Duration::from_secs(30)).await;

    // Tracks.
    for (t, (class, commercial, attribution)) in tracks.iter().zip(classes) {
        let row = sqlx::query("SELECT * FROM read_model.tracks WHERE track_id = $1")
            .bind(t.track_id.as_str())
            .fetch_one(&pool)
            .await
            .expect("track row");
        let text = |c: &str| row.get::<String, _>(c);
        assert_eq!(text("organization_id"), t.organization_id.as_str());
        assert_eq!(text("owner_id"), t.owner_id.as_str());
        assert_eq!(text("title"), t.title);
        assert_eq!(text("engine"), "studio");
        assert_eq!(text("mode"), "creation");
        assert_eq!(
            row.get::<i64, _>("measured_duration_ms"),
            t.measured_duration_ms as i64
        );
        assert_eq!(row.get::<bool, _>("instrumental"), t.instrumental);
        assert_eq!(text("licence_class"), class.as_str());
        assert_eq!(text("licence_version"), "2026-01");
        assert_eq!(
            row.get::<bool, _>("commercial_use"),
            commercial,
            "{class:?}"
        );
        assert_eq!(
            row.get::<bool, _>("requires_attribution"),
            attribution,
            "{class:?}"
        );
        assert_eq!(text("media_sha256"), t.media.sha256);
        assert_eq!(text("media_content_type"), "audio/wav");
        assert_eq!(row.get::<i64, _>("media_bytes"), 44_144);
    }
    let created: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT track_id, created_at, removed_at FROM read_model.tracks ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("tracks");
    assert_eq!(
        created,
        vec![
            (a.to_string(), at(0), None),
            (b.to_string(), at(1), None),
            (c.to_string(), at(2), Some(at(24))),
            (d.to_string(), at(3), None),
        ],
        "created_at and removed_at come from the events' occurred_at"
    );

    // Collections: membership order, stamps, and the removed track still listed (the query
    // side leaves removed tracks out of the view).
    assert_eq!(
        membership(&pool, xid.as_str()).await,
        vec![(0, c.to_string()), (1, a.to_string()), (2, d.to_string())],
        "a reorder replaces the order; a later add goes at the end"
    );
    type CollectionRow = (
        String,
        String,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let collections: Vec<CollectionRow> = sqlx::query_as(
        "SELECT collection_id, name, description, created_at, updated_at, removed_at \
             FROM read_model.collections ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("collections");
    assert_eq!(
        collections,
        vec![
            (
                xid.to_string(),
                "Late night".to_owned(),
                x.description.clone(),
                at(10),
                at(19),
                None
            ),
            (
                y.collection_id.to_string(),
                "Removed later".to_owned(),
                None,
                at(11),
                at(11),
                Some(at(25))
            ),
        ]
    );
    let owners: Vec<(String, String)> =
        sqlx::query_as("SELECT organization_id, owner_id FROM read_model.collections")
            .fetch_all(&pool)
            .await
            .expect("owners");
    assert!(owners
        .iter()
        .all(|(o, u)| o == log::org().as_str() && u == log::user().as_str()));

    // Share links, keyed by token hash.
    type ShareRow = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<DateTime<Utc>>,
        Option<i32>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let shares: Vec<ShareRow> = sqlx::query_as(
        "SELECT token_hash, share_id, target_type, target_id, organization_id, owner_id, \
             visibility, expires_at, max_views, created_at, revoked_at \
         FROM read_model.share_links ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("shares");
    let org = log::org().to_string();
    let owner = log::user().to_string();
    assert_eq!(
        shares,
        vec![
            (
                s1.token_hash.to_string(),
                s1.share_id.to_string(),
                "track".to_owned(),
                a.to_string(),
                org.clone(),
                owner.clone(),
                "public".to_owned(),
                Some(at(86_400 * 7)),
                Some(5),
                at(20),
                Some(at(22)),
            ),
            (
                s2_hash.to_string(),
                s2_id.to_string(),
                "collection".to_owned(),
                xid.to_string(),
                org,
                owner,
                "public".to_owned(),
                None,
                None,
                at(21),
                None,
            ),
        ],
        "the first revocation stamps the link; a v1 `public: true` reads as visibility public"
    );

    // Library edges.
    let library: Vec<(String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT library_item_id, user_id, track_id, share_link_id, created_at \
         FROM read_model.library_items",
    )
    .fetch_all(&pool)
    .await
    .expect("library");
    assert_eq!(
        library,
        vec![(
            save.library_item_id.to_string(),
            saver.to_string(),
            a.to_string(),
            s1.share_id.to_string(),
            at(26)
        )]
    );
    assert_eq!(
        stamp(
            &pool,
            "SELECT removed_at FROM read_model.collections WHERE collection_id = $1",
            xid.as_str()
        )
        .await,
        None
    );
    assert!(
        !projector.logs().contains("ERROR"),
        "the projector logged an error:\n{}",
        projector.logs()
    );
}

/// A save of a track the user already saved, and a second creation of an existing id, change
/// nothing (first wins), whether they arrive in the same batch or a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_creations_keep_the_first() {
    let (app, _projector) = start("500").await;
    let (pool, store) = (app.pool.clone(), app.store.clone());
    let store = store.as_ref();
    let t = log::track("Original", LicenceClass::PersonalOnly);
    let s = log::share(TargetType::Track, t.track_id.as_str());
    let user = events::ids::UserId::generate();
    log::append(store, t.clone(), at(0)).await;
    log::append(store, s.clone(), at(1)).await;
    log::append(store, log::saved(&user, &t.track_id, &s.share_id), at(2)).await;
    let mut again = t.clone();
    again.title = "Impostor".to_owned();
    log::append(store, again, at(3)).await;
    log::append(store, log::saved(&user, &t.track_id, &s.share_id), at(4)).await;
    let last = log::append(store, log::revoked(&s.share_id), at(5)).await;
    wait_for_checkpoint(&pool, last.last_position, Duration::from_secs(30)).await;

    let title: String = sqlx::query_scalar("SELECT title FROM read_model.tracks")
        .fetch_one(&pool)
        .await
        .expect("one track");
    assert_eq!(title, "Original");
    let saves: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT created_at FROM read_model.library_items")
            .fetch_all(&pool)
            .await
            .expect("saves");
    assert_eq!(saves, vec![at(2)]);
    assert_eq!(
        stamp(
            &pool,
            "SELECT revoked_at FROM read_model.share_links WHERE share_id = $1",
            s.share_id.as_str()
        )
        .await,
        Some(at(5))
    );
}
