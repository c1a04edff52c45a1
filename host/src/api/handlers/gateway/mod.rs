//! The OpenAI-compatible gateway: `POST /v1/chat/completions` (plain and
//! streamed), `POST /v1/embeddings` (in [`embeddings`]), `GET /v1/models`
//! and `GET /v1/models/{id}`, so that an OpenAI
//! client library pointed at `http://HOST/v1` with a vel API key (or
//! access token) works unchanged.
//!
//! A request runs synchronously through the same dispatcher as queued tasks
//! (router plugin, provider plugins, retries, breakers, fallback) and is then
//! recorded, off the request path, as a terminal `tasks` row with source
//! `gateway`, its attempts and a `gateway_request` audit entry (see
//! [`crate::orchestrator::usage`]); the response id is `chatcmpl-<task id>`.
//!
//! Errors are OpenAI's (see [`error`]): `{"error": {"message", "type",
//! "param", "code"}}` with OpenAI's statuses: 401 without credentials, 403
//! below `task_executor`, 404 for a model no active integration offers
//! (`model_not_found`) or a route `/v1` does not have, 400 for bad input
//! (`param` naming the field), 415 for a body that is not JSON, and for a
//! dispatch that found no answer 429 (`rate_limited`: every provider that
//! could serve is throttling, with `Retry-After`), 503 (`no_candidate`),
//! 502 (`all_attempts_failed`, `router_failed`), 504
//! (`deadline_exceeded`), 400 (`invalid_request`, `content_filtered`) or
//! 402 (`budget_exceeded`: every planned call could pass a hard budget),
//! the code being the dispatch error's kind. Once a stream has started, a
//! failure is sent as a final `data: {"error": {…}}` event instead.
//!
//! Streaming: the response (status, headers, the role chunk) is held back
//! until the first text exists, so an attempt that fails before sending
//! text falls back unseen, as a plain request does, and a dispatch with no
//! answer at all is an ordinary error status; `x-vel-provider` names the
//! integration that sent the first text. An attempt that fails after
//! sending text cannot take it back; the stream failover mode chooses what
//! follows. The mode is the request's `X-Vel-Stream-Failover` header
//! (`fail` or `continue`; anything else is a 400) when it has one, else
//! the organization's setting (`PUT /api/organizations/{id}/stream-failover`,
//! read from the dispatcher's per-organization catalogue), else `fail`; the
//! same rule holds for task streams (`POST /api/tasks`):
//! - `fail`: no other provider is asked; the stream ends with a
//!   `data: {"error": {…}}` event (`stream_interrupted`) and
//!   `data: [DONE]`, and the record is a failed task whose partial output
//!   is exactly the text sent;
//! - `continue`: the next attempt (a retry or a fallback) is asked to
//!   continue the text sent and only its continuation is streamed; the
//!   recorded answer is the text sent followed by it, which is what the
//!   client assembled. A provider whose plugin manifest declares
//!   `assistant_prefill` (Anthropic) gets the text sent as the trailing
//!   assistant turn, which it continues natively (trailing whitespace left
//!   out, as Anthropic requires, and not repeated); the others (OpenAI,
//!   Groq, Perplexity: OpenAI-compatible APIs without prefill) get it as
//!   the assistant's turn followed by a user turn asking to continue
//!   exactly where it stops without repeating any of it.
//!
//! Tool calling and structured output (`vel:plugins@0.2.0`): `tools`,
//! `tool_choice`, `parallel_tool_calls`, `response_format` (`json_object`,
//! `json_schema`), `seed`, `logprobs` / `top_logprobs` and the messages'
//! `tool_calls` / `tool_call_id` are checked here and carried by the
//! request ([`Tooling`]); the dispatcher offers routers only the models
//! that have what the request needs (a 400 `invalid_request` naming the
//! features when none has), and the answer's `tool_calls` come back with
//! `finish_reason: "tool_calls"`, streamed as OpenAI's tool-call deltas.
//! Streamed, log probabilities come whole on the finishing chunk: the
//! contract's `stream` interface carries text and tool calls, and the
//! final response the log probabilities.
//!
//! Agents: `X-Vel-Agent: <agent id>` runs the request with that agent's
//! settings (as a task of the agent would); an agent whose config lists
//! tool servers (`tools`) answers through the tool loop
//! ([`crate::orchestrator::tool_loop`]): server tools run inside vel,
//! the request's own tools are offered beside them, and a call of one of
//! those ends the loop and comes back as `tool_calls`; `usage` counts
//! every round. Streamed, the stream begins with the first text or the
//! first server tool call, whichever comes first; while server tools run
//! it carries SSE comments only (`: …`, which clients skip), so it stays
//! open without showing the client vel's own tool calls; the rounds' text
//! streams as it comes, and a call of one of the request's tools comes
//! whole, as a tool-call delta, before `finish_reason: "tool_calls"`.
//!
//! Here: the handler, the request's checks and the plain answer; the wire
//! types in [`wire`], the errors in [`error`], the model routes in
//! [`models`], the record of a request in [`recording`], the streamed
//! answer in [`stream`].

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tracing::Instrument;

pub mod embeddings;
pub mod error;
pub mod models;
mod recording;
mod stream;
mod wire;

pub use self::error::{GatewayError, OpenAiError, OpenAiErrorBody, openai_errors};
use self::error::{dispatch_error, model_not_found};
use self::recording::Recording;
use self::stream::streamed;
pub use self::wire::{
    AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, ChoiceLogprobs,
    CompletionUsage, ContentPart, FunctionCall, FunctionDefinition, FunctionName, InputChatMessage,
    JsonSchemaIn, MessageContent, ModelEntry, ModelList, NamedToolChoice, ResponseFormatIn,
    StopSequences, StreamOptions, TokenLogprobOut, ToolCallOut, ToolChoiceIn, ToolIn,
    TopLogprobOut,
};
use crate::agents::AgentConfig;
use crate::api::access::{Unit, rate_limit_headers};
use crate::api::error::{ApiError, FieldErrors};
use crate::api::extract::{ApiJson, ClientInfo, stream_failover};
use crate::auth::{Credential, Principal};
use crate::limits::counter::Admitted;
use crate::limits::{Kind, LimitError};
use crate::money::Money;
use crate::orchestrator::catalog::{Catalog, parse_task_type};
use crate::orchestrator::dispatch::{
    Answer, DispatchError, DispatchKind, Dispatcher, Job, Progress, totals,
};
use crate::orchestrator::request::{
    AgentTools, ChatMessage, ResponseFormatSpec, TaskRequest, ToolCallRecord, ToolChoiceSpec,
    ToolSpec, Tooling, finish_reason_name,
};
use crate::orchestrator::sampling::{Sampling, check_max_tokens};
use crate::orchestrator::state::TaskSource;
use crate::orchestrator::submit::{self, MAX_MESSAGE, MAX_MESSAGES, SubmitError, Work};
use crate::orchestrator::tool_loop::Toolbox;
use crate::orchestrator::usage::{Finished, Outcome};
use crate::state::AppState;
use crate::store::{new_id, now_ms};
use crate::validation::Invalid;

/// Longest `user`.
const MAX_NAME: usize = 200;
/// Most `tools` (OpenAI's limit).
const MAX_TOOLS: usize = 128;
/// Longest tool or schema name (OpenAI's limit).
const MAX_TOOL_NAME: usize = 64;
/// Most `top_logprobs` (OpenAI's limit).
const MAX_TOP_LOGPROBS: u8 = 20;
/// Most `metadata` pairs (OpenAI's limit).
const MAX_METADATA_PAIRS: usize = 16;
/// The vel extension header naming the agent whose settings (and tool
/// servers) the request runs with.
const AGENT_HEADER: &str = "x-vel-agent";
/// The vel extension header choosing the task type.
const TASK_TYPE_HEADER: &str = "x-vel-task-type";
/// The model name that lets the router choose.
const AUTO: &str = "auto";

/// The task recording the request.
const TASK_ID: HeaderName = HeaderName::from_static("x-vel-task-id");
/// The integration that answered.
const PROVIDER: HeaderName = HeaderName::from_static("x-vel-provider");
/// The cost of every attempt, in US dollars.
const COST: HeaderName = HeaderName::from_static("x-vel-cost-usd");
/// The router that planned the answer: `name@version`, `; fallback` added
/// when the router asked first failed and the default router planned.
const ROUTER: HeaderName = HeaderName::from_static("x-vel-router");

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
/// and build the canonical request, `agent`'s settings (agent `agent_id`)
/// filling what the body leaves open.
fn validate(
    mut body: ChatCompletionRequest,
    task_type: String,
    agent: Option<(String, &AgentConfig)>,
) -> Result<Validated, ApiError> {
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
        let tool_calls = m.tool_calls.unwrap_or_default();
        errors.check(
            tool_calls.is_empty() || role == Some("assistant"),
            &format!("messages[{i}].tool_calls"),
            "only an assistant message carries tool calls",
        );
        for (j, call) in tool_calls.iter().enumerate() {
            errors.check(
                call.kind == "function",
                &format!("messages[{i}].tool_calls[{j}].type"),
                "must be function",
            );
        }
        errors.check(
            m.tool_call_id.is_none() || role == Some("tool"),
            &format!("messages[{i}].tool_call_id"),
            "only a tool message carries a tool_call_id",
        );
        if let Some(name) = &m.name {
            errors.check(
                name.chars().count() <= MAX_NAME,
                &format!("messages[{i}].name"),
                "must be at most 200 characters",
            );
        }
        messages.push(ChatMessage {
            role: role.unwrap_or("user").to_string(),
            content,
            tool_calls: tool_calls
                .into_iter()
                .map(|c| ToolCallRecord {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
            tool_call_id: m.tool_call_id,
            name: m.name,
        });
    }
    let tooling = tooling(
        &mut errors,
        body.tools.take(),
        body.tool_choice.take(),
        body.response_format.take(),
    );
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
    if let Some(top) = body.top_logprobs {
        errors.check(
            top <= MAX_TOP_LOGPROBS,
            "top_logprobs",
            "must be between 0 and 20",
        );
        errors.check(
            body.logprobs == Some(true),
            "top_logprobs",
            "needs logprobs: true",
        );
    }
    if let Some(user) = &body.user {
        errors.check(
            user.len() <= MAX_NAME,
            "user",
            "must be at most 200 characters",
        );
    }
    if let Some(metadata) = &body.metadata {
        errors.check(
            metadata.len() <= MAX_METADATA_PAIRS,
            "metadata",
            "must hold at most 16 pairs",
        );
        errors.check(
            metadata
                .iter()
                .all(|(k, v)| k.chars().count() <= 64 && v.chars().count() <= 512),
            "metadata",
            "keys must be at most 64 characters and values at most 512",
        );
    }
    errors.finish()?;
    let mut metadata: serde_json::Map<String, serde_json::Value> = body
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    if let Some(user) = body.user {
        metadata.insert("user".into(), serde_json::Value::String(user));
    }
    let metadata = serde_json::Value::Object(metadata);
    let model = body.model.trim().to_string();
    let work = Work {
        task_type,
        messages,
        sampling: Sampling {
            model: (model != AUTO).then_some(model),
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            ..sampling
        },
        agent_id: agent.as_ref().map(|(id, _)| id.clone()),
        metadata,
    };
    let mut request = submit::request(work, agent.map(|(_, config)| config));
    request.tooling = Tooling {
        parallel_tool_calls: body.parallel_tool_calls,
        seed: body.seed,
        logprobs: body.logprobs.unwrap_or(false),
        top_logprobs: body.top_logprobs,
        ..tooling
    };
    Ok(Validated {
        request,
        stream: body.stream.unwrap_or(false),
        include_usage: body
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// Whether `name` is a valid tool or schema name: 1 to 64 of `a-z`,
/// `A-Z`, `0-9`, `_` and `-`.
fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks `tools`, `tool_choice` and `response_format` (naming each bad
/// field as OpenAI does) and returns them as stored.
fn tooling(
    errors: &mut FieldErrors,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<ToolChoiceIn>,
    response_format: Option<ResponseFormatIn>,
) -> Tooling {
    let tools = tools.unwrap_or_default();
    errors.check(
        tools.len() <= MAX_TOOLS,
        "tools",
        "must hold at most 128 tools",
    );
    let mut specs = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        errors.check(
            tool.kind == "function",
            &format!("tools[{i}].type"),
            "must be function",
        );
        let f = tool.function;
        errors.check(
            valid_tool_name(&f.name),
            &format!("tools[{i}].function.name"),
            "must be 1 to 64 letters, digits, underscores or dashes",
        );
        errors.check(
            f.parameters
                .as_ref()
                .is_none_or(serde_json::Value::is_object),
            &format!("tools[{i}].function.parameters"),
            "must be a JSON Schema object",
        );
        specs.push(ToolSpec {
            name: f.name,
            description: f.description,
            parameters: f
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            strict: f.strict,
        });
    }
    let tool_choice = tool_choice.and_then(|choice| {
        let spec = match choice {
            ToolChoiceIn::Mode(mode) => match mode.as_str() {
                "auto" => Some(ToolChoiceSpec::Auto),
                "none" => Some(ToolChoiceSpec::None),
                "required" => Some(ToolChoiceSpec::Required),
                _ => {
                    errors.add(
                        "tool_choice",
                        "must be auto, none, required or a named function",
                    );
                    None
                }
            },
            ToolChoiceIn::Named(named) => {
                errors.check(
                    named.kind == "function",
                    "tool_choice.type",
                    "must be function",
                );
                errors.check(
                    specs.iter().any(|t| t.name == named.function.name),
                    "tool_choice.function.name",
                    "must name one of the tools",
                );
                Some(ToolChoiceSpec::Tool(named.function.name))
            }
        };
        errors.check(
            !specs.is_empty(),
            "tool_choice",
            "is only allowed when tools are given",
        );
        spec
    });
    let response_format = response_format.and_then(|format| match format.kind.as_str() {
        "text" => None,
        "json_object" => Some(ResponseFormatSpec::JsonObject),
        "json_schema" => {
            let Some(schema) = format.json_schema else {
                errors.add(
                    "response_format.json_schema",
                    "is required with type json_schema",
                );
                return None;
            };
            errors.check(
                valid_tool_name(&schema.name),
                "response_format.json_schema.name",
                "must be 1 to 64 letters, digits, underscores or dashes",
            );
            errors.check(
                schema
                    .schema
                    .as_ref()
                    .is_none_or(serde_json::Value::is_object),
                "response_format.json_schema.schema",
                "must be a JSON Schema object",
            );
            Some(ResponseFormatSpec::JsonSchema {
                name: schema.name,
                description: schema.description,
                schema: schema.schema.unwrap_or_else(|| serde_json::json!({})),
                strict: schema.strict.unwrap_or(false),
            })
        }
        _ => {
            errors.add(
                "response_format.type",
                "must be text, json_object or json_schema",
            );
            None
        }
    });
    Tooling {
        tools: specs,
        tool_choice,
        response_format,
        ..Tooling::default()
    }
}

/// The agent named by `X-Vel-Agent` (its id), with its settings: it must
/// be an active agent of the caller's organization (else a 400 naming
/// `agent`).
async fn requested_agent(
    state: &AppState,
    org_id: &str,
    headers: &HeaderMap,
) -> Result<Option<(String, AgentConfig)>, ApiError> {
    let Some(value) = headers.get(AGENT_HEADER) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::from(Invalid::field("agent", "X-Vel-Agent must be an agent id")))?
        .to_string();
    let mut tx = state.db.tenant_read(org_id).await?;
    let settings = submit::agent_settings(&mut tx, org_id, &id).await;
    tx.commit().await?;
    match settings {
        Ok(Some(config)) => Ok(Some((id, config))),
        Ok(None) => Err(Invalid::field("agent", "the agent's configuration is unreadable").into()),
        // Named as the header is: `agent` rather than `agent_id`.
        Err(SubmitError::Invalid(Invalid(fields))) => Err(Invalid(
            fields
                .into_values()
                .map(|messages| ("agent".to_string(), messages))
                .collect(),
        )
        .into()),
        Err(e) => Err(e.into()),
    }
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

/// Create a chat completion (task_executor or above), plain or streamed.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", request_body = ChatCompletionRequest,
    params(("X-Vel-Task-Type" = Option<String>, Header,
            description = "reasoning, code_generation, research, light or general (default)"),
           ("X-Vel-Agent" = Option<String>, Header,
            description = "An agent's id: its settings fill what the request leaves open (`model: \"auto\"` takes the agent's model), and when its config lists `tools` (MCP integrations), the request runs the agent's tool loop inside vel: the model is offered the servers' tools as `<integration>__<tool>` besides the request's own tools; vel calls the servers and asks again, up to the agent's `max_tool_rounds`; a call of one of the request's own tools ends the loop and is returned as `tool_calls`; `usage` counts every round. Streamed, while server tools run the stream carries SSE comments only (keep-alives), never the server tools' calls"),
           ("X-Vel-Stream-Failover" = Option<String>, Header,
            description = "Streams: when a provider fails after part of the answer was sent, `fail` ends the stream with an error event, `continue` has the next attempt continue the text sent (as an assistant prefill where the provider supports it, else with an instruction to continue without repeating). Absent: the organization's default (`/api/organizations/{id}/stream-failover`), else `fail`")),
    responses(
        (status = 200, description = "The answer; with `stream: true`, Server-Sent Events of `chat.completion.chunk` objects ending with `data: [DONE]`",
         headers(("x-vel-provider" = String, description = "Integration that answered (streams: the one that sent the first content)"),
                 ("x-vel-cost-usd" = String, description = "Cost of all attempts in US dollars, a plain decimal such as `0.0000005` (plain answers)"),
                 ("x-vel-task-id" = String, description = "The task recording this request"),
                 ("x-vel-router" = String, description = "The router that planned the answer, `name@version`; `name@version; fallback` when the router asked first (the agent's or the organization's policy) failed or planned nothing offered and the default router planned instead (the task's `plan.fallback` says why)"),
                 ("x-ratelimit-limit-requests" = i64, description = "With a request limit: the tightest one"),
                 ("x-ratelimit-remaining-requests" = i64, description = "Requests left in its window"),
                 ("x-ratelimit-reset-requests" = String, description = "When its window resets, e.g. `1m30s`"),
                 ("x-ratelimit-limit-tokens" = i64, description = "With a token limit (tokens per minute): the tightest one"),
                 ("x-ratelimit-remaining-tokens" = i64, description = "Tokens left in the current minute (plain answers: after this one's; streams: before it)"),
                 ("x-ratelimit-reset-tokens" = String, description = "When the minute resets, e.g. `42s`")),
         content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed body or an invalid field (`param` names it), or the provider refused the request (`invalid_request`, `content_filtered`)", body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody),
        (status = 402, description = "`budget_exceeded`: every planned call could pass a hard budget, so no provider was called", body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`: no active integration offers the model", body = OpenAiErrorBody),
        (status = 429, description = "`rate_limited` (always with `Retry-After`): the credential or the organization has its share of requests in flight, a rate limit is reached (with a token limit, the `x-ratelimit-*-tokens` headers), or every provider that could serve is throttling (`Retry-After`: when the soonest said it may serve again)", body = OpenAiErrorBody),
        (status = 502, description = "`all_attempts_failed`: every planned provider failed (each attempt in the message); `router_failed`; with an agent's tools, `tool_rounds_exceeded` (the model still asked for tools after `max_tool_rounds` rounds) or `tool_server_failed` (a tool server could not be reached or failed; a tool's own error goes back to the model instead)", body = OpenAiErrorBody),
        (status = 503, description = "`no_candidate`: no provider can take the request", body = OpenAiErrorBody),
        (status = 504, description = "`deadline_exceeded`: the attempts took longer than the run's limit", body = OpenAiErrorBody)),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, GatewayError> {
    let created_at = now_ms();
    let started = Instant::now();
    let credential = match &p.credential {
        Credential::ApiKey { id } => id.as_str(),
        Credential::Token { .. } => p.user_id.as_str(),
    };
    let slot = state
        .shares
        .take(credential, &p.org_id)
        .map_err(|full| ApiError::too_many_requests(full.to_string(), 1))?;
    let tokens = match state.limits.admit_task(&p).await {
        Ok(tokens) => tokens,
        Err(e) => {
            let full = match &e {
                LimitError::Exceeded(over) if over.kind == Kind::TokensPerMinute => {
                    Some(Admitted {
                        limit: over.limit,
                        remaining: 0,
                        resets_at: over.resets_at,
                    })
                }
                _ => None,
            };
            let mut response = GatewayError::from(ApiError::from(e)).into_response();
            if let Some(full) = full {
                rate_limit_headers(response.headers_mut(), Unit::Tokens, full);
            }
            return Ok(response);
        }
    };
    let task_type = task_type(&headers)?;
    let failover = stream_failover(&headers)?;
    let agent = requested_agent(&state, &p.org_id, &headers).await?;
    let Validated {
        mut request,
        stream,
        include_usage,
    } = validate(
        body,
        task_type,
        agent.as_ref().map(|(id, c)| (id.clone(), c)),
    )?;
    request.stream_failover = failover;
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
        return Err(model_not_found(&requested));
    }
    let id = new_id();
    let agent_tools = request.agent_tools.clone();
    let mut job = request.to_job(&id, &p.org_id, 1, 0);
    job.spender.user_id = Some(p.user_id.clone());
    job.spender.api_key_id = p.api_key_id().map(str::to_string);
    let recording = Recording {
        _slot: slot,
        usage: state.usage.clone(),
        template: Some(Finished {
            id: id.clone(),
            org_id: p.org_id.clone(),
            user_id: p.user_id.clone(),
            source: TaskSource::Gateway,
            request,
            stream,
            outcome: Outcome::Cancelled {
                partial_output: None,
            },
            attempts: Vec::new(),
            created_at,
            finished_at: created_at,
            started,
            latency: Duration::ZERO,
            ip_address: client.ip,
            user_agent: client.user_agent,
            audit_action: "gateway_request",
        }),
    };
    let span = tracing::info_span!("gateway", task_id = %id, stream, model = %requested);
    let limits = state.limits.clone();
    let answered = if stream {
        streamed(state, job, agent_tools, requested, include_usage, recording)
            .instrument(span)
            .await
    } else {
        plain(state, job, agent_tools, recording)
            .instrument(span)
            .await
    };
    let Some(admitted) = tokens else {
        return answered;
    };
    // A plain answer's tokens were counted when its run ended: what is
    // left now. A stream's headers left before its run ended.
    let left = if stream {
        admitted
    } else {
        limits
            .tokens_left(&p)
            .await
            .ok()
            .flatten()
            .unwrap_or(admitted)
    };
    let mut response = answered.unwrap_or_else(IntoResponse::into_response);
    rate_limit_headers(response.headers_mut(), Unit::Tokens, left);
    Ok(response)
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

/// The answer's message: its text (`null` when the model only called
/// tools) and tool calls.
fn assistant_message(answer: &Answer) -> AssistantMessage {
    let r = &answer.response;
    let calls = &r.tool_calls;
    AssistantMessage {
        role: "assistant",
        content: (calls.is_empty() || !r.text.is_empty()).then(|| r.text.clone()),
        tool_calls: (!calls.is_empty()).then(|| {
            calls
                .iter()
                .map(|c| ToolCallOut {
                    id: c.id.clone(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
                .collect()
        }),
    }
}

/// Per-token log probabilities in OpenAI's shape.
fn logprobs_out(tokens: &[vel_runtime::types::TokenLogprob]) -> ChoiceLogprobs {
    ChoiceLogprobs {
        content: tokens
            .iter()
            .map(|t| TokenLogprobOut {
                token: t.token.clone(),
                logprob: t.logprob,
                bytes: t.token.as_bytes().to_vec(),
                top_logprobs: t
                    .top
                    .iter()
                    .map(|top| TopLogprobOut {
                        token: top.token.clone(),
                        logprob: top.logprob,
                        bytes: top.token.as_bytes().to_vec(),
                    })
                    .collect(),
            })
            .collect(),
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

/// Run `job`: one dispatch, or with an agent's tool servers, the tool
/// loop (the request's own tools may not be named as the servers' are);
/// `progress` gets what the run reports.
async fn answer(
    dispatcher: &Dispatcher,
    job: &Job,
    agent_tools: Option<&AgentTools>,
    stream: bool,
    progress: Option<&mpsc::UnboundedSender<Progress>>,
) -> Result<Answer, DispatchError> {
    let Some(tools) = agent_tools else {
        return dispatcher.run(job, stream, progress).await;
    };
    let toolbox = Toolbox::open(dispatcher.tools(), &job.org_id, &tools.integrations).await?;
    if let Some(clash) = job.tools.iter().find(|t| toolbox.offers(&t.name)) {
        return Err(DispatchError {
            kind: DispatchKind::InvalidRequest,
            message: format!(
                "tools: `{}` is the name of one of the agent's server tools; rename yours",
                clash.name
            ),
            attempts: Vec::new(),
            retry_after: None,
        });
    }
    dispatcher
        .run_tool_loop(job, &toolbox, tools.max_rounds, stream, progress, "gateway")
        .await
}

/// Answer `job` at once.
async fn plain(
    state: AppState,
    job: Job,
    agent_tools: Option<AgentTools>,
    recording: Recording,
) -> Result<Response, GatewayError> {
    let created = secs(recording.template.as_ref().map_or(0, |f| f.created_at));
    let run = answer(&state.dispatcher, &job, agent_tools.as_ref(), false, None);
    match run.await {
        Ok(answer) => {
            let (_, _, cost) = totals(&answer.attempts);
            let body = ChatCompletion {
                id: format!("chatcmpl-{}", job.id),
                object: "chat.completion",
                created,
                model: answer.response.model.clone(),
                choices: vec![Choice {
                    index: 0,
                    message: assistant_message(&answer),
                    logprobs: answer.response.logprobs.as_deref().map(logprobs_out),
                    finish_reason: finish_reason(&answer),
                }],
                usage: usage_of(&answer),
            };
            let mut resp = Json(body).into_response();
            let h = resp.headers_mut();
            answered_by(h, &answer.provider, cost, &job.id);
            if let Some(v) = answer
                .router
                .as_ref()
                .and_then(|r| HeaderValue::from_str(&r.header_value()).ok())
            {
                h.insert(ROUTER, v);
            }
            recording.finish(completed(&answer), answer.attempts).await;
            Ok(resp)
        }
        Err(e) => Err(failed(recording, e, &job.id).await),
    }
}

/// A plain answer's `x-vel-provider`, `x-vel-cost-usd` and `x-vel-task-id`.
fn answered_by(h: &mut HeaderMap, provider: &str, cost: Money, task_id: &str) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        h.insert(PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
        h.insert(COST, v);
    }
    if let Ok(v) = HeaderValue::from_str(task_id) {
        h.insert(TASK_ID, v);
    }
}

/// Record a request no provider answered, and answer with its error.
async fn failed(recording: Recording, e: DispatchError, task_id: &str) -> GatewayError {
    let err = dispatch_error(&e, Some(task_id.to_string()));
    recording
        .finish(
            Outcome::Failed {
                kind: e.kind.to_string(),
                message: e.message,
                partial_output: None,
            },
            e.attempts,
        )
        .await;
    err
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

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
            None,
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
    fn metadata_and_user_reach_the_router() {
        let v = validate(
            body(json!({
                "model": "auto", "user": "u-1",
                "metadata": { "tier": "gold", "user": "overridden" },
                "messages": [{"role": "user", "content": "hi"}]
            })),
            "general".into(),
            None,
        )
        .expect("valid");
        assert_eq!(v.request.metadata, json!({ "tier": "gold", "user": "u-1" }));
        let many: serde_json::Map<String, serde_json::Value> =
            (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let err = validate(
            body(json!({ "model": "auto", "metadata": many,
                         "messages": [{"role": "user", "content": "hi"}] })),
            "general".into(),
            None,
        )
        .expect_err("too many pairs");
        assert_eq!(
            err.into_response().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let err = validate(
            body(json!({
                "model": "m", "n": 2, "temperature": 3.0,
                "messages": [{"role": "robot", "content": [{"type": "image_url", "image_url": {}}]}]
            })),
            "general".into(),
            None,
        )
        .expect_err("invalid");
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
