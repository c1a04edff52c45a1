//! The OpenAI-compatible gateway: `POST /v1/chat/completions` (plain and
//! streamed) and `GET /v1/models`, so that an OpenAI client library pointed
//! at `http://HOST/v1` with a vel API key (or access token) works unchanged.
//!
//! A request runs synchronously through the same dispatcher as queued tasks
//! (router plugin, provider plugins, retries, breakers, fallback) and is then
//! recorded, off the request path, as a terminal `tasks` row with source
//! `gateway`, its attempts and a `gateway_request` audit entry (see
//! [`crate::orchestrator::usage`]); the response id is `chatcmpl-<task id>`.
//!
//! Errors keep vel's one error shape, with OpenAI-like statuses: 401 without
//! credentials, 403 below `task_executor`, 404 for a model no active
//! integration offers, 415/400/422 for bad input, and for a dispatch that
//! found no answer 503 (`no_candidate`), 502 (`all_attempts_failed`,
//! `router_failed`) or 400 (`invalid_request`, `content_filtered`), the code
//! being the dispatch error's kind. Once a stream has started, a failure is
//! sent as a final `data: {"error": {…}}` event instead.
//!
//! Streaming: if an attempt fails after sending some text and a fallback
//! attempt answers, the client has already received the failed attempt's
//! partial text and the new attempt's text follows it (an SSE stream cannot
//! take text back); the task's record keeps the answer of the attempt that
//! completed.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody, ErrorDetail, FieldErrors};
use crate::api::extract::{ApiJson, ClientInfo};
use crate::auth::{Credential, Principal, Role};
use crate::orchestrator::catalog::{Catalog, parse_task_type};
use crate::orchestrator::dispatch::{Answer, DispatchError, Job, Progress, totals};
use crate::orchestrator::request::{ChatMessage, TaskRequest, finish_reason_name};
use crate::orchestrator::sampling::{Sampling, check_max_tokens};
use crate::orchestrator::shares::Slot;
use crate::orchestrator::submit::{self, MAX_MESSAGE, MAX_MESSAGES, Work};
use crate::orchestrator::usage::{Finished, Outcome, UsageRecorder};
use crate::state::AppState;
use crate::store::{new_id, now_ms, tasks::Attempt};

/// Longest `user`.
const MAX_NAME: usize = 200;
/// The vel extension header choosing the task type.
const TASK_TYPE_HEADER: &str = "x-vel-task-type";
/// The model name that lets the router choose.
const AUTO: &str = "auto";

/// `stop`: one sequence or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopSequences {
    /// One sequence.
    One(String),
    /// Up to 4 sequences.
    Many(Vec<String>),
}

/// Streaming options.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and empty `choices`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// A part of an array-form message content; only `text` parts are supported.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// Message content: a string, or an array of `{type: "text", text}` parts
/// (their texts are joined).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// A message of the conversation. Other fields (`name`, …) are accepted and ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputChatMessage {
    /// `system`, `developer` (treated as `system`), `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (`null` is taken as empty).
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// An OpenAI chat-completions request. Fields vel does not use are accepted
/// and ignored (OpenAI SDKs send more than these).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// `auto` (the router chooses), `integration/model` (that integration)
    /// or a model (preferred by the router); see `GET /v1/models`.
    pub model: String,
    /// The conversation, oldest first (1–500 messages).
    pub messages: Vec<InputChatMessage>,
    /// 0–2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Accepted and ignored.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Completion token cap, 1–1,000,000 (`max_completion_tokens` wins when both are given).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Completion token cap, 1–1,000,000.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Up to 4 stop sequences.
    #[serde(default)]
    pub stop: Option<StopSequences>,
    /// Answer as Server-Sent Events of `chat.completion.chunk` objects.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// End-user id, passed to the router and providers as metadata.
    #[serde(default)]
    pub user: Option<String>,
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer.
    pub content: String,
}

/// The one choice.
#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length`, `content_filter` or `tool_calls`.
    pub finish_reason: &'static str,
}

/// Token counts of the answering call.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CompletionUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// An OpenAI `chat.completion`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<task id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model that answered.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Tokens of the answering call.
    pub usage: CompletionUsage,
}

/// A model of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    /// `integration/model`, a bare model, or `auto`.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds (the integration's creation).
    pub created: i64,
    /// The integration's name (`vel` for `auto`).
    pub owned_by: String,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelEntry>,
}

/// A failure of the gateway: any [`ApiError`], or one with a status and
/// code of its own (dispatch failures, unknown models), in the same shape.
#[derive(Debug)]
pub enum GatewayError {
    /// The usual API errors.
    Api(ApiError),
    /// A status and code `ApiError` has no constructor for.
    Other {
        /// HTTP status.
        status: StatusCode,
        /// Error code (the dispatch error's kind).
        code: String,
        /// For people.
        message: String,
        /// Per-field (or per-attempt) messages.
        details: BTreeMap<String, Vec<String>>,
        /// `x-vel-task-id` when the request was recorded.
        task_id: Option<String>,
    },
}

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> Self {
        GatewayError::Api(e)
    }
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        GatewayError::Api(e.into())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        match self {
            GatewayError::Api(e) => e.into_response(),
            GatewayError::Other {
                status,
                code,
                message,
                details,
                task_id,
            } => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code,
                        message,
                        details,
                    },
                };
                let mut resp = (status, Json(body)).into_response();
                if let Some(id) = task_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                    resp.headers_mut().insert(TASK_ID, id);
                }
                resp
            }
        }
    }
}

const TASK_ID: HeaderName = HeaderName::from_static("x-vel-task-id");
const PROVIDER: HeaderName = HeaderName::from_static("x-vel-provider");
const COST: HeaderName = HeaderName::from_static("x-vel-cost-usd");

/// The HTTP status a dispatch failure is answered with.
fn dispatch_status(kind: &str) -> StatusCode {
    match kind {
        "no_candidate" | "storage" => StatusCode::SERVICE_UNAVAILABLE,
        "plugin_busy" => StatusCode::TOO_MANY_REQUESTS,
        "invalid_request" | "content_filtered" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The error body of a dispatch failure: its kind as the code, each attempt in `details`.
fn dispatch_error(e: &DispatchError, task_id: Option<String>) -> GatewayError {
    let mut details = BTreeMap::new();
    if !e.attempts.is_empty() {
        details.insert(
            "attempts".to_string(),
            e.attempts
                .iter()
                .map(|a| {
                    format!(
                        "{}/{}: {}{}",
                        a.provider,
                        a.model,
                        a.error_kind.as_deref().unwrap_or(&a.outcome),
                        a.error_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        );
    }
    GatewayError::Other {
        status: dispatch_status(&e.kind),
        code: e.kind.clone(),
        message: e.message.clone(),
        details,
        task_id,
    }
}

/// A request that passed validation.
#[derive(Debug)]
struct Validated {
    request: TaskRequest,
    stream: bool,
    include_usage: bool,
}

/// The role name vel uses for an OpenAI role.
fn role_name(role: &str) -> Option<&'static str> {
    Some(match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        _ => return None,
    })
}

/// Check the body (every bad field at once, named as OpenAI names them)
/// and build the canonical request.
fn validate(body: ChatCompletionRequest, task_type: String) -> Result<Validated, ApiError> {
    let mut errors = FieldErrors::new();
    errors.check(!body.messages.is_empty(), "messages", "must not be empty");
    errors.check(
        body.messages.len() <= MAX_MESSAGES,
        "messages",
        "must hold at most 500 messages",
    );
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        let role = role_name(&m.role);
        if role.is_none() {
            errors.add(
                &format!("messages[{i}].role"),
                "must be system, developer, user, assistant or tool",
            );
        }
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        ("text", None) => errors.add(
                            &format!("messages[{i}].content[{j}].text"),
                            "a text part needs its text",
                        ),
                        _ => errors.add(
                            &format!("messages[{i}].content[{j}].type"),
                            "only text parts are supported",
                        ),
                    }
                }
                text
            }
        };
        errors.check(
            content.chars().count() <= MAX_MESSAGE,
            &format!("messages[{i}].content"),
            "must be at most 200000 characters",
        );
        messages.push(ChatMessage {
            role: role.unwrap_or("user").to_string(),
            content,
        });
    }
    let stop = match body.stop {
        None => Vec::new(),
        Some(StopSequences::One(s)) => vec![s],
        Some(StopSequences::Many(list)) => list,
    };
    let sampling = Sampling {
        model: Some(body.model.clone()),
        temperature: body.temperature.map(f64::from),
        max_tokens: body.max_tokens,
        stop: Some(stop),
        ..Sampling::default()
    };
    sampling.check("", &mut errors);
    if let Some(m) = body.max_completion_tokens {
        check_max_tokens(&mut errors, "max_completion_tokens", m);
    }
    if let Some(n) = body.n {
        errors.check(n == 1, "n", "only n = 1 is supported");
    }
    if let Some(user) = &body.user {
        errors.check(
            user.len() <= MAX_NAME,
            "user",
            "must be at most 200 characters",
        );
    }
    errors.finish()?;
    let metadata = match body.user {
        Some(user) => json!({ "user": user }),
        None => json!({}),
    };
    let model = body.model.trim().to_string();
    let work = Work {
        task_type,
        messages,
        sampling: Sampling {
            model: (model != AUTO).then_some(model),
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            ..sampling
        },
        agent_id: None,
        metadata,
    };
    Ok(Validated {
        request: submit::request(work, None),
        stream: body.stream.unwrap_or(false),
        include_usage: body
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// The task type named by `X-Vel-Task-Type` (default `general`).
fn task_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(TASK_TYPE_HEADER) else {
        return Ok("general".into());
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| parse_task_type(v).is_some())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_task_type",
                "X-Vel-Task-Type must be reasoning, code_generation, research, light or general",
            )
        })
}

/// Whether some active integration offers `model` the way the dispatcher
/// will read it: `integration/model` when that integration exists, else a
/// bare model any integration offers.
fn offered(catalog: &Catalog, model: &str) -> bool {
    if let Some((integration, name)) = model.split_once('/')
        && let Some(target) = catalog.target(integration)
    {
        return target.models.iter().any(|m| m.id == name);
    }
    catalog.offers(model)
}

/// What a finished request is recorded with.
struct Recording {
    usage: UsageRecorder,
    template: Option<Finished>,
    /// The request's place in its credential's and organization's shares,
    /// held until the answer (or the stream) ends.
    _slot: Slot,
}

impl Recording {
    /// Queue the record with its outcome and attempts.
    async fn finish(mut self, outcome: Outcome, attempts: Vec<Attempt>) {
        if let Some(mut f) = self.template.take() {
            f.outcome = outcome;
            f.attempts = attempts;
            f.finished_at = now_ms();
            self.usage.record(f).await;
        }
    }
}

impl Drop for Recording {
    /// The request was dropped mid-way (the client went away): record it
    /// as cancelled, without waiting.
    fn drop(&mut self) {
        if let Some(mut f) = self.template.take() {
            f.finished_at = now_ms();
            let usage = self.usage.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { usage.record(f).await });
            }
        }
    }
}

/// Create a chat completion (task_executor or above), plain or streamed.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", request_body = ChatCompletionRequest,
    params(("X-Vel-Task-Type" = Option<String>, Header,
            description = "reasoning, code_generation, research, light or general (default)")),
    responses(
        (status = 200, description = "The answer; with `stream: true`, Server-Sent Events of `chat.completion.chunk` objects ending with `data: [DONE]`",
         headers(("x-vel-provider" = String, description = "Integration that answered (plain answers)"),
                 ("x-vel-cost-usd" = String, description = "Cost of all attempts (plain answers)"),
                 ("x-vel-task-id" = String, description = "The task recording this request")),
         content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed body, or the provider refused the request", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No active integration offers the model", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, description = "The credential or the organization has its share of requests in flight", body = ErrorBody),
        (status = 502, description = "Every planned provider failed", body = ErrorBody),
        (status = 503, description = "No provider can take the request", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, GatewayError> {
    let created_at = now_ms();
    p.require(Role::TaskExecutor)?;
    let credential = match &p.credential {
        Credential::ApiKey { id } => id.as_str(),
        Credential::Token { .. } => p.user_id.as_str(),
    };
    let slot = state
        .shares
        .take(credential, &p.org_id)
        .map_err(|full| ApiError::too_many_requests(full.to_string(), 1))?;
    let task_type = task_type(&headers)?;
    let Validated {
        request,
        stream,
        include_usage,
    } = validate(body, task_type)?;
    let requested = request.model.clone().unwrap_or_else(|| AUTO.to_string());
    // `auto` needs no check (the dispatcher reads the catalog itself).
    let unknown = match &request.model {
        Some(model) => {
            let catalog = state
                .dispatcher
                .catalog(&p.org_id)
                .await
                .map_err(|e| dispatch_error(&e, None))?;
            !offered(&catalog, model)
        }
        None => false,
    };
    if unknown {
        let mut details = BTreeMap::new();
        details.insert(
            "model".to_string(),
            vec!["not offered by any active integration; GET /v1/models lists them".to_string()],
        );
        return Err(GatewayError::Other {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            message: format!("model `{requested}` not found"),
            details,
            task_id: None,
        });
    }
    let id = new_id();
    let job = request.to_job(&id, &p.org_id, 1, 0);
    let recording = Recording {
        _slot: slot,
        usage: state.usage.clone(),
        template: Some(Finished {
            id: id.clone(),
            org_id: p.org_id.clone(),
            user_id: p.user_id.clone(),
            source: "gateway",
            request,
            stream,
            outcome: Outcome::Cancelled {
                partial_output: None,
            },
            attempts: Vec::new(),
            created_at,
            finished_at: created_at,
            ip_address: client.ip,
            user_agent: client.user_agent,
            audit_action: "gateway_request",
        }),
    };
    let span = tracing::info_span!("gateway", task_id = %id, stream, model = %requested);
    if stream {
        streamed(state, job, requested, include_usage, recording)
            .instrument(span)
            .await
    } else {
        plain(state, job, recording).instrument(span).await
    }
}

/// Unix seconds of unix milliseconds.
fn secs(ms: i64) -> i64 {
    ms / 1000
}

/// OpenAI's finish reasons; vel's others read as `stop`.
fn finish_reason(answer: &Answer) -> &'static str {
    match finish_reason_name(answer.response.finish_reason) {
        "cancelled" | "other" => "stop",
        name => name,
    }
}

fn completed(answer: &Answer) -> Outcome {
    Outcome::Completed {
        text: answer.response.text.clone(),
        finish_reason: finish_reason(answer),
        model: answer.response.model.clone(),
        provider: answer.provider.clone(),
        input_tokens: answer.response.usage.input_tokens,
        output_tokens: answer.response.usage.output_tokens,
    }
}

fn usage_of(answer: &Answer) -> CompletionUsage {
    let prompt = u64::from(answer.response.usage.input_tokens);
    let completion = u64::from(answer.response.usage.output_tokens);
    CompletionUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

async fn plain(state: AppState, job: Job, recording: Recording) -> Result<Response, GatewayError> {
    let created = secs(recording.template.as_ref().map_or(0, |f| f.created_at));
    match state.dispatcher.run(&job, false, None).await {
        Ok(answer) => {
            let (_, _, cost) = totals(&answer.attempts);
            let body = ChatCompletion {
                id: format!("chatcmpl-{}", job.id),
                object: "chat.completion",
                created,
                model: answer.response.model.clone(),
                choices: vec![Choice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: answer.response.text.clone(),
                    },
                    finish_reason: finish_reason(&answer),
                }],
                usage: usage_of(&answer),
            };
            let mut resp = Json(body).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&answer.provider) {
                h.insert(PROVIDER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
                h.insert(COST, v);
            }
            if let Ok(v) = HeaderValue::from_str(&job.id) {
                h.insert(TASK_ID, v);
            }
            recording.finish(completed(&answer), answer.attempts).await;
            Ok(resp)
        }
        Err(e) => {
            let err = dispatch_error(&e, Some(job.id.clone()));
            recording
                .finish(
                    Outcome::Failed {
                        kind: e.kind,
                        message: e.message,
                        partial_output: None,
                    },
                    e.attempts,
                )
                .await;
            Err(err)
        }
    }
}

/// The fixed part of every chunk of one stream.
struct Chunks {
    id: String,
    created: i64,
    model: String,
}

impl Chunks {
    fn chunk(&self, delta: serde_json::Value, finish_reason: Option<&str>) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        }))
    }

    fn usage(&self, usage: CompletionUsage) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }))
    }
}

fn sse(value: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a JSON value cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Start the dispatch in its own task and answer once the first provider
/// call starts: a failure before that (no candidate, router failure) is
/// still an ordinary error response; after it, the stream carries the rest.
async fn streamed(
    state: AppState,
    job: Job,
    requested: String,
    include_usage: bool,
    recording: Recording,
) -> Result<Response, GatewayError> {
    let (out, body) = mpsc::channel::<Bytes>(64);
    let (started, first) = oneshot::channel();
    let task_id = job.id.clone();
    tokio::spawn(
        drive(
            state,
            job,
            requested,
            include_usage,
            recording,
            started,
            out,
        )
        .instrument(tracing::Span::current()),
    );
    match first.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(dispatch_error(&e, Some(task_id))),
        Err(_) => {
            return Err(ApiError::internal("the gateway stream stopped before starting").into());
        }
    }
    let mut body = body;
    let stream =
        futures::stream::poll_fn(move |cx| body.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&task_id) {
        h.insert(TASK_ID, v);
    }
    Ok(resp)
}

/// How a stream's dispatch ended.
enum Ended {
    Done(Result<Answer, DispatchError>),
    ClientGone,
}

/// A stream in progress.
struct Streaming {
    out: mpsc::Sender<Bytes>,
    chunks: Chunks,
    /// Tells the handler the stream has begun (or failed before it did).
    started: Option<oneshot::Sender<Result<(), DispatchError>>>,
    /// Text sent to the client.
    partial: String,
    /// Text of the current attempt.
    current: String,
    /// Attempts reported so far.
    attempts: Vec<Attempt>,
}

impl Streaming {
    /// Send a chunk; false when the client has gone.
    async fn send(&self, bytes: Bytes) -> bool {
        self.out.send(bytes).await.is_ok()
    }

    /// Let the handler answer 200 and send the role chunk.
    async fn begin(&mut self) -> bool {
        match self.started.take() {
            Some(tx) => {
                let _ = tx.send(Ok(()));
                self.send(
                    self.chunks
                        .chunk(json!({ "role": "assistant", "content": "" }), None),
                )
                .await
            }
            None => true,
        }
    }

    /// Turn one progress report into chunks; false when the client has gone.
    async fn on_progress(&mut self, p: Progress) -> bool {
        match p {
            Progress::Planned { .. } => true,
            Progress::AttemptStarted { seq, model, .. } => {
                if !self.current.is_empty() {
                    tracing::info!(
                        attempt = seq,
                        "falling back after partial output was streamed"
                    );
                }
                self.current.clear();
                self.chunks.model = model;
                self.begin().await
            }
            Progress::Delta { text, .. } => {
                if !self.begin().await {
                    return false;
                }
                self.partial.push_str(&text);
                self.current.push_str(&text);
                let chunk = self.chunks.chunk(json!({ "content": text }), None);
                self.send(chunk).await
            }
            Progress::AttemptFinished(a) => {
                self.attempts.push(a);
                true
            }
        }
    }
}

/// Run the dispatch, turning its progress into chunks on `out`.
async fn drive(
    state: AppState,
    job: Job,
    requested: String,
    include_usage: bool,
    recording: Recording,
    started: oneshot::Sender<Result<(), DispatchError>>,
    out: mpsc::Sender<Bytes>,
) {
    let mut s = Streaming {
        out,
        chunks: Chunks {
            id: format!("chatcmpl-{}", job.id),
            created: secs(recording.template.as_ref().map_or(0, |f| f.created_at)),
            model: requested,
        },
        started: Some(started),
        partial: String::new(),
        current: String::new(),
        attempts: Vec::new(),
    };
    let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
    let ended = {
        let run = state.dispatcher.run(&job, true, Some(&ptx));
        tokio::pin!(run);
        let closed = s.out.clone();
        loop {
            tokio::select! {
                biased;
                Some(p) = prx.recv() => {
                    if !s.on_progress(p).await {
                        break Ended::ClientGone;
                    }
                }
                result = &mut run => break Ended::Done(result),
                () = closed.closed() => break Ended::ClientGone,
            }
        }
    };
    // Everything the run reported is queued by now (the run awaits its
    // delta forwarder before returning).
    if let Ended::Done(_) = ended {
        while let Ok(p) = prx.try_recv() {
            if !s.on_progress(p).await {
                break;
            }
        }
    }
    let partial_output = (!s.partial.is_empty()).then(|| s.partial.clone());
    match ended {
        Ended::ClientGone => {
            recording
                .finish(Outcome::Cancelled { partial_output }, s.attempts)
                .await;
        }
        Ended::Done(Ok(answer)) => {
            s.begin().await;
            s.chunks.model = answer.response.model.clone();
            // A provider that answered without streaming: send the text whole.
            if s.current.is_empty() && !answer.response.text.is_empty() {
                let chunk = s
                    .chunks
                    .chunk(json!({ "content": answer.response.text }), None);
                s.send(chunk).await;
            }
            let last = s.chunks.chunk(json!({}), Some(finish_reason(&answer)));
            s.send(last).await;
            let usage = usage_of(&answer);
            let outcome = completed(&answer);
            recording.finish(outcome, answer.attempts).await;
            if include_usage {
                s.send(s.chunks.usage(usage)).await;
            }
            s.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        }
        Ended::Done(Err(e)) => {
            let outcome = Outcome::Failed {
                kind: e.kind.clone(),
                message: e.message.clone(),
                partial_output,
            };
            let attempts = e.attempts.clone();
            match s.started.take() {
                // Nothing was sent: the handler answers with an error status.
                Some(tx) => {
                    let _ = tx.send(Err(e));
                }
                None => {
                    let error = json!({ "error": {
                        "code": e.kind,
                        "message": e.message,
                        "details": {},
                    }});
                    s.send(sse(&error)).await;
                }
            }
            recording.finish(outcome, attempts).await;
        }
    }
}

/// The models of the organization's active integrations: each as
/// `integration/model`, each distinct model bare, and `auto`.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn models(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<ModelList>, GatewayError> {
    p.require(Role::Viewer)?;
    let catalog = state
        .dispatcher
        .catalog(&p.org_id)
        .await
        .map_err(|e| dispatch_error(&e, None))?;
    let first_created = catalog
        .targets
        .iter()
        .map(|t| secs(t.integration.created_at))
        .min()
        .unwrap_or_else(|| secs(now_ms()));
    let mut data = vec![ModelEntry {
        id: AUTO.to_string(),
        object: "model",
        created: first_created,
        owned_by: "vel".to_string(),
    }];
    let mut bare: Vec<ModelEntry> = Vec::new();
    for t in &catalog.targets {
        for m in &t.models {
            data.push(ModelEntry {
                id: format!("{}/{}", t.integration.name, m.id),
                object: "model",
                created: secs(t.integration.created_at),
                owned_by: t.integration.name.clone(),
            });
            if !bare.iter().any(|b| b.id == m.id) {
                bare.push(ModelEntry {
                    id: m.id.clone(),
                    object: "model",
                    created: secs(t.integration.created_at),
                    owned_by: t.integration.name.clone(),
                });
            }
        }
    }
    data.extend(bare);
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn array_content_is_joined_and_unknown_fields_are_tolerated() {
        let v = validate(
            body(json!({
                "model": "auto", "frequency_penalty": 0, "logit_bias": null,
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "name": "x", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}
                ],
                "stop": "END", "max_tokens": 5, "max_completion_tokens": 7
            })),
            "general".into(),
        )
        .expect("valid");
        assert_eq!(v.request.model, None);
        assert_eq!(v.request.messages[0].role, "system");
        assert_eq!(v.request.messages[1].content, "a b");
        assert_eq!(v.request.stop, vec!["END".to_string()]);
        assert_eq!(v.request.max_tokens, Some(7));
        assert!(!v.stream);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = validate(
            body(json!({
                "model": "m", "n": 2, "temperature": 3.0,
                "messages": [{"role": "robot", "content": [{"type": "image_url", "image_url": {}}]}]
            })),
            "general".into(),
        )
        .expect_err("invalid");
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn dispatch_kinds_map_to_statuses() {
        assert_eq!(
            dispatch_status("no_candidate"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            dispatch_status("all_attempts_failed"),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(dispatch_status("invalid_request"), StatusCode::BAD_REQUEST);
        assert_eq!(
            dispatch_status("plugin_busy"),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(dispatch_status("content_filtered"), StatusCode::BAD_REQUEST);
    }
}
