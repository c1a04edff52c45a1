//! Rate-limit rules and the counters of their current windows (`limits/`).

use sqlx::{AnyConnection, FromRow};

/// One subject's limits; `None` is no limit of that kind.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct RuleRow {
    /// Owning organization.
    pub org_id: String,
    /// `organization`, `user` or `api_key`.
    pub scope: String,
    /// The organization, user or key.
    pub subject_id: String,
    /// Requests per minute.
    pub requests_per_minute: Option<i64>,
    /// Requests per hour.
    pub requests_per_hour: Option<i64>,
    /// Tasks submitted per hour.
    pub tasks_per_hour: Option<i64>,
    /// Unfinished tasks at once.
    pub concurrent_tasks: Option<i64>,
    /// Tokens (prompt and completion) per minute.
    pub tokens_per_minute: Option<i64>,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str = "org_id, scope, subject_id, requests_per_minute, requests_per_hour, tasks_per_hour, \
     concurrent_tasks, tokens_per_minute, updated_at";

/// Every rule of an organization.
pub async fn of_org(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rate_limit_rules WHERE org_id = $1"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// Write `row` as given (replacing the subject's rule).
pub async fn upsert(conn: &mut AnyConnection, row: &RuleRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO rate_limit_rules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (org_id, scope, subject_id) DO UPDATE SET \
         requests_per_minute = excluded.requests_per_minute, \
         requests_per_hour = excluded.requests_per_hour, \
         tasks_per_hour = excluded.tasks_per_hour, \
         concurrent_tasks = excluded.concurrent_tasks, \
         tokens_per_minute = excluded.tokens_per_minute, updated_at = excluded.updated_at"
    )))
    .bind(&row.org_id)
    .bind(&row.scope)
    .bind(&row.subject_id)
    .bind(row.requests_per_minute)
    .bind(row.requests_per_hour)
    .bind(row.tasks_per_hour)
    .bind(row.concurrent_tasks)
    .bind(row.tokens_per_minute)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Add `amount` to a window's count unless that takes it over `limit`;
/// the new count, or `None` when refused.
pub async fn grant(
    conn: &mut AnyConnection,
    (subject, kind, window_start): (&str, &str, i64),
    amount: i64,
    limit: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rate_limit_windows (subject, kind, window_start, granted) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (subject, kind, window_start) DO UPDATE \
         SET granted = rate_limit_windows.granted + excluded.granted \
         WHERE rate_limit_windows.granted + excluded.granted <= $5 \
         RETURNING granted",
    )
    .bind(subject)
    .bind(kind)
    .bind(window_start)
    .bind(amount)
    .bind(limit)
    .fetch_optional(conn)
    .await
}

/// Add `amount` to a window's count whatever the limit (what was used
/// already, beyond the slices taken); the new count.
pub async fn add(
    conn: &mut AnyConnection,
    (subject, kind, window_start): (&str, &str, i64),
    amount: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rate_limit_windows (subject, kind, window_start, granted) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (subject, kind, window_start) DO UPDATE \
         SET granted = rate_limit_windows.granted + excluded.granted \
         RETURNING granted",
    )
    .bind(subject)
    .bind(kind)
    .bind(window_start)
    .bind(amount)
    .fetch_one(conn)
    .await
}

/// A window's count (0 when none was granted yet).
pub async fn granted(
    conn: &mut AnyConnection,
    (subject, kind, window_start): (&str, &str, i64),
) -> Result<i64, sqlx::Error> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT granted FROM rate_limit_windows WHERE subject = $1 AND kind = $2 AND window_start = $3",
    )
    .bind(subject)
    .bind(kind)
    .bind(window_start)
    .fetch_optional(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// Give back `amount` of a window's count (a slice left unused).
pub async fn give_back(
    conn: &mut AnyConnection,
    (subject, kind, window_start): (&str, &str, i64),
    amount: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rate_limit_windows SET granted = granted - $1 \
         WHERE subject = $2 AND kind = $3 AND window_start = $4 AND granted >= $1",
    )
    .bind(amount)
    .bind(subject)
    .bind(kind)
    .bind(window_start)
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete windows that ended before `before` (unix ms).
pub async fn prune(conn: &mut AnyConnection, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_limit_windows WHERE window_start < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
