//! An organization's custom roles: named sets of permissions its members,
//! invitations and API keys may carry (`auth::permissions` reads them).

use serde::Serialize;
use sqlx::{AnyConnection, FromRow};

/// One stored custom role.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RoleRow {
    /// Owning organization.
    pub org_id: String,
    /// Name, unique in the organization and never a built-in role's.
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// JSON array of permission names.
    pub permissions: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str = "org_id, name, description, permissions, created_at, updated_at";

/// The organization's custom roles by name.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<RoleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM org_roles WHERE org_id = $1 ORDER BY name"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// One custom role.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    name: &str,
) -> Result<Option<RoleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM org_roles WHERE org_id = $1 AND name = $2"
    )))
    .bind(org_id)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Insert `row` as given; false when the name is taken.
pub async fn insert(conn: &mut AnyConnection, row: &RoleRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO org_roles ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (org_id, name) DO NOTHING"
    )))
    .bind(&row.org_id)
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.permissions)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replace the description and permissions of `row.name`; false when absent.
pub async fn update(conn: &mut AnyConnection, row: &RoleRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE org_roles SET description = $1, permissions = $2, updated_at = $3 \
         WHERE org_id = $4 AND name = $5",
    )
    .bind(&row.description)
    .bind(&row.permissions)
    .bind(row.updated_at)
    .bind(&row.org_id)
    .bind(&row.name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Delete a custom role; false when absent.
pub async fn delete(
    conn: &mut AnyConnection,
    org_id: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM org_roles WHERE org_id = $1 AND name = $2")
        .bind(org_id)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Who holds `name` in the organization: its members, and the creators of
/// live API keys and pending invitations that carry it.
pub async fn holders(
    conn: &mut AnyConnection,
    org_id: &str,
    name: &str,
) -> Result<RoleHolders, sqlx::Error> {
    let members: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM memberships WHERE org_id = $1 AND role = $2")
            .bind(org_id)
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
    let key_creators: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM api_keys WHERE org_id = $1 AND role = $2 AND revoked_at IS NULL",
    )
    .bind(org_id)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let invitations: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND role = $2 AND accepted_at IS NULL",
    )
    .bind(org_id)
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(RoleHolders {
        members,
        key_creators,
        invitations,
    })
}

/// What carries a custom role (see [`holders`]).
#[derive(Debug, Clone, Default)]
pub struct RoleHolders {
    /// Members holding it.
    pub members: Vec<String>,
    /// Users whose live API keys carry it.
    pub key_creators: Vec<String>,
    /// Pending invitations offering it.
    pub invitations: i64,
}
