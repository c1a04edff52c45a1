//! Usage buckets: append-only rows of counters and a latency sketch per
//! organization, time bucket, provider, model, agent and source. Rows of
//! the same bucket are merged by their readers (`crate::analytics`).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use crate::analytics::buckets::Counts;
use crate::money::Money;
use crate::orchestrator::state::TaskSource;

/// A bucket's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// One minute: what writers write.
    Minute,
    /// One hour: minutes rolled up.
    Hour,
    /// One UTC day: hours rolled up.
    Day,
}

impl Resolution {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }
}

/// A resolution name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown bucket resolution `{0}`")]
pub struct UnknownResolution(String);

impl std::str::FromStr for Resolution {
    type Err = UnknownResolution;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minute" => Ok(Resolution::Minute),
            "hour" => Ok(Resolution::Hour),
            "day" => Ok(Resolution::Day),
            other => Err(UnknownResolution(other.to_string())),
        }
    }
}

/// One stored row of a bucket.
#[derive(Debug, Clone)]
pub struct BucketRow {
    /// Organization.
    pub org_id: String,
    /// The bucket's length.
    pub resolution: Resolution,
    /// Unix ms the bucket starts.
    pub bucket_start: i64,
    /// Integration that answered (empty: none did).
    pub provider: String,
    /// Model that answered (empty: none did).
    pub model: String,
    /// Agent (empty: none).
    pub agent_id: String,
    /// Where the work was submitted.
    pub source: TaskSource,
    /// Its counters.
    pub counts: Counts,
    /// Its latency sketch, encoded.
    pub latency: Vec<u8>,
    /// Unix ms the row was written.
    pub created_at: i64,
}

const COLUMNS: &str = "org_id, resolution, bucket_start, provider, model, agent_id, source, \
    requests, completed, failed, cancelled, fallbacks, cache_hits, input_tokens, output_tokens, \
    cost_nanos, latency, created_at";

/// Rows per statement: far below either database's limit on parameters.
const ROWS_PER_STATEMENT: usize = 500;

impl FromRow<'_, AnyRow> for BucketRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(BucketRow {
            org_id: row.try_get("org_id")?,
            resolution: super::parsed(row, "resolution")?,
            bucket_start: row.try_get("bucket_start")?,
            provider: row.try_get("provider")?,
            model: row.try_get("model")?,
            agent_id: row.try_get("agent_id")?,
            source: super::parsed(row, "source")?,
            counts: Counts {
                requests: row.try_get("requests")?,
                completed: row.try_get("completed")?,
                failed: row.try_get("failed")?,
                cancelled: row.try_get("cancelled")?,
                fallbacks: row.try_get("fallbacks")?,
                cache_hits: row.try_get("cache_hits")?,
                input_tokens: row.try_get("input_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                cost: Money::from_nanos(row.try_get("cost_nanos")?),
            },
            latency: row.try_get("latency")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Append `rows`.
pub async fn insert(conn: &mut AnyConnection, rows: &[BucketRow]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO usage_buckets ({COLUMNS}) VALUES {}",
            numbered_rows(chunk.len(), 18)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(&r.org_id)
                .bind(r.resolution.as_str())
                .bind(r.bucket_start)
                .bind(&r.provider)
                .bind(&r.model)
                .bind(&r.agent_id)
                .bind(r.source.as_str())
                .bind(r.counts.requests)
                .bind(r.counts.completed)
                .bind(r.counts.failed)
                .bind(r.counts.cancelled)
                .bind(r.counts.fallbacks)
                .bind(r.counts.cache_hits)
                .bind(r.counts.input_tokens)
                .bind(r.counts.output_tokens)
                .bind(r.counts.cost.nanos())
                .bind(&r.latency)
                .bind(r.created_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `($1, …, $n), ($n+1, …), …` for `rows` rows of `n` values: numbered
/// parameters, which both databases take.
fn numbered_rows(rows: usize, n: usize) -> String {
    let mut out = String::with_capacity(rows * n * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..n {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * n + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// The organization's rows of `resolution` whose bucket starts in
/// `[from, to)`, oldest first.
pub async fn range(
    conn: &mut AnyConnection,
    org_id: &str,
    resolution: Resolution,
    from: i64,
    to: i64,
) -> Result<Vec<BucketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM usage_buckets \
         WHERE org_id = $1 AND resolution = $2 AND bucket_start >= $3 AND bucket_start < $4 \
         ORDER BY bucket_start"
    )))
    .bind(org_id)
    .bind(resolution.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

/// What one provider and agent spent on one UTC day, summed by the
/// database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCost {
    /// The provider that answered (empty: none).
    pub provider: String,
    /// The agent the requests ran for (empty: none).
    pub agent_id: String,
    /// The day's start, unix ms.
    pub day_start: i64,
    /// Spent.
    pub cost: Money,
}

/// The organization's spend in its rows of `resolution` whose bucket
/// starts in `[from, to)`, per provider, agent and UTC day. The costs
/// read needs no more, so it neither reads each row nor its latency
/// sketch (the overview's month of minute rows was its slowest part).
pub async fn costs_by_day(
    conn: &mut AnyConnection,
    org_id: &str,
    resolution: Resolution,
    from: i64,
    to: i64,
) -> Result<Vec<DayCost>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, agent_id, bucket_start / 86400000 AS day, \
         CAST(SUM(cost_nanos) AS BIGINT) AS cost FROM usage_buckets \
         WHERE org_id = $1 AND resolution = $2 AND bucket_start >= $3 AND bucket_start < $4 \
         GROUP BY provider, agent_id, bucket_start / 86400000",
    )
    .bind(org_id)
    .bind(resolution.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DayCost {
                provider: row.try_get("provider")?,
                agent_id: row.try_get("agent_id")?,
                day_start: row.try_get::<i64, _>("day")? * crate::analytics::buckets::DAY_MS,
                cost: Money::from_nanos(row.try_get("cost")?),
            })
        })
        .collect()
}

/// Every organization's rows of `resolution` whose bucket starts in
/// `[from, to)` (platform work: the roll-up).
pub async fn range_all(
    conn: &mut AnyConnection,
    resolution: Resolution,
    from: i64,
    to: i64,
) -> Result<Vec<BucketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM usage_buckets \
         WHERE resolution = $1 AND bucket_start >= $2 AND bucket_start < $3"
    )))
    .bind(resolution.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

/// The earliest bucket start of `resolution` (every organization), if any.
pub async fn earliest(
    conn: &mut AnyConnection,
    resolution: Resolution,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(bucket_start) FROM usage_buckets WHERE resolution = $1")
        .bind(resolution.as_str())
        .fetch_one(conn)
        .await
}

/// Delete the rows of `resolution` whose bucket starts before `before`;
/// returns how many.
pub async fn delete_before(
    conn: &mut AnyConnection,
    resolution: Resolution,
    before: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM usage_buckets WHERE resolution = $1 AND bucket_start < $2")
        .bind(resolution.as_str())
        .bind(before)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
