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
}

const COLUMNS: &str =
    "id, org_id, user_id, name, role, prefix, created_at, last_used_at, revoked_at";

/// Insert a key by its digest.
pub async fn insert(
    conn: &mut AnyConnection,
    row: &ApiKeyRow,
    key_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, user_id, name, role, key_hash, prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.id)
    .bind(&row.org_id)
    .bind(&row.user_id)
    .bind(&row.name)
    .bind(&row.role)
    .bind(key_hash)
    .bind(&row.prefix)
    .bind(row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Find a live (unrevoked) key by digest (platform transaction: the tenant is not known yet).
pub async fn find_live_by_hash(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    )))
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

/// Revoke a key; false when it does not exist or was already revoked.
pub async fn revoke(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
