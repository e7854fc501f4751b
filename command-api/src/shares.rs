//! Share links: create one for a track or a collection, and revoke it.
//!
//! A share's stream is `share-{id}`. The raw token comes from the OS CSPRNG and leaves this
//! process exactly once, in the `201` body; `ShareCreated` and the token index carry only its
//! SHA-256. The index row (`command_side.share_tokens`) never comes after the event. With the
//! PostgreSQL event store it is written by the append's own statement (an [`events::Claim`]), so
//! the row and `ShareCreated` commit together; with another store it is written just before the
//! event: if the append then fails, the row points at an empty stream, which every reader takes
//! as "no such share". The other order could leave a live share that no token finds.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::event::{TargetType, Visibility};
use events::format::rfc3339;
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId};
use events::password::{PasswordHash, SharePassword};
use events::share_token::ShareToken;
use events::{Claim, ExpectedVersion, StreamId};
use serde::Serialize;
use service_kit::auth::Caller;
use service_kit::error::ErrorEnvelope;
use service_kit::json::OptionalJson;
use service_kit::server::{ack, Ack};
use service_kit::ApiError;
use sqlx::PgPool;
use utoipa::{IntoResponses, ToSchema};

use crate::app::AppState;
use crate::domain::share::{
    self, positive_integer_up_to_max_views, CreateShare, ShareCommand, ShareLink, ShareRequest,
    ShareTarget,
};
use crate::params::{docs, Resource};
use crate::runner::{Attempt, CommandContext, Decision};
use crate::{collections, tracks};

/// Reads a share link's stream.
pub async fn load(state: &AppState, id: &ShareLinkId) -> Result<Option<ShareLink>, ApiError> {
    let history = state.runner.read(&StreamId::share(id)).await?;
    Ok(share::from_history(&history.events))
}

/// A share link at creation: the only response that ever shows its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareLinkObject {
    #[schema(example = "mslink_8c4e2a9f1b73")]
    pub id: String,
    /// The raw token. Shown only once: only its hash is stored.
    #[schema(
        pattern = r"^shr_[0-9a-f]{32}$",
        example = "shr_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
    )]
    pub token: String,
    /// `{PUBLIC_BASE_URL}/v1/music/shared/{token}`: opens the share without signing in.
    pub url: String,
    #[serde(flatten)]
    pub settings: LinkSettings,
    /// UTC, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// What a link points at and how it may be opened: the same fields, with the same meaning, in
/// every answer of the command API about one share link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkSettings {
    pub target_type: TargetType,
    pub target_id: String,
    pub visibility: Visibility,
    /// UTC, whole seconds; null: never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Null: no limit.
    #[schema(required = true, schema_with = positive_integer_up_to_max_views)]
    pub max_views: Option<u32>,
    /// Whether opening the link needs its password.
    pub password_protected: bool,
    /// The owner's own note; null: none.
    #[schema(required = true)]
    pub label: Option<String>,
}

impl LinkSettings {
    pub fn of(link: &ShareLink) -> Self {
        let facts = &link.facts;
        LinkSettings {
            target_type: facts.target_type,
            target_id: facts.target_id.clone(),
            visibility: facts.visibility,
            expires_at: facts.expires_at.map(rfc3339),
            max_views: facts.max_views,
            password_protected: facts.password_hash.is_some(),
            label: facts.label.clone(),
        }
    }
}

/// What both share routes answer, for their OpenAPI operations (the handlers answer
/// `Response`s; this only documents them).
#[derive(IntoResponses)]
#[allow(dead_code)]
enum ShareResponses {
    /// The new share link.
    #[response(
        status = 201,
        headers(("Cache-Control" = String, description = "`no-store`: the body holds a secret shown once."))
    )]
    Created(ShareLinkObject),
    /// Malformed JSON, or a `Content-Type` other than JSON.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// No such live track or collection of the caller's (the one the path names).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// The body is larger than 2 MiB.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// A field is wrong; `details` names each.
    #[response(status = 422)]
    Invalid(ErrorEnvelope),
    /// The database or the event store is down.
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

/// What every route on one share link of the caller's may also answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum LinkErrors {
    /// No such share link of the caller's.
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// The database or the event store is down, or the link kept changing.
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

/// The two share routes differ only in their path and in what the link points at: one
/// declaration for both, so their documentation and their handling cannot drift apart.
macro_rules! share_route {
    ($(#[$doc:meta])* $name:ident, $path:tt, $param:path, $id:ident, $kind:ident, $load:path) => {
        $(#[$doc])*
        #[utoipa::path(
            post,
            path = $path,
            operation_id = stringify!($name),
            tag = "shares",
            params(docs::Org, $param),
            // A `ref`, not `Option<ShareRequest>`: the body is optional, but `null` is not a body.
            request_body(
                content = ref("#/components/schemas/ShareRequest"),
                content_type = "application/json",
                description = "Optional: no body, an empty body or no `Content-Type` means the defaults.",
            ),
            responses(ShareResponses),
            security(("api_key" = []), ("bearer" = [])),
        )]
        pub async fn $name(
            State(state): State<AppState>,
            Resource { caller, org, id }: Resource<$id>,
            OptionalJson(body): OptionalJson<ShareRequest>,
        ) -> Result<Response, ApiError> {
            let target = ShareTarget::$kind {
                state: $load(&state, &id).await?,
                id,
            };
            create(&state, &caller, org, target, body).await
        }
    };
}

share_route!(
    /// Share a track: a new link, its raw token shown this once. The track's creator only.
    share_track,
    "/v1/music/{org}/tracks/{track_id}/share",
    docs::Track,
    TrackId,
    Track,
    tracks::load
);

share_route!(
    /// Share a collection: a new link, its raw token shown this once. The collection's creator only.
    share_collection,
    "/v1/music/{org}/collections/{collection_id}/share",
    docs::Collection,
    CollectionId,
    Collection,
    collections::load
);

/// Both share routes: decide on the loaded target, then index the token and append, under a
/// fresh id and token per attempt (a new share can only conflict on a collision).
async fn create(
    state: &AppState,
    caller: &Caller,
    org: OrganizationId,
    target: ShareTarget,
    body: ShareRequest,
) -> Result<Response, ApiError> {
    let password_hash = match body.settable_password() {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let ctx = CommandContext::new(caller);
    let decider = ctx.decider();
    let (org, target, body, decider, ctx_ref) = (&org, &target, &body, &decider, &ctx);
    let password_hash = &password_hash;
    let (link, token) = state
        .runner
        .new_stream(&ctx, move || async move {
            let token = ShareToken::generate();
            let command = CreateShare {
                org: org.clone(),
                target: target.clone(),
                share_id: ShareLinkId::generate(),
                token_hash: token.hash(),
                body: body.clone(),
                password_hash: password_hash.clone(),
            };
            let share_id = command.share_id.clone();
            // Decided before the token is indexed: a refused command writes nothing.
            let events = share::decide(&None, ShareCommand::Create(command), decider)?;
            let link = share::from_history(&ctx_ref.recorded(&events))
                .ok_or_else(|| ApiError::internal("a share decided without ShareCreated"))?;
            let claim = index_token(state, &token, &share_id).await?;
            Ok(Decision {
                stream: StreamId::share(&share_id),
                expected: ExpectedVersion::NoStream,
                events,
                claim,
                answer: (link, token),
            })
        })
        .await?;
    Ok(created(link_object(state, link, &token)))
}

/// `201` with `Cache-Control: no-store`: the body holds a secret shown once.
pub fn created(link: ShareLinkObject) -> Response {
    let mut response = (StatusCode::CREATED, Json(link)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Hashes an owner's new password on a blocking thread: Argon2id takes tens of milliseconds
/// of CPU, which must not stall the executor.
pub async fn hash_password(password: SharePassword) -> Result<PasswordHash, ApiError> {
    tokio::task::spawn_blocking(move || password.hash())
        .await
        .map_err(ApiError::internal)
}

/// The link as it is now, with `token` (just drawn: creation or rotation) shown this once.
pub fn link_object(state: &AppState, link: ShareLink, token: &ShareToken) -> ShareLinkObject {
    ShareLinkObject {
        id: link.facts.share_id.to_string(),
        token: token.expose().to_owned(),
        url: format!(
            "{}/v1/music/shared/{}",
            state.settings.public_base_url,
            token.expose()
        ),
        settings: LinkSettings::of(&link),
        created_at: rfc3339(link.created_at),
    }
}

/// Inserts a batch of token index rows for the event store (see [`Claim`]): hashes `$1`, shares
/// `$2`.
const INDEX_TOKENS: &str = "INSERT INTO command_side.share_tokens (token_hash, share_id) \
     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING \
     RETURNING token_hash, share_id";

/// Records which share a token's hash belongs to, before or with the append that makes the token
/// the share's. A hash already taken (astronomically unlikely) is a conflict either way: the
/// attempt is made again with a new token. A share id drawn twice is caught by its stream's
/// `ExpectedVersion::NoStream` instead; since a rotation adds a row per token, one share may have
/// several rows, and its stream says which token is current.
///
/// When the event log lives in this same PostgreSQL database, the answer is the [`Claim`] the
/// append writes in its own statement: no round trip and no commit of its own. With another
/// event store the row is written (and flushed) here, and the answer is `None`.
pub async fn index_token(
    state: &AppState,
    token: &ShareToken,
    share_id: &ShareLinkId,
) -> Result<Option<Claim>, Attempt> {
    if state.settings.index_in_append {
        return Ok(Some(Claim {
            insert: INDEX_TOKENS,
            key: token.hash().as_str().to_owned(),
            owner: share_id.as_str().to_owned(),
        }));
    }
    let inserted = sqlx::query(
        "INSERT INTO command_side.share_tokens (token_hash, share_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(token.hash().as_str())
    .bind(share_id.as_str())
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() == 1 {
        Ok(None)
    } else {
        Err(Attempt::Conflict)
    }
}

/// The share a token's hash names in the index, if any (the token may be one a rotation
/// retired: the share's stream says which is current).
pub async fn find_by_token(
    pool: &PgPool,
    token: &ShareToken,
) -> Result<Option<ShareLinkId>, sqlx::Error> {
    let share_id: Option<String> =
        sqlx::query_scalar("SELECT share_id FROM command_side.share_tokens WHERE token_hash = $1")
            .bind(token.hash().as_str())
            .fetch_optional(pool)
            .await?;
    Ok(share_id.and_then(|id| ShareLinkId::parse(&id).ok()))
}

/// Revoke a share link: the creator only; idempotent. Tracks saved through it stay saved.
#[utoipa::path(
    delete,
    path = "/v1/music/{org}/share/{share_id}",
    operation_id = "revoke_share",
    tag = "shares",
    params(docs::Org, docs::Share),
    responses(
        (status = 200, description = "Revoked, now or before (`detail`: \"Share link revoked.\").", body = Ack),
        LinkErrors,
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Resource { caller, org, id }: Resource<ShareLinkId>,
) -> Result<Response, ApiError> {
    let ctx = CommandContext::new(&caller);
    let (decider, command) = (
        ctx.decider(),
        ShareCommand::Revoke {
            org,
            share_id: id.clone(),
        },
    );
    state
        .runner
        .on_stream(&ctx, &StreamId::share(&id), |history| {
            let link = share::from_history(&history.events);
            Ok((share::decide(&link, command.clone(), &decider)?, ()))
        })
        .await?;
    Ok(ack(StatusCode::OK, id.as_str(), "Share link revoked."))
}
