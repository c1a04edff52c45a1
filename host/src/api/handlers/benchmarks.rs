//! Provider benchmarks: start one (prompts or a built-in suite × targets ×
//! repetitions, each run an ordinary task), list them, read one's figures
//! and comparisons, rate its outputs.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::check_text;
use crate::api::pagination;
use crate::auth::Principal;
use crate::benchmarks::report::{self, Comparison, Report, Run, TargetFigures};
use crate::benchmarks::service::{self, BenchmarkError, NewBenchmarkRequest, Rating};
use crate::benchmarks::{MAX_PROMPTS, MAX_REPETITIONS, MAX_RUNS, MAX_TARGETS, SUITES, suite};
use crate::money::Usd;
use crate::orchestrator::catalog::parse_task_type;
use crate::orchestrator::sampling::{MAX_MODEL_BYTES, Sampling};
use crate::orchestrator::submit::MAX_MESSAGE;
use crate::state::AppState;
use crate::store::batches::{self, Batch, Counts};
use crate::store::benchmarks::{self, Benchmark};
use crate::store::to_rfc3339;
use crate::validation::FieldErrors;

/// Longest benchmark name, in characters.
const MAX_NAME: usize = 200;
/// Repetitions when the request names none.
const DEFAULT_REPETITIONS: u32 = 3;
/// Most ratings in one request.
const MAX_RATINGS: usize = MAX_RUNS;

/// A benchmark to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBenchmark {
    /// What it is called (1–200 characters; default: the suite's name, or
    /// `benchmark`).
    #[serde(default)]
    pub name: Option<String>,
    /// A built-in suite of prompts: `code_generation`, `reasoning` or
    /// `research` (its task type too). Give it or `prompts`.
    #[serde(default)]
    pub suite: Option<String>,
    /// The prompts, 1–50, each a user message.
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
    /// The runs' task type with `prompts` (default `general`).
    #[serde(default)]
    pub task_type: Option<String>,
    /// 1–10 distinct targets, each `integration/model` of an integration of
    /// the organization.
    pub targets: Vec<String>,
    /// Runs of each prompt on each target, 1–20 (default 3); prompts ×
    /// targets × repetitions at most 500.
    #[serde(default)]
    pub repetitions: Option<u32>,
    /// Runs at once, at most: 1 to `VEL_BATCH_MAX_CONCURRENCY` (its value
    /// by default).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Sampling parameters of every run.
    #[serde(default)]
    pub parameters: Option<BenchmarkParameters>,
    /// JSON object passed to the router and providers with every run.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Sampling parameters of a benchmark's runs (the model is each target's).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkParameters {
    /// 0–2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// 1–1,000,000.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// Ratings of a benchmark's outputs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateOutputs {
    /// 1–500 ratings, each of one completed run's output.
    pub ratings: Vec<OutputRating>,
}

/// One output's rating.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRating {
    /// The run whose output is rated (its `run` index).
    pub run: i64,
    /// 1 (worst) to 5 (best); rating a run again replaces your rating.
    pub rating: i64,
}

/// A benchmark and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkView {
    /// Id.
    pub id: String,
    /// What it is called.
    pub name: String,
    /// `running`, `completed` (every run ended) or `cancelled` (its batch
    /// was).
    pub status: String,
    /// Who started it.
    pub user_id: Option<String>,
    /// The built-in suite it runs, if any.
    pub suite: Option<String>,
    /// The runs' task type.
    pub task_type: String,
    /// `integration/model`, in order.
    pub targets: Vec<String>,
    /// Prompts.
    pub prompt_count: usize,
    /// Runs of each prompt on each target.
    pub repetitions: i64,
    /// Runs in all.
    pub runs: i64,
    /// Runs ended, whatever the outcome.
    pub ended: i64,
    /// Runs at once, at most.
    pub max_concurrency: i64,
    /// The batch whose tasks are its runs (`/api/batches/{id}` cancels it).
    pub batch_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once completed or cancelled.
    pub finished_at: Option<String>,
}

impl BenchmarkView {
    fn of(b: &Benchmark, batch: &Batch, c: Counts) -> Self {
        // A cancelled batch's runs never released ended unrun.
        let never_run = match batch.status {
            crate::batches::BatchStatus::Cancelled => batch.total - c.released,
            _ => 0,
        };
        let ended = c.completed + c.failed + c.cancelled + never_run;
        BenchmarkView {
            id: b.id.clone(),
            name: b.name.clone(),
            status: batch.status.as_str().to_string(),
            user_id: b.user_id.clone(),
            suite: b.suite.clone(),
            task_type: b.task_type.clone(),
            targets: b.targets.clone(),
            prompt_count: b.prompts.len(),
            repetitions: b.repetitions,
            runs: batch.total,
            ended,
            max_concurrency: batch.parallelism,
            batch_id: batch.id.clone(),
            created_at: to_rfc3339(b.created_at),
            finished_at: batch.finished_at.map(to_rfc3339),
        }
    }
}

/// A benchmark with what it found.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkReport {
    /// The benchmark.
    #[serde(flatten)]
    pub benchmark: BenchmarkView,
    /// The prompts, in order.
    pub prompts: Vec<String>,
    /// US dollars over every run so far.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Figures by target, in the benchmark's order.
    pub by_target: Vec<TargetFigures>,
    /// Once completed: each pair of targets on latency, cost and ratings
    /// (where both have at least two values), Welch's t-test, p < 0.05
    /// called significant.
    pub comparisons: Vec<Comparison>,
    /// Every run, in order.
    pub run_list: Vec<Run>,
}

impl BenchmarkReport {
    fn of(r: Report) -> Self {
        let counts = Counts {
            released: r
                .runs
                .iter()
                .filter(|x| !matches!(x.status.as_str(), "queued" | "not_run"))
                .count() as i64,
            running: r
                .runs
                .iter()
                .filter(|x| matches!(x.status.as_str(), "pending" | "in_progress"))
                .count() as i64,
            completed: r.runs.iter().filter(|x| x.status == "completed").count() as i64,
            failed: r.runs.iter().filter(|x| x.status == "failed").count() as i64,
            cancelled: r.runs.iter().filter(|x| x.status == "cancelled").count() as i64,
            cost: r.cost,
        };
        BenchmarkReport {
            benchmark: BenchmarkView::of(&r.benchmark, &r.batch, counts),
            prompts: r.benchmark.prompts,
            cost_usd: r.cost.usd(),
            by_target: r.targets,
            comparisons: r.comparisons,
            run_list: r.runs,
        }
    }
}

/// A page of benchmarks.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkList {
    /// Benchmarks, newest first.
    pub items: Vec<BenchmarkView>,
    /// All of the organization's.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Query of `GET /api/benchmarks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BenchmarkQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

/// Check a benchmark request field by field.
fn check(body: CreateBenchmark) -> Result<NewBenchmarkRequest, ApiError> {
    let mut errors = FieldErrors::new();
    let (suite_name, task_type, prompts) = match (&body.suite, body.prompts) {
        (Some(_), Some(_)) => {
            errors.add("prompts", "give either suite or prompts, not both");
            (None, String::new(), Vec::new())
        }
        (None, None) => {
            errors.add("prompts", "prompts or a suite is required");
            (None, String::new(), Vec::new())
        }
        (Some(name), None) => {
            if body.task_type.is_some() {
                errors.add("task_type", "a suite sets its own task type");
            }
            match suite(name) {
                Some(s) => (
                    Some(s.name.to_string()),
                    s.task_type.to_string(),
                    s.prompts.iter().map(|p| p.to_string()).collect(),
                ),
                None => {
                    let names: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
                    errors.add("suite", &format!("must be one of {}", names.join(", ")));
                    (None, String::new(), Vec::new())
                }
            }
        }
        (None, Some(prompts)) => {
            if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
                errors.add("prompts", &format!("must hold 1 to {MAX_PROMPTS} prompts"));
            }
            for (i, p) in prompts.iter().enumerate() {
                check_text(&mut errors, &format!("prompts[{i}]"), p, MAX_MESSAGE);
            }
            let task_type = body.task_type.clone().unwrap_or_else(|| "general".into());
            errors.check(
                parse_task_type(&task_type).is_some(),
                "task_type",
                "must be one of reasoning, code_generation, research, light, general",
            );
            (None, task_type, prompts)
        }
    };
    let name = body
        .name
        .clone()
        .or_else(|| suite_name.clone())
        .unwrap_or_else(|| "benchmark".into());
    check_text(&mut errors, "name", &name, MAX_NAME);
    if body.targets.is_empty() || body.targets.len() > MAX_TARGETS {
        errors.add("targets", &format!("must hold 1 to {MAX_TARGETS} targets"));
    }
    let mut seen = HashSet::new();
    for (i, t) in body.targets.iter().enumerate() {
        let field = format!("targets[{i}]");
        let well_formed = t.len() <= MAX_MODEL_BYTES
            && t.trim() == t
            && t.split_once('/')
                .is_some_and(|(integration, model)| !integration.is_empty() && !model.is_empty());
        if !well_formed {
            errors.add(&field, "must be integration/model (at most 200 characters)");
        } else if !seen.insert(t.as_str()) {
            errors.add(&field, "is named by an earlier target");
        }
    }
    let repetitions = body.repetitions.unwrap_or(DEFAULT_REPETITIONS);
    errors.check(
        (1..=MAX_REPETITIONS).contains(&repetitions),
        "repetitions",
        &format!("must be 1 to {MAX_REPETITIONS}"),
    );
    let parameters = body.parameters.unwrap_or_default();
    let sampling = Sampling {
        temperature: parameters.temperature,
        max_tokens: parameters.max_tokens,
        ..Sampling::default()
    };
    sampling.check("parameters.", &mut errors);
    if let Some(meta) = &body.metadata {
        errors.check(meta.is_object(), "metadata", "must be a JSON object");
    }
    errors.finish()?;
    Ok(NewBenchmarkRequest {
        name: name.trim().to_string(),
        suite: suite_name,
        task_type,
        prompts,
        targets: body.targets,
        repetitions,
        max_concurrency: body.max_concurrency,
        temperature: sampling.temperature,
        max_tokens: sampling.max_tokens,
        metadata: body.metadata.unwrap_or_else(|| json!({})),
    })
}

/// Start a benchmark (task_executor or above): each prompt (yours, or a
/// built-in suite's) runs on each target `repetitions` times, the targets
/// taking turns, as ordinary tasks pinned to their targets and kept out of
/// the response cache, so they are routed, rate-limited, budgeted, costed
/// and audited as any task. Its runs are a batch (counted as one
/// unfinished item against the submitter's limits). 422 naming the field
/// for a bad request, nothing stored.
#[utoipa::path(post, path = "/api/benchmarks", tag = "benchmarks", request_body = CreateBenchmark,
    responses((status = 201, body = BenchmarkView), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateBenchmark>,
) -> Result<(StatusCode, Json<BenchmarkView>), ApiError> {
    let req = check(body)?;
    state.limits.admit_task(&p).await?;
    let benchmark = service::create(&state, &p, &client, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &p, &benchmark).await?),
    ))
}

async fn view(state: &AppState, p: &Principal, b: &Benchmark) -> Result<BenchmarkView, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let batch = batches::get(&mut tx, &p.org_id, &b.batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found("benchmark"))?;
    let counts = batches::counts(&mut tx, &p.org_id, &[batch.id.as_str()]).await?;
    tx.commit().await?;
    let c = counts.get(&batch.id).copied().unwrap_or_default();
    Ok(BenchmarkView::of(b, &batch, c))
}

/// The organization's benchmarks, newest first, 20 per page by default
/// (view_analytics). Benchmarks are kept: none is overwritten.
#[utoipa::path(get, path = "/api/benchmarks", tag = "benchmarks", params(BenchmarkQuery),
    responses((status = 200, body = BenchmarkList), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<BenchmarkQuery>,
) -> Result<Json<BenchmarkList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = benchmarks::page(&mut tx, &p.org_id, limit, offset).await?;
    let ids: Vec<&str> = rows.iter().map(|b| b.batch_id.as_str()).collect();
    let counts = batches::counts(&mut tx, &p.org_id, &ids).await?;
    let mut items = Vec::with_capacity(rows.len());
    for b in &rows {
        if let Some(batch) = batches::get(&mut tx, &p.org_id, &b.batch_id).await? {
            let c = counts.get(&batch.id).copied().unwrap_or_default();
            items.push(BenchmarkView::of(b, &batch, c));
        }
    }
    tx.commit().await?;
    Ok(Json(BenchmarkList {
        items,
        total,
        limit,
        offset,
    }))
}

/// One benchmark (view_analytics): its status, every run, and by target
/// the latency distribution (p50/p95/p99, mean, standard deviation),
/// cost, tokens, errors by kind and ratings; once completed, each pair of
/// targets compared on latency, cost and ratings by Welch's t-test, with
/// p-values and a sentence ("mock/echo is faster than mock/slow, p <
/// 0.001").
#[utoipa::path(get, path = "/api/benchmarks/{id}", tag = "benchmarks",
    params(("id" = String, Path, description = "Benchmark id")),
    responses((status = 200, body = BenchmarkReport), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<BenchmarkReport>, ApiError> {
    let report = report::read(&state, &p.org_id, &id).await?;
    Ok(Json(BenchmarkReport::of(report)))
}

/// Rate outputs of a benchmark's completed runs, 1 to 5 each
/// (task_executor or above); your later rating of a run replaces your
/// earlier one. All or none: 422 naming the rating when one is out of
/// range or its run has no output. Ratings are compared between targets
/// like latency and cost.
#[utoipa::path(post, path = "/api/benchmarks/{id}/ratings", tag = "benchmarks",
    params(("id" = String, Path, description = "Benchmark id")), request_body = RateOutputs,
    responses((status = 200, body = BenchmarkReport), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rate(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RateOutputs>,
) -> Result<Json<BenchmarkReport>, ApiError> {
    let mut errors = FieldErrors::new();
    if body.ratings.is_empty() || body.ratings.len() > MAX_RATINGS {
        errors.add("ratings", &format!("must hold 1 to {MAX_RATINGS} ratings"));
    }
    for (i, r) in body.ratings.iter().enumerate() {
        errors.check(
            (1..=5).contains(&r.rating),
            &format!("ratings[{i}].rating"),
            "must be 1 to 5",
        );
    }
    let ratings: Vec<Rating> = body
        .ratings
        .iter()
        .map(|r| Rating {
            run: r.run,
            rating: r.rating,
        })
        .collect();
    // An unknown benchmark is 404 whatever the body says.
    let known = {
        let mut tx = state.db.tenant_read(&p.org_id).await?;
        let b = benchmarks::get(&mut tx, &p.org_id, &id).await?;
        tx.commit().await?;
        b.is_some()
    };
    if !known {
        return Err(ApiError::not_found("benchmark"));
    }
    errors.finish()?;
    service::rate(&state, &p, &client, &id, &ratings).await?;
    let report = report::read(&state, &p.org_id, &id).await?;
    Ok(Json(BenchmarkReport::of(report)))
}

impl From<BenchmarkError> for ApiError {
    fn from(e: BenchmarkError) -> ApiError {
        match e {
            BenchmarkError::Submit(e) => e.into(),
            BenchmarkError::NotFound => ApiError::not_found("benchmark"),
        }
    }
}
