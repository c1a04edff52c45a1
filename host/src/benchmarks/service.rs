//! What the API does with benchmarks: start one (its runs stored as a
//! batch of tasks pinned to their targets, within the submitter's limits,
//! audited) and rate its outputs; [`super::report`] says what it found.

use std::collections::HashSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Layout, MAX_RUNS};
use crate::audit::{self, ClientInfo};
use crate::auth::Principal;
use crate::batches::service::Stored;
use crate::orchestrator::request::ChatMessage;
use crate::orchestrator::sampling::Sampling;
use crate::orchestrator::signals::WorkKind;
use crate::orchestrator::state::TaskStatus;
use crate::orchestrator::submit::{self, SubmitError, Work};
use crate::state::AppState;
use crate::store::batches::{self, NewBatch, NewItem};
use crate::store::benchmarks::{self, Benchmark, NewBenchmark};
use crate::store::integrations;
use crate::validation::{FieldErrors, Invalid};

/// A benchmark to start, every field already checked but the targets'
/// integrations.
#[derive(Debug)]
pub struct NewBenchmarkRequest {
    /// What it is called.
    pub name: String,
    /// The built-in suite it runs, if any.
    pub suite: Option<String>,
    /// Task type of its runs.
    pub task_type: String,
    /// The prompts.
    pub prompts: Vec<String>,
    /// The targets, `integration/model`, distinct.
    pub targets: Vec<String>,
    /// Runs of each prompt on each target.
    pub repetitions: u32,
    /// Runs at once, at most; `None`: the batch setting's most.
    pub max_concurrency: Option<u32>,
    /// Sampling temperature of every run.
    pub temperature: Option<f64>,
    /// Completion token cap of every run.
    pub max_tokens: Option<u32>,
    /// JSON object passed to the router and providers with every run.
    pub metadata: Value,
}

/// Why a benchmark was not started, rated or read.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// A field or a limit was refused (or the database failed), as for a
    /// task.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// No such benchmark in the caller's organization.
    #[error("benchmark not found")]
    NotFound,
}

impl From<sqlx::Error> for BenchmarkError {
    fn from(e: sqlx::Error) -> Self {
        BenchmarkError::Submit(SubmitError::Storage(e))
    }
}

impl From<Invalid> for BenchmarkError {
    fn from(e: Invalid) -> Self {
        BenchmarkError::Submit(SubmitError::Invalid(e))
    }
}

/// Start a benchmark for `who`: each target must name an integration of
/// the organization; its runs are stored as a batch (counted as one
/// unfinished item against the user's and the organization's limits) of
/// tasks pinned to their targets and kept out of the response cache, the
/// benchmark with it, audited; the first runs are queued at once.
pub async fn create(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    req: NewBenchmarkRequest,
) -> Result<Benchmark, BenchmarkError> {
    let parallelism = crate::batches::service::parallelism(state, req.max_concurrency)?;
    let layout = Layout {
        targets: req.targets.len(),
        prompts: req.prompts.len(),
        repetitions: req.repetitions as usize,
    };
    let max_runs = MAX_RUNS.min(state.config.tasks.batch_max_tasks as usize);
    if layout.runs() > max_runs {
        return Err(Invalid::field(
            "repetitions",
            format!(
                "prompts × targets × repetitions is {}; at most {max_runs} runs",
                layout.runs()
            ),
        )
        .into());
    }
    check_integrations(state, &who.org_id, &req.targets).await?;
    let items = items(&who.org_id, &req);
    let new_batch = NewBatch {
        org_id: who.org_id.clone(),
        user_id: who.user_id.clone(),
        api_key_id: who.api_key_id().map(str::to_string),
        description: format!("benchmark: {}", req.name),
        parallelism: i64::from(parallelism),
        idempotency_key: None,
        request_hash: hash(&items),
    };
    let (mut tx, batch) =
        match crate::batches::service::store(state, who, &new_batch, &items).await? {
            Stored::New(tx, batch) => (tx, batch),
            // Without an idempotency key no earlier batch is found.
            Stored::Existing(_) => return Err(SubmitError::IdempotencyConflict.into()),
        };
    let benchmark = benchmarks::insert(
        &mut tx,
        &NewBenchmark {
            org_id: who.org_id.clone(),
            user_id: who.user_id.clone(),
            name: req.name,
            suite: req.suite,
            task_type: req.task_type,
            prompts: req.prompts,
            targets: req.targets,
            repetitions: i64::from(req.repetitions),
            batch_id: batch.id.clone(),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        who,
        client,
        "benchmark_created",
        json!({ "benchmark_id": benchmark.id, "batch_id": batch.id, "name": benchmark.name,
                "targets": benchmark.targets, "runs": batch.total }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish_due(WorkKind::Tasks);
    tracing::info!(benchmark_id = %benchmark.id, batch_id = %batch.id, runs = batch.total, "benchmark started");
    Ok(benchmark)
}

/// Refuse targets whose integration the organization does not have, each
/// named by its position.
async fn check_integrations(
    state: &AppState,
    org_id: &str,
    targets: &[String],
) -> Result<(), BenchmarkError> {
    let mut tx = state.db.tenant_read(org_id).await?;
    let names: HashSet<String> = integrations::list(&mut tx, org_id)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    tx.commit().await?;
    let mut errors = FieldErrors::new();
    for (i, target) in targets.iter().enumerate() {
        let integration = target.split_once('/').map_or("", |(name, _)| name);
        errors.check(
            names.contains(integration),
            &format!("targets[{i}]"),
            "names no integration of the organization",
        );
    }
    Ok(errors.finish()?)
}

/// The batch items of the runs, in run order (see [`Layout`]).
fn items(org_id: &str, req: &NewBenchmarkRequest) -> Vec<NewItem> {
    let mut items = Vec::new();
    for repetition in 0..req.repetitions {
        for (p, prompt) in req.prompts.iter().enumerate() {
            for target in &req.targets {
                let run = items.len();
                let work = Work {
                    task_type: req.task_type.clone(),
                    messages: vec![ChatMessage {
                        role: "user".into(),
                        content: prompt.clone(),
                        ..ChatMessage::default()
                    }],
                    sampling: Sampling {
                        model: Some(target.clone()),
                        temperature: req.temperature,
                        max_tokens: req.max_tokens,
                        stop: None,
                        prefer: None,
                    },
                    agent_id: None,
                    metadata: req.metadata.clone(),
                };
                let request = submit::request(work, None);
                items.push(NewItem {
                    custom_id: Some(format!("run-{run}")),
                    description: format!(
                        "benchmark {}: {target}, prompt {p}, repetition {repetition}",
                        req.name
                    ),
                    task_type: request.task_type.clone(),
                    priority: 1,
                    agent_id: None,
                    request: request.to_json(),
                    request_hash: request.hash(org_id),
                    stream: false,
                    use_cache: false,
                });
            }
        }
    }
    items
}

fn hash(items: &[NewItem]) -> String {
    let mut h = Sha256::new();
    for item in items {
        h.update(item.request_hash.as_bytes());
    }
    hex::encode(h.finalize())
}

/// One rating to store: run `run`'s output rated `rating` (1–5, checked).
#[derive(Debug, Clone, Copy)]
pub struct Rating {
    /// The run's index.
    pub run: i64,
    /// 1–5.
    pub rating: i64,
}

/// Store `who`'s ratings of runs of benchmark `id` (each replacing their
/// earlier rating of that run), all or none: every run must exist and
/// have completed (an output to rate). Audited.
pub async fn rate(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    ratings: &[Rating],
) -> Result<(), BenchmarkError> {
    let mut tx = state.db.tenant(&who.org_id).await?;
    let benchmark = benchmarks::get(&mut tx, &who.org_id, id)
        .await?
        .ok_or(BenchmarkError::NotFound)?;
    let runs = batches::results(
        &mut tx,
        &who.org_id,
        &benchmark.batch_id,
        -1,
        MAX_RUNS as i64,
    )
    .await?;
    let mut errors = FieldErrors::new();
    for (i, r) in ratings.iter().enumerate() {
        let field = format!("ratings[{i}].run");
        match usize::try_from(r.run).ok().and_then(|n| runs.get(n)) {
            None => errors.add(&field, "no such run in the benchmark"),
            Some(run) => errors.check(
                run.status == Some(TaskStatus::Completed),
                &field,
                "the run has no output to rate (it has not completed)",
            ),
        }
    }
    errors.finish()?;
    for r in ratings {
        benchmarks::rate(&mut tx, &who.org_id, id, r.run, &who.user_id, r.rating).await?;
    }
    audit::record(
        &mut tx,
        who,
        client,
        "benchmark_rated",
        json!({ "benchmark_id": id, "ratings": ratings.len() }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
