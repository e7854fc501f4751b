//! Organizations, users, memberships and API keys: the tables the command side owns for
//! authentication. Written only by `command-api admin create-key`; requests read them through
//! [`service_kit::auth::ApiKeys`].

use events::ids::{OrganizationId, UserId};
use sqlx::PgPool;

/// Creates whatever is missing of `user`, `orgs` and the memberships, then a new API key for the
/// user. Returns the raw key, which exists nowhere else: only its SHA-256 is stored.
pub async fn create_key(
    pool: &PgPool,
    user: &UserId,
    orgs: &[OrganizationId],
) -> Result<String, sqlx::Error> {
    let (raw, hash) = service_kit::auth::generate_key();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO identity.users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
    for org in orgs {
        sqlx::query(
            "INSERT INTO identity.organizations (organization_id) VALUES ($1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO identity.memberships (organization_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("INSERT INTO identity.api_keys (key_hash, user_id) VALUES ($1, $2)")
        .bind(&hash)
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(raw)
}

/// clap value parser for `--org`: a clear message, and clap's exit code 2, for a bad id.
pub fn parse_organization(raw: &str) -> Result<OrganizationId, String> {
    OrganizationId::parse(raw).map_err(|_| {
        format!("{raw:?} is not an organization id (org_ followed by 3 to 40 of a-z, 0-9, _)")
    })
}

/// clap value parser for `--user`.
pub fn parse_user(raw: &str) -> Result<UserId, String> {
    UserId::parse(raw)
        .map_err(|_| format!("{raw:?} is not a user id (usr_ followed by 12 lowercase hex)"))
}
