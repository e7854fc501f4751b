//! The collection aggregate (stream `collection-{id}`): create, add a track, remove a track,
//! reorder, delete.
//!
//! Only its creator may change a collection; anyone else gets the same 404 as for a collection
//! that does not exist, whatever the body holds. A collection holds live tracks of its own
//! organization only, judged from the track's own stream (loaded by the handler, passed in the
//! command).
//!
//! Adding a track already in it, removing one that is not, and an order that changes nothing
//! are accepted with no event: each command states the end the caller wants, and a retried
//! request must not fail because its first try succeeded.

use chrono::{DateTime, Utc};
use events::event::{
    CollectionCreated, CollectionReordered, CollectionTrackAdded, CollectionTrackRemoved,
    ContentRemoved, TargetType,
};
use events::ids::{CollectionId, OrganizationId, TrackId, UserId};
use events::MusicEvent;
use serde_json::Value;

use super::track::Track;
use super::{Context, Decided, Recorded, Rejection};
use crate::text;

pub const NAME_MAX_CHARS: usize = 512;
pub const DESCRIPTION_MAX_CHARS: usize = 4096;

/// A collection as decided from its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Collection {
    pub created: CollectionCreated,
    pub track_ids: Vec<TrackId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub removed: bool,
}

impl Collection {
    /// Live, in `org`, and created by `actor`: what every command on it requires.
    pub fn is_owned_in(&self, org: &OrganizationId, actor: &UserId) -> bool {
        !self.removed && &self.created.organization_id == org && &self.created.owner_id == actor
    }
}

pub fn from_history(history: &[Recorded]) -> Option<Collection> {
    history.iter().fold(None, evolve)
}

pub fn evolve(state: Option<Collection>, recorded: &Recorded) -> Option<Collection> {
    if let MusicEvent::CollectionCreated(created) = &recorded.event {
        return Some(Collection {
            created: created.clone(),
            track_ids: Vec::new(),
            created_at: recorded.occurred_at,
            updated_at: recorded.occurred_at,
            removed: false,
        });
    }
    let mut c = state?;
    match &recorded.event {
        MusicEvent::CollectionTrackAdded(added) if !c.track_ids.contains(&added.track_id) => {
            c.track_ids.push(added.track_id.clone());
        }
        MusicEvent::CollectionTrackRemoved(removed) => {
            c.track_ids.retain(|t| t != &removed.track_id)
        }
        MusicEvent::CollectionReordered(reordered) => c.track_ids = reordered.track_ids.clone(),
        MusicEvent::ContentRemoved(_) => c.removed = true,
        _ => {}
    }
    c.updated_at = recorded.occurred_at;
    Some(c)
}

// One command per request, built once and moved into `decide`: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum CollectionCommand {
    /// Create a collection, empty, under a fresh `collection_id`.
    Create {
        org: OrganizationId,
        collection_id: CollectionId,
        name: Option<String>,
        description: Option<String>,
    },
    /// Add a track at the end. `track_id` is the body's raw field; `track` the state of the
    /// track it names, if it names one ([`requested_track`]).
    AddTrack {
        org: OrganizationId,
        collection_id: CollectionId,
        track_id: Option<Value>,
        track: Option<Track>,
    },
    RemoveTrack {
        org: OrganizationId,
        collection_id: CollectionId,
        track_id: TrackId,
    },
    /// The body's raw `ordered_track_ids`.
    Reorder {
        org: OrganizationId,
        collection_id: CollectionId,
        ordered_track_ids: Option<Value>,
    },
    /// Delete: its shares stay and resolve as unavailable.
    Remove {
        org: OrganizationId,
        collection_id: CollectionId,
    },
}

pub fn decide(state: &Option<Collection>, command: CollectionCommand, ctx: &Context) -> Decided {
    use CollectionCommand::*;
    match command {
        Create {
            org,
            collection_id,
            name,
            description,
        } => create(org, collection_id, name, description, ctx),
        AddTrack {
            org,
            collection_id,
            track_id,
            track,
        } => {
            let collection = owned(state, &org, &collection_id, ctx)?;
            let track_id = requested_track(&track_id)?;
            if collection.track_ids.contains(&track_id) {
                return Ok(Vec::new());
            }
            if !track.is_some_and(|t| t.imported.track_id == track_id && t.is_live_in(&org)) {
                return Err(Rejection::not_found("track_id", track_id.as_str()));
            }
            Ok(vec![MusicEvent::CollectionTrackAdded(
                CollectionTrackAdded {
                    collection_id,
                    track_id,
                },
            )])
        }
        RemoveTrack {
            org,
            collection_id,
            track_id,
        } => {
            let collection = owned(state, &org, &collection_id, ctx)?;
            if !collection.track_ids.contains(&track_id) {
                return Ok(Vec::new());
            }
            Ok(vec![MusicEvent::CollectionTrackRemoved(
                CollectionTrackRemoved {
                    collection_id,
                    track_id,
                },
            )])
        }
        Reorder {
            org,
            collection_id,
            ordered_track_ids,
        } => {
            let collection = owned(state, &org, &collection_id, ctx)?;
            let requested = requested_order(ordered_track_ids)?;
            let order = new_order(&collection.track_ids, &requested);
            if order == collection.track_ids {
                return Ok(Vec::new());
            }
            Ok(vec![MusicEvent::CollectionReordered(CollectionReordered {
                collection_id,
                track_ids: order,
            })])
        }
        Remove { org, collection_id } => {
            owned(state, &org, &collection_id, ctx)?;
            Ok(vec![MusicEvent::ContentRemoved(ContentRemoved {
                target_type: TargetType::Collection,
                target_id: collection_id.to_string(),
                organization_id: org,
            })])
        }
    }
}

/// The caller's live collection in `org`, or the 404 for anything else.
fn owned<'a>(
    state: &'a Option<Collection>,
    org: &OrganizationId,
    id: &CollectionId,
    ctx: &Context,
) -> Result<&'a Collection, Rejection> {
    state
        .as_ref()
        .filter(|c| c.is_owned_in(org, &ctx.actor))
        .ok_or_else(|| Rejection::not_found("collection_id", id.as_str()))
}

fn create(
    org: OrganizationId,
    collection_id: CollectionId,
    name: Option<String>,
    description: Option<String>,
    ctx: &Context,
) -> Decided {
    let mut problems = Vec::new();
    match &name {
        None => problems.push(("name".to_owned(), "is required".to_owned())),
        Some(n) => {
            if let Some(why) = text::non_blank_problem(n, NAME_MAX_CHARS) {
                problems.push(("name".to_owned(), why));
            }
        }
    }
    if let Some(d) = &description {
        if d.chars().count() > DESCRIPTION_MAX_CHARS {
            problems.push((
                "description".to_owned(),
                format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
            ));
        } else if let Some(why) = text::nul_problem(d) {
            problems.push(("description".to_owned(), why.to_owned()));
        }
    }
    let (Some(name), true) = (name, problems.is_empty()) else {
        return Err(Rejection::Invalid(problems));
    };
    Ok(vec![MusicEvent::CollectionCreated(CollectionCreated {
        collection_id,
        organization_id: org,
        owner_id: ctx.actor.clone(),
        name,
        description,
    })])
}

/// The track an add names: the body's `track_id`, a track id. The handler loads the track it
/// names with the same function, so what is decided is what was loaded.
pub fn requested_track(raw: &Option<Value>) -> Result<TrackId, Rejection> {
    match raw {
        None => Err(Rejection::invalid("track_id", "is required")),
        Some(raw) => raw
            .as_str()
            .and_then(|s| TrackId::parse(s).ok())
            .ok_or_else(|| Rejection::invalid("track_id", "is not a track id (mtrack_…)")),
    }
}

fn requested_order(raw: Option<Value>) -> Result<Vec<String>, Rejection> {
    let field = "ordered_track_ids";
    match raw {
        None => Err(Rejection::invalid(
            field,
            "is required (an array of track ids)",
        )),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(Rejection::invalid(field, "must be an array of strings")),
            })
            .collect(),
        Some(_) => Err(Rejection::invalid(field, "must be an array of strings")),
    }
}

/// The listed tracks that are in the collection, in the listed order (first mention wins), then
/// the rest in their current relative order. Unknown or malformed ids are ignored.
pub fn new_order(current: &[TrackId], requested: &[String]) -> Vec<TrackId> {
    let mut order: Vec<TrackId> = Vec::with_capacity(current.len());
    for raw in requested {
        if let Some(track) = current.iter().find(|t| t.as_str() == raw) {
            if !order.contains(track) {
                order.push(track.clone());
            }
        }
    }
    let rest: Vec<TrackId> = current
        .iter()
        .filter(|t| !order.contains(t))
        .cloned()
        .collect();
    order.extend(rest);
    order
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::given::{self, *};
    use crate::domain::track;

    fn given(
        events: impl IntoIterator<Item = MusicEvent>,
    ) -> Given<Option<Collection>, CollectionCommand> {
        given::given(from_history, decide, events)
    }

    fn other_track() -> TrackId {
        TrackId::parse("mtrack_0000000000bb").expect("an id")
    }

    fn added(track_id: TrackId) -> MusicEvent {
        MusicEvent::CollectionTrackAdded(CollectionTrackAdded {
            collection_id: collection_id(),
            track_id,
        })
    }

    /// The fixture track as its stream folds, imported into `org`, perhaps removed since.
    fn track_state(org: &OrganizationId, removed: bool) -> Option<Track> {
        let mut history = vec![track_imported(org, &owner())];
        if removed {
            history.push(MusicEvent::ContentRemoved(ContentRemoved {
                target_type: TargetType::Track,
                target_id: track_id().to_string(),
                organization_id: org.clone(),
            }));
        }
        track::from_history(&given::recorded(history))
    }

    fn add(track_id: Value, track: Option<Track>) -> CollectionCommand {
        CollectionCommand::AddTrack {
            org: org(),
            collection_id: collection_id(),
            track_id: Some(track_id),
            track,
        }
    }

    fn create(name: Option<&str>, description: Option<&str>) -> CollectionCommand {
        CollectionCommand::Create {
            org: org(),
            collection_id: collection_id(),
            name: name.map(Into::into),
            description: description.map(Into::into),
        }
    }

    fn reorder(ids: Value) -> CollectionCommand {
        CollectionCommand::Reorder {
            org: org(),
            collection_id: collection_id(),
            ordered_track_ids: Some(ids),
        }
    }

    fn remove() -> CollectionCommand {
        CollectionCommand::Remove {
            org: org(),
            collection_id: collection_id(),
        }
    }

    fn not_found() -> Rejection {
        Rejection::not_found("collection_id", collection_id().as_str())
    }

    #[test]
    fn a_member_creates_an_empty_collection_of_their_own() {
        given([])
            .when(create(Some("Mix"), None))
            .then([collection_created()]);
    }

    #[test]
    fn a_description_is_kept_as_sent() {
        let events = given([])
            .when(create(Some("Mix"), Some(" for the road ")))
            .events();
        let [MusicEvent::CollectionCreated(created)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(created.description.as_deref(), Some(" for the road "));
        assert_eq!(created.owner_id, owner());
    }

    #[test]
    fn a_collection_needs_a_name_that_is_not_blank_and_a_short_description() {
        let name = |name: Option<&str>| given([]).when(create(name, None)).rejection();
        assert_eq!(name(None), Rejection::invalid("name", "is required"));
        for blank in ["", " \u{3000}\u{2028}", "a\0b"] {
            assert!(
                matches!(name(Some(blank)), Rejection::Invalid(p) if p[0].0 == "name"),
                "{blank:?}"
            );
        }
        assert!(matches!(
            name(Some(&"x".repeat(NAME_MAX_CHARS + 1))),
            Rejection::Invalid(_)
        ));
        let long = "d".repeat(DESCRIPTION_MAX_CHARS + 1);
        given([])
            .when(create(Some("Mix"), Some(&long)))
            .then(Rejection::invalid(
                "description",
                "must be at most 4096 characters",
            ));
        given([])
            .when(create(None, Some("a\0")))
            .then(Rejection::Invalid(vec![
                ("name".into(), "is required".into()),
                (
                    "description".into(),
                    "must not contain NUL characters (U+0000)".into(),
                ),
            ]));
    }

    #[test]
    fn the_owner_adds_a_live_track_of_the_organization_at_the_end() {
        given([collection_created()])
            .when(add(json!(track_id()), track_state(&org(), false)))
            .then([added(track_id())]);
    }

    #[test]
    fn adding_a_track_already_in_it_changes_nothing() {
        given([collection_created(), added(track_id())])
            .when(add(json!(track_id()), track_state(&org(), true)))
            .then_nothing();
    }

    #[test]
    fn a_removed_absent_or_foreign_track_is_not_found_naming_it() {
        let missing = Rejection::not_found("track_id", track_id().as_str());
        for track in [
            track_state(&org(), true),
            None,
            track_state(&other_org(), false),
        ] {
            given([collection_created()])
                .when(add(json!(track_id()), track))
                .then(missing.clone());
        }
    }

    #[test]
    fn a_track_id_that_is_missing_or_not_an_id_is_a_422() {
        for raw in [
            json!(42),
            json!("nope"),
            json!(null),
            json!(["mtrack_00000000000a"]),
        ] {
            assert!(matches!(
                given([collection_created()]).when(add(raw, None)).rejection(),
                Rejection::Invalid(p) if p[0].0 == "track_id"
            ));
        }
        given([collection_created()])
            .when(CollectionCommand::AddTrack {
                org: org(),
                collection_id: collection_id(),
                track_id: None,
                track: None,
            })
            .then(Rejection::invalid("track_id", "is required"));
    }

    #[test]
    fn who_may_act_is_decided_before_the_body_is_looked_at() {
        // Another member, with a body that would be a 422 for the owner: the 404.
        given([collection_created()])
            .by(&member())
            .when(add(json!(42), None))
            .then(not_found());
        given([collection_created()])
            .by(&member())
            .when(reorder(json!("no")))
            .then(not_found());
        given([collection_created()])
            .when(add(json!(42), None))
            .then(Rejection::invalid(
                "track_id",
                "is not a track id (mtrack_…)",
            ));
    }

    #[test]
    fn only_the_owner_of_a_live_collection_of_that_organization_may_change_it() {
        let removed = MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Collection,
            target_id: collection_id().to_string(),
            organization_id: org(),
        });
        let commands = || {
            [
                add(json!(track_id()), track_state(&org(), false)),
                CollectionCommand::RemoveTrack {
                    org: org(),
                    collection_id: collection_id(),
                    track_id: track_id(),
                },
                reorder(json!([])),
                remove(),
            ]
        };
        for command in commands() {
            given([collection_created()])
                .by(&member())
                .when(command)
                .then(not_found());
        }
        for command in commands() {
            given([collection_created(), removed.clone()])
                .when(command)
                .then(not_found());
        }
        for command in commands() {
            given([]).when(command).then(not_found());
        }
        given([collection_created()])
            .when(CollectionCommand::Remove {
                org: other_org(),
                collection_id: collection_id(),
            })
            .then(not_found());
    }

    #[test]
    fn removing_a_track_in_it_appends_the_removal_and_one_not_in_it_changes_nothing() {
        let remove_track = || CollectionCommand::RemoveTrack {
            org: org(),
            collection_id: collection_id(),
            track_id: track_id(),
        };
        given([collection_created(), added(track_id())])
            .when(remove_track())
            .then([MusicEvent::CollectionTrackRemoved(CollectionTrackRemoved {
                collection_id: collection_id(),
                track_id: track_id(),
            })]);
        given([collection_created()])
            .when(remove_track())
            .then_nothing();
    }

    #[test]
    fn reordering_records_the_whole_new_order() {
        given([
            collection_created(),
            added(track_id()),
            added(other_track()),
        ])
        .when(reorder(json!([other_track(), "junk"])))
        .then([MusicEvent::CollectionReordered(CollectionReordered {
            collection_id: collection_id(),
            track_ids: vec![other_track(), track_id()],
        })]);
    }

    #[test]
    fn an_order_that_changes_nothing_appends_nothing() {
        given([
            collection_created(),
            added(track_id()),
            added(other_track()),
        ])
        .when(reorder(json!([track_id(), "mtrack_ffffffffffff"])))
        .then_nothing();
    }

    #[test]
    fn an_order_must_be_an_array_of_strings() {
        for raw in [json!("no"), json!([1]), json!({"a": 1})] {
            given([collection_created()])
                .when(reorder(raw))
                .then(Rejection::invalid(
                    "ordered_track_ids",
                    "must be an array of strings",
                ));
        }
        given([collection_created()])
            .when(CollectionCommand::Reorder {
                org: org(),
                collection_id: collection_id(),
                ordered_track_ids: None,
            })
            .then(Rejection::invalid(
                "ordered_track_ids",
                "is required (an array of track ids)",
            ));
    }

    #[test]
    fn the_owner_deletes_a_collection_once() {
        let removed = MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Collection,
            target_id: collection_id().to_string(),
            organization_id: org(),
        });
        given([collection_created()])
            .when(remove())
            .then([removed.clone()]);
        given([collection_created(), removed])
            .when(remove())
            .then(not_found());
    }

    #[test]
    fn listed_tracks_lead_and_the_rest_keep_their_order() {
        let ids: Vec<TrackId> = (0..5).map(|_| TrackId::generate()).collect();
        let s = |i: usize| ids[i].to_string();
        let got = new_order(
            &ids,
            &[
                s(3),
                "mtrack_000000000000".into(),
                s(1),
                s(3),
                "junk".into(),
            ],
        );
        assert_eq!(
            got,
            vec![
                ids[3].clone(),
                ids[1].clone(),
                ids[0].clone(),
                ids[2].clone(),
                ids[4].clone()
            ]
        );
        assert_eq!(new_order(&ids, &[]), ids);
    }

    #[test]
    fn the_fold_applies_adds_removals_and_orders_and_ignores_a_repeated_add() {
        let history = given::recorded([
            collection_created(),
            added(track_id()),
            added(other_track()),
            added(track_id()),
            MusicEvent::CollectionReordered(CollectionReordered {
                collection_id: collection_id(),
                track_ids: vec![other_track(), track_id()],
            }),
            MusicEvent::CollectionTrackRemoved(CollectionTrackRemoved {
                collection_id: collection_id(),
                track_id: other_track(),
            }),
        ]);
        let c = from_history(&history).expect("a collection");
        assert_eq!(c.track_ids, vec![track_id()]);
        assert!(c.is_owned_in(&org(), &owner()));
        assert!(!c.is_owned_in(&org(), &member()));
    }
}
