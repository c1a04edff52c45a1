//! Counting slots shared by every instance on one PostgreSQL database: `n`
//! session advisory locks under one key, each held on a connection of its
//! own for as long as its holder keeps the [`ClusterSlot`]. Dropping the
//! slot closes that connection, which frees the lock, and so does an
//! instance that dies mid-call: a slot is never leaked. On SQLite there is
//! one instance, whose own in-process gate is enough: no slot is taken.

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use super::{Backend, Db};

/// First wait between tries while every slot is held.
const FIRST_WAIT: Duration = Duration::from_millis(25);
/// Longest wait between tries.
const LONGEST_WAIT: Duration = Duration::from_millis(400);

/// One held slot; dropping it frees it.
#[derive(Debug)]
pub struct ClusterSlot {
    /// Which of the `n` slots.
    pub index: i32,
    /// The connection holding the lock (outside the pool: it closes when
    /// the slot is dropped).
    _holder: AnyConnection,
}

/// Takes one of the `n` slots named `key` on PostgreSQL, waiting while all
/// are held (the waits grow from 25 to 400 ms: another instance's holder
/// cannot signal this one); `None` on SQLite. Dropping the future gives
/// up the wait.
pub async fn take(db: &Db, key: &str, n: i32) -> Result<Option<ClusterSlot>, sqlx::Error> {
    if db.backend() != Backend::Postgres {
        return Ok(None);
    }
    let mut holder = db.platform_pool().acquire().await?.detach();
    let mut wait = FIRST_WAIT;
    loop {
        for index in 0..n {
            let row = sqlx::query("SELECT pg_try_advisory_lock(hashtext($1), $2) AS held")
                .bind(key)
                .bind(index)
                .fetch_one(&mut holder)
                .await?;
            if row.try_get::<bool, _>("held")? {
                return Ok(Some(ClusterSlot {
                    index,
                    _holder: holder,
                }));
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}
