//! Invitations to an organization: the only way an organization's admin
//! brings a person in. Stored by the digest of their one-time token.

use sqlx::{AnyConnection, FromRow};

/// A stored invitation (the token itself is never stored).
#[derive(Debug, Clone, FromRow)]
pub struct Invitation {
    /// Text UUID.
    pub id: String,
    /// The organization the invitee joins.
    pub org_id: String,
    /// Who is invited (normalised).
    pub email: String,
    /// The role the invitee gets.
    pub role: String,
    /// The inviting user.
    pub invited_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which it cannot be accepted.
    pub expires_at: i64,
    /// Unix ms of acceptance.
    pub accepted_at: Option<i64>,
    /// The user who accepted.
    pub accepted_by: Option<String>,
}

const COLUMNS: &str =
    "id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, accepted_by";

/// Insert `invitation` with the digest of its token.
pub async fn insert(
    conn: &mut AnyConnection,
    invitation: &Invitation,
    token_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&invitation.id)
    .bind(&invitation.org_id)
    .bind(&invitation.email)
    .bind(&invitation.role)
    .bind(token_hash)
    .bind(&invitation.invited_by)
    .bind(invitation.created_at)
    .bind(invitation.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The open invitation (not accepted, not expired at `now`) whose token has
/// this digest. Cross-tenant: call on a platform transaction.
pub async fn find_open_by_token(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> Result<Option<Invitation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invitations \
         WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2"
    )))
    .bind(token_hash)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// Mark invitation `id` accepted by `user_id`; false when it was accepted
/// meanwhile (a token is used once).
pub async fn accept(
    conn: &mut AnyConnection,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
         WHERE id = $3 AND accepted_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The organization's open invitations at `now`, newest first.
pub async fn open(
    conn: &mut AnyConnection,
    org_id: &str,
    now: i64,
) -> Result<Vec<Invitation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invitations \
         WHERE org_id = $1 AND accepted_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC, id"
    )))
    .bind(org_id)
    .bind(now)
    .fetch_all(conn)
    .await
}
