//! Collections: create, add a track, remove a track, reorder, delete.
//!
//! A collection's stream is `collection-{id}`. Only its creator may change it; anyone else gets
//! the same 404 as for a collection that does not exist. A collection holds tracks of its own
//! organization only, which is checked against the track's own stream when a track is added.
//!
//! Removing a track that is not in the collection answers 200 with no event, like adding one that
//! already is: both commands state the end the caller wants, and a retried request must not fail
//! because its first try succeeded.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use events::event::{
    CollectionCreated, CollectionReordered, CollectionTrackAdded, CollectionTrackRemoved,
    ContentRemoved, TargetType,
};
use events::ids::{CollectionId, OrganizationId, TrackId};
use events::{ExpectedVersion, MusicEvent, StreamId};
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::json::ValidJson;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::decide::{self, rfc3339, Attempt, CommandContext, History};
use crate::params::{docs, not_found, path_id, PathParams};
use crate::text;
use crate::tracks;

pub const NAME_MAX_CHARS: usize = 512;
pub const DESCRIPTION_MAX_CHARS: usize = 4096;

/// A collection as decided from its stream.
#[derive(Clone, Debug)]
pub struct Collection {
    pub created: CollectionCreated,
    pub track_ids: Vec<TrackId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub removed: bool,
}

impl Collection {
    pub fn from_history(history: &History) -> Option<Collection> {
        let mut collection: Option<Collection> = None;
        for recorded in &history.events {
            if let MusicEvent::CollectionCreated(created) = &recorded.event {
                collection = Some(Collection {
                    created: created.clone(),
                    track_ids: Vec::new(),
                    created_at: recorded.occurred_at,
                    updated_at: recorded.occurred_at,
                    removed: false,
                });
                continue;
            }
            let Some(c) = &mut collection else { continue };
            match &recorded.event {
                MusicEvent::CollectionTrackAdded(added)
                    if !c.track_ids.contains(&added.track_id) =>
                {
                    c.track_ids.push(added.track_id.clone());
                }
                MusicEvent::CollectionTrackRemoved(removed) => {
                    c.track_ids.retain(|t| t != &removed.track_id)
                }
                MusicEvent::CollectionReordered(reordered) => {
                    c.track_ids = reordered.track_ids.clone()
                }
                MusicEvent::ContentRemoved(_) => c.removed = true,
                _ => {}
            }
            c.updated_at = recorded.occurred_at;
        }
        collection
    }

    /// Live, in `org`, and created by the caller: what every command on it requires.
    pub fn is_owned_in(&self, org: &OrganizationId, ctx: &CommandContext) -> bool {
        !self.removed && &self.created.organization_id == org && self.created.owner_id == ctx.actor
    }
}

pub async fn load(
    state: &AppState,
    id: &CollectionId,
) -> Result<(Option<Collection>, History), ApiError> {
    let history = decide::read(state.store.as_ref(), &StreamId::collection(id)).await?;
    Ok((Collection::from_history(&history), history))
}

/// The caller's live collection in `org`, or the 404 for anything else.
async fn load_owned(
    state: &AppState,
    ctx: &CommandContext,
    org: &OrganizationId,
    id: &CollectionId,
) -> Result<(Collection, History), ApiError> {
    let (collection, history) = load(state, id).await?;
    let collection = collection
        .filter(|c| c.is_owned_in(org, ctx))
        .ok_or_else(|| not_found("collection_id", id.as_str()))?;
    Ok((collection, history))
}

/// The collection object of CONTRACT.md.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionObject {
    #[schema(example = "mcoll_5e8a1d3f9c27")]
    pub id: String,
    #[schema(example = "org_acme")]
    pub organization_id: String,
    #[schema(example = "usr_0123456789ab")]
    pub owner_id: String,
    pub name: String,
    #[schema(required = true)]
    pub description: Option<String>,
    pub track_count: usize,
    /// In the owner's order.
    pub track_ids: Vec<String>,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The collection object of CONTRACT.md.
pub fn collection_view(c: &Collection) -> CollectionObject {
    CollectionObject {
        id: c.created.collection_id.to_string(),
        organization_id: c.created.organization_id.to_string(),
        owner_id: c.created.owner_id.to_string(),
        name: c.created.name.clone(),
        description: c.created.description.clone(),
        track_count: c.track_ids.len(),
        track_ids: c.track_ids.iter().map(ToString::to_string).collect(),
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// The body of `POST /v1/music/{org}/collections`. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
pub struct CreateCollection {
    /// 1 to 512 characters, not blank (Unicode `White_Space` only), no NUL.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 512, example = "Late night",
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$")]
    name: Option<String>,
    /// At most 4096 characters, no NUL; absent or null means none.
    #[serde(default)]
    #[schema(max_length = 4096, pattern = r"^[^\u0000]*$")]
    description: Option<String>,
}

/// Create a collection, empty, owned by the caller.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/collections",
    operation_id = "create_collection",
    tag = "collections",
    params(docs::Org),
    request_body = CreateCollection,
    responses(
        (status = 201, description = "The new collection.", body = CollectionObject),
        (status = 400, description = "Malformed JSON, or not `Content-Type: application/json`.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "A field is missing or wrong; `details` names each.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(org): PathParams<String>,
    ValidJson(body): ValidJson<CreateCollection>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let mut problems = Vec::new();
    match &body.name {
        None => problems.push(("name".to_owned(), "is required".to_owned())),
        Some(n) => {
            if let Some(why) = text::non_blank_problem(n, NAME_MAX_CHARS) {
                problems.push(("name".to_owned(), why));
            }
        }
    }
    if let Some(d) = &body.description {
        if d.chars().count() > DESCRIPTION_MAX_CHARS {
            problems.push((
                "description".to_owned(),
                format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
            ));
        } else if let Some(why) = text::nul_problem(d) {
            problems.push(("description".to_owned(), why.to_owned()));
        }
    }
    let (Some(name), true) = (body.name, problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, name, description) = (&state, &ctx, &org, &name, &body.description);
    let created = decide::new_stream(state, ctx, move || async move {
        // A fresh id per attempt: the only conflict a new stream can meet is an id collision.
        let created = CollectionCreated {
            collection_id: CollectionId::generate(),
            organization_id: org.clone(),
            owner_id: ctx.actor.clone(),
            name: name.clone(),
            description: description.clone(),
        };
        let stream = StreamId::collection(&created.collection_id);
        let event = MusicEvent::CollectionCreated(created.clone());
        decide::append(state, ctx, &stream, ExpectedVersion::NoStream, &[event]).await?;
        Ok(created)
    })
    .await?;
    let collection = Collection {
        created,
        track_ids: Vec::new(),
        created_at: ctx.now(),
        updated_at: ctx.now(),
        removed: false,
    };
    Ok((StatusCode::CREATED, Json(collection_view(&collection))).into_response())
}

/// The body of `POST /v1/music/{org}/collections/{collection_id}/tracks`.
#[derive(Deserialize, ToSchema)]
pub struct AddTrack {
    /// A live track of the same organization.
    #[serde(default)]
    #[schema(value_type = String, required = true, pattern = r"^mtrack_[0-9a-f]{12}$", example = "mtrack_b4d9e1c6a72f")]
    track_id: Option<String>,
}

/// Add a track to a collection, at the end. Idempotent: a track already in it is a 200 too.
#[utoipa::path(
    post,
    path = "/v1/music/{org}/collections/{collection_id}/tracks",
    operation_id = "add_collection_track",
    tag = "collections",
    params(docs::Org, docs::Collection),
    request_body = AddTrack,
    responses(
        (status = 200, description = "The track is in the collection.", body = Ack),
        (status = 400, description = "Malformed JSON, or not `Content-Type: application/json`.", body = ErrorEnvelope),
        (status = 404, description = "No such collection of the caller's, or no such live track in its organization (`details` names which).", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "`track_id` is missing or not a track id.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the collection kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn add_track(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, collection_id)): PathParams<(String, String)>,
    ValidJson(body): ValidJson<AddTrack>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("collection_id", &collection_id, CollectionId::parse)?;
    let track_id = match body.track_id.as_deref() {
        None => return Err(ApiError::invalid_field("track_id", "is required")),
        Some(raw) => TrackId::parse(raw)
            .map_err(|_| ApiError::invalid_field("track_id", "is not a track id (mtrack_…)"))?,
    };
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id, track_id) = (&state, &ctx, &org, &id, &track_id);
    let stream = &StreamId::collection(id);
    let added = decide::on_stream(state, ctx, stream, move || async move {
        let (collection, history) = load_owned(state, ctx, org, id).await?;
        if collection.track_ids.contains(track_id) {
            return Ok(false);
        }
        let (track, _) = tracks::load(state, track_id).await?;
        if !track.is_some_and(|t| t.is_live_in(org)) {
            return Err(not_found("track_id", track_id.as_str()).into());
        }
        let event = MusicEvent::CollectionTrackAdded(CollectionTrackAdded {
            collection_id: id.clone(),
            track_id: track_id.clone(),
        });
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>(true)
    })
    .await?;
    let detail = if added {
        "Track added to collection."
    } else {
        "Track was already in the collection."
    };
    Ok(ack(StatusCode::OK, id.as_str(), detail))
}

/// Remove a track from a collection. Idempotent: a track not in it is a 200 too (see the module).
#[utoipa::path(
    delete,
    path = "/v1/music/{org}/collections/{collection_id}/tracks/{track_id}",
    operation_id = "remove_collection_track",
    tag = "collections",
    params(docs::Org, docs::Collection, docs::Track),
    responses(
        (status = 200, description = "The track is not in the collection.", body = Ack),
        (status = 404, description = "No such collection of the caller's.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the collection kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn remove_track(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, collection_id, track_id)): PathParams<(String, String, String)>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("collection_id", &collection_id, CollectionId::parse)?;
    let track_id = path_id("track_id", &track_id, TrackId::parse)?;
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id, track_id) = (&state, &ctx, &org, &id, &track_id);
    let stream = &StreamId::collection(id);
    let removed = decide::on_stream(state, ctx, stream, move || async move {
        let (collection, history) = load_owned(state, ctx, org, id).await?;
        if !collection.track_ids.contains(track_id) {
            return Ok(false);
        }
        let event = MusicEvent::CollectionTrackRemoved(CollectionTrackRemoved {
            collection_id: id.clone(),
            track_id: track_id.clone(),
        });
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>(true)
    })
    .await?;
    let detail = if removed {
        "Track removed from collection."
    } else {
        "Track was not in the collection."
    };
    Ok(ack(StatusCode::OK, id.as_str(), detail))
}

/// The body of `PATCH /v1/music/{org}/collections/{collection_id}/order`.
#[derive(Deserialize, ToSchema)]
pub struct Reorder {
    /// The new order. Ids not in the collection (or not ids at all) are ignored; tracks not
    /// listed keep their relative order after the listed ones.
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = true)]
    ordered_track_ids: Option<Vec<String>>,
}

/// Reorder a collection's tracks.
#[utoipa::path(
    patch,
    path = "/v1/music/{org}/collections/{collection_id}/order",
    operation_id = "reorder_collection",
    tag = "collections",
    params(docs::Org, docs::Collection),
    request_body = Reorder,
    responses(
        (status = 200, description = "The collection is in the new order.", body = Ack),
        (status = 400, description = "Malformed JSON, or not `Content-Type: application/json`.", body = ErrorEnvelope),
        (status = 404, description = "No such collection of the caller's.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorEnvelope),
        (status = 422, description = "`ordered_track_ids` is missing or not an array of strings.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the collection kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn reorder(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, collection_id)): PathParams<(String, String)>,
    ValidJson(body): ValidJson<Reorder>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("collection_id", &collection_id, CollectionId::parse)?;
    let Some(requested) = body.ordered_track_ids else {
        return Err(ApiError::invalid_field(
            "ordered_track_ids",
            "is required (an array of track ids)",
        ));
    };
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id, requested) = (&state, &ctx, &org, &id, &requested);
    let stream = &StreamId::collection(id);
    decide::on_stream(state, ctx, stream, move || async move {
        let (collection, history) = load_owned(state, ctx, org, id).await?;
        let order = new_order(&collection.track_ids, requested);
        if order == collection.track_ids {
            return Ok(());
        }
        let event = MusicEvent::CollectionReordered(CollectionReordered {
            collection_id: id.clone(),
            track_ids: order,
        });
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>(())
    })
    .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Collection reordered."))
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

/// Delete a collection: appends `ContentRemoved`; its shares stay and resolve as unavailable.
#[utoipa::path(
    delete,
    path = "/v1/music/{org}/collections/{collection_id}",
    operation_id = "delete_collection",
    tag = "collections",
    params(docs::Org, docs::Collection),
    responses(
        (status = 200, description = "Deleted (`detail`: \"Collection deleted.\").", body = Ack),
        (status = 404, description = "No such live collection of the caller's.", body = ErrorEnvelope),
        (status = 503, description = "The database or the event store is down, or the collection kept changing.", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((org, collection_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let org = caller.member_of(&org)?;
    let id = path_id("collection_id", &collection_id, CollectionId::parse)?;
    let ctx = CommandContext::new(&caller);
    let (state, ctx, org, id) = (&state, &ctx, &org, &id);
    let stream = &StreamId::collection(id);
    decide::on_stream(state, ctx, stream, move || async move {
        let (_, history) = load_owned(state, ctx, org, id).await?;
        let event = MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Collection,
            target_id: id.to_string(),
            organization_id: org.clone(),
        });
        decide::append(state, ctx, stream, history.expected(), &[event]).await?;
        Ok::<_, Attempt>(())
    })
    .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Collection deleted."))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
