//! Pending changes of an account's email, stored by the digest of their
//! one-time token until confirmed. Accounts belong to no tenant: every
//! function runs on a platform connection.

use sqlx::{AnyConnection, FromRow};

/// A change of email awaiting its confirmation.
#[derive(Debug, Clone, FromRow)]
pub struct EmailChange {
    /// The account whose email changes.
    pub user_id: String,
    /// The address it changes to (normalised).
    pub new_email: String,
    /// Unix ms after which it cannot be confirmed.
    pub expires_at: i64,
}

/// Store a change for `change.user_id` under the digest of its token,
/// replacing the user's earlier ones (only the latest token works).
pub async fn replace(
    conn: &mut AnyConnection,
    change: &EmailChange,
    token_hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM email_changes WHERE user_id = $1")
        .bind(&change.user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO email_changes (token_hash, user_id, new_email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(&change.user_id)
    .bind(&change.new_email)
    .bind(now)
    .bind(change.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Remove and return `user_id`'s change whose token has this digest, when
/// it has not expired at `now`: a token is used once. An expired one is
/// removed too.
pub async fn take(
    conn: &mut AnyConnection,
    user_id: &str,
    token_hash: &str,
    now: i64,
) -> Result<Option<EmailChange>, sqlx::Error> {
    let change: Option<EmailChange> = sqlx::query_as(
        "DELETE FROM email_changes WHERE token_hash = $1 AND user_id = $2 \
         RETURNING user_id, new_email, expires_at",
    )
    .bind(token_hash)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(change.filter(|c| c.expires_at > now))
}

/// Forget every pending change of `user_id` (its email was set).
pub async fn forget(conn: &mut AnyConnection, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM email_changes WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}
