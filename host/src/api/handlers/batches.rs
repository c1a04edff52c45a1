//! Batches: submit up to thousands of tasks at once (a JSON document or a
//! JSON Lines upload read as it arrives), read the progress, list, cancel,
//! and download the results as JSON, JSON Lines or CSV, streamed.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::task_export::Format;
use super::tasks::{CreateTask, check_task, idempotency_key};
use crate::api::error::{ApiError, ErrorBody, is_read_timeout};
use crate::api::extract::{ApiPath, ApiQuery, ClientInfo, from_value_at, nul_path, parse_json};
use crate::api::handlers::check_text;
use crate::api::pagination;
use crate::auth::Principal;
use crate::batches::BatchStatus;
use crate::batches::service::{self, BatchError, Created, MAX_CUSTOM_ID, NewBatchRequest};
use crate::money::Usd;
use crate::orchestrator::submit::Submission;
use crate::state::AppState;
use crate::store::batches::{self, Batch, Counts, ItemResult};
use crate::store::{Db, to_rfc3339};
use crate::validation::{FieldErrors, Invalid};

/// Longest batch description, in characters.
const MAX_DESCRIPTION: usize = 1000;

/// A new batch as one JSON document.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// What it is for (up to 1000 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// Tasks of the batch running at once: 1 to `VEL_BATCH_MAX_CONCURRENCY`
    /// (20 unless lowered), which is also the default.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// The tasks, in order: each as `POST /api/tasks` takes one, and an
    /// optional `custom_id` (up to 255 characters, unique in the batch)
    /// to find its result by.
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<Value>,
}

/// The options of a JSON Lines upload (its lines are the tasks).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchOptions {
    /// What it is for (up to 1000 characters).
    pub description: Option<String>,
    /// Tasks of the batch running at once (see `CreateBatch`).
    pub max_concurrency: Option<u32>,
}

/// A batch and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchView {
    /// Id.
    pub id: String,
    /// What it is for.
    pub description: String,
    /// `running`, `completed` (every task ended) or `cancelled`.
    pub status: String,
    /// Submitter.
    pub user_id: Option<String>,
    /// Tasks of the batch running at once, at most.
    pub max_concurrency: i64,
    /// Tasks in the batch.
    pub total: i64,
    /// Tasks ended, whatever the outcome (`completed + failed + cancelled`).
    pub ended: i64,
    /// `ended/total`, as `"37/100"`.
    pub progress: String,
    /// Counts by outcome.
    pub counts: BatchCounts,
    /// US dollars spent by its tasks so far.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once completed or cancelled.
    pub finished_at: Option<String>,
    /// Where to read the results.
    pub results_url: String,
}

/// A batch's tasks by where they are.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCounts {
    /// Waiting for one of the batch's running tasks to end.
    pub queued: i64,
    /// Queued as tasks or running.
    pub running: i64,
    /// Ended with a result.
    pub completed: i64,
    /// Ended without one.
    pub failed: i64,
    /// Cancelled, and in a cancelled batch the tasks that never started.
    pub cancelled: i64,
}

impl BatchView {
    /// `b` with its tasks counted as `c`.
    fn of(b: &Batch, c: Counts) -> Self {
        let unreleased = b.total - c.released;
        let (queued, never_run) = match b.status {
            BatchStatus::Cancelled => (0, unreleased),
            _ => (unreleased, 0),
        };
        let cancelled = c.cancelled + never_run;
        let ended = c.completed + c.failed + cancelled;
        BatchView {
            id: b.id.clone(),
            description: b.description.clone(),
            status: b.status.as_str().to_string(),
            user_id: b.user_id.clone(),
            max_concurrency: b.parallelism,
            total: b.total,
            ended,
            progress: format!("{ended}/{}", b.total),
            counts: BatchCounts {
                queued,
                running: c.running,
                completed: c.completed,
                failed: c.failed,
                cancelled,
            },
            cost_usd: c.cost.usd(),
            created_at: to_rfc3339(b.created_at),
            finished_at: b.finished_at.map(to_rfc3339),
            results_url: format!("/api/batches/{}/results", b.id),
        }
    }
}

/// A page of batches.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchList {
    /// Batches, newest first.
    pub items: Vec<BatchView>,
    /// All matching.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Query of `GET /api/batches`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Only this status: `running`, `completed` or `cancelled`.
    pub status: Option<String>,
}

/// Query of `GET /api/batches/{id}/results`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `json` (default), `jsonl` or `csv`; else what `Accept` asks for.
    pub format: Option<String>,
}

/// Submit a batch of tasks (task_executor or above): a JSON document
/// (`application/json`, `CreateBatch`) or JSON Lines
/// (`application/x-ndjson` or `application/jsonl`: one task per line,
/// options in the query), up to `VEL_BATCH_MAX_TASKS` tasks (10,000) and
/// `VEL_BATCH_MAX_BYTES`. Every task is checked first: one bad task refuses
/// the batch (422 naming `tasks[i].field`, `i` counting from 0 over the
/// tasks or non-empty lines) and nothing is stored. The batch counts as one
/// unfinished item and one task against the submitter's limits; its tasks
/// run at most `max_concurrency` at a time through the same queue, router,
/// retries and budgets as any task. 201 when created; 200 with the earlier
/// batch when the `Idempotency-Key` was used for the same request.
#[utoipa::path(post, path = "/api/batches", tag = "batches", request_body(content = CreateBatch,
        description = "A JSON document, or JSON Lines (`application/x-ndjson`) of task definitions with the options in the query"),
    params(BatchOptions, ("Idempotency-Key" = Option<String>, Header, description = "Replays return the first batch")),
    responses((status = 201, body = BatchView), (status = 200, description = "Idempotent replay", body = BatchView),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    headers: HeaderMap,
    ApiQuery(options): ApiQuery<BatchOptions>,
    body: Body,
) -> Result<(StatusCode, Json<BatchView>), ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let max_tasks = state.config.tasks.batch_max_tasks as usize;
    let max_bytes = state.config.tasks.batch_max_bytes;
    let (description, max_concurrency, items) = match media_type(&headers) {
        Upload::Json => {
            if options.description.is_some() || options.max_concurrency.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "a JSON batch carries its options in the body, not the query",
                ));
            }
            let bytes = read_all(body, max_bytes).await?;
            let doc: CreateBatch = parse_json(&bytes)?;
            (doc.description, doc.max_concurrency, doc.tasks)
        }
        Upload::JsonLines => {
            let line_limit = state.config.max_body_bytes;
            let items = read_lines(body, max_bytes, line_limit, max_tasks).await?;
            (options.description, options.max_concurrency, items)
        }
        Upload::Other => return Err(ApiError::unsupported_media_type()),
    };
    let description = description.unwrap_or_default();
    let tasks = check_tasks(&description, items, max_tasks)?;
    state.limits.admit_task(&p).await?;
    let req = NewBatchRequest {
        description,
        max_concurrency,
        tasks,
        idempotency_key,
    };
    let (status, batch) = match service::create(&state, &p, &client, req).await? {
        Created::New(b) => (StatusCode::CREATED, b),
        Created::Replayed(b) => (StatusCode::OK, b),
    };
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let counts = batches::counts(&mut tx, &p.org_id, &[batch.id.as_str()]).await?;
    tx.commit().await?;
    let c = counts.get(&batch.id).copied().unwrap_or_default();
    Ok((status, Json(BatchView::of(&batch, c))))
}

/// How a batch upload is written.
enum Upload {
    Json,
    JsonLines,
    Other,
}

fn media_type(headers: &HeaderMap) -> Upload {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "application/json" => Upload::Json,
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Upload::JsonLines,
        _ => Upload::Other,
    }
}

fn body_error(e: axum::Error) -> ApiError {
    if is_read_timeout(&e) {
        ApiError::request_timeout()
    } else {
        ApiError::bad_request("invalid_body", format!("reading the body failed: {e}"))
    }
}

/// The whole body, refused past `limit` bytes.
async fn read_all(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(body_error)?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The JSON object on each non-empty line, read as the body arrives: each
/// line at most `line_limit` bytes, the whole at most `limit`, at most
/// `max_items` lines.
async fn read_lines(
    body: Body,
    limit: usize,
    line_limit: usize,
    max_items: usize,
) -> Result<Vec<Value>, ApiError> {
    let mut items = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut read = 0usize;
    let mut chunks = body.into_data_stream();
    let mut done = false;
    while !done {
        match chunks.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(body_error)?;
                read += chunk.len();
                if read > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                pending.extend_from_slice(&chunk);
            }
            None => {
                done = true;
                pending.push(b'\n');
            }
        }
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            line_no += 1;
            let line = &pending[start..start + end];
            start += end + 1;
            if line.len() > line_limit {
                return Err(ApiError::too_large(format!(
                    "line {line_no} is longer than {line_limit} bytes"
                )));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if items.len() == max_items {
                return Err(too_many(max_items));
            }
            let value: Value = serde_json::from_slice(line).map_err(|e| {
                ApiError::bad_request(
                    "invalid_json",
                    format!("line {line_no}: malformed JSON: {e}"),
                )
            })?;
            items.push(value);
        }
        pending.drain(..start);
        if pending.len() > line_limit {
            return Err(ApiError::too_large(format!(
                "line {} is longer than {line_limit} bytes",
                line_no + 1
            )));
        }
    }
    Ok(items)
}

fn too_many(max: usize) -> ApiError {
    ApiError::from(Invalid::field(
        "tasks",
        format!("a batch holds at most {max} tasks"),
    ))
}

/// Check the description and every task (each `custom_id` taken out
/// first): every problem named by its task's position, the first 100 of
/// them.
fn check_tasks(
    description: &str,
    items: Vec<Value>,
    max: usize,
) -> Result<Vec<(Option<String>, Submission)>, ApiError> {
    let mut errors = FieldErrors::new();
    if description.chars().count() > MAX_DESCRIPTION || description.contains('\0') {
        check_text(&mut errors, "description", description, MAX_DESCRIPTION);
    }
    if items.is_empty() {
        errors.add("tasks", "must hold at least one task");
    }
    if items.len() > max {
        return Err(too_many(max));
    }
    let mut problems = errors.finish().err().map(|e| e.0).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut tasks = Vec::with_capacity(items.len());
    let mut bad = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        match check_item(i, item, &mut seen) {
            Ok(task) => tasks.push(task),
            Err(invalid) => {
                bad += 1;
                if bad <= 100 {
                    problems.extend(invalid.0);
                }
            }
        }
    }
    if bad > 100 {
        problems.insert(
            "tasks".into(),
            vec![format!("{bad} tasks are invalid; the first 100 are shown")],
        );
    }
    if !problems.is_empty() {
        return Err(Invalid(problems).into());
    }
    Ok(tasks)
}

fn check_item(
    i: usize,
    item: Value,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(Option<String>, Submission), Invalid> {
    let at = format!("tasks[{i}]");
    if let Some(path) = nul_path(&item, String::new()) {
        let field = if path.is_empty() {
            at
        } else {
            format!("{at}.{path}")
        };
        return Err(Invalid::field(
            &field,
            "must not contain the NUL character (U+0000)",
        ));
    }
    let Value::Object(mut fields) = item else {
        return Err(Invalid::field(&at, "must be a JSON object"));
    };
    let custom_id = match fields.remove("custom_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            if id.is_empty() || id.chars().count() > MAX_CUSTOM_ID {
                return Err(Invalid::field(
                    &format!("{at}.custom_id"),
                    format!("must be 1 to {MAX_CUSTOM_ID} characters"),
                ));
            }
            if !seen.insert(id.clone()) {
                return Err(Invalid::field(
                    &format!("{at}.custom_id"),
                    "is used by an earlier task of the batch",
                ));
            }
            Some(id)
        }
        Some(_) => {
            return Err(Invalid::field(
                &format!("{at}.custom_id"),
                "must be a string",
            ));
        }
    };
    let task: CreateTask = from_value_at(Value::Object(fields), &at)?;
    let submission = check_task(task).map_err(|e| {
        Invalid(
            e.0.into_iter()
                .map(|(field, messages)| (format!("{at}.{field}"), messages))
                .collect(),
        )
    })?;
    Ok((custom_id, submission))
}

/// One batch and its progress.
#[utoipa::path(get, path = "/api/batches/{id}", tag = "batches", params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<BatchView>, ApiError> {
    Ok(Json(read(&state, &p, &id).await?))
}

async fn read(state: &AppState, p: &Principal, id: &str) -> Result<BatchView, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let batch = batches::get(&mut tx, &p.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let counts = batches::counts(&mut tx, &p.org_id, &[id]).await?;
    tx.commit().await?;
    Ok(BatchView::of(
        &batch,
        counts.get(id).copied().unwrap_or_default(),
    ))
}

/// The organization's batches, newest first, 20 per page by default.
#[utoipa::path(get, path = "/api/batches", tag = "batches", params(BatchQuery),
    responses((status = 200, body = BatchList), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<BatchQuery>,
) -> Result<Json<BatchList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<BatchStatus>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "`status` must be running, completed or cancelled",
            )
        })?;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = batches::page(&mut tx, &p.org_id, status, limit, offset).await?;
    let ids: Vec<&str> = rows.iter().map(|b| b.id.as_str()).collect();
    let counts = batches::counts(&mut tx, &p.org_id, &ids).await?;
    tx.commit().await?;
    Ok(Json(BatchList {
        items: rows
            .iter()
            .map(|b| BatchView::of(b, counts.get(&b.id).copied().unwrap_or_default()))
            .collect(),
        total,
        limit,
        offset,
    }))
}

/// Cancel a running batch (task_executor or above): no further task starts
/// and its tasks still queued or running are cancelled. 409 when it
/// already ended.
#[utoipa::path(post, path = "/api/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<BatchView>, ApiError> {
    service::cancel(&state, &p, &client, &id).await?;
    Ok(Json(read(&state, &p, &id).await?))
}

/// Every task of the batch in order with its outcome: a JSON array
/// (default), JSON Lines or CSV (`format=jsonl|csv`, or `Accept:
/// application/x-ndjson` / `text/csv`), streamed a page at a time. A task
/// not yet started has status `queued`; one a cancelled batch never
/// started, `not_run`.
#[utoipa::path(get, path = "/api/batches/{id}/results", tag = "batches",
    params(("id" = String, Path, description = "Batch id"), ResultsQuery),
    responses((status = 200, description = "The results, streamed",
               content((Vec<BatchResult> = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn results(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> Result<Response, ApiError> {
    let format = Format::wanted(q.format.as_deref(), &headers)?;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let batch = batches::get(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    tx.commit().await?;
    Ok(stream_results(state.db.clone(), batch, format))
}

/// One task of a batch with its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// 0-based position in the batch.
    pub index: i64,
    /// The caller's id for it.
    pub custom_id: Option<String>,
    /// The task it runs as (`GET /api/tasks/{id}` once started).
    pub task_id: String,
    /// `queued`, `not_run`, or the task's status.
    pub status: String,
    /// The answer's text, once completed.
    pub output: Option<String>,
    /// Kind and message, when failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Integration that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// US dollars, an exact decimal.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

impl BatchResult {
    fn of(r: &ItemResult, batch_cancelled: bool) -> BatchResult {
        let status = match (r.status, batch_cancelled) {
            (Some(s), _) => s.as_str(),
            (None, true) => "not_run",
            (None, false) => "queued",
        };
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
        };
        BatchResult {
            index: r.index,
            custom_id: r.custom_id.clone(),
            task_id: r.task_id.clone(),
            status: status.to_string(),
            output: parse(&r.result)
                .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_string)),
            error: parse(&r.error),
            provider: r.provider.clone(),
            model: r.model.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost.usd(),
            started_at: r.started_at.map(to_rfc3339),
            finished_at: r.finished_at.map(to_rfc3339),
        }
    }
}

/// Rows read per database round trip.
const PAGE: i64 = 500;

/// The columns of a CSV download, in order.
const CSV_COLUMNS: [&str; 13] = [
    "index",
    "custom_id",
    "task_id",
    "status",
    "output",
    "error_kind",
    "error_message",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "finished_at",
];

/// What a results download still has to send.
struct Download {
    db: Db,
    batch: Batch,
    format: Option<Format>,
    after: i64,
    started: bool,
    done: bool,
}

fn stream_results(db: Db, batch: Batch, format: Option<Format>) -> Response {
    let content_type = match format {
        Some(Format::Csv) => "text/csv; charset=utf-8",
        Some(Format::JsonLines) => "application/x-ndjson",
        None => "application/json",
    };
    let download = Download {
        db,
        batch,
        format,
        after: -1,
        started: false,
        done: false,
    };
    let body = futures::stream::unfold(download, |mut d| async move {
        match d.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, DownloadError>(chunk), d)),
            Ok(None) => None,
            Err(e) => {
                // The client sees the body end early: the status was sent.
                tracing::warn!(error = %e, "batch results download stopped");
                d.done = true;
                Some((Err(e), d))
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Why a download stopped midway.
#[derive(Debug, thiserror::Error)]
enum DownloadError {
    /// Reading a page failed.
    #[error("reading results: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing CSV failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Writing JSON failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Download {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, DownloadError> {
        if self.done {
            return Ok(None);
        }
        let mut tx = self.db.tenant_read(&self.batch.org_id).await?;
        let rows = batches::results(
            &mut tx,
            &self.batch.org_id,
            &self.batch.id,
            self.after,
            PAGE,
        )
        .await?;
        tx.commit().await?;
        if (rows.len() as i64) < PAGE {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.after = last.index;
        }
        let first = !self.started;
        self.started = true;
        let cancelled = self.batch.status == BatchStatus::Cancelled;
        let views: Vec<BatchResult> = rows.iter().map(|r| BatchResult::of(r, cancelled)).collect();
        let mut out = Vec::with_capacity(views.len() * 256 + 2);
        match self.format {
            Some(Format::Csv) => {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                if first {
                    w.write_record(CSV_COLUMNS)?;
                }
                for r in &views {
                    csv_row(&mut w, r)?;
                }
                out = w
                    .into_inner()
                    .map_err(|e| csv::Error::from(e.into_error()))?;
            }
            Some(Format::JsonLines) => {
                for r in &views {
                    serde_json::to_writer(&mut out, r)?;
                    out.push(b'\n');
                }
            }
            None => {
                for (i, r) in views.iter().enumerate() {
                    out.push(if first && i == 0 { b'[' } else { b',' });
                    serde_json::to_writer(&mut out, r)?;
                }
                if first && views.is_empty() {
                    out.push(b'[');
                }
                if self.done {
                    out.push(b']');
                }
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(Bytes::from(out)))
    }
}

fn csv_row(w: &mut csv::Writer<Vec<u8>>, r: &BatchResult) -> Result<(), csv::Error> {
    let error_field = |name: &str| {
        r.error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let cost = r.cost_usd.0.to_string();
    w.write_record([
        r.index.to_string().as_str(),
        r.custom_id.as_deref().unwrap_or(""),
        &r.task_id,
        &r.status,
        r.output.as_deref().unwrap_or(""),
        &error_field("kind"),
        &error_field("message"),
        r.provider.as_deref().unwrap_or(""),
        r.model.as_deref().unwrap_or(""),
        &r.input_tokens.to_string(),
        &r.output_tokens.to_string(),
        &cost,
        r.finished_at.as_deref().unwrap_or(""),
    ])
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> ApiError {
        match e {
            BatchError::Submit(e) => e.into(),
            BatchError::NotFound => ApiError::not_found("batch"),
            BatchError::Conflict(m) => ApiError::conflict(m),
        }
    }
}
