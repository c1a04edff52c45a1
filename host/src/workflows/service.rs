//! What callers do with workflows: start one, cancel it, decide an
//! approval. Each operation checks, writes and audits in one transaction
//! and wakes the engine; the API and the CLI call these, never the store.

use serde_json::{Value, json};
use vel_runtime::PluginKind;

use super::definition::{self, Definition, Step};
use super::status::{StepRunStatus, WorkflowStatus};
use crate::audit::{self, ClientInfo};
use crate::auth::{Forbidden, Permission, Principal};
use crate::orchestrator::cancel::cancel_task;
use crate::orchestrator::signals::{Signal, WorkKind};
use crate::orchestrator::submit::{Admission, admission};
use crate::state::AppState;
use crate::store::workflow_templates;
use crate::store::workflows::{self, NewWorkflow, Workflow};
use crate::store::{self, to_rfc3339};
use crate::validation::Invalid;

/// Largest workflow input, in bytes of JSON.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// Why a workflow operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The definition or input is wrong; every problem by path.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller's role is too weak.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No such workflow in the caller's organization.
    #[error("workflow not found")]
    NotFound,
    /// The workflow is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The submitter has as many unfinished tasks and workflows as allowed.
    #[error("at most {limit} unfinished tasks and workflows per user; wait for some to finish")]
    TooManyUnfinished {
        /// The limit.
        limit: u32,
    },
    /// The organization has as many unfinished tasks and workflows as its
    /// `concurrent_tasks` rate limit allows.
    #[error(
        "at most {limit} unfinished tasks and workflows in the organization; wait for some to finish"
    )]
    OrganizationBusy {
        /// The limit.
        limit: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// Check `definition` for the caller's organization: its conditions must
/// be condition plugins live there (its own or the platform's).
pub fn check_definition(
    state: &AppState,
    org_id: &str,
    definition: &Value,
) -> Result<Definition, Invalid> {
    let is_condition = |name: &str| {
        state
            .plugins
            .lookup(org_id, name)
            .is_some_and(|d| d.plugin.kind() == PluginKind::Condition)
    };
    definition::parse(definition, &is_condition)
}

/// Start a workflow of `definition` on `input` for `who`.
pub async fn start(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    definition: &Value,
    input: Value,
) -> Result<Workflow, WorkflowError> {
    start_as(state, who, client, definition, input, None).await
}

/// [`start`], recording on the workflow the template id and version its
/// definition was made from (see [`super::catalog`]).
pub async fn start_as(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    definition: &Value,
    input: Value,
    template: Option<(&str, i64)>,
) -> Result<Workflow, WorkflowError> {
    let def = check_definition(state, &who.org_id, definition)?;
    check_input(&def, &input)?;
    let new = NewWorkflow {
        org_id: who.org_id.clone(),
        user_id: who.user_id.clone(),
        name: def.name.clone(),
        // Serialising a checked definition cannot fail.
        definition: serde_json::to_string(&def).unwrap_or_default(),
        input: input.to_string(),
        start: def.start.clone(),
        state: json!({ "input": input, "steps": {} }).to_string(),
    };
    let Admission {
        mut tx,
        limit,
        organization_full,
    } = admission(state, who).await?;
    if let Some(cap) = organization_full {
        return Err(WorkflowError::OrganizationBusy { limit: cap });
    }
    let Some(mut wf) = workflows::insert(&mut tx, &new, limit).await? else {
        return Err(WorkflowError::TooManyUnfinished { limit });
    };
    if let Some((template_id, version)) = template {
        workflow_templates::link_workflow(&mut tx, &wf.org_id, &wf.id, template_id, version)
            .await?;
        wf.template_id = Some(template_id.to_string());
        wf.template_version = Some(version);
    }
    let data = json!({ "status": "running", "step": wf.current_step });
    workflows::append_event(&mut tx, &wf.org_id, &wf.id, "status", &data.to_string()).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_started",
        json!({
            "workflow_id": wf.id,
            "name": wf.name,
            "steps": def.steps.len(),
            "template_id": wf.template_id,
            "template_version": wf.template_version,
        }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish_due(WorkKind::Workflows);
    Ok(wf)
}

/// The input must be a JSON object within [`MAX_INPUT_BYTES`] that
/// satisfies the definition's `input_schema`.
fn check_input(def: &Definition, input: &Value) -> Result<(), Invalid> {
    if !input.is_object() {
        return Err(Invalid::field("input", "must be a JSON object"));
    }
    if input.to_string().len() > MAX_INPUT_BYTES {
        return Err(Invalid::field(
            "input",
            format!("must be at most {MAX_INPUT_BYTES} bytes of JSON"),
        ));
    }
    if let Some(schema) = &def.input_schema {
        definition::check_input_schema(schema, input)?;
    }
    Ok(())
}

/// Cancel an unfinished workflow: it ends as cancelled and its running
/// step's task is cancelled (its provider call dropped), or for a parallel
/// step every running branch's task. Returns the ids of those tasks, for
/// the caller to stop them here at once.
pub async fn cancel(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
) -> Result<Vec<String>, WorkflowError> {
    who.require(Permission::ExecuteTask)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let Some(current_run) = workflows::cancel(&mut tx, &who.org_id, id).await? else {
        let wf = workflows::get(&mut tx, &who.org_id, id)
            .await?
            .ok_or(WorkflowError::NotFound)?;
        return Err(WorkflowError::Conflict(format!(
            "the workflow is already {}; only running or waiting workflows can be cancelled",
            wf.status
        )));
    };
    let mut stopped = Vec::new();
    if let Some(run_id) = current_run {
        // The current run, and a parallel step's branch runs still going.
        let runs = workflows::runs(&mut tx, &who.org_id, id).await?;
        let going = runs.into_iter().filter(|r| {
            r.id == run_id
                || (r.parent_run.as_deref() == Some(run_id.as_str())
                    && matches!(r.status, StepRunStatus::Running | StepRunStatus::Waiting))
        });
        for mut run in going {
            if let Some(t) = &run.task_id
                && cancel_task(&mut tx, &state.signals, &who.org_id, t)
                    .await?
                    .is_some()
            {
                stopped.push(t.clone());
            }
            run.status = StepRunStatus::Cancelled;
            run.finished_at = Some(store::now_ms());
            if !workflows::finish_run(&mut tx, &who.org_id, &run).await? {
                return Err(WorkflowError::Conflict(
                    "the workflow changed meanwhile".into(),
                ));
            }
        }
    }
    let data = json!({ "status": "cancelled", "task_id": stopped.first(), "task_ids": stopped });
    workflows::append_event(&mut tx, &who.org_id, id, "status", &data.to_string()).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_cancelled",
        json!({ "workflow_id": id, "task_ids": stopped }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish(Signal::Events(id.to_string()));
    for t in &stopped {
        state.signals.publish(Signal::Events(t.clone()));
        state.signals.publish(Signal::Cancelled(t.clone()));
    }
    Ok(stopped)
}

/// Decide the approval a workflow waits for: `approved`, with a comment.
/// The caller must hold `approve_workflows` and, when the step names a
/// role, every permission of that role.
pub async fn decide(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    approved: bool,
    comment: Option<String>,
) -> Result<(), WorkflowError> {
    who.require(Permission::ApproveWorkflows)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let wf = workflows::get(&mut tx, &who.org_id, id)
        .await?
        .ok_or(WorkflowError::NotFound)?;
    let waiting = match (wf.status, &wf.current_run) {
        (WorkflowStatus::AwaitingApproval, Some(run_id)) => {
            workflows::run(&mut tx, &who.org_id, run_id).await?
        }
        _ => None,
    };
    let Some(run) = waiting.filter(|r| r.status == StepRunStatus::Waiting && r.decision.is_none())
    else {
        return Err(WorkflowError::Conflict(format!(
            "the workflow is {}, not awaiting an approval",
            wf.status
        )));
    };
    let def: Definition =
        serde_json::from_str(&wf.definition).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    if let Some(Step::Approval(a)) = def.steps.get(&run.step_id)
        && a.role.is_some()
    {
        who.require_role(a.role())?;
    }
    let decision = json!({
        "approved": approved,
        "by": who.user_id,
        "comment": comment,
        "at": to_rfc3339(store::now_ms()),
    });
    if !workflows::decide(&mut tx, &who.org_id, id, &run.id, &decision.to_string()).await? {
        return Err(WorkflowError::Conflict(
            "the approval was decided meanwhile".into(),
        ));
    }
    let mut data = decision.clone();
    data["step"] = json!(run.step_id);
    workflows::append_event(&mut tx, &who.org_id, id, "decision", &data.to_string()).await?;
    audit::record(
        &mut tx,
        who,
        client,
        if approved {
            "workflow_approved"
        } else {
            "workflow_rejected"
        },
        json!({ "workflow_id": id, "step": run.step_id, "comment": comment }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish(Signal::Events(id.to_string()));
    state.signals.publish_due(WorkKind::Workflows);
    Ok(())
}

/// Run an ended workflow again from `step_id`, with the state version that
/// step read when it last ran (copied as a new version; the later ones stay
/// as history). 409 unless the workflow has ended and the step ran.
pub async fn retry_from_step(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    step_id: &str,
) -> Result<(), WorkflowError> {
    who.require(Permission::ExecuteTask)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let wf = workflows::get(&mut tx, &who.org_id, id)
        .await?
        .ok_or(WorkflowError::NotFound)?;
    if !wf.status.is_finished() {
        return Err(WorkflowError::Conflict(format!(
            "the workflow is {}; cancel it first to run it again from a step",
            wf.status
        )));
    }
    let runs = workflows::runs(&mut tx, &who.org_id, id).await?;
    // A step inside a parallel step's branch runs again with its group.
    let Some(last) = runs
        .iter()
        .rev()
        .find(|r| r.step_id == step_id && r.parent_run.is_none())
    else {
        return Err(WorkflowError::Conflict(format!(
            "the step `{step_id}` never ran in this workflow"
        )));
    };
    let (_, text) = workflows::state(&mut tx, &who.org_id, id, Some(last.state_version))
        .await?
        .ok_or(WorkflowError::NotFound)?;
    let version = wf.state_version + 1;
    workflows::insert_state(&mut tx, &who.org_id, id, version, None, &text).await?;
    if !workflows::resume_from(&mut tx, &who.org_id, id, step_id, version).await? {
        return Err(WorkflowError::Conflict(
            "the workflow changed meanwhile".into(),
        ));
    }
    let data = json!({ "status": "running", "step": step_id, "from_version": last.state_version });
    workflows::append_event(&mut tx, &who.org_id, id, "status", &data.to_string()).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_retried",
        json!({ "workflow_id": id, "step": step_id, "from_version": last.state_version }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish(Signal::Events(id.to_string()));
    state.signals.publish_due(WorkKind::Workflows);
    Ok(())
}
