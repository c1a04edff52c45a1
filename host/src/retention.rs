//! Retention: rows of a log older than its setting are deleted in batches
//! of [`BATCH`], each in its own short transaction, by one job per log
//! ([`Prune`]): the audit log (`VEL_AUDIT_RETENTION_DAYS`) and the webhook
//! delivery log (`VEL_WEBHOOK_DELIVERY_RETENTION_DAYS`). Every instance runs
//! the jobs; the batches of all of them are serialised on each job's
//! watermark (`store::jobs`): a batch first moves the watermark from the
//! value it read, and an instance that finds it moved stops its pass.

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::store::{Db, audit_logs, jobs, now_ms, webhooks};

/// Rows deleted per transaction.
pub const BATCH: i64 = 1_000;

/// A day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// A log whose old rows a retention job deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Audit entries, by the time they were written.
    AuditLog,
    /// Webhook deliveries that ended (delivered, failed or cancelled),
    /// with their attempts, by the time they ended; pending ones stay.
    WebhookDeliveries,
}

impl Prune {
    /// The job's name in `jobs`.
    pub fn job(self) -> &'static str {
        match self {
            Prune::AuditLog => "audit_retention",
            Prune::WebhookDeliveries => "webhook_delivery_retention",
        }
    }

    /// Delete up to `batch` rows older than `before` (unix ms); how many.
    async fn delete_before(
        self,
        conn: &mut sqlx::AnyConnection,
        before: i64,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
        match self {
            Prune::AuditLog => audit_logs::delete_before(conn, before, batch).await,
            Prune::WebhookDeliveries => webhooks::delete_finished_before(conn, before, batch).await,
        }
    }
}

/// Delete `prune`'s rows older than `days` every `interval` for as long as
/// the process lives; nothing when `days` is 0 (keep forever).
pub fn start(db: Db, prune: Prune, days: u32, interval: Duration) -> Option<JoinHandle<()>> {
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
                match pass(&db, prune, now - i64::from(days) * DAY_MS, BATCH).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "expired rows deleted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention failed; retrying next pass")
                    }
                }
            }
        }
        .instrument(tracing::info_span!("retention", job = prune.job())),
    ))
}

/// Delete `prune`'s rows written (or ended) before `before` (unix ms),
/// `batch` per transaction, until none is left or another instance takes
/// over; returns how many this instance deleted.
pub async fn pass(db: &Db, prune: Prune, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let job = prune.job();
    let mut deleted = 0;
    loop {
        let mut tx = db.platform().await?;
        let watermark = jobs::watermark(&mut tx, job).await?;
        let now = now_ms().max(watermark + 1);
        // On PostgreSQL a second instance's claim waits here for this
        // transaction, then finds the watermark moved and stops.
        if !jobs::advance(&mut tx, job, watermark, now, now).await? {
            tx.rollback().await?;
            break;
        }
        let n = prune.delete_before(&mut tx, before, batch).await?;
        tx.commit().await?;
        deleted += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < batch {
            break;
        }
    }
    Ok(deleted)
}
