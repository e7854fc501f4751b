//! Path parameters that fail in the contract's envelope.
//!
//! Axum's `Path` rejection answers in plain text. A path whose segments cannot be extracted names
//! no resource, so it is a 404 like any other unknown resource. Ids stay strings here and are
//! parsed by the handlers, which know which id a bad segment is and say so in `details`.

use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use events::ids::{CollectionId, OrganizationId, ShareLinkId, TrackId};
use serde::de::DeserializeOwned;
use service_kit::auth::{ApiKeys, Caller};
use service_kit::ApiError;

pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|_| ApiError::not_found("No resource matches this path"))
    }
}

/// What every `/v1/music/{org}/…/{id}` command route starts from, in the order a client is
/// answered: the caller (401 without a known key), the organization they named (404 unless they
/// belong to it), then the resource's id (404 naming the parameter when malformed).
pub struct Resource<I> {
    pub caller: Caller,
    pub org: OrganizationId,
    pub id: I,
}

/// An id that a command route takes from its path, and the parameter's name a 404 gives.
pub trait PathId: Sized {
    const FIELD: &'static str;
    fn parse_path(raw: &str) -> Option<Self>;
}

macro_rules! path_ids {
    ($($id:ident => $field:literal),* $(,)?) => {$(
        impl PathId for $id {
            const FIELD: &'static str = $field;
            fn parse_path(raw: &str) -> Option<Self> {
                $id::parse(raw).ok()
            }
        }
    )*};
}

path_ids!(TrackId => "track_id", CollectionId => "collection_id", ShareLinkId => "share_id");

impl<S, I> FromRequestParts<S> for Resource<I>
where
    ApiKeys: FromRef<S>,
    I: PathId + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let PathParams((org, raw)) =
            PathParams::<(String, String)>::from_request_parts(parts, state).await?;
        let org = caller.member_of(&org)?;
        let id = path_id(&raw)?;
        Ok(Resource { caller, org, id })
    }
}

/// Parses an id from the path; a malformed one is a 404 naming the parameter.
pub fn path_id<I: PathId>(raw: &str) -> Result<I, ApiError> {
    I::parse_path(raw).ok_or_else(|| not_found(I::FIELD, raw))
}

/// The one 404 of the command routes: absent, removed, another organization's, or not the
/// caller's. `details` names the id the caller sent, as the source pages show.
pub fn not_found(field: &str, id: &str) -> ApiError {
    let what = match field {
        "track_id" => "Track",
        "collection_id" => "Collection",
        "share_id" => "Share link",
        _ => "Resource",
    };
    ApiError::not_found(format!("{what} not found or not owned by caller")).with_detail(field, id)
}

/// The path parameters of the command routes, for their OpenAPI operations. Each pattern is the
/// one the route enforces: a segment that does not match is the route's 404.
pub mod docs {
    use utoipa::IntoParams;

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct Org {
        /// The organization (`org_` + 3 to 40 of `[a-z0-9_]`). The caller must belong to it;
        /// otherwise, or when malformed, 404.
        #[param(pattern = r"^org_[a-z0-9_]{3,40}$")]
        org: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct Track {
        /// A track id (`mtrack_` + 12 lowercase hex); malformed is a 404.
        #[param(pattern = r"^mtrack_[0-9a-f]{12}$")]
        track_id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct Collection {
        /// A collection id (`mcoll_` + 12 lowercase hex); malformed is a 404.
        #[param(pattern = r"^mcoll_[0-9a-f]{12}$")]
        collection_id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct Share {
        /// A share link id (`mslink_` + 12 lowercase hex); malformed is a 404.
        #[param(pattern = r"^mslink_[0-9a-f]{12}$")]
        share_id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct Token {
        /// The raw share token from the share `url` (`shr_` + 32 lowercase hex); anything else
        /// is the dead-link 404.
        #[param(pattern = r"^shr_[0-9a-f]{32}$")]
        token: String,
    }
}
