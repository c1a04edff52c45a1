//! Cancelling a task: one way for the task API and for workflows.
//! A cancelled task is counted in the usage buckets when it is cancelled;
//! what its run spent is added when the run stops.

use serde_json::json;

use super::signals::{Signal, Signals};
use super::state::TaskStatus;
use crate::analytics::buckets::{self, Sample};
use crate::store::tasks::Finish;
use crate::store::{self, Tx, now_ms, workflows};

/// Cancel task `id` inside `tx` if it has not finished: its `cancelled`
/// event is appended, other instances hear of it on commit, its workflow
/// (if any) is woken and its batch (if any) counts it. Returns the status
/// it had.
pub async fn cancel_task(
    tx: &mut Tx,
    signals: &Signals,
    org_id: &str,
    id: &str,
) -> Result<Option<TaskStatus>, sqlx::Error> {
    let Some(task) = store::tasks::cancel(tx, org_id, id).await? else {
        return Ok(None);
    };
    let was = task.status;
    let cancelled = Finish::new(TaskStatus::Cancelled);
    buckets::record(tx, &Sample::task(&task, &cancelled, now_ms())).await?;
    // A batch's next task is released (its workers woken by the caller).
    crate::batches::task_ended(tx, &task, TaskStatus::Cancelled).await?;
    store::tasks::append_event(
        tx,
        org_id,
        id,
        "status",
        &json!({ "status": "cancelled", "previous": was }).to_string(),
    )
    .await?;
    workflows::wake_for_task(tx, id).await?;
    signals
        .notify(tx, &Signal::Cancelled(id.to_string()))
        .await?;
    Ok(Some(was))
}
