//! Batches: up to thousands of task definitions run as ordinary tasks, at
//! most a set number at a time, with progress counted as they end.
//!
//! A batch's items are checked and prepared when it is created and stored
//! with it; the first items are released as pending tasks at once and each
//! task's end releases the next, in the transaction that ends it
//! ([`task_ended`], called wherever a task ends). So a batch needs no
//! worker of its own, survives crashes with its tasks (a task's end and the
//! next release commit together), and the task queue never holds more than
//! a batch's concurrency of its tasks: another organization's tasks are
//! claimed before them (claims favour the organization running fewest).
//! [`service`] is what the API does with batches.

pub mod service;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::orchestrator::state::TaskStatus;
use crate::store::batches::{self, TaskEnded};
use crate::store::tasks::Task;
use crate::workflows::status::{UnknownStatus, status_enum};

status_enum!(
    /// Where a batch is.
    BatchStatus, "batch", [
        /// Its tasks run or wait for their turn.
        Running = "running",
        /// Every task ended (each completed, failed or cancelled).
        Completed = "completed",
        /// Stopped by a user: no further task starts.
        Cancelled = "cancelled",
    ]
);

/// What a task's end did to its batch: the caller wakes the task workers
/// when `released`, and the webhook workers for `deliveries`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ended {
    /// The batch's next item was released as a pending task.
    pub released: bool,
    /// Webhook deliveries queued (`batch.completed`).
    pub deliveries: u64,
}

/// Task `task` ended in `status`: when it runs a batch's item, release
/// the next item of its lane while the batch runs, and report the batch's
/// completion when it was the last. Run it in the transaction that ends
/// the task, after the task row was written; nothing is read or written
/// for a task outside a batch.
pub async fn task_ended(
    conn: &mut sqlx::AnyConnection,
    task: &Task,
    status: TaskStatus,
) -> Result<Ended, sqlx::Error> {
    let Some(batch_id) = &task.batch_id else {
        return Ok(Ended::default());
    };
    if !status.is_terminal() {
        return Ok(Ended::default());
    }
    let TaskEnded {
        released,
        completed,
    } = batches::task_ended(conn, batch_id, task.batch_next).await?;
    let deliveries = match completed {
        Some(batch) => {
            let counts = batches::counts(conn, &batch.org_id, &[batch.id.as_str()])
                .await?
                .remove(&batch.id)
                .unwrap_or_default();
            tracing::info!(batch_id = %batch.id, total = batch.total, failed = counts.failed, "batch completed");
            crate::webhooks::events::batch_completed(conn, &batch, &counts).await?
        }
        None => 0,
    };
    Ok(Ended {
        released,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in BatchStatus::ALL {
            assert_eq!(s.as_str().parse::<BatchStatus>(), Ok(*s));
        }
        assert!("pending".parse::<BatchStatus>().is_err());
    }
}
