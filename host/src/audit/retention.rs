//! Audit retention: entries older than `VEL_AUDIT_RETENTION_DAYS` are
//! deleted in batches of [`BATCH`], each in its own short transaction. Every
//! instance runs the job; the batches of all of them are serialised on the
//! job's watermark (`store::jobs`): a batch first moves the watermark from
//! the value it read, and an instance that finds it moved stops its pass.

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::store::{Db, audit_logs, jobs, now_ms};

/// The job's name in `jobs`.
pub const JOB: &str = "audit_retention";

/// Entries deleted per transaction.
pub const BATCH: i64 = 1_000;

/// A day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Delete expired entries every `interval` for as long as the process
/// lives; nothing when `days` is 0 (keep forever).
pub fn start(db: Db, days: u32, interval: Duration) -> Option<JoinHandle<()>> {
    if days == 0 {
        return None;
    }
    Some(tokio::spawn(
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = now_ms();
                match pass(&db, now - i64::from(days) * DAY_MS, BATCH).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "expired audit entries deleted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "audit retention failed; retrying next pass")
                    }
                }
            }
        }
        .instrument(tracing::info_span!("audit_retention")),
    ))
}

/// Delete the entries written before `before` (unix ms), `batch` per
/// transaction, until none is left or another instance takes over;
/// returns how many this instance deleted.
pub async fn pass(db: &Db, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let mut tx = db.platform().await?;
        let watermark = jobs::watermark(&mut tx, JOB).await?;
        let now = now_ms().max(watermark + 1);
        // On PostgreSQL a second instance's claim waits here for this
        // transaction, then finds the watermark moved and stops.
        if !jobs::advance(&mut tx, JOB, watermark, now, now).await? {
            tx.rollback().await?;
            break;
        }
        let n = audit_logs::delete_before(&mut tx, before, batch).await?;
        tx.commit().await?;
        deleted += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < batch {
            break;
        }
    }
    Ok(deleted)
}
