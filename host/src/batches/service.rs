//! What the API does with batches: create one from checked task
//! definitions (each prepared as a submitted task is, agents read once),
//! within the submitter's limits; cancel one.

use std::collections::HashMap;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::agents::AgentConfig;
use crate::audit::{self, ClientInfo};
use crate::auth::Principal;
use crate::orchestrator::cancel::cancel_task;
use crate::orchestrator::signals::{Signal, WorkKind};
use crate::orchestrator::submit::{self, Admission, Submission, SubmitError};
use crate::state::AppState;
use crate::store::Tx;
use crate::store::batches::{self, Batch, Inserted, NewBatch, NewItem};
use crate::validation::Invalid;

/// Longest `custom_id`, in characters.
pub const MAX_CUSTOM_ID: usize = 255;

/// A batch to create: its task definitions already checked.
#[derive(Debug)]
pub struct NewBatchRequest {
    /// What it is for (may be empty).
    pub description: String,
    /// Tasks running at once, at most; `None`: the setting's most.
    pub max_concurrency: Option<u32>,
    /// The tasks, in order, each with the caller's own id for it.
    pub tasks: Vec<(Option<String>, Submission)>,
    /// Replays with the same key return the first batch.
    pub idempotency_key: Option<String>,
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    /// A new running batch.
    New(Box<Batch>),
    /// The idempotency key was used for the same request: that batch.
    Replayed(Box<Batch>),
}

/// Why a batch was not created or changed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A definition, an agent or a limit was refused (or the database
    /// failed), as for one task.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// No such batch in the caller's organization.
    #[error("batch not found")]
    NotFound,
    /// The batch is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Submit(SubmitError::Storage(e))
    }
}

impl From<Invalid> for BatchError {
    fn from(e: Invalid) -> Self {
        BatchError::Submit(SubmitError::Invalid(e))
    }
}

/// Create a batch of `req.tasks` for `who`: every task is prepared (its
/// agent's settings applied; an unknown or inactive agent refuses the
/// batch, naming the task), the batch stored within the user's and the
/// organization's limits of unfinished work (it counts as one), audited,
/// its first tasks queued and the workers woken.
pub async fn create(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    req: NewBatchRequest,
) -> Result<Created, BatchError> {
    let parallelism = parallelism(state, req.max_concurrency)?;
    let items = prepare(state, &who.org_id, req.tasks).await?;
    let new = NewBatch {
        org_id: who.org_id.clone(),
        user_id: who.user_id.clone(),
        api_key_id: who.api_key_id().map(str::to_string),
        description: req.description.trim().to_string(),
        parallelism: i64::from(parallelism),
        idempotency_key: req.idempotency_key,
        request_hash: hash(&req.description, parallelism, &items),
    };
    let (mut tx, batch) = match store(state, who, &new, &items).await? {
        Stored::New(tx, batch) => (tx, batch),
        Stored::Existing(batch) => {
            if batch.request_hash != new.request_hash {
                return Err(SubmitError::IdempotencyConflict.into());
            }
            return Ok(Created::Replayed(batch));
        }
    };
    audit::record(
        &mut tx,
        who,
        client,
        "batch_created",
        json!({ "batch_id": batch.id, "tasks": batch.total, "max_concurrency": batch.parallelism }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish_due(WorkKind::Tasks);
    tracing::info!(batch_id = %batch.id, total = batch.total, parallelism = batch.parallelism, "batch created");
    Ok(Created::New(batch))
}

/// A new batch's concurrency: `requested`, or the most the settings allow.
pub(crate) fn parallelism(state: &AppState, requested: Option<u32>) -> Result<u32, Invalid> {
    let most = state.config.tasks.batch_max_concurrency;
    let parallelism = requested.unwrap_or(most);
    if !(1..=most).contains(&parallelism) {
        return Err(Invalid::field(
            "max_concurrency",
            format!("must be 1 to {most}"),
        ));
    }
    Ok(parallelism)
}

/// What [`store`] did.
pub(crate) enum Stored {
    /// Stored in the transaction, left open for the caller to add what
    /// goes with the batch, audit and commit.
    New(Tx, Box<Batch>),
    /// An earlier batch of the same idempotency key (committed).
    Existing(Box<Batch>),
}

/// Store batch `new` with its `items` within `who`'s limits of unfinished
/// work (the batch counts as one) and the organization's cap.
pub(crate) async fn store(
    state: &AppState,
    who: &Principal,
    new: &NewBatch,
    items: &[NewItem],
) -> Result<Stored, SubmitError> {
    let Admission {
        mut tx,
        limit,
        organization_full,
    } = submit::admission(state, who).await?;
    if let Some(cap) = organization_full {
        return Err(SubmitError::OrganizationBusy { limit: cap });
    }
    match batches::insert(&mut tx, new, items, limit).await? {
        Inserted::Created(batch) => Ok(Stored::New(tx, batch)),
        Inserted::Existing(batch) => {
            tx.commit().await?;
            Ok(Stored::Existing(batch))
        }
        Inserted::TooManyUnfinished => Err(SubmitError::TooManyUnfinished { limit }),
    }
}

/// Each task as the item to store, its agent's settings applied (each
/// agent read once); a bad agent is named by its task's position.
async fn prepare(
    state: &AppState,
    org_id: &str,
    tasks: Vec<(Option<String>, Submission)>,
) -> Result<Vec<NewItem>, BatchError> {
    let mut agents: HashMap<String, Result<Option<AgentConfig>, Invalid>> = HashMap::new();
    let mut tx = state.db.tenant_read(org_id).await?;
    for (_, s) in &tasks {
        if let Some(id) = &s.work.agent_id
            && !agents.contains_key(id)
        {
            let settings = match submit::agent_settings(&mut tx, org_id, id).await {
                Ok(settings) => Ok(settings),
                Err(SubmitError::Invalid(e)) => Err(e),
                Err(e) => return Err(e.into()),
            };
            agents.insert(id.clone(), settings);
        }
    }
    tx.commit().await?;
    let mut problems = std::collections::BTreeMap::new();
    let mut items = Vec::with_capacity(tasks.len());
    for (i, (custom_id, s)) in tasks.into_iter().enumerate() {
        let agent = match s.work.agent_id.as_ref().and_then(|id| agents.get(id)) {
            Some(Err(invalid)) => {
                for (field, messages) in &invalid.0 {
                    problems.insert(format!("tasks[{i}].{field}"), messages.clone());
                }
                continue;
            }
            Some(Ok(settings)) => settings.as_ref(),
            // No agent named: every named agent was read by the loop above.
            None => None,
        };
        let mut request = submit::request(s.work, agent);
        request.tool = s.tool;
        items.push(NewItem {
            custom_id,
            description: s.description.trim().to_string(),
            task_type: request.task_type.clone(),
            priority: s.priority.rank(),
            agent_id: request.agent_id.clone(),
            request: request.to_json(),
            request_hash: request.hash(org_id),
            stream: s.stream,
            use_cache: s.use_cache,
        });
    }
    if !problems.is_empty() {
        return Err(Invalid(problems).into());
    }
    Ok(items)
}

/// What makes two batch requests the same, for idempotent replays.
fn hash(description: &str, parallelism: u32, items: &[NewItem]) -> String {
    let mut h = Sha256::new();
    h.update(description.trim().as_bytes());
    h.update([0]);
    h.update(parallelism.to_le_bytes());
    for item in items {
        h.update(item.custom_id.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(item.description.as_bytes());
        h.update([0]);
        h.update(item.priority.to_le_bytes());
        h.update([u8::from(item.stream), u8::from(item.use_cache)]);
        h.update(item.request_hash.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Cancel a running batch: no further task starts (the batch's row says
/// so once committed, and every task's end reads it), then its tasks
/// still pending or running are cancelled, each in its own transaction
/// (their provider calls dropped), as a task's end takes its task row
/// before its batch's. Returns the batch as it is now.
pub async fn cancel(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
) -> Result<Batch, BatchError> {
    let mut tx = state.db.tenant(&who.org_id).await?;
    if batches::cancel(&mut tx, &who.org_id, id).await?.is_none() {
        let batch = batches::get(&mut tx, &who.org_id, id)
            .await?
            .ok_or(BatchError::NotFound)?;
        return Err(BatchError::Conflict(format!(
            "the batch is already {}; only running batches can be cancelled",
            batch.status
        )));
    }
    audit::record(
        &mut tx,
        who,
        client,
        "batch_cancelled",
        json!({ "batch_id": id }),
    )
    .await?;
    tx.commit().await?;
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let unfinished = batches::unfinished_tasks(&mut tx, &who.org_id, id).await?;
    tx.commit().await?;
    for task_id in unfinished {
        let mut tx = state.db.tenant(&who.org_id).await?;
        let stopped = cancel_task(&mut tx, &state.signals, &who.org_id, &task_id).await?;
        tx.commit().await?;
        if stopped.is_some() {
            state.signals.publish(Signal::Events(task_id.clone()));
            state.signals.publish(Signal::Cancelled(task_id));
        }
    }
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let batch = batches::get(&mut tx, &who.org_id, id)
        .await?
        .ok_or(BatchError::NotFound)?;
    tx.commit().await?;
    Ok(batch)
}
