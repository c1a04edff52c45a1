//! API keys for machine clients, stored as sha256 digests.

use sqlx::{AnyConnection, FromRow};

use super::now_ms;

/// A stored key (the key itself is never stored).
#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    /// Text UUID.
    pub id: String,
    /// Organization the key acts in.
    pub org_id: String,
    /// User who created it (the key acts as this user).
    pub user_id: String,
    /// Label.
    pub name: String,
    /// Role the key carries.
    pub role: String,
    /// First characters of the key, for recognition.
    pub prefix: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of last use.
    pub last_used_at: Option<i64>,
    /// Unix ms of revocation.
    pub revoked_at: Option<i64>,
    /// Unix ms after which the key is refused; `None`: no expiry.
    pub expires_at: Option<i64>,
    /// Why the key was revoked: `revoked` (by an org_admin) or
    /// `creator_removed` (its creator left the organization).
    pub revoked_reason: Option<String>,
}

const COLUMNS: &str = "id, org_id, user_id, name, role, prefix, created_at, last_used_at, \
     revoked_at, expires_at, revoked_reason";

/// Why a key was revoked, as stored in `revoked_reason`.
pub mod reason {
    /// An org_admin revoked it.
    pub const REVOKED: &str = "revoked";
    /// Its creator was removed from the organization.
    pub const CREATOR_REMOVED: &str = "creator_removed";
}

/// A live key with its creator's current standing in the key's
/// organization: a key never acts above its creator.
#[derive(Debug, Clone, FromRow)]
pub struct LiveKey {
    /// The key.
    #[sqlx(flatten)]
    pub key: ApiKeyRow,
    /// The creator's platform role (`Some("admin")`).
    pub creator_platform_role: Option<String>,
    /// The creator's role in the key's organization; `None` when no longer a member.
    pub creator_member_role: Option<String>,
    /// The permissions of the creator's role when it is a custom role.
    pub creator_role_permissions: Option<String>,
    /// The permissions of the key's role when it is a custom role.
    pub key_role_permissions: Option<String>,
}

/// Insert a key by its digest.
pub async fn insert(
    conn: &mut AnyConnection,
    row: &ApiKeyRow,
    key_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, user_id, name, role, key_hash, prefix, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&row.id)
    .bind(&row.org_id)
    .bind(&row.user_id)
    .bind(&row.name)
    .bind(&row.role)
    .bind(key_hash)
    .bind(&row.prefix)
    .bind(row.created_at)
    .bind(row.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Find an unrevoked key by digest, with its creator's standing
/// (platform transaction: the tenant is not known yet). Expiry is the
/// caller's to check, at every use.
pub async fn find_live_by_hash(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> Result<Option<LiveKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id, k.org_id, k.user_id, k.name, k.role, k.prefix, k.created_at, \
         k.last_used_at, k.revoked_at, k.expires_at, k.revoked_reason, \
         u.platform_role AS creator_platform_role, m.role AS creator_member_role, \
         cr.permissions AS creator_role_permissions, kr.permissions AS key_role_permissions \
         FROM api_keys k JOIN users u ON u.id = k.user_id \
         LEFT JOIN memberships m ON m.org_id = k.org_id AND m.user_id = k.user_id \
         LEFT JOIN org_roles cr ON cr.org_id = k.org_id AND cr.name = m.role \
         LEFT JOIN org_roles kr ON kr.org_id = k.org_id AND kr.name = k.role \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(conn)
    .await
}

/// How stale `last_used_at` may get before a use rewrites it.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// Record a use (coarse, to avoid a write per request).
pub async fn touch(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
    )
    .bind(now)
    .bind(id)
    .bind(now - TOUCH_EVERY_MS)
    .execute(conn)
    .await?;
    Ok(())
}

/// The organization's keys, newest first.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at DESC, id"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// One key of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Revoke a key by an org_admin's decision; false when it does not exist
/// or was already revoked.
pub async fn revoke(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1, revoked_reason = $2 \
         WHERE org_id = $3 AND id = $4 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(reason::REVOKED)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The unrevoked keys `user_id` created in the organization.
pub async fn live_of_creator(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE org_id = $1 AND user_id = $2 \
         AND revoked_at IS NULL ORDER BY created_at, id"
    )))
    .bind(org_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Revoke every unrevoked key `user_id` created in the organization, for
/// `why` (one of [`reason`]); returns their ids.
pub async fn revoke_of_creator(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    why: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<String> = live_of_creator(&mut *conn, org_id, user_id)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect();
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $1, revoked_reason = $2 \
         WHERE org_id = $3 AND user_id = $4 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(why)
    .bind(org_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(ids)
}
