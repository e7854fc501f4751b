//! Collections over HTTP: create, add a track, remove a track, reorder, delete. The rules are
//! in [`crate::domain::collection`]; these handlers parse, load, run and answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::format::rfc3339;
use events::ids::{CollectionId, TrackId};
use events::{ExpectedVersion, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::json::ValidJson;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::collection::{self, Collection, CollectionCommand};
use crate::params::{docs, path_id, PathParams, Resource};
use crate::runner::{CommandContext, Decision};
use crate::tracks;

pub async fn load(state: &AppState, id: &CollectionId) -> Result<Option<Collection>, ApiError> {
    let history = state.runner.read(&StreamId::collection(id)).await?;
    Ok(collection::from_history(&history.events))
}

/// Runs a command on an existing collection: no event to answer, only the acknowledgement.
async fn change(
    state: &AppState,
    ctx: &CommandContext,
    id: &CollectionId,
    command: CollectionCommand,
) -> Result<bool, ApiError> {
    let decider = ctx.decider();
    state
        .runner
        .on_stream(ctx, &StreamId::collection(id), |history| {
            let collection = collection::from_history(&history.events);
            let events = collection::decide(&collection, command.clone(), &decider)?;
            let changed = !events.is_empty();
            Ok((events, changed))
        })
        .await
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
    let ctx = CommandContext::new(&caller);
    let decider = ctx.decider();
    let create = |collection_id| CollectionCommand::Create {
        org: org.clone(),
        collection_id,
        name: body.name.clone(),
        description: body.description.clone(),
    };
    let (create, ctx_ref, decider) = (&create, &ctx, &decider);
    let collection = state
        .runner
        .new_stream(&ctx, move || async move {
            // A fresh id per attempt: the only conflict a new stream can meet is a collision.
            let collection_id = CollectionId::generate();
            let stream = StreamId::collection(&collection_id);
            let events = collection::decide(&None, create(collection_id), decider)?;
            let collection =
                collection::from_history(&ctx_ref.recorded(&events)).ok_or_else(|| {
                    ApiError::internal("a collection decided without CollectionCreated")
                })?;
            Ok(Decision {
                stream,
                expected: ExpectedVersion::NoStream,
                events,
                claim: None,
                answer: collection,
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(collection_view(&collection))).into_response())
}

/// The body of `POST /v1/music/{org}/collections/{collection_id}/tracks`.
#[derive(Deserialize, ToSchema)]
pub struct AddTrack {
    /// A live track of the same organization.
    #[serde(default)]
    #[schema(value_type = String, required = true, pattern = r"^mtrack_[0-9a-f]{12}$", example = "mtrack_b4d9e1c6a72f")]
    track_id: Option<Value>,
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
    Resource { caller, org, id }: Resource<CollectionId>,
    ValidJson(body): ValidJson<AddTrack>,
) -> Result<Response, ApiError> {
    // The track the body names, if it names one; whether it may be added is decided with the
    // collection.
    let track = match collection::requested_track(&body.track_id) {
        Ok(track_id) => tracks::load(&state, &track_id).await?,
        Err(_) => None,
    };
    let ctx = CommandContext::new(&caller);
    let command = CollectionCommand::AddTrack {
        org,
        collection_id: id.clone(),
        track_id: body.track_id,
        track,
    };
    let detail = if change(&state, &ctx, &id, command).await? {
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
    let id: CollectionId = path_id(&collection_id)?;
    let track_id: TrackId = path_id(&track_id)?;
    let ctx = CommandContext::new(&caller);
    let command = CollectionCommand::RemoveTrack {
        org,
        collection_id: id.clone(),
        track_id,
    };
    let detail = if change(&state, &ctx, &id, command).await? {
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
    ordered_track_ids: Option<Value>,
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
    Resource { caller, org, id }: Resource<CollectionId>,
    ValidJson(body): ValidJson<Reorder>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let command = CollectionCommand::Reorder {
        org,
        collection_id: id.clone(),
        ordered_track_ids: body.ordered_track_ids,
    };
    change(&state, &ctx, &id, command).await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Collection reordered."))
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
    Resource { caller, org, id }: Resource<CollectionId>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let command = CollectionCommand::Remove {
        org,
        collection_id: id.clone(),
    };
    change(&state, &ctx, &id, command).await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Collection deleted."))
}
