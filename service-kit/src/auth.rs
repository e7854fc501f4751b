//! API-key authentication, shared by the command API and the query API's share list.
//!
//! Keys are `msk_` + 40 lowercase hex, sent as `X-API-Key` or `Authorization: Bearer`. Only their
//! SHA-256 is stored (`identity.api_keys`). Verified keys are cached for a short while, so a busy
//! client costs one hash per request, not one query; a revoked key or a new membership takes
//! effect within [`CACHE_TTL`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use events::ids::{OrganizationId, UserId};
use moka::future::Cache;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::ApiError;

pub const CACHE_TTL: Duration = Duration::from_secs(30);
const KEY_PREFIX: &str = "msk_";

/// A new raw key and the hash to store. The raw key is shown once and never kept.
pub fn generate_key() -> (String, String) {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let raw = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let hash = hash_key(&raw);
    (raw, hash)
}

pub fn hash_key(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

fn is_well_formed(raw: &str) -> bool {
    raw.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == 40 && events::format::is_lower_hex(rest))
}

/// The authenticated user behind a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: UserId,
    pub organizations: Arc<[OrganizationId]>,
}

impl Caller {
    /// The organization named in the path, if the caller belongs to it. Anything else, a
    /// malformed id included, is a 404: a stranger learns nothing about which organizations exist.
    pub fn member_of(&self, organization: &str) -> Result<OrganizationId, ApiError> {
        self.organizations
            .iter()
            .find(|o| o.as_str() == organization)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found("Organization not found or caller is not a member")
                    .with_detail("organization_id", organization)
            })
    }
}

/// Verifies API keys against `identity.api_keys`, with a short cache.
#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
    cache: Cache<String, Option<Caller>>,
}

impl ApiKeys {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// The caller for a raw key, or `None` for an unknown or revoked one.
    pub async fn verify(&self, raw: &str) -> Result<Option<Caller>, ApiError> {
        if !is_well_formed(raw) {
            return Ok(None);
        }
        let hash = hash_key(raw);
        let pool = self.pool.clone();
        self.cache
            .try_get_with(hash.clone(), async move { lookup(&pool, &hash).await })
            .await
            .map_err(|e: Arc<sqlx::Error>| match Arc::try_unwrap(e) {
                Ok(e) => ApiError::from(e),
                Err(shared) => ApiError::from(clone_sqlx_error(&shared)),
            })
    }
}

async fn lookup(pool: &PgPool, key_hash: &str) -> Result<Option<Caller>, sqlx::Error> {
    let row: Option<(String, Vec<String>)> = sqlx::query_as(
        "SELECT k.user_id, coalesce(array_agg(m.organization_id ORDER BY m.organization_id) \
                FILTER (WHERE m.organization_id IS NOT NULL), '{}') \
           FROM identity.api_keys k \
           LEFT JOIN identity.memberships m ON m.user_id = k.user_id \
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
          GROUP BY k.user_id",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(user, orgs)| {
        let user_id = UserId::parse(&user).ok()?;
        let organizations = orgs
            .iter()
            .filter_map(|o| OrganizationId::parse(o).ok())
            .collect();
        Some(Caller {
            user_id,
            organizations,
        })
    }))
}

/// moka shares one error among every waiter; keep what matters for the status code.
fn clone_sqlx_error(e: &sqlx::Error) -> sqlx::Error {
    if events::store::postgres::is_unavailable(e) {
        sqlx::Error::PoolTimedOut
    } else {
        sqlx::Error::Protocol(e.to_string())
    }
}

/// The raw key from `X-API-Key` or `Authorization: Bearer`.
fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let auth = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> FromRequestParts<S> for Caller
where
    ApiKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Some(raw) = presented_key(parts) else {
            return Err(ApiError::authentication_required());
        };
        let keys = ApiKeys::from_ref(state);
        match keys.verify(raw).await? {
            Some(caller) => {
                tracing::Span::current().record("user_id", caller.user_id.as_str());
                Ok(caller)
            }
            None => Err(ApiError::authentication_required()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_hash_to_hex() {
        let (raw, hash) = generate_key();
        assert!(is_well_formed(&raw));
        assert_eq!(raw.len(), 44);
        assert_eq!(hash, hash_key(&raw));
        assert_eq!(hash.len(), 64);
        assert!(!is_well_formed("msk_short"));
    }
}
