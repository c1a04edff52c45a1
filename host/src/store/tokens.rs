//! Revoked access tokens (logout, refresh), kept in the database so every
//! instance refuses them, until they would have expired anyway.

use sqlx::{AnyConnection, AnyPool};

use super::now_ms;

/// Revoke a token id until `expires_at` (unix ms). Revoking twice is
/// fine; only the first revocation returns true, so of concurrent refreshes
/// of one token exactly one wins.
pub async fn revoke(
    conn: &mut AnyConnection,
    jti: &str,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a token id has been revoked.
pub async fn is_revoked(conn: &mut AnyConnection, jti: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1")
        .bind(jti)
        .fetch_one(conn)
        .await?;
    Ok(n > 0)
}

/// Drop entries whose tokens have expired (they are refused by expiry now).
pub async fn purge_expired(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
        .bind(now_ms())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
