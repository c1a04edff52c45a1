//! Alerts: what needs a tenant admin's attention (a budget threshold
//! passed, …), kept as history and acknowledged once seen.

use serde::Serialize;
use sqlx::{AnyConnection, FromRow};

/// One stored alert.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AlertRow {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// What kind of alert (`budget_threshold`, …).
    pub kind: String,
    /// What it is about (a budget's id, …).
    pub subject: String,
    /// For people.
    pub message: String,
    /// JSON object with the figures behind it.
    pub details: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms it was acknowledged.
    pub acknowledged_at: Option<i64>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
}

const COLUMNS: &str =
    "id, org_id, kind, subject, message, details, created_at, acknowledged_at, acknowledged_by";

/// Insert `alert` as given.
pub async fn insert(conn: &mut AnyConnection, alert: &AlertRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alerts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(&alert.id)
    .bind(&alert.org_id)
    .bind(&alert.kind)
    .bind(&alert.subject)
    .bind(&alert.message)
    .bind(&alert.details)
    .bind(alert.created_at)
    .bind(alert.acknowledged_at)
    .bind(&alert.acknowledged_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only acknowledged (`true`) or open (`false`) ones.
    pub acknowledged: Option<bool>,
    /// Created at or after (unix ms).
    pub from: Option<i64>,
    /// Created before (unix ms).
    pub to: Option<i64>,
}

/// The organization's alerts matching `filter`, newest first, a page of
/// `limit` after `offset`.
pub async fn list(
    conn: &mut AnyConnection,
    org_id: &str,
    filter: &AlertFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE org_id = $1 \
         AND ($2 IS NULL OR kind = $2) \
         AND ($3 IS NULL OR (acknowledged_at IS NOT NULL) = ($3 = 1)) \
         AND ($4 IS NULL OR created_at >= $4) \
         AND ($5 IS NULL OR created_at < $5) \
         ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
    )))
    .bind(org_id)
    .bind(&filter.kind)
    .bind(filter.acknowledged.map(i64::from))
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// When the organization's latest alert of `kind` about `subject` was
/// raised (unix ms), if ever.
pub async fn latest(
    conn: &mut AnyConnection,
    org_id: &str,
    kind: &str,
    subject: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(created_at) FROM alerts WHERE org_id = $1 AND kind = $2 AND subject = $3",
    )
    .bind(org_id)
    .bind(kind)
    .bind(subject)
    .fetch_one(conn)
    .await
}

/// Mark the alert acknowledged by `user_id` at `now` (once: a second
/// acknowledgement keeps the first); the alert, `None` when there is none.
pub async fn acknowledge(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<Option<AlertRow>, sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET acknowledged_at = $1, acknowledged_by = $2 \
         WHERE org_id = $3 AND id = $4 AND acknowledged_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(org_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}
