//! Tasks: submit (queued, at most N unfinished per user, idempotent with
//! `Idempotency-Key`), read with its execution history, list, cancel, and
//! watch as Server-Sent Events.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::task_export::{Format, export};
use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo, stream_failover};
use crate::api::handlers::check_text;
use crate::api::pagination;
use crate::api::sse::{self, EventLog};
use crate::audit;
use crate::auth::Principal;
use crate::money::{Money, Usd};
use crate::orchestrator::cancel::cancel_task;
use crate::orchestrator::catalog::parse_task_type;
use crate::orchestrator::executor::AttemptView;
use crate::orchestrator::request::{ChatMessage, ToolInvocation, parse_role};
use crate::orchestrator::sampling::Sampling;
use crate::orchestrator::signals::{Signal, WorkKind};
use crate::orchestrator::state::{TaskSource, TaskStatus};
pub use crate::orchestrator::submit::TaskPriority;
use crate::orchestrator::submit::{MAX_MESSAGE, MAX_MESSAGES, Submission, Submitted, Work, submit};
use crate::state::AppState;
use crate::store::tasks::{Task, TaskFilter};
use crate::store::{self, to_rfc3339};
use crate::validation::Invalid;

/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 1000;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Sampling and routing parameters.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskParameters {
    /// `model` or `integration/model`; absent or `auto` lets the router choose.
    #[serde(default)]
    pub model: Option<String>,
    /// 0–2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// 1–1,000,000.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Up to 4 stop sequences.
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// `balanced` (default), `cost` or `latency`.
    #[serde(default)]
    pub prefer: Option<String>,
}

impl From<TaskParameters> for Sampling {
    fn from(p: TaskParameters) -> Sampling {
        Sampling {
            model: p.model,
            temperature: p.temperature.map(f64::from),
            max_tokens: p.max_tokens,
            stop: p.stop,
            prefer: p.prefer,
        }
    }
}

/// A message of the conversation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// A tool a task calls directly, instead of asking a model.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskTool {
    /// The name of a tool-server integration (`mcp` or `taskmaster`).
    pub integration: String,
    /// The tool's name, as `GET /api/integrations/{id}/tools` lists it.
    pub name: String,
    /// Its arguments, a JSON object (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
}

/// A new task: a `prompt`, `messages`, or a `tool` to call (one of the three).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// What the task is for (1–1000 characters).
    pub description: String,
    /// Agent whose settings apply (provider, model, system prompt, policy;
    /// with `tools` in its config, the task runs its tool loop).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// `low`, `medium` (default) or `high`.
    #[serde(default)]
    pub priority: TaskPriority,
    /// `reasoning`, `code_generation`, `research`, `light` or `general` (default).
    #[serde(default)]
    pub task_type: Option<String>,
    /// A single user message.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The conversation, oldest first.
    #[serde(default)]
    pub messages: Option<Vec<InputMessage>>,
    /// Sampling and routing parameters.
    #[serde(default)]
    pub parameters: Option<TaskParameters>,
    /// Publish token deltas on the event stream.
    #[serde(default)]
    pub stream: bool,
    /// Allow an answer from the response cache (default true).
    #[serde(default)]
    pub cache: Option<bool>,
    /// Free-form JSON object passed to the router and providers.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// Call this tool of a tool-server integration instead of asking a
    /// model: the task's result is the tool's (`content`, its text and any
    /// `structured_content`), the server's progress reports are `progress`
    /// events on the task's stream, and the integration's timeout and
    /// concurrency apply. Never answered from the cache.
    #[serde(default)]
    pub tool: Option<TaskTool>,
}

/// The answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskCreated {
    /// Task id.
    pub id: String,
    /// `pending` for a new task; any status for an idempotent replay.
    pub status: String,
    /// Where to read it.
    pub status_url: String,
    /// Where to watch it.
    pub stream_url: String,
}

/// A task with its execution history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    /// Id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Status.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// Task type.
    pub task_type: String,
    /// Agent.
    pub agent_id: Option<String>,
    /// Submitter.
    pub user_id: Option<String>,
    /// `api` or `gateway`.
    pub source: String,
    /// The batch it runs an item of.
    pub batch_id: Option<String>,
    /// Whether deltas are streamed.
    pub stream: bool,
    /// The request as stored.
    #[schema(value_type = Object)]
    pub request: Value,
    /// Text, finish reason, model, provider, usage, cached.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Kind and message, when failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Text received before a cancellation or failure.
    pub partial_output: Option<String>,
    /// Served from the response cache.
    pub cached: bool,
    /// Integration that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Prompt tokens over all attempts.
    pub input_tokens: i64,
    /// Completion tokens over all attempts.
    pub output_tokens: i64,
    /// US dollars over all attempts, an exact decimal.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Times a worker took the task up (more than 1: rescued after an instance died).
    pub runs: i64,
    /// Provider calls, in order (only on `GET /api/tasks/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub attempts: Option<Vec<AttemptView>>,
    /// The run's plan, once routed (only on `GET /api/tasks/{id}`, for
    /// tasks run by the queue): `router`, `router_version`, `attempts`
    /// (`integration/model`, in order), `reason`, and `fallback` — why
    /// the router asked first (the agent's or organization's policy) did
    /// not plan, when the default router planned instead, else null. A
    /// rescued task shows its latest run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        TaskView {
            id: t.id.clone(),
            description: t.description.clone(),
            status: t.status.as_str().to_string(),
            priority: TaskPriority::name(t.priority).to_string(),
            task_type: t.task_type.clone(),
            agent_id: t.agent_id.clone(),
            user_id: t.user_id.clone(),
            source: t.source.as_str().to_string(),
            batch_id: t.batch_id.clone(),
            stream: t.stream,
            request: serde_json::from_str(&t.request).unwrap_or(Value::Null),
            result: parse(&t.result),
            error: parse(&t.error),
            partial_output: t.partial_output.clone(),
            cached: t.cached,
            provider: t.provider.clone(),
            model: t.model.clone(),
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            cost_usd: t.cost_nanos.usd(),
            runs: t.claims,
            attempts: None,
            plan: None,
            created_at: to_rfc3339(t.created_at),
            started_at: t.started_at.map(to_rfc3339),
            finished_at: t.finished_at.map(to_rfc3339),
        }
    }
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Tasks, newest first.
    pub items: Vec<TaskView>,
    /// All matching tasks.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Query of `GET /api/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Page size, 1–100 (default 20); with an export, the most rows (default
    /// all).
    pub limit: Option<i64>,
    /// Rows to skip (not with an export).
    pub offset: Option<i64>,
    /// `json` (default: a page), `csv` or `jsonl` (every matching task,
    /// streamed); without it, `Accept: text/csv` or `application/x-ndjson`
    /// asks for an export too.
    pub format: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
    /// Text the description or one of the request's messages (the prompt)
    /// contains, ignoring ASCII case; `%` and `_` are plain characters;
    /// 1–200 characters.
    pub q: Option<String>,
    /// Only those this integration answered.
    pub provider: Option<String>,
    /// Only those this model answered.
    pub model: Option<String>,
    /// Only those submitted here: `api` or `gateway`.
    pub source: Option<String>,
    /// Only those that cost at least this many dollars (a plain decimal).
    pub min_cost_usd: Option<String>,
    /// Only those that cost at most this many dollars (a plain decimal).
    pub max_cost_usd: Option<String>,
}

/// Longest text a task search takes.
const MAX_QUERY_TEXT: usize = 200;

/// A text query value: 1–`MAX_QUERY_TEXT` characters without NUL; 400
/// naming `field` otherwise.
fn query_text(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > MAX_QUERY_TEXT || v.contains('\0') => {
            Err(ApiError::bad_request(
                "invalid_query",
                format!("`{field}` must be 1 to {MAX_QUERY_TEXT} characters, without NUL"),
            ))
        }
        other => Ok(other.clone()),
    }
}

/// A dollar amount query value, exactly; 400 naming `field` otherwise.
fn query_amount(field: &str, value: &Option<String>) -> Result<Option<Money>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            v.parse::<Money>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("`{field}`: {e}")))
        })
        .transpose()
}

/// Check a submission field by field and turn it into the work to submit.
fn submission(req: CreateTask, idempotency_key: Option<String>) -> Result<Submission, ApiError> {
    Ok(Submission {
        idempotency_key,
        ..check_task(req)?
    })
}

/// Check a task definition field by field (every problem by field name)
/// and turn it into the work to submit, without an idempotency key: what
/// `POST /api/tasks` and each task of a batch accept.
pub(crate) fn check_task(req: CreateTask) -> Result<Submission, Invalid> {
    let mut errors = FieldErrors::new();
    check_text(
        &mut errors,
        "description",
        &req.description,
        MAX_DESCRIPTION,
    );
    let task_type = req.task_type.clone().unwrap_or_else(|| "general".into());
    errors.check(
        parse_task_type(&task_type).is_some(),
        "task_type",
        "must be one of reasoning, code_generation, research, light, general",
    );
    let mut messages = Vec::new();
    let tool = req.tool.as_ref().map(|tool| check_tool(&mut errors, tool));
    match (&req.prompt, &req.messages) {
        (Some(_), _) | (_, Some(_)) if tool.is_some() => errors.add(
            "tool",
            "a tool task takes no prompt or messages: give the tool's arguments",
        ),
        (None, None) if tool.is_some() => {}
        (Some(_), Some(_)) => errors.add("prompt", "give either prompt or messages, not both"),
        (None, None) => errors.add("prompt", "a prompt, messages or a tool is required"),
        (Some(prompt), None) => {
            check_text(&mut errors, "prompt", prompt, MAX_MESSAGE);
            messages.push(ChatMessage {
                role: "user".into(),
                content: prompt.clone(),
                ..ChatMessage::default()
            });
        }
        (None, Some(list)) => {
            errors.check(!list.is_empty(), "messages", "must not be empty");
            errors.check(
                list.len() <= MAX_MESSAGES,
                "messages",
                "must hold at most 500 messages",
            );
            for (i, m) in list.iter().enumerate() {
                errors.check(
                    parse_role(&m.role).is_some(),
                    &format!("messages[{i}].role"),
                    "must be system, user, assistant or tool",
                );
                errors.check(
                    m.content.chars().count() <= MAX_MESSAGE,
                    &format!("messages[{i}].content"),
                    "must be at most 200000 characters",
                );
                messages.push(ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    ..ChatMessage::default()
                });
            }
        }
    }
    let sampling = Sampling::from(req.parameters.unwrap_or_default());
    sampling.check("parameters.", &mut errors);
    if let Some(meta) = &req.metadata {
        errors.check(meta.is_object(), "metadata", "must be a JSON object");
    }
    errors.finish()?;
    Ok(Submission {
        description: req.description,
        priority: req.priority,
        work: Work {
            task_type,
            messages,
            sampling,
            agent_id: req.agent_id,
            metadata: req.metadata.unwrap_or_else(|| json!({})),
        },
        stream: req.stream,
        // A tool may change things: its result is never reused.
        use_cache: tool.is_none() && req.cache.unwrap_or(true),
        idempotency_key: None,
        stream_failover: None,
        tool,
    })
}

/// Longest tool name, in characters.
const MAX_TOOL_NAME: usize = 128;

/// Check a task's `tool` (every problem under `tool.…`) and turn it into
/// the invocation stored with the task.
fn check_tool(errors: &mut FieldErrors, tool: &TaskTool) -> ToolInvocation {
    check_text(errors, "tool.integration", &tool.integration, 100);
    errors.check(
        !tool.name.trim().is_empty()
            && tool.name.chars().count() <= MAX_TOOL_NAME
            && !tool.name.chars().any(char::is_control),
        "tool.name",
        "must be 1 to 128 printable characters",
    );
    let arguments = tool.arguments.clone().unwrap_or_else(|| json!({}));
    errors.check(
        arguments.is_object(),
        "tool.arguments",
        "must be a JSON object",
    );
    errors.check(
        arguments.to_string().len() <= MAX_MESSAGE,
        "tool.arguments",
        "must be at most 200000 bytes of JSON",
    );
    ToolInvocation {
        integration: tool.integration.trim().to_string(),
        name: tool.name.clone(),
        arguments,
    }
}

/// The `Idempotency-Key` header, checked (1–255 visible ASCII characters).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1–255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

fn created(task: &Task) -> TaskCreated {
    TaskCreated {
        id: task.id.clone(),
        status: task.status.as_str().to_string(),
        status_url: format!("/api/tasks/{}", task.id),
        stream_url: format!("/api/tasks/{}/stream", task.id),
    }
}

/// Submit a task (task_executor or above). 201 when queued; 200 with the
/// earlier task when the `Idempotency-Key` was used for the same request.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the first task"),
           ("X-Vel-Stream-Failover" = Option<String>, Header,
            description = "Streamed tasks: when a provider fails after part of the answer was streamed, `fail` ends the task as failed with that part as its partial output, `continue` has the next attempt continue it (as an assistant prefill where the provider supports it, else with an instruction to continue without repeating). Absent: the organization's default when the task runs (`/api/organizations/{id}/stream-failover`), else `fail`")),
    responses((status = 201, body = TaskCreated), (status = 200, description = "Idempotent replay", body = TaskCreated),
              (status = 403, body = ErrorBody), (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<(StatusCode, Json<TaskCreated>), ApiError> {
    let key = idempotency_key(&headers)?;
    let mut submission = submission(req, key)?;
    submission.stream_failover = stream_failover(&headers)?;
    state.limits.admit_task(&p).await?;
    Ok(match submit(&state, &p, &client, submission).await? {
        Submitted::Created(task) => (StatusCode::CREATED, Json(created(&task))),
        Submitted::Replayed(task) => (StatusCode::OK, Json(created(&task))),
    })
}

/// One task with its attempts.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (task, attempts) = store::tasks::get_with_attempts(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    let plan = store::tasks::last_event_data(&mut tx, &p.org_id, &id, "plan").await?;
    tx.commit().await?;
    let mut view = TaskView::from(&task);
    view.attempts = Some(attempts.iter().map(AttemptView::from).collect());
    view.plan = plan.and_then(|data| serde_json::from_str(&data).ok());
    Ok(Json(view))
}

/// An optional RFC 3339 query value as unix ms; 400 naming `field` when
/// it is not one.
pub(crate) fn parse_time(field: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            store::parse_rfc3339(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`{field}` must be an RFC 3339 time"),
                )
            })
        })
        .transpose()
}

/// The organization's tasks, newest first, 20 per page by default; or
/// every matching task as CSV or JSON Lines (`format=csv|jsonl`, or
/// `Accept: text/csv` / `application/x-ndjson`), streamed.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, description = "A page of tasks, or with `format=csv|jsonl` every matching task, streamed",
               content((TaskList = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
              (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Response, ApiError> {
    let format = Format::wanted(q.format.as_deref(), &headers)?;
    let filter = filter_of(&q)?;
    if let Some(format) = format {
        if q.offset.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`offset` does not apply to an export; narrow it with `from`/`to`",
            ));
        }
        if q.limit.is_some_and(|l| l < 1) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`limit` must be at least 1",
            ));
        }
        return Ok(export(
            state.db.clone(),
            p.org_id.clone(),
            filter,
            format,
            q.limit,
        ));
    }
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = store::tasks::page(&mut tx, &p.org_id, &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(TaskList {
        items: rows.iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    })
    .into_response())
}

/// The filters of `GET /api/tasks`, checked.
fn filter_of(q: &TaskQuery) -> Result<TaskFilter, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<TaskStatus>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "`status` must be pending, in_progress, completed, failed or cancelled",
            )
        })?;
    let source = q
        .source
        .as_deref()
        .map(str::parse::<TaskSource>)
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_query", "`source` must be api or gateway"))?;
    Ok(TaskFilter {
        status,
        agent_id: query_text("agent_id", &q.agent_id)?,
        from: parse_time("from", &q.from)?,
        to: parse_time("to", &q.to)?,
        text: query_text("q", &q.q)?,
        provider: query_text("provider", &q.provider)?,
        model: query_text("model", &q.model)?,
        source,
        min_cost: query_amount("min_cost_usd", &q.min_cost_usd)?,
        max_cost: query_amount("max_cost_usd", &q.max_cost_usd)?,
    })
}

/// Cancel a pending or running task (task_executor or above): a running
/// provider call is stopped and its upstream connection dropped; partial
/// output is kept. 409 when the task already finished.
#[utoipa::path(post, path = "/api/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    let mut tx = state.db.tenant(&p.org_id).await?;
    let Some(was) = cancel_task(&mut tx, &state.signals, &p.org_id, &id).await? else {
        let task = store::tasks::get(&mut tx, &p.org_id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("task"))?;
        return Err(ApiError::conflict(format!(
            "the task is already {}; only pending or running tasks can be cancelled",
            task.status
        )));
    };
    audit::record(
        &mut tx,
        &p,
        &client,
        "task_cancelled",
        json!({ "task_id": id, "previous_status": was }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish(Signal::Events(id.clone()));
    state.signals.publish_due(WorkKind::Workflows);
    // A batch's task releases the batch's next one (and its last may have
    // queued a `batch.completed` delivery).
    state.signals.publish_due(WorkKind::Tasks);
    state.signals.publish_due(WorkKind::Webhooks);
    // When the run is here, answer once it has stopped, so the answer
    // carries its partial output; another instance stops it on the signal.
    state.executor.cancel_local(&id, CANCEL_WAIT).await;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let task = store::tasks::get(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    tx.commit().await?;
    Ok(Json(TaskView::from(&task)))
}

/// How long a cancel waits for a local run to stop and record its end.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Watch a task as Server-Sent Events: `status`, `plan`, `attempt`,
/// `delta`, `progress` (a tool task's server reports) and, for an agent's
/// tool loop, `tool_call` and `tool_result` events, each with its number
/// as the SSE id; `Last-Event-ID`
/// resumes after that number (an empty one counts as none). Keep-alive
/// comments are sent while nothing happens; the stream ends after the
/// terminal status. A finished task's stream sends the events after
/// `Last-Event-ID` and closes; with none left it answers 204, which tells a
/// browser's `EventSource` to stop reconnecting.
#[utoipa::path(get, path = "/api/tasks/{id}/stream", tag = "tasks",
    params(("id" = String, Path, description = "Task id"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event number")),
    responses((status = 200, description = "text/event-stream of the task's events: `status`, `plan`, `attempt`, `delta`, `progress`, and for an agent with `tools` `tool_call` ({round, id, name, integration, tool, arguments}) and `tool_result` ({round, id, name, integration, tool, ok, ms, error, text, truncated})", content_type = "text/event-stream", body = String),
              (status = 204, description = "The task is finished and no event follows Last-Event-ID"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    sse::watch(state, &p.org_id, EventLog::Task, id, &headers).await
}
