//! Provider benchmarks and their ratings (see
//! `migrations/*/…_benchmarks.sql`). A benchmark's runs are the items of
//! its batch ([`super::batches`]): their outcomes are read from there.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use super::{new_id, now_ms};

/// A stored benchmark.
#[derive(Debug, Clone)]
pub struct Benchmark {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Who started it (gone when the user was deleted).
    pub user_id: Option<String>,
    /// What it is called.
    pub name: String,
    /// The built-in suite it ran, if any.
    pub suite: Option<String>,
    /// Task type of its runs.
    pub task_type: String,
    /// The prompts, in order.
    pub prompts: Vec<String>,
    /// The targets (`integration/model`), in order.
    pub targets: Vec<String>,
    /// Runs of each prompt on each target.
    pub repetitions: i64,
    /// The batch whose items are its runs.
    pub batch_id: String,
    /// Unix ms.
    pub created_at: i64,
}

fn json_list(row: &AnyRow, column: &str) -> Result<Vec<String>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: Box::new(e),
    })
}

impl FromRow<'_, AnyRow> for Benchmark {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Benchmark {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            suite: row.try_get("suite")?,
            task_type: row.try_get("task_type")?,
            prompts: json_list(row, "prompts")?,
            targets: json_list(row, "targets")?,
            repetitions: row.try_get("repetitions")?,
            batch_id: row.try_get("batch_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, user_id, name, suite, task_type, prompts, targets, repetitions, batch_id, created_at";

/// Fields a caller supplies to store a benchmark.
#[derive(Debug, Clone)]
pub struct NewBenchmark {
    /// Owning organization.
    pub org_id: String,
    /// Who starts it.
    pub user_id: String,
    /// What it is called.
    pub name: String,
    /// The built-in suite it runs, if any.
    pub suite: Option<String>,
    /// Task type of its runs.
    pub task_type: String,
    /// The prompts, in order.
    pub prompts: Vec<String>,
    /// The targets, in order.
    pub targets: Vec<String>,
    /// Runs of each prompt on each target.
    pub repetitions: i64,
    /// The batch already stored for its runs.
    pub batch_id: String,
}

/// Store a benchmark (its batch already stored in the same transaction).
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewBenchmark,
) -> Result<Benchmark, sqlx::Error> {
    // Serialising lists of strings cannot fail.
    let prompts = serde_json::to_string(&new.prompts).unwrap_or_default();
    let targets = serde_json::to_string(&new.targets).unwrap_or_default();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO benchmarks (id, org_id, user_id, name, suite, task_type, prompts, targets, \
             repetitions, batch_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    )))
    .bind(new_id())
    .bind(&new.org_id)
    .bind(&new.user_id)
    .bind(&new.name)
    .bind(&new.suite)
    .bind(&new.task_type)
    .bind(prompts)
    .bind(targets)
    .bind(new.repetitions)
    .bind(&new.batch_id)
    .bind(now_ms())
    .fetch_one(conn)
    .await
}

/// One benchmark of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Benchmark>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM benchmarks WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of the organization's benchmarks, newest first, with the number
/// of them.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Benchmark>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM benchmarks WHERE org_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    )))
    .bind(org_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM benchmarks WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

/// Store `user_id`'s rating of run `run` of benchmark `benchmark_id`,
/// replacing the one they gave before.
pub async fn rate(
    conn: &mut AnyConnection,
    org_id: &str,
    benchmark_id: &str,
    run: i64,
    user_id: &str,
    rating: i64,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO benchmark_ratings (benchmark_id, run, org_id, user_id, rating, created_at, \
             updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (benchmark_id, run, user_id) \
         DO UPDATE SET rating = excluded.rating, updated_at = excluded.updated_at",
    )
    .bind(benchmark_id)
    .bind(run)
    .bind(org_id)
    .bind(user_id)
    .bind(rating)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every rating of a benchmark's runs: run → ratings (in no set order).
pub async fn ratings(
    conn: &mut AnyConnection,
    org_id: &str,
    benchmark_id: &str,
) -> Result<HashMap<i64, Vec<i64>>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT run, rating FROM benchmark_ratings WHERE org_id = $1 AND benchmark_id = $2",
    )
    .bind(org_id)
    .bind(benchmark_id)
    .fetch_all(conn)
    .await?;
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    for (run, rating) in rows {
        out.entry(run).or_default().push(rating);
    }
    Ok(out)
}
