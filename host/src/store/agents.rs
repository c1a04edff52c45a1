//! Agents and their configuration history. Every function takes the
//! organization id and filters by it; deleted agents are invisible.

use sqlx::{AnyConnection, FromRow};

use super::{new_id, now_ms};

/// A stored agent; `config` is the JSON text of the validated configuration.
#[derive(Debug, Clone, FromRow)]
pub struct Agent {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Creator.
    pub created_by: Option<String>,
    /// Display name (≤ 100 chars).
    pub name: String,
    /// `mcp_orchestrator`, `code_generator` or `researcher`.
    pub agent_type: String,
    /// `pending`, `active`, `inactive` or `error`.
    pub status: String,
    /// JSON text.
    pub config: String,
    /// Incremented on every config change; matches the history's latest version.
    pub config_version: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms of the last dry run (`POST /api/agents/{id}/test`).
    pub last_test_at: Option<i64>,
    /// JSON text of that dry run's result.
    pub last_test_result: Option<String>,
}

/// One past (or the current) configuration of an agent.
#[derive(Debug, Clone, FromRow)]
pub struct ConfigVersion {
    /// Version number, from 1.
    pub version: i64,
    /// JSON text.
    pub config: String,
    /// Who made the change.
    pub changed_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

const COLUMNS: &str = "id, org_id, created_by, name, agent_type, status, config, config_version, created_at, updated_at, \
    last_test_at, last_test_result";

/// Fields a caller supplies to create an agent.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    /// Owning organization.
    pub org_id: &'a str,
    /// Creator.
    pub created_by: &'a str,
    /// Name.
    pub name: &'a str,
    /// Type.
    pub agent_type: &'a str,
    /// Status.
    pub status: &'a str,
    /// JSON text.
    pub config: &'a str,
}

/// Insert an agent and its version-1 history row.
pub async fn insert(conn: &mut AnyConnection, new: NewAgent<'_>) -> Result<Agent, sqlx::Error> {
    let now = now_ms();
    let agent = Agent {
        id: new_id(),
        org_id: new.org_id.to_string(),
        created_by: Some(new.created_by.to_string()),
        name: new.name.to_string(),
        agent_type: new.agent_type.to_string(),
        status: new.status.to_string(),
        config: new.config.to_string(),
        config_version: 1,
        created_at: now,
        updated_at: now,
        last_test_at: None,
        last_test_result: None,
    };
    sqlx::query(
        "INSERT INTO agents (id, org_id, created_by, name, agent_type, status, config, config_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&agent.id)
    .bind(&agent.org_id)
    .bind(&agent.created_by)
    .bind(&agent.name)
    .bind(&agent.agent_type)
    .bind(&agent.status)
    .bind(&agent.config)
    .bind(agent.config_version)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    insert_history(conn, &agent, new.created_by).await?;
    Ok(agent)
}

async fn insert_history(
    conn: &mut AnyConnection,
    agent: &Agent,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_config_history (id, org_id, agent_id, version, config, changed_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(&agent.org_id)
    .bind(&agent.id)
    .bind(agent.config_version)
    .bind(&agent.config)
    .bind(by)
    .bind(agent.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One live agent of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE org_id = $1 AND id = $2 AND deleted_at IS NULL"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Filters for listing agents.
#[derive(Debug, Default, Clone)]
pub struct AgentFilter {
    /// Only this type.
    pub agent_type: Option<String>,
    /// Only this status.
    pub status: Option<String>,
}

/// A page of live agents, newest first, with the total matching.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: &str,
    filter: &AgentFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Agent>, i64), sqlx::Error> {
    // `$2 IS NULL OR …` keeps one statement for every filter combination.
    let where_clause = "org_id = $1 AND deleted_at IS NULL \
         AND (CAST($2 AS TEXT) IS NULL OR agent_type = $2) AND (CAST($3 AS TEXT) IS NULL OR status = $3)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM agents WHERE {where_clause}"
    )))
    .bind(org_id)
    .bind(&filter.agent_type)
    .bind(&filter.status)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE {where_clause} ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"
    )))
    .bind(org_id)
    .bind(&filter.agent_type)
    .bind(&filter.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok((rows, total))
}

/// Store an updated agent; when the config changed, bump its version and
/// append to the history.
pub async fn update(
    conn: &mut AnyConnection,
    agent: &mut Agent,
    config_changed: bool,
    by: &str,
) -> Result<(), sqlx::Error> {
    agent.updated_at = now_ms();
    if config_changed {
        agent.config_version += 1;
    }
    sqlx::query(
        "UPDATE agents SET name = $1, agent_type = $2, status = $3, config = $4, config_version = $5, updated_at = $6 \
         WHERE org_id = $7 AND id = $8 AND deleted_at IS NULL",
    )
    .bind(&agent.name)
    .bind(&agent.agent_type)
    .bind(&agent.status)
    .bind(&agent.config)
    .bind(agent.config_version)
    .bind(agent.updated_at)
    .bind(&agent.org_id)
    .bind(&agent.id)
    .execute(&mut *conn)
    .await?;
    if config_changed {
        insert_history(conn, agent, by).await?;
    }
    Ok(())
}

/// Soft-delete: the row stays (tasks and history keep their reference) but
/// the agent disappears from the API. False when there was no live agent.
pub async fn soft_delete(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE agents SET deleted_at = $1, updated_at = $1, status = 'inactive' \
         WHERE org_id = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An agent's configuration history, newest first.
pub async fn history(
    conn: &mut AnyConnection,
    org_id: &str,
    agent_id: &str,
) -> Result<Vec<ConfigVersion>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, config, changed_by, created_at FROM agent_config_history \
         WHERE org_id = $1 AND agent_id = $2 ORDER BY version DESC",
    )
    .bind(org_id)
    .bind(agent_id)
    .fetch_all(conn)
    .await
}

/// Record the result of a dry run (only the test columns, so a concurrent
/// edit of the agent is not overwritten, and `updated_at` stays: testing
/// does not change the agent); false when there is no live agent.
pub async fn record_test(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    at: i64,
    result_json: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE agents SET last_test_at = $1, last_test_result = $2 \
         WHERE org_id = $3 AND id = $4 AND deleted_at IS NULL",
    )
    .bind(at)
    .bind(result_json)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
