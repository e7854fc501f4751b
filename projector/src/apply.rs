//! What each event does to the read models: one function per event type.
//!
//! The functions only record effects in memory ([`Effects`]); [`Effects::write`] then applies
//! them with a few set-based statements (`INSERT ... SELECT FROM UNNEST`, `UPDATE ... FROM
//! UNNEST`) instead of one statement per event, which is what lets a rebuild go at COPY-like
//! speed. The result must be exactly what applying the events one at a time would give, so that
//! the read models depend on the log and never on how it was cut into batches:
//! - creations keep log order inside one `INSERT ... ON CONFLICT DO NOTHING`, which checks each
//!   row against the ones before it: a second creation of an id (or token hash, or library
//!   edge) is ignored, first wins;
//! - removal and revocation stamps are set once (first wins), from the event's `occurred_at`;
//! - a link's settings changes and token rotations merge field by field in log order (last
//!   wins per field), which is what applying them one by one gives, since each field is set
//!   outright, never computed from another;
//! - a collection's membership is an ordered list: adding a member is a no-op, adding a new one
//!   appends, removing closes the gap, `CollectionReordered` replaces the whole order;
//! - creations are written before changes, which is only right if no change to an id precedes
//!   its creation in the same write; [`Effects::must_write_before`] tells the caller to write
//!   what it has first (a creation is its stream's first event, so this is rare to impossible).
//!
//! A rebuild's fill writes the same effects another way ([`Writes::Copy`]): the rows these
//! effects create are finished in memory (the later changes to them folded in, which the
//! ordering above makes exact) and sent with binary `COPY`; only changes to rows written by
//! earlier batches become statements. `COPY` cannot skip a row that repeats a key, so effects
//! that create one key twice are written by statements, and a creation that repeats a row of an
//! earlier batch fails the `COPY` (a unique violation) and the caller applies the batch again by
//! statements ([`crate::batch`]). Saves to a library are the exception: repeating one is an
//! ordinary event (a user saves a track again through another link), so they always go through
//! `INSERT ... ON CONFLICT DO NOTHING`.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use events::event::{
    CollectionCreated, CollectionReordered, CollectionTrackAdded, CollectionTrackRemoved,
    ContentRemoved, ShareCreated, ShareRevoked, ShareSettingsChanged, ShareTokenRotated,
    SharedTrackSaved, TargetType, TrackImported,
};
use events::ids::{CollectionId, ShareLinkId, TrackId};
use events::licence::{self, LicenceFacts};
use events::notice::ChangeNotice;
use events::share_token::TokenHash;
use events::{MusicEvent, Position};
use sqlx::{PgConnection, Row};

use crate::copy::CopyRows;
use crate::decode::{Decoded, Unprojectable};

/// How [`Effects::write`] puts the rows in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Set-based statements (`INSERT ... ON CONFLICT DO NOTHING`, `UPDATE ... FROM UNNEST`):
    /// the reference, for the live projector and whatever the fill cannot take.
    Statements,
    /// New rows finished in memory and sent with binary `COPY`; fails with a unique violation if
    /// one repeats a row already written (then apply the same events with `Statements`).
    Copy,
}

/// The effects of consecutive events, gathered in log order before any SQL runs.
#[derive(Default)]
pub struct Effects {
    tracks: Vec<NewTrack>,
    collections: Vec<NewCollection>,
    shares: Vec<NewShare>,
    library: Vec<NewLibraryItem>,
    removed_tracks: Stamps,
    removed_collections: Stamps,
    revoked_shares: Stamps,
    /// Settings changes and rotations per share, merged in log order.
    share_updates: HashMap<String, ShareUpdate>,
    /// Last membership change per collection (last wins).
    collection_updated: HashMap<String, DateTime<Utc>>,
    /// Membership changes per collection, in log order.
    membership: HashMap<String, Vec<Membership>>,
    changed: Changed,
    events: usize,
}

/// What a batch touched: the content of its change notice.
#[derive(Default)]
pub struct Changed {
    tracks: BTreeSet<TrackId>,
    collections: BTreeSet<CollectionId>,
    shares: BTreeSet<ShareLinkId>,
    removed_tracks: BTreeSet<String>,
    /// Token hashes a rotation retired or introduced: the query caches must forget both (the
    /// notice's own lookup finds only the current one).
    token_hashes: BTreeSet<String>,
}

struct NewTrack {
    event: TrackImported,
    licence: LicenceFacts,
    at: DateTime<Utc>,
}

struct NewCollection {
    event: CollectionCreated,
    at: DateTime<Utc>,
}

struct NewShare {
    event: ShareCreated,
    at: DateTime<Utc>,
    position: Position,
}

struct NewLibraryItem {
    event: SharedTrackSaved,
    at: DateTime<Utc>,
}

/// What a batch changes about one existing share: `None` fields are untouched; a
/// `Some(None)` clears the value.
#[derive(Default)]
struct ShareUpdate {
    visibility: Option<&'static str>,
    expires_at: Option<Option<DateTime<Utc>>>,
    max_views: Option<Option<u32>>,
    password_hash: Option<Option<String>>,
    label: Option<Option<String>>,
    token_hash: Option<String>,
    updated_at: Option<DateTime<Utc>>,
}

enum Membership {
    Add(String),
    Remove(String),
    Order(Vec<String>),
}

/// `(id, when)` pairs where the first stamp of an id wins.
#[derive(Default)]
struct Stamps {
    ids: Vec<String>,
    at: Vec<DateTime<Utc>>,
    seen: HashSet<String>,
}

impl Stamps {
    fn stamp(&mut self, id: &str, at: DateTime<Utc>) {
        if self.seen.insert(id.to_owned()) {
            self.ids.push(id.to_owned());
            self.at.push(at);
        }
    }

    /// The stamp of each of `created` (`None` if it has none), and the stamps of every other
    /// id, for the rows already written (only to be written: `seen` is left empty).
    fn split_off(self, created: &[&str]) -> (Vec<Option<DateTime<Utc>>>, Stamps) {
        let created_ids: HashSet<&str> = created.iter().copied().collect();
        let mut own = HashMap::new();
        let mut rest = Stamps::default();
        for (id, at) in self.ids.into_iter().zip(self.at) {
            if created_ids.contains(id.as_str()) {
                own.insert(id, at);
            } else {
                rest.ids.push(id);
                rest.at.push(at);
            }
        }
        let stamps = created.iter().map(|id| own.get(*id).copied()).collect();
        (stamps, rest)
    }
}

/// Whether some id in `ids` comes twice.
fn repeats<'a>(ids: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = HashSet::new();
    ids.into_iter().any(|id| !seen.insert(id))
}

impl Effects {
    /// How many events these effects hold.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Whether `decoded` creates something these effects already change: then they must be
    /// written first, or the change would land on the creation it preceded.
    pub fn must_write_before(&self, decoded: &Decoded) -> bool {
        match &decoded.event {
            MusicEvent::TrackImported(e) => self.removed_tracks.seen.contains(e.track_id.as_str()),
            MusicEvent::CollectionCreated(e) => {
                let id = e.collection_id.as_str();
                self.removed_collections.seen.contains(id)
                    || self.collection_updated.contains_key(id)
            }
            MusicEvent::ShareCreated(e) => {
                let id = e.share_id.as_str();
                self.revoked_shares.seen.contains(id) || self.share_updates.contains_key(id)
            }
            _ => false,
        }
    }

    /// Records the effects of one event. Fails, recording nothing, for an event that decoded but
    /// cannot be applied faithfully.
    pub fn add(&mut self, decoded: &Decoded) -> Result<(), Unprojectable> {
        let at = decoded.occurred_at;
        match &decoded.event {
            MusicEvent::TrackImported(e) => {
                let Some(licence) = licence::facts(e.licence_class, &e.licence_version) else {
                    return Err(Unprojectable::decoded(
                        decoded,
                        format!(
                            "licence catalogue version {:?} is unknown to this build, and \
                             licence facts are never guessed",
                            e.licence_version
                        ),
                    ));
                };
                self.track_imported(e, licence, at);
            }
            MusicEvent::CollectionCreated(e) => self.collection_created(e, at),
            MusicEvent::CollectionTrackAdded(e) => self.collection_track_added(e, at),
            MusicEvent::CollectionTrackRemoved(e) => self.collection_track_removed(e, at),
            MusicEvent::CollectionReordered(e) => self.collection_reordered(e, at),
            MusicEvent::ShareCreated(e) => self.share_created(e, at, decoded.position),
            MusicEvent::ShareRevoked(e) => self.share_revoked(e, at),
            MusicEvent::ShareSettingsChanged(e) => self.share_settings_changed(e, at),
            MusicEvent::ShareTokenRotated(e) => self.share_token_rotated(e, at),
            MusicEvent::ContentRemoved(e) => self.content_removed(e, at),
            MusicEvent::SharedTrackSaved(e) => self.shared_track_saved(e, at),
        }
        self.events += 1;
        Ok(())
    }

    fn track_imported(&mut self, e: &TrackImported, licence: LicenceFacts, at: DateTime<Utc>) {
        self.changed.tracks.insert(e.track_id.clone());
        self.tracks.push(NewTrack {
            event: e.clone(),
            licence,
            at,
        });
    }

    fn collection_created(&mut self, e: &CollectionCreated, at: DateTime<Utc>) {
        self.changed.collections.insert(e.collection_id.clone());
        self.collections.push(NewCollection {
            event: e.clone(),
            at,
        });
    }

    fn membership_changed(
        &mut self,
        collection: &CollectionId,
        change: Membership,
        at: DateTime<Utc>,
    ) {
        self.changed.collections.insert(collection.clone());
        self.collection_updated.insert(collection.to_string(), at);
        self.membership
            .entry(collection.to_string())
            .or_default()
            .push(change);
    }

    fn collection_track_added(&mut self, e: &CollectionTrackAdded, at: DateTime<Utc>) {
        self.membership_changed(
            &e.collection_id,
            Membership::Add(e.track_id.to_string()),
            at,
        );
    }

    fn collection_track_removed(&mut self, e: &CollectionTrackRemoved, at: DateTime<Utc>) {
        self.membership_changed(
            &e.collection_id,
            Membership::Remove(e.track_id.to_string()),
            at,
        );
    }

    fn collection_reordered(&mut self, e: &CollectionReordered, at: DateTime<Utc>) {
        let order = e.track_ids.iter().map(ToString::to_string).collect();
        self.membership_changed(&e.collection_id, Membership::Order(order), at);
    }

    fn share_created(&mut self, e: &ShareCreated, at: DateTime<Utc>, position: Position) {
        self.changed.shares.insert(e.share_id.clone());
        self.shares.push(NewShare {
            event: e.clone(),
            at,
            position,
        });
    }

    fn share_revoked(&mut self, e: &ShareRevoked, at: DateTime<Utc>) {
        self.changed.shares.insert(e.share_id.clone());
        self.revoked_shares.stamp(e.share_id.as_str(), at);
    }

    fn share_update(&mut self, share: &ShareLinkId, at: DateTime<Utc>) -> &mut ShareUpdate {
        self.changed.shares.insert(share.clone());
        let update = self.share_updates.entry(share.to_string()).or_default();
        update.updated_at = Some(at);
        update
    }

    fn share_settings_changed(&mut self, e: &ShareSettingsChanged, at: DateTime<Utc>) {
        let update = self.share_update(&e.share_id, at);
        if let Some(visibility) = e.visibility {
            update.visibility = Some(visibility.as_str());
        }
        if let Some(expires_at) = e.expires_at {
            update.expires_at = Some(expires_at);
        }
        if let Some(max_views) = e.max_views {
            update.max_views = Some(max_views);
        }
        if let Some(password_hash) = &e.password_hash {
            update.password_hash = Some(password_hash.as_ref().map(|h| h.as_str().to_owned()));
        }
        if let Some(label) = &e.label {
            update.label = Some(label.clone());
        }
    }

    fn share_token_rotated(&mut self, e: &ShareTokenRotated, at: DateTime<Utc>) {
        self.changed
            .token_hashes
            .insert(e.token_hash.as_str().to_owned());
        self.share_update(&e.share_id, at).token_hash = Some(e.token_hash.as_str().to_owned());
    }

    fn content_removed(&mut self, e: &ContentRemoved, at: DateTime<Utc>) {
        match e.target_type {
            TargetType::Track => {
                if let Ok(id) = TrackId::parse(&e.target_id) {
                    self.changed.tracks.insert(id);
                }
                self.changed.removed_tracks.insert(e.target_id.clone());
                self.removed_tracks.stamp(&e.target_id, at);
            }
            TargetType::Collection => {
                if let Ok(id) = CollectionId::parse(&e.target_id) {
                    self.changed.collections.insert(id);
                }
                self.removed_collections.stamp(&e.target_id, at);
            }
        }
    }

    fn shared_track_saved(&mut self, e: &SharedTrackSaved, at: DateTime<Utc>) {
        self.library.push(NewLibraryItem {
            event: e.clone(),
            at,
        });
    }

    /// Applies the effects in the transaction's schema: creations first, then stamps and
    /// membership. Returns what changed, for the notice.
    pub async fn write(self, conn: &mut PgConnection, how: Writes) -> Result<Changed, sqlx::Error> {
        match how {
            Writes::Copy if !self.creates_a_key_twice() => self.write_copy(conn).await,
            _ => self.write_statements(conn).await,
        }
    }

    /// Whether two creations here share a key (first wins: only statements can say so).
    fn creates_a_key_twice(&self) -> bool {
        repeats(self.tracks.iter().map(|r| r.event.track_id.as_str()))
            || repeats(
                self.collections
                    .iter()
                    .map(|r| r.event.collection_id.as_str()),
            )
            || repeats(self.shares.iter().map(|r| r.event.share_id.as_str()))
            || repeats(self.shares.iter().map(|r| r.event.token_hash.as_str()))
    }

    /// [`Writes::Copy`]: the rows created here with every later change to them folded in (the
    /// first stamp, the last membership change, the merged settings), in one `COPY` per table;
    /// then the changes to older rows as statements, in the same order as
    /// [`Self::write_statements`].
    async fn write_copy(self, conn: &mut PgConnection) -> Result<Changed, sqlx::Error> {
        let Effects {
            tracks,
            collections,
            shares,
            library,
            removed_tracks,
            removed_collections,
            revoked_shares,
            mut share_updates,
            mut collection_updated,
            membership,
            mut changed,
            events: _,
        } = self;

        let ids = strs(&tracks, |r| r.event.track_id.as_str());
        let (track_removed, removed_tracks) = removed_tracks.split_off(&ids);
        copy_tracks(conn, &tracks, &track_removed).await?;

        let ids = strs(&collections, |r| r.event.collection_id.as_str());
        let (collection_removed, removed_collections) = removed_collections.split_off(&ids);
        let collection_touched: Vec<Option<DateTime<Utc>>> = ids
            .iter()
            .map(|id| collection_updated.remove(*id))
            .collect();
        copy_collections(conn, &collections, &collection_removed, &collection_touched).await?;

        let ids = strs(&shares, |r| r.event.share_id.as_str());
        let (share_revoked, revoked_shares) = revoked_shares.split_off(&ids);
        let share_changed: Vec<Option<ShareUpdate>> =
            ids.iter().map(|id| share_updates.remove(*id)).collect();
        for (share, update) in shares.iter().zip(&share_changed) {
            if update.as_ref().is_some_and(|u| u.token_hash.is_some()) {
                // What the statements' path reads back as retired.
                changed
                    .token_hashes
                    .insert(share.event.token_hash.as_str().to_owned());
            }
        }
        copy_shares(conn, &shares, &share_revoked, &share_changed).await?;

        insert_library_items(conn, &library).await?;
        stamp_all(conn, &removed_tracks, &removed_collections, &revoked_shares).await?;
        update_shares(conn, &share_updates, &mut changed).await?;
        touch_collections(conn, &collection_updated).await?;
        write_membership(conn, membership, Writes::Copy).await?;
        Ok(changed)
    }

    /// [`Writes::Statements`].
    async fn write_statements(self, conn: &mut PgConnection) -> Result<Changed, sqlx::Error> {
        insert_tracks(conn, &self.tracks).await?;
        insert_collections(conn, &self.collections).await?;
        insert_shares(conn, &self.shares).await?;
        insert_library_items(conn, &self.library).await?;
        stamp_all(
            conn,
            &self.removed_tracks,
            &self.removed_collections,
            &self.revoked_shares,
        )
        .await?;
        let mut changed = self.changed;
        update_shares(conn, &self.share_updates, &mut changed).await?;
        touch_collections(conn, &self.collection_updated).await?;
        write_membership(conn, self.membership, Writes::Statements).await?;
        Ok(changed)
    }
}

impl Changed {
    pub fn merge(&mut self, other: Changed) {
        self.tracks.extend(other.tracks);
        self.collections.extend(other.collections);
        self.shares.extend(other.shares);
        self.removed_tracks.extend(other.removed_tracks);
        self.token_hashes.extend(other.token_hashes);
    }

    /// The notice for these changes, once applied: finds every share link whose resolved view
    /// may have changed (links created or revoked, links to a changed or removed track or
    /// collection, links to collections that hold a removed track).
    pub async fn notice(
        self,
        conn: &mut PgConnection,
        position: Position,
    ) -> Result<ChangeNotice, sqlx::Error> {
        let targets: Vec<&str> = self
            .tracks
            .iter()
            .map(TrackId::as_str)
            .chain(self.collections.iter().map(CollectionId::as_str))
            .collect();
        let shares: Vec<&str> = self.shares.iter().map(ShareLinkId::as_str).collect();
        let removed: Vec<&str> = self.removed_tracks.iter().map(String::as_str).collect();
        let mut token_hashes: Vec<String> = if targets.is_empty() && shares.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT token_hash FROM share_links WHERE target_id = ANY($1) OR share_id = ANY($2) \
                 UNION \
                 SELECT s.token_hash FROM collection_tracks AS ct \
                     JOIN share_links AS s ON s.target_id = ct.collection_id \
                 WHERE ct.track_id = ANY($3) \
                 ORDER BY 1",
            )
            .bind(&targets)
            .bind(&shares)
            .bind(&removed)
            .fetch_all(conn)
            .await?
        };
        token_hashes.extend(self.token_hashes);
        token_hashes.sort_unstable();
        token_hashes.dedup();
        Ok(ChangeNotice {
            position,
            token_hashes: token_hashes.into_iter().map(TokenHash::from_hex).collect(),
            share_ids: self.shares.into_iter().collect(),
            track_ids: self.tracks.into_iter().collect(),
            collection_ids: self.collections.into_iter().collect(),
            rebuilt: false,
        })
    }
}

fn strs<T>(rows: &[T], field: impl Fn(&T) -> &str) -> Vec<&str> {
    rows.iter().map(field).collect()
}

async fn insert_tracks(conn: &mut PgConnection, rows: &[NewTrack]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tracks (track_id, organization_id, owner_id, title, engine, mode, \
             measured_duration_ms, instrumental, licence_class, licence_version, commercial_use, \
             requires_attribution, media_sha256, media_content_type, media_bytes, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::bigint[], $8::bool[], $9::text[], $10::text[], $11::bool[], \
             $12::bool[], $13::text[], $14::text[], $15::bigint[], $16::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(strs(rows, |r| r.event.track_id.as_str()))
    .bind(strs(rows, |r| r.event.organization_id.as_str()))
    .bind(strs(rows, |r| r.event.owner_id.as_str()))
    .bind(strs(rows, |r| &r.event.title))
    .bind(strs(rows, |r| &r.event.engine))
    .bind(strs(rows, |r| &r.event.mode))
    .bind(
        rows.iter()
            .map(|r| i64::try_from(r.event.measured_duration_ms).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.event.instrumental)
            .collect::<Vec<_>>(),
    )
    .bind(strs(rows, |r| r.licence.licence_class.as_str()))
    .bind(strs(rows, |r| &r.licence.licence_version))
    .bind(
        rows.iter()
            .map(|r| r.licence.commercial_use)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.licence.requires_attribution)
            .collect::<Vec<_>>(),
    )
    .bind(strs(rows, |r| &r.event.media.sha256))
    .bind(strs(rows, |r| &r.event.media.content_type))
    .bind(
        rows.iter()
            .map(|r| i64::try_from(r.event.media.bytes).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(drop)
}

async fn insert_collections(
    conn: &mut PgConnection,
    rows: &[NewCollection],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO collections (collection_id, organization_id, owner_id, name, description, \
             created_at, updated_at) \
         SELECT id, org, owner, name, description, at, at FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
             AS n(id, org, owner, name, description, at) \
         ON CONFLICT DO NOTHING",
    )
    .bind(strs(rows, |r| r.event.collection_id.as_str()))
    .bind(strs(rows, |r| r.event.organization_id.as_str()))
    .bind(strs(rows, |r| r.event.owner_id.as_str()))
    .bind(strs(rows, |r| &r.event.name))
    .bind(
        rows.iter()
            .map(|r| r.event.description.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(drop)
}

async fn insert_shares(conn: &mut PgConnection, rows: &[NewShare]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO share_links (token_hash, share_id, target_type, target_id, organization_id, \
             owner_id, visibility, expires_at, max_views, created_at, created_position, \
             password_hash, label, updated_at) \
         SELECT n.*, n.created_at FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::int[], \
             $10::timestamptz[], $11::bigint[], $12::text[], $13::text[]) \
             AS n(token_hash, share_id, target_type, target_id, organization_id, owner_id, \
                  visibility, expires_at, max_views, created_at, created_position, \
                  password_hash, label) \
         ON CONFLICT DO NOTHING",
    )
    .bind(strs(rows, |r| r.event.token_hash.as_str()))
    .bind(strs(rows, |r| r.event.share_id.as_str()))
    .bind(strs(rows, |r| r.event.target_type.as_str()))
    .bind(strs(rows, |r| &r.event.target_id))
    .bind(strs(rows, |r| r.event.organization_id.as_str()))
    .bind(strs(rows, |r| r.event.owner_id.as_str()))
    .bind(strs(rows, |r| r.event.visibility.as_str()))
    .bind(rows.iter().map(|r| r.event.expires_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| {
                r.event
                    .max_views
                    .map(|v| i32::try_from(v).unwrap_or(i32::MAX))
            })
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| i64::try_from(r.position).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.event.password_hash.as_ref().map(|h| h.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.event.label.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map(drop)
}

/// [`Writes::Copy`] of new tracks, each with its removal stamp, if any.
async fn copy_tracks(
    conn: &mut PgConnection,
    rows: &[NewTrack],
    removed: &[Option<DateTime<Utc>>],
) -> Result<(), sqlx::Error> {
    let mut copy = CopyRows::new(17);
    for (r, removed) in rows.iter().zip(removed) {
        let (e, licence) = (&r.event, &r.licence);
        copy.row()
            .text(e.track_id.as_str())
            .text(e.organization_id.as_str())
            .text(e.owner_id.as_str())
            .text(&e.title)
            .text(&e.engine)
            .text(&e.mode)
            .bigint(i64::try_from(e.measured_duration_ms).unwrap_or(i64::MAX))
            .bool(e.instrumental)
            .text(licence.licence_class.as_str())
            .text(&licence.licence_version)
            .bool(licence.commercial_use)
            .bool(licence.requires_attribution)
            .text(&e.media.sha256)
            .text(&e.media.content_type)
            .bigint(i64::try_from(e.media.bytes).unwrap_or(i64::MAX))
            .timestamptz(r.at)
            .opt_timestamptz(*removed);
    }
    copy.send(
        conn,
        "tracks",
        "track_id, organization_id, owner_id, title, engine, mode, measured_duration_ms, \
         instrumental, licence_class, licence_version, commercial_use, requires_attribution, \
         media_sha256, media_content_type, media_bytes, created_at, removed_at",
    )
    .await
}

/// [`Writes::Copy`] of new collections, each with its removal stamp and last membership change.
async fn copy_collections(
    conn: &mut PgConnection,
    rows: &[NewCollection],
    removed: &[Option<DateTime<Utc>>],
    touched: &[Option<DateTime<Utc>>],
) -> Result<(), sqlx::Error> {
    let mut copy = CopyRows::new(8);
    for ((r, removed), touched) in rows.iter().zip(removed).zip(touched) {
        let e = &r.event;
        copy.row()
            .text(e.collection_id.as_str())
            .text(e.organization_id.as_str())
            .text(e.owner_id.as_str())
            .text(&e.name)
            .opt_text(e.description.as_deref())
            .timestamptz(r.at)
            .timestamptz(touched.unwrap_or(r.at))
            .opt_timestamptz(*removed);
    }
    copy.send(
        conn,
        "collections",
        "collection_id, organization_id, owner_id, name, description, created_at, updated_at, \
         removed_at",
    )
    .await
}

/// [`Writes::Copy`] of new share links, each with its revocation stamp and its settings changes
/// and rotations merged in (field by field, as [`update_shares`] would set them).
async fn copy_shares(
    conn: &mut PgConnection,
    rows: &[NewShare],
    revoked: &[Option<DateTime<Utc>>],
    updates: &[Option<ShareUpdate>],
) -> Result<(), sqlx::Error> {
    let views = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let mut copy = CopyRows::new(15);
    for ((r, revoked), update) in rows.iter().zip(revoked).zip(updates) {
        let e = &r.event;
        let created_hash = e.password_hash.as_ref().map(|h| h.as_str());
        let (token_hash, visibility, expires_at, max_views, password_hash, label, updated_at) =
            match update {
                None => (
                    e.token_hash.as_str(),
                    e.visibility.as_str(),
                    e.expires_at,
                    views(e.max_views),
                    created_hash,
                    e.label.as_deref(),
                    Some(r.at),
                ),
                Some(u) => (
                    u.token_hash.as_deref().unwrap_or(e.token_hash.as_str()),
                    u.visibility.unwrap_or(e.visibility.as_str()),
                    u.expires_at.unwrap_or(e.expires_at),
                    views(u.max_views.unwrap_or(e.max_views)),
                    u.password_hash
                        .as_ref()
                        .map_or(created_hash, |h| h.as_deref()),
                    u.label
                        .as_ref()
                        .map_or(e.label.as_deref(), |l| l.as_deref()),
                    u.updated_at,
                ),
            };
        copy.row()
            .text(token_hash)
            .text(e.share_id.as_str())
            .text(e.target_type.as_str())
            .text(&e.target_id)
            .text(e.organization_id.as_str())
            .text(e.owner_id.as_str())
            .text(visibility)
            .opt_timestamptz(expires_at)
            .opt_int(max_views)
            .timestamptz(r.at)
            .opt_timestamptz(*revoked)
            .bigint(i64::try_from(r.position).unwrap_or(i64::MAX))
            .opt_text(password_hash)
            .opt_text(label)
            .opt_timestamptz(updated_at);
    }
    copy.send(
        conn,
        "share_links",
        "token_hash, share_id, target_type, target_id, organization_id, owner_id, visibility, \
         expires_at, max_views, created_at, revoked_at, created_position, password_hash, label, \
         updated_at",
    )
    .await
}

/// Applies the merged settings changes and rotations. The hashes a rotation retires are read
/// first, so the notice names them: a query instance may have cached the old token's record.
async fn update_shares(
    conn: &mut PgConnection,
    updates: &HashMap<String, ShareUpdate>,
    changed: &mut Changed,
) -> Result<(), sqlx::Error> {
    if updates.is_empty() {
        return Ok(());
    }
    let rotated: Vec<&str> = updates
        .iter()
        .filter(|(_, u)| u.token_hash.is_some())
        .map(|(id, _)| id.as_str())
        .collect();
    if !rotated.is_empty() {
        let retired: Vec<String> =
            sqlx::query_scalar("SELECT token_hash FROM share_links WHERE share_id = ANY($1)")
                .bind(&rotated)
                .fetch_all(&mut *conn)
                .await?;
        changed.token_hashes.extend(retired);
    }
    let rows: Vec<(&String, &ShareUpdate)> = updates.iter().collect();
    let set = |f: fn(&ShareUpdate) -> bool| rows.iter().map(|(_, u)| f(u)).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE share_links AS s SET \
             visibility = CASE WHEN u.set_visibility THEN u.visibility ELSE s.visibility END, \
             expires_at = CASE WHEN u.set_expires THEN u.expires_at ELSE s.expires_at END, \
             max_views = CASE WHEN u.set_max_views THEN u.max_views ELSE s.max_views END, \
             password_hash = CASE WHEN u.set_password THEN u.password_hash \
                                  ELSE s.password_hash END, \
             label = CASE WHEN u.set_label THEN u.label ELSE s.label END, \
             token_hash = coalesce(u.token_hash, s.token_hash), \
             updated_at = u.at \
         FROM UNNEST($1::text[], $2::bool[], $3::text[], $4::bool[], $5::timestamptz[], \
             $6::bool[], $7::int[], $8::bool[], $9::text[], $10::bool[], $11::text[], \
             $12::text[], $13::timestamptz[]) \
             AS u(id, set_visibility, visibility, set_expires, expires_at, set_max_views, \
                  max_views, set_password, password_hash, set_label, label, token_hash, at) \
         WHERE s.share_id = u.id",
    )
    .bind(rows.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(set(|u| u.visibility.is_some()))
    .bind(rows.iter().map(|(_, u)| u.visibility).collect::<Vec<_>>())
    .bind(set(|u| u.expires_at.is_some()))
    .bind(
        rows.iter()
            .map(|(_, u)| u.expires_at.flatten())
            .collect::<Vec<_>>(),
    )
    .bind(set(|u| u.max_views.is_some()))
    .bind(
        rows.iter()
            .map(|(_, u)| {
                u.max_views
                    .flatten()
                    .map(|v| i32::try_from(v).unwrap_or(i32::MAX))
            })
            .collect::<Vec<_>>(),
    )
    .bind(set(|u| u.password_hash.is_some()))
    .bind(
        rows.iter()
            .map(|(_, u)| u.password_hash.clone().flatten())
            .collect::<Vec<_>>(),
    )
    .bind(set(|u| u.label.is_some()))
    .bind(
        rows.iter()
            .map(|(_, u)| u.label.clone().flatten())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, u)| u.token_hash.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, u)| u.updated_at).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(drop)
}

async fn insert_library_items(
    conn: &mut PgConnection,
    rows: &[NewLibraryItem],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO library_items (library_item_id, user_id, track_id, share_link_id, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(strs(rows, |r| r.event.library_item_id.as_str()))
    .bind(strs(rows, |r| r.event.user_id.as_str()))
    .bind(strs(rows, |r| r.event.track_id.as_str()))
    .bind(strs(rows, |r| r.event.share_link_id.as_str()))
    .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(drop)
}

/// The removal and revocation stamps of rows from earlier batches, for both ways of writing.
async fn stamp_all(
    conn: &mut PgConnection,
    removed_tracks: &Stamps,
    removed_collections: &Stamps,
    revoked_shares: &Stamps,
) -> Result<(), sqlx::Error> {
    stamp(conn, "tracks", "track_id", "removed_at", removed_tracks).await?;
    let (collections, shares) = (removed_collections, revoked_shares);
    stamp(
        conn,
        "collections",
        "collection_id",
        "removed_at",
        collections,
    )
    .await?;
    stamp(conn, "share_links", "share_id", "revoked_at", shares).await
}

/// Sets `column` once (first stamp wins, also across batches) on the rows of `table` whose
/// `key` is stamped. Table and column names are constants of this module, never input.
async fn stamp(
    conn: &mut PgConnection,
    table: &str,
    key: &str,
    column: &str,
    stamps: &Stamps,
) -> Result<(), sqlx::Error> {
    if stamps.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "UPDATE {table} AS t SET {column} = s.at \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS s(id, at) \
         WHERE t.{key} = s.id AND t.{column} IS NULL"
    ))
    .bind(&stamps.ids)
    .bind(&stamps.at)
    .execute(conn)
    .await
    .map(drop)
}

async fn touch_collections(
    conn: &mut PgConnection,
    updated: &HashMap<String, DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    if updated.is_empty() {
        return Ok(());
    }
    let (ids, at): (Vec<&str>, Vec<DateTime<Utc>>) =
        updated.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
    sqlx::query(
        "UPDATE collections AS c SET updated_at = u.at \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(id, at) WHERE c.collection_id = u.id",
    )
    .bind(ids)
    .bind(at)
    .execute(conn)
    .await
    .map(drop)
}

/// An ordered membership list that knows its members.
#[derive(Default, PartialEq)]
struct Members {
    order: Vec<String>,
    set: HashSet<String>,
}

impl Members {
    fn apply(&mut self, change: Membership) {
        match change {
            Membership::Add(track) => {
                if self.set.insert(track.clone()) {
                    self.order.push(track);
                }
            }
            Membership::Remove(track) => {
                if self.set.remove(&track) {
                    self.order.retain(|t| *t != track);
                }
            }
            Membership::Order(tracks) => {
                self.order.clear();
                self.set.clear();
                for track in tracks {
                    self.apply(Membership::Add(track));
                }
            }
        }
    }
}

/// Replays the batch's membership changes on each touched collection's stored order, then
/// rewrites only the tail that changed (appends, the common case, delete nothing).
async fn write_membership(
    conn: &mut PgConnection,
    changes: HashMap<String, Vec<Membership>>,
    how: Writes,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = changes.keys().map(String::as_str).collect();
    let rows = sqlx::query(
        "SELECT collection_id, track_id FROM collection_tracks \
         WHERE collection_id = ANY($1) ORDER BY collection_id, position",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<String, Members> = HashMap::new();
    for row in rows {
        let collection: String = row.try_get(0)?;
        let track: String = row.try_get(1)?;
        stored
            .entry(collection)
            .or_default()
            .apply(Membership::Add(track));
    }

    let (mut cut_ids, mut cut_from) = (Vec::new(), Vec::new());
    let (mut new_ids, mut new_positions, mut new_tracks) = (Vec::new(), Vec::new(), Vec::new());
    for (collection, changes) in changes {
        let before = stored.remove(&collection).unwrap_or_default();
        let mut after = Members {
            order: before.order.clone(),
            set: before.set.clone(),
        };
        for change in changes {
            after.apply(change);
        }
        let kept = before
            .order
            .iter()
            .zip(&after.order)
            .take_while(|(a, b)| a == b)
            .count();
        if kept == before.order.len() && kept == after.order.len() {
            continue;
        }
        if kept < before.order.len() {
            cut_ids.push(collection.clone());
            cut_from.push(position(kept));
        }
        for (i, track) in after.order.into_iter().enumerate().skip(kept) {
            new_ids.push(collection.clone());
            new_positions.push(position(i));
            new_tracks.push(track);
        }
    }
    if !cut_ids.is_empty() {
        sqlx::query(
            "DELETE FROM collection_tracks AS c USING UNNEST($1::text[], $2::int[]) AS d(id, keep) \
             WHERE c.collection_id = d.id AND c.position >= d.keep",
        )
        .bind(&cut_ids)
        .bind(&cut_from)
        .execute(&mut *conn)
        .await?;
    }
    if new_ids.is_empty() {
        return Ok(());
    }
    match how {
        // The positions written were free or were just deleted: a plain append.
        Writes::Copy => {
            let mut copy = CopyRows::new(3);
            for ((id, position), track) in new_ids.iter().zip(&new_positions).zip(&new_tracks) {
                copy.row().text(id).int(*position).text(track);
            }
            copy.send(
                conn,
                "collection_tracks",
                "collection_id, position, track_id",
            )
            .await
        }
        Writes::Statements => sqlx::query(
            "INSERT INTO collection_tracks (collection_id, position, track_id) \
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[])",
        )
        .bind(&new_ids)
        .bind(&new_positions)
        .bind(&new_tracks)
        .execute(&mut *conn)
        .await
        .map(drop),
    }
}

fn position(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}
