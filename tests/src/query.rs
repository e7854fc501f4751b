//! The read side for the query API's tests: the real projector on a fresh database, query API
//! instances started by the test ([`QueryEnv::start_query`]), and content seeded as events.
//!
//! Every fixture here appends what the command side would have appended (a `TrackImported`, a
//! `ShareCreated` with any expiry, even one in the past, a `ShareRevoked` at any instant...) and
//! waits until the projector has applied it, so the query side reads rows the projector wrote,
//! never rows a test wrote. Owners and organizations are fixed ([`OWNER`], [`ORG_ACME`]).

use std::ops::Deref;

use chrono::{DateTime, Utc};
use events::event::{
    CollectionCreated, CollectionTrackAdded, ContentRemoved, MediaFile, ShareCreated, ShareRevoked,
    TargetType, TrackImported, Visibility,
};
use events::ids::{OrganizationId, TrackId, UserId};
use events::licence::LicenceClass;
use events::share_token::{ShareToken, TokenHash};
use sha2::{Digest, Sha256};

use crate::app::TestApp;
use crate::process::{Bin, Service};

/// Two playback signing keys, `k2` signing (first) and `k1` still accepted.
pub const SIGNING_KEYS: &str =
    "k2:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f,\
     k1:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/// The organization every seeded track, collection and share belongs to.
pub const ORG_ACME: &str = "org_acme";
/// The owner of everything seeded, unless a share says otherwise.
pub const OWNER: &str = "usr_0000000000a1";

/// The projector on its own database, plus whatever query API instances the test starts.
/// Derefs to its [`TestApp`] (database and pool, directory, environment, HTTP client).
pub struct QueryEnv {
    app: TestApp,
    pub projector: Service,
}

impl Deref for QueryEnv {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl QueryEnv {
    /// On a fresh database, with NATS at `nats_url`.
    pub async fn new(nats_url: &str) -> QueryEnv {
        TestApp::builder().nats(nats_url).read_side().await
    }

    /// The same on `db`, which may live on a private server (for outage tests).
    pub async fn new_on(db: crate::db::TestDb, nats_url: &str) -> QueryEnv {
        TestApp::builder()
            .database(db)
            .nats(nats_url)
            .read_side()
            .await
    }

    /// The projector on `app`; query API instances get two signing keys and
    /// `MEDIA_BASE_URL=http://media.test`.
    pub async fn on(mut app: TestApp) -> QueryEnv {
        app.env.set("PLAYBACK_SIGNING_KEYS", SIGNING_KEYS);
        app.env.set("MEDIA_BASE_URL", "http://media.test");
        let projector = app.spawn(Bin::Projector).await;
        QueryEnv { app, projector }
    }

    /// A query API instance with `extra` variables (rate limits, trusted proxies...).
    pub async fn start_query(&self, extra: &[(&str, &str)]) -> Service {
        self.app.spawn_with(Bin::QueryApi, extra).await
    }

    /// The `TrackImported` of a track titled `title` whose media is `audio` (written under
    /// MEDIA_DIR as the command API stores it): 120.4 s, instrumental, `commercial_enterprise`.
    /// Change what a test needs, then [`QueryEnv::import`] it.
    pub fn track_event(&self, title: &str, audio: &[u8]) -> TrackImported {
        let sha = hex::encode(Sha256::digest(audio));
        let path = self.media_dir().join(&sha[..2]).join(&sha);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("media dir");
        std::fs::write(&path, audio).expect("write media");
        TrackImported {
            organization_id: org(),
            owner_id: user(OWNER),
            media: MediaFile {
                sha256: sha,
                content_type: "audio/wav".to_owned(),
                bytes: audio.len() as u64,
            },
            ..crate::log::track(title, LicenceClass::CommercialEnterprise)
        }
    }

    /// Imports `track` and waits until it is projected; returns its id.
    pub async fn import(&self, track: TrackImported) -> String {
        let id = track.track_id.as_str().to_owned();
        let at = self.app.append(track, Utc::now()).await;
        self.app.wait_projected(at).await;
        id
    }

    /// A track (see [`QueryEnv::track_event`]); returns its id.
    pub async fn track(&self, title: &str, audio: &[u8]) -> String {
        self.import(self.track_event(title, audio)).await
    }

    /// The `CollectionCreated` of a collection named `name`, described "Songs for later".
    pub fn collection_event(&self, name: &str) -> CollectionCreated {
        CollectionCreated {
            organization_id: org(),
            owner_id: user(OWNER),
            description: Some("Songs for later".to_owned()),
            ..crate::log::collection(name)
        }
    }

    /// Creates `collection` holding `tracks` in this order; returns its id once projected.
    pub async fn create_collection(
        &self,
        collection: CollectionCreated,
        tracks: &[&str],
    ) -> String {
        let id = collection.collection_id.clone();
        let mut at = self.app.append(collection, Utc::now()).await;
        for track in tracks {
            let added = CollectionTrackAdded {
                collection_id: id.clone(),
                track_id: TrackId::parse(track).expect("a track id"),
            };
            at = self.app.append(added, Utc::now()).await;
        }
        self.app.wait_projected(at).await;
        id.as_str().to_owned()
    }

    /// A collection named `name` holding `tracks` in this order; returns its id.
    pub async fn collection(&self, name: &str, tracks: &[&str]) -> String {
        self.create_collection(self.collection_event(name), tracks)
            .await
    }

    /// The creator removes a track (`target_type` "track") or a collection ("collection").
    pub async fn remove(&self, target_type: &str, id: &str) {
        let removed = ContentRemoved {
            target_type: target_type_of(target_type),
            target_id: id.to_owned(),
            organization_id: org(),
        };
        let at = self.app.append(removed, Utc::now()).await;
        self.app.wait_projected(at).await;
    }

    /// A collection "Evening" holding `Last`, `Removed`, `First` in the owner's order, the
    /// middle one removed by its creator, shared `public`. Returns the raw token, the
    /// collection's id and the live tracks' ids in the owner's order (`Last`, `First`).
    pub async fn public_collection_with_a_removed_track(&self) -> (String, String, [String; 2]) {
        let first = self.track("First", &audio_bytes(10)).await;
        let gone = self.track("Removed", &audio_bytes(11)).await;
        let last = self.track("Last", &audio_bytes(12)).await;
        self.remove("track", &gone).await;
        let collection = self.collection("Evening", &[&last, &gone, &first]).await;
        let (token, _) = self
            .share(
                "collection",
                &collection,
                ShareOpts {
                    visibility: Some("public"),
                    ..ShareOpts::default()
                },
            )
            .await;
        (token, collection, [last, first])
    }

    /// A share link of `target_type` ("track" or "collection") `target_id`, created at
    /// `opts.created_at` (now by default) and revoked at `opts.revoked_at` if set; returns (raw
    /// token, share id) once projected.
    pub async fn share(
        &self,
        target_type: &str,
        target_id: &str,
        opts: ShareOpts,
    ) -> (String, String) {
        let token = ShareToken::generate();
        let base = crate::log::share(target_type_of(target_type), target_id);
        let share_id = base.share_id.clone();
        let created = ShareCreated {
            token_hash: token.hash(),
            organization_id: org(),
            owner_id: user(opts.owner.unwrap_or(OWNER)),
            visibility: match opts.visibility.unwrap_or("link_only") {
                "public" => Visibility::Public,
                "link_only" => Visibility::LinkOnly,
                other => panic!("no visibility {other}"),
            },
            expires_at: opts.expires_at,
            max_views: opts
                .max_views
                .map(|n| u32::try_from(n).expect("max_views is positive")),
            password_hash: opts
                .password
                .map(|p| events::password::SharePassword::new(p).hash()),
            ..base
        };
        let mut at = self
            .app
            .append(created, opts.created_at.unwrap_or_else(Utc::now))
            .await;
        if let Some(revoked_at) = opts.revoked_at {
            let revoked = ShareRevoked {
                share_id: share_id.clone(),
            };
            at = self.app.append(revoked, revoked_at).await;
        }
        self.app.wait_projected(at).await;
        (token.expose().to_owned(), share_id.as_str().to_owned())
    }
}

/// How a seeded share link differs from a live, unlimited `link_only` link of [`OWNER`].
#[derive(Default, Clone, Copy)]
pub struct ShareOpts {
    pub owner: Option<&'static str>,
    pub visibility: Option<&'static str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_views: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The link's password (hashed here, as the command side would).
    pub password: Option<&'static str>,
}

fn org() -> OrganizationId {
    OrganizationId::parse(ORG_ACME).expect("a valid organization")
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

fn target_type_of(name: &str) -> TargetType {
    match name {
        "track" => TargetType::Track,
        "collection" => TargetType::Collection,
        other => panic!("no target type {other}"),
    }
}

pub fn hash_of(token: &str) -> String {
    TokenHash::of(token).as_str().to_owned()
}

/// Query parameters of a URL, by name.
pub fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_owned()
}

/// The path and query of a playback URL (its host is MEDIA_BASE_URL, not the test server).
pub fn path_and_query(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/')
        .map(|i| rest[i..].to_owned())
        .unwrap_or_default()
}

/// `n` bytes standing for a media file (the query side serves bytes; it never decodes them).
pub fn audio_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}
