//! What the API does with benchmarks: start one (its runs stored as a
//! batch of tasks pinned to their targets, within the submitter's limits,
//! audited), rate its outputs, and report what it found.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::stats::{self, ALPHA, Summary};
use super::{Layout, MAX_RUNS};
use crate::audit::{self, ClientInfo};
use crate::auth::Principal;
use crate::batches::BatchStatus;
use crate::money::{Money, Usd};
use crate::orchestrator::request::ChatMessage;
use crate::orchestrator::sampling::Sampling;
use crate::orchestrator::signals::WorkKind;
use crate::orchestrator::state::TaskStatus;
use crate::orchestrator::submit::{self, Admission, SubmitError, Work};
use crate::state::AppState;
use crate::store::batches::{self, Batch, Inserted, ItemResult, NewBatch, NewItem};
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
    let most = state.config.tasks.batch_max_concurrency;
    let parallelism = req.max_concurrency.unwrap_or(most);
    if !(1..=most).contains(&parallelism) {
        return Err(Invalid::field("max_concurrency", format!("must be 1 to {most}")).into());
    }
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
    let Admission {
        mut tx,
        limit,
        organization_full,
    } = submit::admission(state, who).await?;
    if let Some(cap) = organization_full {
        return Err(SubmitError::OrganizationBusy { limit: cap }.into());
    }
    let batch = match batches::insert(&mut tx, &new_batch, &items, limit).await? {
        Inserted::Created(batch) => batch,
        Inserted::TooManyUnfinished => {
            return Err(SubmitError::TooManyUnfinished { limit }.into());
        }
        // Without an idempotency key no earlier batch is found.
        Inserted::Existing(_) => return Err(SubmitError::IdempotencyConflict.into()),
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

/// One run of a benchmark and its outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Run {
    /// Its index (what a rating names).
    pub run: usize,
    /// The target it ran on.
    pub target: String,
    /// Index of its prompt.
    pub prompt: usize,
    /// Its repetition, from 0.
    pub repetition: usize,
    /// The task it ran as.
    pub task_id: String,
    /// The task's status; `queued` while it waits for its turn, `not_run`
    /// when the benchmark's batch was cancelled first.
    pub status: String,
    /// Milliseconds from the task's start to its end, once completed.
    pub latency_ms: Option<i64>,
    /// US dollars over its provider calls.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// `integration/model` that answered.
    pub answered_by: Option<String>,
    /// The answer's text, once completed.
    pub output: Option<String>,
    /// The error's kind, once failed.
    pub error_kind: Option<String>,
    /// Its ratings (1–5), one per person who rated it.
    pub ratings: Vec<i64>,
}

/// What one target did over its runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetFigures {
    /// `integration/model`.
    pub target: String,
    /// Its runs.
    pub runs: usize,
    /// Those completed.
    pub completed: usize,
    /// Those failed.
    pub failed: usize,
    /// Those cancelled or never run.
    pub cancelled: usize,
    /// Those queued or running.
    pub unfinished: usize,
    /// Failed runs by error kind.
    pub errors: BTreeMap<String, usize>,
    /// Latency of the completed runs, in milliseconds.
    pub latency_ms: Option<Summary>,
    /// Cost of the completed runs, in US dollars each.
    pub cost_per_run_usd: Option<Summary>,
    /// US dollars over all its runs.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Prompt tokens over all its runs.
    pub input_tokens: i64,
    /// Completion tokens over all its runs.
    pub output_tokens: i64,
    /// Its outputs' ratings (1–5).
    pub rating: Option<Summary>,
}

/// What two targets are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Milliseconds per completed run (lower is better).
    Latency,
    /// US dollars per completed run (lower is better).
    Cost,
    /// Ratings of the outputs (higher is better).
    Rating,
}

impl Metric {
    /// The sentence's verb for the better target, and whether a lower
    /// mean is better.
    fn words(self) -> (&'static str, &'static str, bool) {
        match self {
            Metric::Latency => ("is faster than", "latency", true),
            Metric::Cost => ("is cheaper than", "cost", true),
            Metric::Rating => ("is rated higher than", "ratings", false),
        }
    }
}

/// Two targets compared on one metric by Welch's t-test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comparison {
    /// What is compared.
    pub metric: Metric,
    /// The first target.
    pub a: String,
    /// The second target.
    pub b: String,
    /// The first target's mean (ms, US dollars or points).
    pub mean_a: f64,
    /// The second target's mean.
    pub mean_b: f64,
    /// Welch's t statistic (none when neither sample varies).
    pub t: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `p_value` < 0.05.
    pub significant: bool,
    /// The better target when the difference is significant.
    pub better: Option<String>,
    /// In words: "mock/echo is faster than mock/slow, p = 0.003".
    pub sentence: String,
}

/// What a benchmark found so far.
#[derive(Debug)]
pub struct Report {
    /// The benchmark.
    pub benchmark: Benchmark,
    /// Its batch (status, concurrency, end).
    pub batch: Batch,
    /// Every run, in order.
    pub runs: Vec<Run>,
    /// Figures by target, in the benchmark's order.
    pub targets: Vec<TargetFigures>,
    /// Each pair of targets on each metric with enough data; only once
    /// the benchmark completed.
    pub comparisons: Vec<Comparison>,
    /// US dollars over every run.
    pub cost: Money,
}

/// Benchmark `id` of `org_id` and what it found.
pub async fn report(state: &AppState, org_id: &str, id: &str) -> Result<Report, BenchmarkError> {
    let mut tx = state.db.tenant_read(org_id).await?;
    let benchmark = benchmarks::get(&mut tx, org_id, id)
        .await?
        .ok_or(BenchmarkError::NotFound)?;
    let batch = batches::get(&mut tx, org_id, &benchmark.batch_id)
        .await?
        .ok_or(BenchmarkError::NotFound)?;
    let results = batches::results(&mut tx, org_id, &batch.id, -1, MAX_RUNS as i64).await?;
    let ratings = benchmarks::ratings(&mut tx, org_id, id).await?;
    tx.commit().await?;
    Ok(analyse(benchmark, batch, &results, &ratings))
}

/// The runs, figures and comparisons of `benchmark` from its batch's
/// `results` and the `ratings` of its runs.
fn analyse(
    benchmark: Benchmark,
    batch: Batch,
    results: &[ItemResult],
    ratings: &HashMap<i64, Vec<i64>>,
) -> Report {
    let layout = Layout {
        targets: benchmark.targets.len(),
        prompts: benchmark.prompts.len(),
        repetitions: usize::try_from(benchmark.repetitions).unwrap_or(0),
    };
    let runs: Vec<Run> = results
        .iter()
        .filter_map(|r| {
            let index = usize::try_from(r.index).ok()?;
            let place = layout.place(index)?;
            Some(run(index, &benchmark, &batch, r, place, ratings))
        })
        .collect();
    let targets: Vec<TargetFigures> = benchmark
        .targets
        .iter()
        .map(|t| figures(t, runs.iter().filter(|r| &r.target == t)))
        .collect();
    let comparisons = if batch.status == BatchStatus::Completed {
        compare(&benchmark.targets, &runs)
    } else {
        Vec::new()
    };
    let cost = results.iter().map(|r| r.cost).sum();
    Report {
        benchmark,
        batch,
        runs,
        targets,
        comparisons,
        cost,
    }
}

fn run(
    index: usize,
    benchmark: &Benchmark,
    batch: &Batch,
    r: &ItemResult,
    place: super::Place,
    ratings: &HashMap<i64, Vec<i64>>,
) -> Run {
    let status = match r.status {
        Some(s) => s.as_str().to_string(),
        None if batch.status == BatchStatus::Cancelled => "not_run".into(),
        None => "queued".into(),
    };
    let completed = r.status == Some(TaskStatus::Completed);
    let latency_ms = match (completed, r.started_at, r.finished_at) {
        (true, Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    let field = |json: &Option<String>, key: &str| {
        json.as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_string))
    };
    Run {
        run: index,
        target: benchmark.targets[place.target].clone(),
        prompt: place.prompt,
        repetition: place.repetition,
        task_id: r.task_id.clone(),
        status,
        latency_ms,
        cost_usd: r.cost.usd(),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        answered_by: match (&r.provider, &r.model) {
            (Some(p), Some(m)) => Some(format!("{p}/{m}")),
            _ => None,
        },
        output: if completed {
            field(&r.result, "text")
        } else {
            None
        },
        error_kind: if r.status == Some(TaskStatus::Failed) {
            Some(field(&r.error, "kind").unwrap_or_else(|| "unknown".into()))
        } else {
            None
        },
        ratings: ratings.get(&r.index).cloned().unwrap_or_default(),
    }
}

fn figures<'a>(target: &str, runs: impl Iterator<Item = &'a Run>) -> TargetFigures {
    let mut f = TargetFigures {
        target: target.to_string(),
        runs: 0,
        completed: 0,
        failed: 0,
        cancelled: 0,
        unfinished: 0,
        errors: BTreeMap::new(),
        latency_ms: None,
        cost_per_run_usd: None,
        cost_usd: Money::ZERO.usd(),
        input_tokens: 0,
        output_tokens: 0,
        rating: None,
    };
    let mut cost = Money::ZERO;
    let (mut latencies, mut costs, mut ratings) = (Vec::new(), Vec::new(), Vec::new());
    for r in runs {
        f.runs += 1;
        match r.status.as_str() {
            "completed" => f.completed += 1,
            "failed" => f.failed += 1,
            "cancelled" | "not_run" => f.cancelled += 1,
            _ => f.unfinished += 1,
        }
        if let Some(kind) = &r.error_kind {
            *f.errors.entry(kind.clone()).or_default() += 1;
        }
        let run_cost = r.cost_usd.0;
        cost = cost.saturating_add(run_cost);
        f.input_tokens += r.input_tokens;
        f.output_tokens += r.output_tokens;
        if let Some(ms) = r.latency_ms {
            latencies.push(ms as f64);
            costs.push(run_cost.to_usd_f64());
        }
        ratings.extend(r.ratings.iter().map(|v| *v as f64));
    }
    f.cost_usd = cost.usd();
    f.latency_ms = stats::summary(&latencies);
    f.cost_per_run_usd = stats::summary(&costs);
    f.rating = stats::summary(&ratings);
    f
}

/// Each pair of targets on each metric both have enough data for.
fn compare(targets: &[String], runs: &[Run]) -> Vec<Comparison> {
    let samples = |target: &str, metric: Metric| -> Vec<f64> {
        let mine = runs.iter().filter(|r| r.target == target);
        match metric {
            Metric::Latency => mine
                .filter_map(|r| r.latency_ms)
                .map(|v| v as f64)
                .collect(),
            Metric::Cost => mine
                .filter(|r| r.latency_ms.is_some())
                .map(|r| r.cost_usd.0.to_usd_f64())
                .collect(),
            Metric::Rating => mine
                .flat_map(|r| r.ratings.iter().map(|v| *v as f64))
                .collect(),
        }
    };
    let mut out = Vec::new();
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            for metric in [Metric::Latency, Metric::Cost, Metric::Rating] {
                let (xa, xb) = (samples(a, metric), samples(b, metric));
                if let Some(c) = comparison(metric, a, b, &xa, &xb) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `a` and `b` compared on `metric` by their samples `xa` and `xb`; `None`
/// unless each has two values.
fn comparison(metric: Metric, a: &str, b: &str, xa: &[f64], xb: &[f64]) -> Option<Comparison> {
    let test = stats::welch(xa, xb)?;
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (mean_a, mean_b) = (mean(xa), mean(xb));
    let (verb, noun, lower_is_better) = metric.words();
    let significant = test.p_value < ALPHA && mean_a != mean_b;
    let a_better = (mean_a < mean_b) == lower_is_better;
    let (better, worse) = if a_better { (a, b) } else { (b, a) };
    let p = stats::format_p(test.p_value);
    let sentence = if significant {
        format!("{better} {verb} {worse}, {p}")
    } else {
        format!("no significant difference in {noun} between {a} and {b}, {p}")
    };
    Some(Comparison {
        metric,
        a: a.to_string(),
        b: b.to_string(),
        mean_a,
        mean_b,
        t: test.t,
        df: test.df,
        p_value: test.p_value,
        significant,
        better: significant.then(|| better.to_string()),
        sentence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_names_the_better_target_in_words() {
        let fast = [10.0, 12.0, 11.0, 13.0, 9.0];
        let slow = [100.0, 104.0, 98.0, 101.0, 99.0];
        let c = comparison(Metric::Latency, "mock/slow", "mock/echo", &slow, &fast).unwrap();
        assert!(c.significant && c.p_value < 0.001, "{c:?}");
        assert_eq!(c.better.as_deref(), Some("mock/echo"));
        assert_eq!(c.sentence, "mock/echo is faster than mock/slow, p < 0.001");
        let (good, bad) = ([4.0, 5.0, 5.0, 4.0], [1.0, 2.0, 2.0, 1.0]);
        let c = comparison(Metric::Rating, "x/b", "x/a", &bad, &good).unwrap();
        assert_eq!(c.better.as_deref(), Some("x/a"), "{c:?}");
        assert_eq!(c.sentence, "x/a is rated higher than x/b, p < 0.001");
        let same = comparison(Metric::Cost, "x/a", "x/b", &[1.0, 2.0], &[2.0, 1.0]).unwrap();
        assert!(!same.significant && same.better.is_none());
        assert_eq!(
            same.sentence,
            "no significant difference in cost between x/a and x/b, p = 1.000"
        );
        assert!(comparison(Metric::Cost, "x/a", "x/b", &[1.0], &[2.0, 3.0]).is_none());
    }
}
