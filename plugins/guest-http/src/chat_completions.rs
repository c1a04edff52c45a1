//! The OpenAI chat-completions wire format, spoken by OpenAI, Groq,
//! Perplexity and many OpenAI-compatible servers:
//! `POST {base-url}/chat/completions`, plain JSON or SSE streaming.
//!
//! Perplexity adds a top-level `citations` list of URLs; when present it is
//! appended to the text as a numbered "Sources" list (the last delta of a
//! stream), since the canonical response has no field for it.

use crate::completion::{
    CompletionRequest, CompletionResponse, FinishReason, ProviderError, ResponseFormat,
    TokenLogprob, ToolChoice, TopLogprob,
};
use crate::http::{self, Post};
use crate::settings::Settings;
use crate::stream::ToolCallDelta;
use crate::types::{Role, ToolCall, Usage};
use crate::{estimate_usage, sse};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Largest non-streamed response body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The JSON body of a chat-completions request, borrowed from the canonical
/// request so that it is serialized straight to bytes (no `Value` tree).
#[derive(Debug, Serialize)]
pub struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    // `f64`, as the `json!` body this replaced sent it (0.7f32 goes out as
    // 0.699999988079071); NaN and infinities become `null` either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u8>,
}

/// One message of [`RequestBody`].
#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// An assistant turn's tool call, as sent back upstream.
#[derive(Debug, Serialize)]
struct WireToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionOut<'a>,
}

/// The function of a [`WireToolCallOut`].
#[derive(Debug, Serialize)]
struct WireFunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// A tool offered to the model.
#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDef<'a>,
}

/// The function of a [`WireTool`]; `parameters` is the schema's JSON.
#[derive(Debug, Serialize)]
struct WireFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// A schema's JSON text as JSON (`{}` when it is not valid JSON: the
/// host only passes valid JSON).
fn raw_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({}))
}

/// `tool_choice` in OpenAI's wire format.
fn tool_choice(choice: &ToolChoice) -> serde_json::Value {
    match choice {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Named(name) => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
    }
}

/// `response_format` in OpenAI's wire format (none for plain text).
fn response_format(format: &ResponseFormat) -> Option<serde_json::Value> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(serde_json::json!({"type": "json_object"})),
        ResponseFormat::JsonSchema(f) => {
            let schema: serde_json::Value =
                serde_json::from_str(&f.schema).unwrap_or_else(|_| serde_json::json!({}));
            let mut inner =
                serde_json::json!({"name": f.name, "schema": schema, "strict": f.strict});
            if let Some(d) = &f.description {
                inner["description"] = serde_json::json!(d);
            }
            Some(serde_json::json!({"type": "json_schema", "json_schema": inner}))
        }
    }
}

/// `stream_options` of a streamed request: ask for usage in the last chunk.
#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The body for `request`, sent to `model`.
pub fn request_body<'a>(
    request: &'a CompletionRequest,
    model: &'a str,
    settings: &Settings,
    stream: bool,
) -> RequestBody<'a> {
    let messages = request
        .messages
        .iter()
        .map(|m| WireMessage {
            // A tool message without the id of the call it answers would be
            // refused: send it as user text instead.
            role: match m.role {
                Role::Tool if m.tool_call_id.is_none() => "user",
                other => crate::role_name(other),
            },
            content: &m.content,
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| WireToolCallOut {
                    id: &c.id,
                    kind: "function",
                    function: WireFunctionOut {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref(),
            name: m.name.as_deref(),
        })
        .collect();
    RequestBody {
        model,
        messages,
        temperature: request.temperature.map(f64::from),
        max_tokens: request.max_tokens.or(settings.max_tokens),
        stop: &request.stop,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: request
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireFunctionDef {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters: raw_json(&t.parameters),
                    strict: t.strict,
                },
            })
            .collect(),
        tool_choice: request.tool_choice.as_ref().map(tool_choice),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: response_format(&request.response_format),
        seed: request.seed,
        logprobs: request.logprobs.then_some(true),
        top_logprobs: request.top_logprobs,
    }
}

/// The canonical finish reason for an upstream one; a content-filter stop
/// is an error the host acts on.
pub fn finish_reason(reason: Option<&str>) -> Result<FinishReason, ProviderError> {
    Ok(match reason {
        Some("stop") | Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
        Some("length") | Some("max_tokens") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") | Some("tool_use") => FinishReason::ToolCalls,
        Some("content_filter") | Some("refusal") => {
            return Err(ProviderError::ContentFiltered(
                "the provider's content filter stopped the answer".into(),
            ));
        }
        Some(_) => FinishReason::Other,
    })
}

/// A whole answer or a stream chunk: only the fields read (unknown ones are
/// skipped; `null` reads as absent). The strings are the ones kept (text,
/// model), so owning them costs no extra copy.
#[derive(Debug, Deserialize)]
struct WireAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Perplexity's list of source URLs (entries that are not strings are
    /// skipped).
    #[serde(default)]
    citations: Option<Vec<serde_json::Value>>,
    /// A mid-stream failure.
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// One entry of `choices`: `message` in a whole answer, `delta` in a chunk.
#[derive(Debug, Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireContent>,
    #[serde(default)]
    delta: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<WireLogprobs>,
}

/// A `message` or `delta`: its text and tool calls.
#[derive(Debug, Deserialize)]
struct WireContent {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallIn>>,
}

/// A tool call of an answer, or a piece of one in a chunk.
#[derive(Debug, Deserialize)]
struct WireToolCallIn {
    /// Which call a piece belongs to (chunks only).
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionIn>,
}

/// The function of a [`WireToolCallIn`].
#[derive(Debug, Deserialize)]
struct WireFunctionIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A choice's `logprobs`.
#[derive(Debug, Deserialize)]
struct WireLogprobs {
    #[serde(default)]
    content: Option<Vec<WireTokenLogprob>>,
}

/// One token's log probability and its most likely alternatives.
#[derive(Debug, Deserialize)]
struct WireTokenLogprob {
    token: String,
    logprob: f64,
    #[serde(default)]
    top_logprobs: Option<Vec<WireTopLogprob>>,
}

/// One alternative of a [`WireTokenLogprob`].
#[derive(Debug, Deserialize)]
struct WireTopLogprob {
    token: String,
    logprob: f64,
}

impl WireLogprobs {
    fn into_tokens(self) -> Vec<TokenLogprob> {
        self.content
            .unwrap_or_default()
            .into_iter()
            .map(|t| TokenLogprob {
                token: t.token,
                logprob: t.logprob,
                top: t
                    .top_logprobs
                    .unwrap_or_default()
                    .into_iter()
                    .map(|top| TopLogprob {
                        token: top.token,
                        logprob: top.logprob,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// `usage`: `prompt_tokens` / `completion_tokens`.
#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl WireAnswer {
    /// The reported usage: none without `prompt_tokens`; counts are
    /// clamped to `u32`.
    fn usage(&self) -> Option<Usage> {
        let usage = self.usage.as_ref()?;
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Some(Usage {
            input_tokens: clamp(usage.prompt_tokens?),
            output_tokens: usage.completion_tokens.map_or(0, clamp),
        })
    }

    /// The "Sources" block for Perplexity's citations, or nothing.
    fn sources(&self) -> Option<String> {
        let mut urls = self
            .citations
            .iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .peekable();
        // Most answers have no citations: allocate nothing for them.
        urls.peek()?;
        let mut block = String::from("\n\nSources:");
        for (i, url) in urls.enumerate() {
            // Writing to a `String` cannot fail.
            let _ = write!(block, "\n[{}] {url}", i + 1);
        }
        Some(block)
    }
}

/// Parses a whole (non-streamed) response body.
pub fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
    model: &str,
) -> Result<CompletionResponse, ProviderError> {
    let mut v: WireAnswer = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "not a chat completion"
        } else {
            "not JSON"
        };
        ProviderError::Other(format!("the upstream answer is {what}: {e}"))
    })?;
    let sources = v.sources();
    let usage = v.usage();
    let choice = v
        .choices
        .as_mut()
        .filter(|c| !c.is_empty())
        .map(|c| c.swap_remove(0))
        .ok_or_else(|| ProviderError::Other("the upstream answer has no choices".into()))?;
    let finish = finish_reason(choice.finish_reason.as_deref())?;
    let (content, calls) = match choice.message {
        Some(m) => (m.content, m.tool_calls),
        None => (None, None),
    };
    let mut text = content.unwrap_or_default();
    if let Some(s) = sources {
        text.push_str(&s);
    }
    let tool_calls: Vec<ToolCall> = calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let function = c.function.unwrap_or(WireFunctionIn {
                name: None,
                arguments: None,
            });
            ToolCall {
                id: c.id.unwrap_or_default(),
                name: function.name.unwrap_or_default(),
                arguments: function.arguments.unwrap_or_default(),
            }
        })
        .collect();
    Ok(CompletionResponse {
        usage: usage.unwrap_or_else(|| estimate_usage(request, &text)),
        model: v.model.unwrap_or_else(|| model.to_string()),
        finish_reason: finish,
        text,
        tool_calls,
        logprobs: choice.logprobs.map(WireLogprobs::into_tokens),
    })
}

/// What a stream has said so far.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Text received so far.
    pub text: String,
    /// The model the upstream reported.
    pub model: Option<String>,
    /// The upstream finish reason, once sent.
    pub finish: Option<String>,
    /// Usage, once sent (with `include_usage`, in the last chunk).
    pub usage: Option<Usage>,
    /// Perplexity's sources block, once sent.
    pub sources: Option<String>,
    /// `[DONE]` was received.
    pub done: bool,
    /// Tool calls assembled from their pieces so far, by index.
    pub tool_calls: Vec<ToolCall>,
    /// Pieces of tool calls received by the last [`Self::on_data`], to
    /// hand to `stream.emit-tool-call`.
    pub tool_call_deltas: Vec<ToolCallDelta>,
    /// Per-token log probabilities of the chunks so far, when the upstream
    /// sends them (`logprobs: true`). `stream.emit` carries text only, so
    /// they reach the host with the final response.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

impl StreamState {
    /// Takes one SSE `data:` payload and returns the text delta it carries.
    pub fn on_data(&mut self, data: &str) -> Result<Option<String>, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let v: WireAnswer = serde_json::from_str(data)
            .map_err(|e| ProviderError::Other(format!("bad stream chunk from upstream: {e}")))?;
        if v.error.is_some() {
            return Err(ProviderError::Unavailable(format!(
                "the upstream failed mid-stream: {}",
                crate::errors::upstream_message(data.as_bytes())
            )));
        }
        if let Some(u) = v.usage() {
            self.usage = Some(u);
        }
        if let Some(s) = v.sources() {
            self.sources = Some(s);
        }
        if v.model.is_some() {
            self.model = v.model;
        }
        let Some(choice) = v.choices.and_then(|c| c.into_iter().next()) else {
            return Ok(None);
        };
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        if let Some(lp) = choice.logprobs {
            self.logprobs
                .get_or_insert_with(Vec::new)
                .extend(lp.into_tokens());
        }
        let (content, calls) = match choice.delta {
            Some(d) => (d.content, d.tool_calls),
            None => (None, None),
        };
        for piece in calls.unwrap_or_default() {
            self.add_tool_call_piece(piece);
        }
        let delta = content.filter(|d| !d.is_empty());
        if let Some(d) = &delta {
            self.text.push_str(d);
        }
        Ok(delta)
    }
}

impl StreamState {
    /// Adds a streamed piece of a tool call to the call it belongs to
    /// (a new one when its index is new) and queues it for the host.
    fn add_tool_call_piece(&mut self, piece: WireToolCallIn) {
        let index = piece
            .index
            .unwrap_or_else(|| u32::try_from(self.tool_calls.len()).unwrap_or(u32::MAX));
        let (name, arguments) = match piece.function {
            Some(f) => (f.name, f.arguments.unwrap_or_default()),
            None => (None, String::new()),
        };
        let slot = usize::try_from(index).unwrap_or(usize::MAX);
        while self.tool_calls.len() <= slot && self.tool_calls.len() < 1024 {
            self.tool_calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        if let Some(call) = self.tool_calls.get_mut(slot) {
            if let Some(id) = &piece.id {
                call.id.clone_from(id);
            }
            if let Some(name) = &name {
                call.name.push_str(name);
            }
            call.arguments.push_str(&arguments);
        }
        self.tool_call_deltas.push(ToolCallDelta {
            index,
            id: piece.id,
            name,
            arguments,
        });
    }
}

/// POSTs `body` to `{base-url}/chat/completions`.
fn send(
    settings: &Settings,
    body: &RequestBody,
    stream: bool,
) -> Result<http::Response, ProviderError> {
    let url = format!("{}/chat/completions", settings.base_url);
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ProviderError::Other(format!("could not encode the request: {e}")))?;
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    http::post(&Post {
        url: &url,
        headers: vec![("content-type", "application/json"), ("accept", accept)],
        body: &bytes,
        timeout: settings.timeout,
    })?
    .error_for_status()
}

/// Runs one completion and returns it whole.
pub fn complete(
    settings: &Settings,
    request: &CompletionRequest,
) -> Result<CompletionResponse, ProviderError> {
    let model = settings.model_for(&request.model).to_string();
    let body = request_body(request, &model, settings, false);
    let mut response = send(settings, &body, false)?;
    let bytes = response.read_to_end(MAX_BODY)?;
    parse_response(&bytes, request, &model)
}

/// Runs one completion, handing each text delta to `stream.emit` as it
/// arrives; stops early (finish reason `cancelled`) when the host says so.
pub fn complete_stream(
    settings: &Settings,
    request: &CompletionRequest,
) -> Result<CompletionResponse, ProviderError> {
    let model = settings.model_for(&request.model).to_string();
    let body = request_body(request, &model, settings, true);
    let mut response = send(settings, &body, true)?;
    let mut parser = sse::Parser::new();
    let mut state = StreamState::default();
    let mut cancelled = false;
    'read: while !state.done {
        let events = match response.next_chunk()? {
            Some(chunk) => parser.feed(&chunk),
            None => {
                let last = parser.finish();
                if last.is_none() {
                    break;
                }
                last.into_iter().collect()
            }
        };
        for event in events {
            let delta = state.on_data(&event.data)?;
            for piece in std::mem::take(&mut state.tool_call_deltas) {
                if !crate::stream::emit_tool_call(&piece) {
                    cancelled = true;
                    break 'read;
                }
            }
            if let Some(delta) = delta
                && !crate::stream::emit(&delta)
            {
                cancelled = true;
                break 'read;
            }
            if state.done {
                break 'read;
            }
        }
    }
    finish_stream(state, cancelled, request, &model)
}

/// The response at the end of a stream.
fn finish_stream(
    mut state: StreamState,
    cancelled: bool,
    request: &CompletionRequest,
    model: &str,
) -> Result<CompletionResponse, ProviderError> {
    let finish = if cancelled {
        FinishReason::Cancelled
    } else {
        let finish = finish_reason(state.finish.as_deref())?;
        if let Some(s) = state.sources.take()
            && crate::stream::emit(&s)
        {
            state.text.push_str(&s);
        }
        finish
    };
    Ok(CompletionResponse {
        usage: state
            .usage
            .unwrap_or_else(|| estimate_usage(request, &state.text)),
        model: state.model.unwrap_or_else(|| model.to_string()),
        finish_reason: finish,
        text: state.text,
        tool_calls: state.tool_calls,
        logprobs: state.logprobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Message, TaskType};
    use serde_json::{Value, json};

    fn request() -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            messages: vec![
                message(Role::System, "Be terse."),
                message(Role::User, "Hi"),
            ],
            temperature: Some(0.5),
            max_tokens: None,
            stop: vec!["END".into()],
            task_type: TaskType::General,
            metadata: "{}".into(),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: ResponseFormat::Text,
            seed: None,
            logprobs: false,
            top_logprobs: None,
        }
    }

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            base_url: "https://api.openai.com/v1".into(),
            default_model: "gpt-4o".into(),
            timeout: None,
            max_tokens: Some(256),
        }
    }

    /// Usage as comparable numbers (the bindings' `Usage` has no `PartialEq`).
    fn tokens(usage: Option<Usage>) -> Option<(u32, u32)> {
        usage.map(|u| (u.input_tokens, u.output_tokens))
    }

    /// The request body as JSON, the way the upstream reads it.
    fn wire(request: &CompletionRequest, stream: bool) -> Value {
        let body = request_body(request, "gpt-4o", &settings(), stream);
        serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn builds_the_wire_request() {
        let body = wire(&request(), true);
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be terse."})
        );
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        let plain = wire(&request(), false);
        assert!(plain.get("stream").is_none());
        assert!(plain.get("stream_options").is_none());
    }

    /// The `json!` body the typed one replaced, kept to prove they agree.
    fn reference_body(request: &CompletionRequest, settings: &Settings, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::Tool => "user",
                    other => crate::role_name(other),
                };
                json!({"role": role, "content": m.content})
            })
            .collect();
        let mut body = json!({"model": "gpt-4o", "messages": messages});
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(max) = request.max_tokens.or(settings.max_tokens) {
            body["max_tokens"] = json!(max);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    #[test]
    fn the_wire_request_matches_the_old_json_body() {
        let mut bare = request();
        bare.temperature = None;
        bare.stop.clear();
        bare.messages
            .push(message(Role::Tool, "tool said \"hi\"\n\u{1F600}"));
        let mut odd = request();
        odd.temperature = Some(0.7);
        odd.max_tokens = Some(7);
        let mut no_limit = settings();
        no_limit.max_tokens = None;
        for r in [request(), bare, odd] {
            for s in [settings(), no_limit.clone()] {
                for stream in [false, true] {
                    let body = request_body(&r, "gpt-4o", &s, stream);
                    let typed: Value =
                        serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
                    assert_eq!(typed, reference_body(&r, &s, stream));
                }
            }
        }
        let mut tool = request();
        tool.messages[1].role = Role::Tool;
        assert_eq!(wire(&tool, false)["messages"][1]["role"], "user");
        tool.max_tokens = None;
        tool.stop.clear();
        let mut unlimited = request_body(&tool, "m", &no_limit, false);
        unlimited.temperature = None;
        let v: Value = serde_json::from_slice(&serde_json::to_vec(&unlimited).unwrap()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["messages", "model"]);
    }

    #[test]
    fn escaped_content_round_trips() {
        let text = "a\"b\nc \u{e9}\u{1F600}";
        let body = br#"{"choices":[{"message":{"content":"a\"b\nc \u00e9\ud83d\ude00"},"finish_reason":"stop"}],"usage":null}"#;
        let r = parse_response(body, &request(), "m").unwrap();
        assert_eq!(r.text, text);
        assert_eq!(r.model, "m");
        assert_eq!(
            tokens(Some(r.usage)),
            tokens(Some(estimate_usage(&request(), text))),
            "usage: null"
        );
        let mut s = StreamState::default();
        let chunk = r#"{"model":"m\u0031","choices":[{"delta":{"content":"a\"b\nc \u00e9\ud83d\ude00"},"finish_reason":null}],"usage":null}"#;
        assert_eq!(s.on_data(chunk).unwrap().as_deref(), Some(text));
        assert_eq!(s.text, text);
        assert_eq!(s.model.as_deref(), Some("m1"));
        assert!(s.usage.is_none());
    }

    #[test]
    fn usage_may_be_null_missing_or_partial() {
        let answer = |usage: &str| {
            let body = format!(
                r#"{{"choices":[{{"message":{{"content":"Hello!"}},"finish_reason":null}}]{usage}}}"#
            );
            tokens(Some(
                parse_response(body.as_bytes(), &request(), "m")
                    .unwrap()
                    .usage,
            ))
        };
        let estimated = tokens(Some(estimate_usage(&request(), "Hello!")));
        assert_eq!(answer(""), estimated, "missing");
        assert_eq!(answer(r#","usage":null"#), estimated);
        assert_eq!(answer(r#","usage":{}"#), estimated, "no prompt_tokens");
        assert_eq!(
            answer(r#","usage":{"prompt_tokens":4,"completion_tokens":null}"#),
            Some((4, 0))
        );
        assert_eq!(
            answer(r#","usage":{"prompt_tokens":4294967296,"completion_tokens":3}"#),
            Some((u32::MAX, 3))
        );
        let mut s = StreamState::default();
        assert_eq!(s.on_data(r#"{"choices":[]}"#).unwrap(), None);
        assert_eq!(s.on_data(r#"{"choices":null,"usage":null}"#).unwrap(), None);
        assert!(s.usage.is_none());
    }

    #[test]
    fn citations_keep_their_strings_and_other_wrong_types_are_refused() {
        let body = br#"{"citations":["https://a.example",3,null,{"u":1}],"choices":[{"message":{"content":null},"finish_reason":null}]}"#;
        let r = parse_response(body, &request(), "m").unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.text, "\n\nSources:\n[1] https://a.example");
        assert_eq!(r.finish_reason, FinishReason::Stop);
        assert!(matches!(
            parse_response(br#"{"choices":[]}"#, &request(), "m"),
            Err(ProviderError::Other(m)) if m.contains("no choices")
        ));
        assert!(matches!(
            parse_response(br#"{"model":7,"choices":[]}"#, &request(), "m"),
            Err(ProviderError::Other(m)) if m.contains("not a chat completion")
        ));
        let mut s = StreamState::default();
        assert_eq!(s.on_data(r#"{"error":null,"choices":[]}"#).unwrap(), None);
        assert!(matches!(
            s.on_data(r#"{"choices":[{"delta":{"content":5}}]}"#),
            Err(ProviderError::Other(_))
        ));
    }

    #[test]
    fn parses_a_whole_answer() {
        let body = br#"{"model":"gpt-4o-2024","choices":[{"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
        let r = parse_response(body, &request(), "gpt-4o").unwrap();
        assert_eq!(
            (r.text.as_str(), r.model.as_str()),
            ("Hello!", "gpt-4o-2024")
        );
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (9, 2));
        assert_eq!(r.finish_reason, FinishReason::Stop);
        let filtered =
            br#"{"choices":[{"message":{"content":""},"finish_reason":"content_filter"}]}"#;
        assert!(matches!(
            parse_response(filtered, &request(), "m"),
            Err(ProviderError::ContentFiltered(_))
        ));
        assert!(matches!(
            parse_response(b"<html>", &request(), "m"),
            Err(ProviderError::Other(_))
        ));
    }

    #[test]
    fn perplexity_citations_become_sources() {
        let body = br#"{"model":"sonar","citations":["https://a.example","https://b.example"],"choices":[{"message":{"content":"Fact [1]."},"finish_reason":"stop"}]}"#;
        let r = parse_response(body, &request(), "sonar").unwrap();
        assert_eq!(
            r.text,
            "Fact [1].\n\nSources:\n[1] https://a.example\n[2] https://b.example"
        );
        assert!(r.usage.input_tokens > 0, "estimated when not reported");
    }

    #[test]
    fn stream_chunks_accumulate() {
        let mut s = StreamState::default();
        let chunks = [
            r#"{"model":"gpt-4o","choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        ];
        let deltas: Vec<_> = chunks
            .iter()
            .filter_map(|c| s.on_data(c).unwrap())
            .collect();
        assert_eq!(deltas, ["Hel", "lo"]);
        assert_eq!(s.on_data("[DONE]").unwrap(), None);
        assert!(s.done);
        assert_eq!(s.text, "Hello");
        assert_eq!(s.finish.as_deref(), Some("stop"));
        assert_eq!(s.usage.map(|u| u.input_tokens), Some(5));
        assert!(
            matches!(s.on_data(r#"{"error":{"message":"boom"}}"#), Err(ProviderError::Unavailable(m)) if m.contains("boom"))
        );
        assert!(s.logprobs.is_none());
    }

    #[test]
    fn streamed_logprobs_accumulate() {
        let mut s = StreamState::default();
        let chunks = [
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"logprobs":null}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"},"logprobs":{"content":[{"token":"Hel","logprob":-0.1,"bytes":[72,101,108],"top_logprobs":[{"token":"Hel","logprob":-0.1},{"token":"Hi","logprob":-2.5}]}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"logprobs":{"content":[{"token":"lo","logprob":-0.2,"top_logprobs":[]}]},"finish_reason":"stop"}]}"#,
        ];
        for c in chunks {
            s.on_data(c).unwrap();
        }
        let tokens = s.logprobs.as_ref().unwrap();
        let seen: Vec<_> = tokens
            .iter()
            .map(|t| (t.token.as_str(), t.logprob, t.top.len()))
            .collect();
        assert_eq!(seen, [("Hel", -0.1, 2), ("lo", -0.2, 0)]);
        assert_eq!(tokens[0].top[1].token, "Hi");
        let done = finish_stream(s, false, &request(), "m").unwrap();
        assert_eq!(done.logprobs.map(|l| l.len()), Some(2));
    }

    #[test]
    fn tools_and_formats_go_upstream_and_tool_calls_come_back() {
        let mut r = request();
        r.tools.push(crate::completion::ToolDefinition {
            name: "get_weather".into(),
            description: Some("Weather".into()),
            parameters: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into(),
            strict: None,
        });
        r.tool_choice = Some(ToolChoice::Named("get_weather".into()));
        r.parallel_tool_calls = Some(false);
        r.seed = Some(7);
        r.response_format = ResponseFormat::JsonObject;
        r.messages.push(Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
            tool_call_id: None,
            name: None,
        });
        r.messages.push(Message {
            role: Role::Tool,
            content: "sunny".into(),
            tool_calls: Vec::new(),
            tool_call_id: Some("call_1".into()),
            name: None,
        });
        let body = wire(&r, false);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(
            body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(body["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"})
        );

        let answer = br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}"#;
        let parsed = parse_response(answer, &r, "m").unwrap();
        assert_eq!(parsed.finish_reason, FinishReason::ToolCalls);
        assert_eq!(parsed.tool_calls.len(), 1);
        assert_eq!(parsed.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);

        let mut s = StreamState::default();
        s.on_data(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#).unwrap();
        s.on_data(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#).unwrap();
        s.on_data(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}"#).unwrap();
        assert_eq!(s.tool_calls.len(), 1);
        assert_eq!(s.tool_calls[0].id, "call_9");
        assert_eq!(s.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(s.tool_call_deltas.len(), 3);
        assert_eq!(s.tool_call_deltas[0].name.as_deref(), Some("get_weather"));
    }
}
