//! Event-log fixtures for the projector's tests and benchmark: domain events appended straight
//! to the event store, and synthetic logs of any size written with `COPY`.
//!
//! Fixtures go through the real store (`append`), so they are ordered and woken up exactly as
//! the command API's appends are. Synthetic logs are for sizes where that would be slow: they
//! are written straight into `event_store.events` by [`copy_into_log`], on a database nobody
//! else appends to.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use events::event::{
    CollectionCreated, CollectionReordered, CollectionTrackAdded, CollectionTrackRemoved,
    ContentRemoved, MediaFile, ShareCreated, ShareRevoked, SharedTrackSaved, TargetType,
    TrackImported, Visibility,
};
use events::ids::{CollectionId, LibraryItemId, OrganizationId, ShareLinkId, TrackId, UserId};
use events::licence::{LicenceClass, CURRENT_VERSION};
use events::share_token::{ShareToken, TokenHash};
use events::{
    AppendOutcome, EventMetadata, EventStore, ExpectedVersion, MusicEvent, NewEvent, Position,
    StreamId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

/// A fixed instant fixtures count from, so read models can be compared with exact values.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, 10, 30, 0)
        .single()
        .expect("a valid instant")
        + Duration::seconds(seconds)
}

pub fn metadata(occurred_at: DateTime<Utc>) -> EventMetadata {
    EventMetadata {
        actor: "usr_0123456789ab".to_owned(),
        trace_id: "req_projectortest000000".to_owned(),
        occurred_at,
    }
}

/// The stream a domain event belongs to, as the command side files it.
pub fn stream_of(event: &MusicEvent) -> StreamId {
    match event {
        MusicEvent::TrackImported(e) => StreamId::track(&e.track_id),
        MusicEvent::CollectionCreated(e) => StreamId::collection(&e.collection_id),
        MusicEvent::CollectionTrackAdded(e) => StreamId::collection(&e.collection_id),
        MusicEvent::CollectionTrackRemoved(e) => StreamId::collection(&e.collection_id),
        MusicEvent::CollectionReordered(e) => StreamId::collection(&e.collection_id),
        MusicEvent::ShareCreated(e) => StreamId::share(&e.share_id),
        MusicEvent::ShareRevoked(e) => StreamId::share(&e.share_id),
        MusicEvent::ShareSettingsChanged(e) => StreamId::share(&e.share_id),
        MusicEvent::ShareTokenRotated(e) => StreamId::share(&e.share_id),
        MusicEvent::ContentRemoved(e) => match e.target_type {
            TargetType::Track => StreamId::new(format!("track-{}", e.target_id)),
            TargetType::Collection => StreamId::new(format!("collection-{}", e.target_id)),
        },
        MusicEvent::SharedTrackSaved(e) => StreamId::library(&e.user_id),
    }
}

/// Appends one domain event to its stream (no version check: fixtures are written by one
/// writer per stream) and returns where it landed.
pub async fn append(
    store: &dyn EventStore,
    event: impl Into<MusicEvent>,
    occurred_at: DateTime<Utc>,
) -> AppendOutcome {
    let event = event.into();
    let stream = stream_of(&event);
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(&event, &metadata(occurred_at))],
        )
        .await
        .unwrap_or_else(|e| panic!("append {} to {stream}: {e}", event.event_type()))
}

pub fn org() -> OrganizationId {
    OrganizationId::parse("org_projector_test").expect("valid organization")
}

pub fn user() -> UserId {
    UserId::parse("usr_0123456789ab").expect("valid user")
}

pub fn track(title: &str, licence_class: LicenceClass) -> TrackImported {
    TrackImported {
        track_id: TrackId::generate(),
        organization_id: org(),
        owner_id: user(),
        title: title.to_owned(),
        engine: "studio".to_owned(),
        mode: "creation".to_owned(),
        instrumental: true,
        licence_class,
        licence_version: CURRENT_VERSION.to_owned(),
        measured_duration_ms: 120_400,
        media: MediaFile {
            sha256: "ab".repeat(32),
            content_type: "audio/wav".to_owned(),
            bytes: 44_144,
        },
    }
}

pub fn collection(name: &str) -> CollectionCreated {
    CollectionCreated {
        collection_id: CollectionId::generate(),
        organization_id: org(),
        owner_id: user(),
        name: name.to_owned(),
        description: Some(format!("{name}, described")),
    }
}

/// A share of `target_id`, and the hash of its (discarded) token.
pub fn share(target_type: TargetType, target_id: &str) -> ShareCreated {
    ShareCreated {
        share_id: ShareLinkId::generate(),
        token_hash: ShareToken::generate().hash(),
        target_type,
        target_id: target_id.to_owned(),
        organization_id: org(),
        owner_id: user(),
        visibility: Visibility::LinkOnly,
        expires_at: None,
        max_views: None,
        password_hash: None,
        label: None,
    }
}

/// A track share of `owner` in `org` that expired yesterday, appended to the log with its token
/// indexed as the command API indexes one (no route can create an expired link). Returns the
/// link's id and its raw token.
pub async fn expired_track_share(
    pool: &PgPool,
    track: &str,
    org: &str,
    owner: &str,
) -> (ShareLinkId, String) {
    let token = ShareToken::generate();
    let share_id = ShareLinkId::generate();
    sqlx::query("INSERT INTO command_side.share_tokens (token_hash, share_id) VALUES ($1, $2)")
        .bind(token.hash().as_str())
        .bind(share_id.as_str())
        .execute(pool)
        .await
        .expect("index the token");
    let created = ShareCreated {
        share_id: share_id.clone(),
        token_hash: token.hash(),
        organization_id: OrganizationId::parse(org).expect("org"),
        owner_id: UserId::parse(owner).expect("user"),
        expires_at: Some(Utc::now() - Duration::days(1)),
        ..share(TargetType::Track, track)
    };
    let meta = EventMetadata {
        actor: owner.to_owned(),
        trace_id: "req_testexpiredshare00".to_owned(),
        occurred_at: Utc::now() - Duration::days(2),
    };
    events::store::postgres::PostgresEventStore::new(pool.clone())
        .append(
            &StreamId::share(&share_id),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(&MusicEvent::ShareCreated(created), &meta)],
        )
        .await
        .expect("append the expired share");
    (share_id, token.expose().to_owned())
}

pub fn added(collection: &CollectionId, track: &TrackId) -> CollectionTrackAdded {
    CollectionTrackAdded {
        collection_id: collection.clone(),
        track_id: track.clone(),
    }
}

pub fn removed_from(collection: &CollectionId, track: &TrackId) -> CollectionTrackRemoved {
    CollectionTrackRemoved {
        collection_id: collection.clone(),
        track_id: track.clone(),
    }
}

pub fn reordered(collection: &CollectionId, tracks: &[&TrackId]) -> CollectionReordered {
    CollectionReordered {
        collection_id: collection.clone(),
        track_ids: tracks.iter().map(|t| (*t).clone()).collect(),
    }
}

pub fn revoked(share: &ShareLinkId) -> ShareRevoked {
    ShareRevoked {
        share_id: share.clone(),
    }
}

pub fn content_removed(target_type: TargetType, target_id: &str) -> ContentRemoved {
    ContentRemoved {
        target_type,
        target_id: target_id.to_owned(),
        organization_id: org(),
    }
}

pub fn saved(user: &UserId, track: &TrackId, share: &ShareLinkId) -> SharedTrackSaved {
    SharedTrackSaved {
        library_item_id: LibraryItemId::generate(),
        user_id: user.clone(),
        track_id: track.clone(),
        share_link_id: share.clone(),
    }
}

/// A realistic log of `len` events, every type in proportions like production's (imports,
/// collections and their membership, shares and revocations, removals, saves), each stream's
/// events in order. The same `seed` gives the same events (but fresh event ids).
pub fn synthetic(len: usize, seed: u64) -> Vec<(StreamId, NewEvent)> {
    synthetic_stream(seed).take(len).collect()
}

/// The endless form of [`synthetic`], for logs too long to hold in memory at once.
pub fn synthetic_stream(seed: u64) -> impl Iterator<Item = (StreamId, NewEvent)> {
    Synthetic::new(seed)
}

/// The synthetic log's generator: it keeps enough state to only emit events that make sense
/// (shares of existing content, saves of shared tracks, ...).
struct Synthetic {
    rng: StdRng,
    n: u64,
    salt: u64,
    tracks: Vec<TrackId>,
    collections: Vec<(CollectionId, Vec<TrackId>)>,
    track_shares: Vec<(ShareLinkId, TrackId)>,
    shares: Vec<ShareLinkId>,
    orgs: Vec<OrganizationId>,
    users: Vec<UserId>,
}

impl Synthetic {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let salt = rng.random::<u64>() & 0xffff_0000_0000;
        let orgs = (0..20)
            .map(|i| OrganizationId::parse(&format!("org_synthetic_{i:02}")).expect("valid org"))
            .collect();
        let users = (0..200)
            .map(|i| UserId::parse(&format!("usr_{:012x}", salt + i)).expect("valid user"))
            .collect();
        Synthetic {
            rng,
            n: 0,
            salt,
            tracks: Vec::new(),
            collections: Vec::new(),
            track_shares: Vec::new(),
            shares: Vec::new(),
            orgs,
            users,
        }
    }

    fn hex(&mut self) -> String {
        self.n += 1;
        format!("{:012x}", (self.salt + self.n) & 0xffff_ffff_ffff)
    }

    fn pick<T: Clone>(rng: &mut StdRng, items: &[T]) -> T {
        items[rng.random_range(0..items.len())].clone()
    }

    fn next_event(&mut self) -> MusicEvent {
        let roll = self.rng.random_range(0..100u32);
        let org = Self::pick(&mut self.rng, &self.orgs);
        let owner = Self::pick(&mut self.rng, &self.users);
        match roll {
            0..=19 => {}
            20..=23 => {
                let id = CollectionId::parse(&format!("mcoll_{}", self.hex())).expect("id");
                self.collections.push((id.clone(), Vec::new()));
                return MusicEvent::CollectionCreated(CollectionCreated {
                    collection_id: id,
                    organization_id: org,
                    owner_id: owner,
                    name: format!("Collection {}", self.n),
                    description: self
                        .rng
                        .random_bool(0.7)
                        .then(|| "Synthetic collection".to_owned()),
                });
            }
            24..=43 if !self.collections.is_empty() && !self.tracks.is_empty() => {
                let c = self.rng.random_range(0..self.collections.len());
                let track = Self::pick(&mut self.rng, &self.tracks);
                let (id, members) = &mut self.collections[c];
                if !members.contains(&track) {
                    members.push(track.clone());
                }
                return MusicEvent::CollectionTrackAdded(added(id, &track));
            }
            44..=46 if !self.collections.is_empty() => {
                let c = self.rng.random_range(0..self.collections.len());
                let (id, members) = &mut self.collections[c];
                if !members.is_empty() {
                    let track = members.remove(self.n as usize % members.len());
                    return MusicEvent::CollectionTrackRemoved(removed_from(id, &track));
                }
            }
            47..=48 if !self.collections.is_empty() => {
                let c = self.rng.random_range(0..self.collections.len());
                let (id, members) = &mut self.collections[c];
                if members.len() > 1 {
                    members.rotate_left(1);
                    let order: Vec<&TrackId> = members.iter().collect();
                    return MusicEvent::CollectionReordered(reordered(id, &order));
                }
            }
            49..=73 if !self.tracks.is_empty() => {
                let share_id = ShareLinkId::parse(&format!("mslink_{}", self.hex())).expect("id");
                let token_hash = TokenHash::of(&format!("shr_{:032x}", self.salt + self.n));
                self.shares.push(share_id.clone());
                let (target_type, target_id) =
                    if self.rng.random_range(0..4) == 0 && !self.collections.is_empty() {
                        let (id, _) = Self::pick(&mut self.rng, &self.collections);
                        (TargetType::Collection, id.to_string())
                    } else {
                        let track = Self::pick(&mut self.rng, &self.tracks);
                        self.track_shares.push((share_id.clone(), track.clone()));
                        (TargetType::Track, track.to_string())
                    };
                return MusicEvent::ShareCreated(ShareCreated {
                    share_id,
                    token_hash,
                    target_type,
                    target_id,
                    organization_id: org,
                    owner_id: owner,
                    visibility: if self.rng.random_bool(0.5) {
                        Visibility::LinkOnly
                    } else {
                        Visibility::Public
                    },
                    expires_at: self
                        .rng
                        .random_bool(0.25)
                        .then(|| at(self.n as i64 + 86_400 * 7)),
                    max_views: self.rng.random_bool(0.2).then_some(10),
                    password_hash: None,
                    label: None,
                });
            }
            74..=83 if !self.shares.is_empty() => {
                let share = Self::pick(&mut self.rng, &self.shares);
                return MusicEvent::ShareRevoked(revoked(&share));
            }
            84..=86 if !self.tracks.is_empty() => {
                if self.rng.random_range(0..5) == 0 && !self.collections.is_empty() {
                    let (id, _) = Self::pick(&mut self.rng, &self.collections);
                    return MusicEvent::ContentRemoved(ContentRemoved {
                        target_type: TargetType::Collection,
                        target_id: id.to_string(),
                        organization_id: org,
                    });
                }
                let track = Self::pick(&mut self.rng, &self.tracks);
                return MusicEvent::ContentRemoved(ContentRemoved {
                    target_type: TargetType::Track,
                    target_id: track.to_string(),
                    organization_id: org,
                });
            }
            87..=99 if !self.track_shares.is_empty() => {
                let (share, track) = Self::pick(&mut self.rng, &self.track_shares);
                let item = LibraryItemId::parse(&format!("mlib_{}", self.hex())).expect("id");
                return MusicEvent::SharedTrackSaved(SharedTrackSaved {
                    library_item_id: item,
                    user_id: owner,
                    track_id: track,
                    share_link_id: share,
                });
            }
            _ => {}
        }
        // The fallback, and one fifth of the log: a new track.
        let id = TrackId::parse(&format!("mtrack_{}", self.hex())).expect("id");
        self.tracks.push(id.clone());
        let class = LicenceClass::ALL[self.rng.random_range(0..LicenceClass::ALL.len())];
        MusicEvent::TrackImported(TrackImported {
            track_id: id,
            organization_id: org,
            owner_id: owner,
            title: format!("Synthetic track {}", self.n),
            engine: "studio".to_owned(),
            mode: "creation".to_owned(),
            instrumental: self.rng.random_bool(0.5),
            licence_class: class,
            licence_version: CURRENT_VERSION.to_owned(),
            measured_duration_ms: self.rng.random_range(30_000..400_000),
            media: MediaFile {
                sha256: format!("{:064x}", self.salt + self.n),
                content_type: "audio/flac".to_owned(),
                bytes: self.rng.random_range(500_000..20_000_000),
            },
        })
    }
}

impl Iterator for Synthetic {
    type Item = (StreamId, NewEvent);

    fn next(&mut self) -> Option<Self::Item> {
        let event = self.next_event();
        let occurred_at = at(self.n as i64);
        Some((
            stream_of(&event),
            NewEvent::new(&event, &metadata(occurred_at)),
        ))
    }
}

/// `events` as CSV rows of `event_store.events`, positions from `after + 1`. Stream versions
/// continue from `versions` (empty for new streams), which is updated, so a long log can be
/// written in chunks.
pub fn to_csv(
    events: &[(StreamId, NewEvent)],
    after: Position,
    versions: &mut HashMap<String, u64>,
) -> Vec<u8> {
    fn quoted(out: &mut Vec<u8>, field: &str) {
        out.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    let mut out = Vec::with_capacity(events.len() * 400);
    for (i, (stream, e)) in events.iter().enumerate() {
        let version = versions.entry(stream.as_str().to_owned()).or_insert(0);
        *version += 1;
        let fields = [
            (after + 1 + i as u64).to_string(),
            stream.as_str().to_owned(),
            version.to_string(),
            e.event_id.to_string(),
            e.event_type.clone(),
            e.schema_version.to_string(),
            e.occurred_at.to_rfc3339(),
            e.actor.clone(),
            e.trace_id.clone(),
            e.payload.to_string(),
        ];
        for (j, field) in fields.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            quoted(&mut out, field);
        }
        out.push(b'\n');
    }
    out
}

/// The columns [`to_csv`] writes, in order.
pub const EVENT_COLUMNS: &str = "global_position, stream_id, stream_version, event_id, \
    event_type, schema_version, occurred_at, actor, trace_id, payload";

/// Writes `events` after the current head of `event_store.events` with `COPY`, bypassing the
/// store's append path (no other writer may append meanwhile). Streams that already hold events
/// continue from their version. Returns the new head.
pub async fn copy_into_log(
    pool: &PgPool,
    events: &[(StreamId, NewEvent)],
) -> Result<Position, sqlx::Error> {
    let head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM event_store.events")
            .fetch_one(pool)
            .await?;
    let head = head.max(0) as Position;
    let streams: Vec<&str> = events.iter().map(|(s, _)| s.as_str()).collect();
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream_id, max(stream_version) FROM event_store.events \
         WHERE stream_id = ANY($1) GROUP BY stream_id",
    )
    .bind(&streams)
    .fetch_all(pool)
    .await?;
    let mut versions: HashMap<String, u64> = stored
        .into_iter()
        .map(|(stream, version)| (stream, version.max(0) as u64))
        .collect();
    let mut conn = pool.acquire().await?;
    for (n, chunk) in events.chunks(50_000).enumerate() {
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY event_store.events ({EVENT_COLUMNS}) FROM STDIN (FORMAT csv)"
            ))
            .await?;
        copy.send(to_csv(
            chunk,
            head + (n * 50_000) as Position,
            &mut versions,
        ))
        .await?;
        copy.finish().await?;
    }
    Ok(head + events.len() as Position)
}
