//! Audit log rows: who did what, from where, with a redacted JSON payload.

use sqlx::{AnyConnection, FromRow};

use super::{new_id, now_ms};

/// A stored audit entry.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    /// Text UUID.
    pub id: String,
    /// Organization the action concerned; `None` for platform events.
    pub org_id: Option<String>,
    /// Acting user, if any.
    pub user_id: Option<String>,
    /// Event name such as `agent_created`.
    pub action: String,
    /// JSON text, secrets already redacted.
    pub payload: String,
    /// Client IP.
    pub ip_address: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// What to record; the id and time are added on insert.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewAudit {
    /// Organization concerned.
    pub org_id: Option<String>,
    /// Acting user.
    pub user_id: Option<String>,
    /// Event name.
    pub action: String,
    /// JSON text (already redacted).
    pub payload: String,
    /// Client IP.
    pub ip_address: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
}

/// Append one entry.
pub async fn insert(conn: &mut AnyConnection, e: &NewAudit) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (id, org_id, user_id, action, payload, ip_address, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id())
    .bind(&e.org_id)
    .bind(&e.user_id)
    .bind(&e.action)
    .bind(&e.payload)
    .bind(&e.ip_address)
    .bind(&e.user_agent)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters for reading the log.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Only this organization (`None` = all; platform transaction only).
    pub org_id: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At or after (unix ms).
    pub from: Option<i64>,
    /// Before (unix ms).
    pub to: Option<i64>,
}

/// A page of entries, newest first, with the total matching.
pub async fn page(
    conn: &mut AnyConnection,
    f: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AuditRow>, i64), sqlx::Error> {
    let where_clause = "(CAST($1 AS TEXT) IS NULL OR org_id = $1) \
        AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
        AND (CAST($3 AS TEXT) IS NULL OR action = $3) \
        AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) \
        AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM audit_logs WHERE {where_clause}"
    )))
    .bind(&f.org_id)
    .bind(&f.user_id)
    .bind(&f.action)
    .bind(f.from)
    .bind(f.to)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, org_id, user_id, action, payload, ip_address, user_agent, created_at FROM audit_logs \
         WHERE {where_clause} ORDER BY created_at DESC, id LIMIT $6 OFFSET $7"
    )))
    .bind(&f.org_id)
    .bind(&f.user_id)
    .bind(&f.action)
    .bind(f.from)
    .bind(f.to)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok((rows, total))
}

/// Delete up to `limit` entries written before `before` (unix ms), oldest
/// first, across organizations (platform transaction); returns how many.
pub async fn delete_before(
    conn: &mut AnyConnection,
    before: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM audit_logs WHERE id IN \
         (SELECT id FROM audit_logs WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
