//! Progress of the background jobs that run once across all instances
//! (`jobs`): a watermark per job, moved only from the value the mover read.

use sqlx::AnyConnection;

/// The job's watermark (unix ms; 0 before its first period).
pub async fn watermark(conn: &mut AnyConnection, name: &str) -> Result<i64, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT watermark FROM jobs WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(found.unwrap_or(0))
}

/// Move the job's watermark from `from` to `to` at `now`. False when another
/// instance moved it first: the caller's transaction must then be rolled
/// back, its period being done already. On PostgreSQL a second mover waits
/// for the first's commit and then finds nothing to move.
pub async fn advance(
    conn: &mut AnyConnection,
    name: &str,
    from: i64,
    to: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET watermark = $1, updated_at = $2 WHERE name = $3 AND watermark = $4",
    )
    .bind(to)
    .bind(now)
    .bind(name)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
