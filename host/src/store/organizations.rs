//! Organizations (tenants) and memberships (who belongs to which
//! organization, with which role).

use sqlx::{AnyConnection, FromRow};

use super::{new_id, now_ms};
use crate::orchestrator::dispatch::StreamFailover;

/// One tenant.
#[derive(Debug, Clone, FromRow)]
pub struct Organization {
    /// Text UUID.
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A user's membership in an organization, joined with the user's identity.
#[derive(Debug, Clone, FromRow)]
pub struct Member {
    /// The member's user id.
    pub user_id: String,
    /// The member's email.
    pub email: String,
    /// The member's display name.
    pub name: Option<String>,
    /// `org_admin`, `agent_manager`, `task_executor` or `viewer`.
    pub role: String,
    /// Unix ms the membership was created.
    pub created_at: i64,
}

/// One membership of a user, as seen at login.
#[derive(Debug, Clone, FromRow)]
pub struct Membership {
    /// The organization.
    pub org_id: String,
    /// The role in it.
    pub role: String,
}

/// Insert an organization (platform transaction on PostgreSQL).
pub async fn insert(conn: &mut AnyConnection, name: &str) -> Result<Organization, sqlx::Error> {
    let now = now_ms();
    let org = Organization {
        id: new_id(),
        name: name.to_string(),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(org)
}

/// One organization by id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Organization>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at, updated_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The organization with this name, if any.
pub async fn find_by_name(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<Organization>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at, updated_at FROM organizations WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Organizations the given user belongs to (or all, for `None`), by name.
pub async fn list(
    conn: &mut AnyConnection,
    member: Option<&str>,
) -> Result<Vec<Organization>, sqlx::Error> {
    match member {
        Some(user_id) => {
            sqlx::query_as(
                "SELECT o.id, o.name, o.created_at, o.updated_at FROM organizations o \
                 JOIN memberships m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.name",
            )
            .bind(user_id)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT id, name, created_at, updated_at FROM organizations ORDER BY name",
            )
            .fetch_all(conn)
            .await
        }
    }
}

/// Add a user to an organization with a role.
pub async fn add_member(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Change a member's role; false when the user is not a member.
pub async fn set_role(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    role: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET role = $1, updated_at = $2 WHERE org_id = $3 AND user_id = $4",
    )
    .bind(role)
    .bind(now_ms())
    .bind(org_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Remove a member; false when the user was not one.
pub async fn remove_member(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// One member of an organization.
pub async fn get_member(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, u.name, m.role, m.created_at FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Every member of an organization, by email.
pub async fn list_members(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, u.name, m.role, m.created_at FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.email",
    )
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// Number of `org_admin` members, so the last one cannot be removed.
pub async fn count_admins(conn: &mut AnyConnection, org_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'org_admin'")
        .bind(org_id)
        .fetch_one(conn)
        .await
}

/// A user's memberships, oldest first (platform transaction: crosses tenants).
pub async fn memberships_of(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Vec<Membership>, sqlx::Error> {
    sqlx::query_as(
        "SELECT org_id, role FROM memberships WHERE user_id = $1 ORDER BY created_at, org_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// What an organization set for its dispatches (the dispatcher's
/// per-organization catalogue holds it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchSettings {
    /// Its routing policy (router plugin name), if it set one.
    pub routing_policy: Option<String>,
    /// Its stream failover mode, if it set one.
    pub stream_failover: Option<StreamFailover>,
}

/// The organization's dispatch settings (all unset when it does not exist).
pub async fn dispatch_settings(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<DispatchSettings, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT routing_policy, stream_failover FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(conn)
            .await?;
    let Some((routing_policy, stream_failover)) = row else {
        return Ok(DispatchSettings::default());
    };
    let stream_failover = match stream_failover {
        None => None,
        Some(name) => Some(StreamFailover::parse(&name).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown stream_failover {name:?}").into())
        })?),
    };
    Ok(DispatchSettings {
        routing_policy,
        stream_failover,
    })
}

/// Set (or clear) the organization's stream failover mode; false when the
/// organization does not exist.
pub async fn set_stream_failover(
    conn: &mut AnyConnection,
    org_id: &str,
    mode: Option<StreamFailover>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE organizations SET stream_failover = $2 WHERE id = $1")
        .bind(org_id)
        .bind(mode.map(StreamFailover::as_str))
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Set (or clear) the organization's routing policy.
pub async fn set_routing_policy(
    conn: &mut AnyConnection,
    org_id: &str,
    router: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE organizations SET routing_policy = $2 WHERE id = $1")
        .bind(org_id)
        .bind(router)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
