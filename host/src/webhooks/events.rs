//! The events the business layer reports, each queued by one call in the
//! transaction of the change it reports (see [`super::emit`]): which event
//! types exist ([`EventType`]) and what each event's `data` carries are
//! decided here, in one place.
//!
//! A new event type is one line in the `event_types!` list below (its
//! variant and wire name); it is then subscribable, listed in validation
//! errors, and queued with
//! `webhooks::emit(tx, Some(org_id), EventType::New, json!({..}))` in the
//! transaction of the change it reports (or a function here when several
//! places report it). Document it in docs/webhooks.md.

use serde_json::{Value, json};

use super::emit;
use crate::budgets::Budget;
use crate::money::Money;
use crate::orchestrator::state::TaskStatus;
use crate::store::batches::{Batch, Counts};
use crate::store::tasks::{Finish, Task};
use crate::store::to_rfc3339;
use crate::store::workflows::{Progress, Workflow};
use crate::workflows::status::WorkflowStatus;

/// Declares [`EventType`] with its wire names.
macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:literal),+ $(,)?) => {
        /// What a webhook can be told of.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($(#[$doc])* $variant),+
        }

        impl EventType {
            /// Every event type, `webhook.test` included.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            /// The name in `X-Vel-Event`, the body's `type` and subscriptions.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name),+
                }
            }
        }
    };
}

event_types! {
    /// A task completed.
    TaskCompleted = "task.completed",
    /// A task failed.
    TaskFailed = "task.failed",
    /// Every task of a batch ended (whatever their outcomes).
    BatchCompleted = "batch.completed",
    /// A workflow waits for a person's approval.
    WorkflowAwaitingApproval = "workflow.awaiting_approval",
    /// A workflow completed.
    WorkflowCompleted = "workflow.completed",
    /// A workflow failed.
    WorkflowFailed = "workflow.failed",
    /// A budget's spend passed one of its alert thresholds.
    BudgetThreshold = "budget.threshold",
    /// An alert was raised (`/api/alerts`).
    AlertRaised = "alert.raised",
    /// A plugin version went live (activated or rolled back to).
    PluginActivated = "plugin.activated",
    /// Sent by `POST /api/webhooks/{id}/test`; not subscribed to.
    WebhookTest = "webhook.test",
}

impl EventType {
    /// The event type named `name`, when a webhook may subscribe to it.
    pub fn subscribable(name: &str) -> Option<EventType> {
        EventType::ALL
            .iter()
            .copied()
            .find(|e| *e != EventType::WebhookTest && e.as_str() == name)
    }
}

/// Stored JSON text as a value (a string when it is not JSON).
fn json_text(text: Option<&str>) -> Value {
    match text {
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
        None => Value::Null,
    }
}

/// Task `task` ended as `finish` says: `task.completed` or `task.failed`
/// (a cancellation is reported to nobody). Returns how many deliveries
/// were queued.
pub async fn task_ended(
    conn: &mut sqlx::AnyConnection,
    task: &Task,
    finish: &Finish,
) -> Result<u64, sqlx::Error> {
    let event = match finish.status {
        TaskStatus::Completed => EventType::TaskCompleted,
        TaskStatus::Failed => EventType::TaskFailed,
        _ => return Ok(0),
    };
    let data = json!({
        "task_id": task.id,
        "status": finish.status.as_str(),
        "agent_id": task.agent_id,
        "user_id": task.user_id,
        "workflow_id": task.workflow_id,
        "batch_id": task.batch_id,
        "provider": finish.provider,
        "model": finish.model,
        "cached": finish.cached,
        "input_tokens": finish.input_tokens,
        "output_tokens": finish.output_tokens,
        "cost_usd": finish.cost_nanos.usd(),
        "error": json_text(finish.error.as_deref()),
    });
    emit(conn, Some(&task.org_id), event, data).await
}

/// Every task of `batch` ended: `batch.completed`, with its `counts`.
pub async fn batch_completed(
    conn: &mut sqlx::AnyConnection,
    batch: &Batch,
    counts: &Counts,
) -> Result<u64, sqlx::Error> {
    let data = json!({
        "batch_id": batch.id,
        "description": batch.description,
        "user_id": batch.user_id,
        "status": batch.status.as_str(),
        "total": batch.total,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
    });
    emit(conn, Some(&batch.org_id), EventType::BatchCompleted, data).await
}

/// Workflow `wf` moved to `p`: `workflow.awaiting_approval`,
/// `workflow.completed` or `workflow.failed` (other moves report nothing).
pub async fn workflow_moved(
    conn: &mut sqlx::AnyConnection,
    wf: &Workflow,
    p: &Progress,
) -> Result<u64, sqlx::Error> {
    let event = match p.status {
        WorkflowStatus::AwaitingApproval => EventType::WorkflowAwaitingApproval,
        WorkflowStatus::Completed => EventType::WorkflowCompleted,
        WorkflowStatus::Failed => EventType::WorkflowFailed,
        _ => return Ok(0),
    };
    let data = json!({
        "workflow_id": wf.id,
        "name": wf.name,
        "status": p.status.as_str(),
        "current_step": p.current_step,
        "steps_run": p.steps_run,
        "cost_usd": p.cost_nanos.usd(),
        "output": json_text(p.output.as_deref()),
        "error": json_text(p.error.as_deref()),
    });
    emit(conn, Some(&wf.org_id), event, data).await
}

/// `budget`'s period starting at `period_start` passed `fraction` of its
/// limit, with `spent` spent.
pub async fn budget_threshold(
    conn: &mut sqlx::AnyConnection,
    budget: &Budget,
    period_start: i64,
    fraction: f64,
    spent: Money,
) -> Result<u64, sqlx::Error> {
    let data = json!({
        "budget_id": budget.id,
        "scope": budget.scope.as_str(),
        "subject_id": budget.subject_id,
        "period": budget.period.as_str(),
        "period_start": to_rfc3339(period_start),
        "threshold": fraction,
        "hard": budget.hard,
        "limit_usd": budget.limit.usd(),
        "spent_usd": spent.usd(),
    });
    emit(conn, Some(&budget.org_id), EventType::BudgetThreshold, data).await
}

/// An alert was raised for `org_id`.
pub async fn alert_raised(
    conn: &mut sqlx::AnyConnection,
    org_id: &str,
    alert_id: &str,
    kind: &str,
    subject: &str,
    message: &str,
) -> Result<u64, sqlx::Error> {
    let data =
        json!({ "alert_id": alert_id, "kind": kind, "subject": subject, "message": message });
    emit(conn, Some(org_id), EventType::AlertRaised, data).await
}

/// A version of plugin `name` went live: an organization's plugin
/// (`org_id`), or a platform plugin (`None`: every organization is told).
pub async fn plugin_activated(
    conn: &mut sqlx::AnyConnection,
    org_id: Option<&str>,
    name: &str,
    version: &str,
    previous_version: Option<&str>,
    rollback: bool,
) -> Result<u64, sqlx::Error> {
    let data = json!({
        "plugin": name,
        "scope": if org_id.is_some() { "organization" } else { "platform" },
        "version": version,
        "previous_version": previous_version,
        "rollback": rollback,
    });
    emit(conn, org_id, EventType::PluginActivated, data).await
}
