//! Users: global identities (a user may belong to several organizations).

use sqlx::{AnyConnection, FromRow};

use super::now_ms;

/// A stored user. `password_hash` never leaves the server.
#[derive(Debug, Clone, FromRow)]
pub struct User {
    /// Text UUID.
    pub id: String,
    /// Lower-cased, unique.
    pub email: String,
    /// Optional display name.
    pub name: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// `Some("admin")` for platform admins.
    pub platform_role: Option<String>,
    /// Access tokens issued under another epoch are refused: bumping it
    /// ends every session of the user.
    pub session_epoch: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, email, name, password_hash, platform_role, session_epoch, created_at, updated_at";

/// Insert a user.
pub async fn insert(conn: &mut AnyConnection, user: &User) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, platform_role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(&user.platform_role)
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Look a user up by (lower-cased) email.
pub async fn find_by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE email = $1"
    )))
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// Look a user up by id.
pub async fn find_by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Update email, name and password hash (the caller passes current values for unchanged fields).
pub async fn update(conn: &mut AnyConnection, user: &User) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email = $1, name = $2, password_hash = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(now_ms())
    .bind(&user.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether any platform admin exists (first-start bootstrap).
pub async fn platform_admin_exists(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE platform_role = 'admin'")
        .fetch_one(conn)
        .await?;
    Ok(n > 0)
}

/// A page of users, optionally only members of one organization, by email; with the total.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), sqlx::Error> {
    match org_id {
        Some(org) => {
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
                    .bind(org)
                    .fetch_one(&mut *conn)
                    .await?;
            let rows = sqlx::query_as(
                "SELECT u.id, u.email, u.name, u.password_hash, u.platform_role, u.session_epoch, u.created_at, u.updated_at \
                 FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.org_id = $1 \
                 ORDER BY u.email LIMIT $2 OFFSET $3",
            )
            .bind(org)
            .bind(limit)
            .bind(offset)
            .fetch_all(conn)
            .await?;
            Ok((rows, total))
        }
        None => {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut *conn)
                .await?;
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM users ORDER BY email LIMIT $1 OFFSET $2"
            )))
            .bind(limit)
            .bind(offset)
            .fetch_all(conn)
            .await?;
            Ok((rows, total))
        }
    }
}

/// End every session of the user (a password change): bumps the session
/// epoch, so tokens issued before are refused on every instance. Returns
/// the new epoch, for the token issued to the caller.
pub async fn end_sessions(conn: &mut AnyConnection, id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1 RETURNING session_epoch",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// What a user may do in one organization right now: read for every
/// credential it presents (cached briefly, see `auth::verified`).
#[derive(Debug, Clone, FromRow)]
pub struct Standing {
    /// `Some("admin")` for platform admins.
    pub platform_role: Option<String>,
    /// The user's role in the organization; `None` when not a member.
    pub member_role: Option<String>,
    /// The user's current session epoch.
    pub session_epoch: i64,
    /// The permissions of `member_role` when it is one of the
    /// organization's custom roles (stored form).
    pub role_permissions: Option<String>,
}

/// The user's standing in `org_id`; `None` when the user no longer exists.
/// Reads across tenants (a platform transaction): the credential is not
/// trusted yet.
pub async fn standing(
    conn: &mut AnyConnection,
    user_id: &str,
    org_id: &str,
) -> Result<Option<Standing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.platform_role, m.role AS member_role, u.session_epoch, \
         r.permissions AS role_permissions FROM users u \
         LEFT JOIN memberships m ON m.user_id = u.id AND m.org_id = $2 \
         LEFT JOIN org_roles r ON r.org_id = m.org_id AND r.name = m.role WHERE u.id = $1",
    )
    .bind(user_id)
    .bind(org_id)
    .fetch_optional(conn)
    .await
}
