//! Sliding-window rate limits in the database, so every instance behind a
//! load balancer counts the same attempts and a window never resets early.

use sqlx::AnyPool;

/// Outcome of recording one hit.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Hits in the window, this one included.
    pub hits: i64,
    /// Time (unix ms) of the oldest hit still in the window.
    pub oldest: i64,
}

/// Record a hit on `bucket` at `now` (unix ms) and count the hits of the
/// last `window_ms`.
pub async fn hit(
    pool: &AnyPool,
    bucket: &str,
    now: i64,
    window_ms: i64,
) -> Result<Window, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO rate_limit_hits (bucket, at) VALUES ($1, $2)")
        .bind(bucket)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let (hits, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(at) FROM rate_limit_hits WHERE bucket = $1 AND at > $2",
    )
    .bind(bucket)
    .bind(now - window_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Window {
        hits,
        oldest: oldest.unwrap_or(now),
    })
}

/// Drop hits older than `before` (unix ms).
pub async fn purge_before(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_limit_hits WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
