//! The Messages API wire format: request body, whole responses and stream
//! events. Pure functions, tested natively.
//!
//! Tools map one to one: a tool definition becomes a `tools` entry (`name`,
//! `description`, `input_schema`), the tool choice `tool_choice` (`auto`,
//! `none`, `any` for required, `tool` for a named one), parallel tool calls
//! off `disable_parallel_tool_use`; an assistant turn's tool calls become
//! `tool_use` blocks and `tool` messages `tool_result` blocks of one user
//! turn (consecutive results, and text that follows them, share it, as the
//! API requires). Answers' `tool_use` blocks come back as tool calls,
//! streamed ones (`content_block_start` of a `tool_use` block, then
//! `input_json_delta` pieces) as tool-call pieces.
//!
//! The Messages API has no JSON mode. A JSON answer (`json-object`,
//! `json-schema`) is asked for as a call of one more tool, [`JSON_TOOL`],
//! whose `input_schema` is the requested schema (a permissive object
//! schema for `json-object`; a schema whose root is not an object is
//! wrapped as the property `value` of one, since tool inputs are objects)
//! and which `tool_choice` forces; the call's input, as JSON text, is the
//! answer's text, and it finishes with `stop`, not `tool-calls`. With tools
//! of the caller's and the choice left to the model, the model must call
//! one of them or answer through [`JSON_TOOL`] (`tool_choice: any`); a
//! required or named tool choice leaves no room for an answer, so the
//! format does not apply. `strict` is not enforced by the API.

use serde_json::{Value, json};
use vel_guest_http::chat_completions::finish_reason;
use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, FinishReason, ProviderError, ResponseFormat, ToolChoice,
};
use vel_guest_http::settings::Settings;
use vel_guest_http::sse::Event;
use vel_guest_http::stream::ToolCallDelta;
use vel_guest_http::types::{Role, ToolCall, Usage};
use vel_guest_http::{errors, estimate_usage};

/// `max_tokens` when neither the request nor the settings set one (the API
/// requires a value).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The tool that carries a JSON answer (see the module documentation); a
/// request for JSON output may not offer a tool of its own by this name.
pub const JSON_TOOL: &str = "json_answer";

/// The property a non-object answer schema is wrapped in.
const WRAPPED: &str = "value";

/// How a request's JSON output is asked for: through [`JSON_TOOL`].
#[derive(Debug, Clone, PartialEq)]
pub struct JsonOutput {
    /// The tool's `input_schema`.
    schema: Value,
    /// What the tool is for, for the model.
    description: String,
    /// The answer is the `value` property of the tool's input (the
    /// requested schema's root is not an object).
    wrapped: bool,
}

impl JsonOutput {
    /// The JSON output `request` asks for, if any applies (a required or
    /// named tool choice leaves no room for an answer).
    pub fn of(request: &CompletionRequest) -> Option<Self> {
        if matches!(
            request.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Named(_))
        ) {
            return None;
        }
        match &request.response_format {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(JsonOutput {
                schema: json!({"type": "object"}),
                description: "Give your answer as a JSON object: the input is the answer.".into(),
                wrapped: false,
            }),
            ResponseFormat::JsonSchema(format) => {
                let schema: Value = serde_json::from_str(&format.schema).unwrap_or(json!({}));
                let is_object = schema.get("type").and_then(Value::as_str) == Some("object")
                    || (schema.get("type").is_none() && schema.get("properties").is_some());
                let mut description = format!(
                    "Give your answer ({}) as JSON following the input schema: the input is the answer.",
                    format.name
                );
                if let Some(d) = &format.description {
                    description = format!("{description} {d}");
                }
                Some(if is_object {
                    let mut schema = schema;
                    if let Some(o) = schema.as_object_mut() {
                        o.entry("type").or_insert(json!("object"));
                    }
                    JsonOutput {
                        schema,
                        description,
                        wrapped: false,
                    }
                } else {
                    JsonOutput {
                        schema: json!({"type": "object", "properties": {WRAPPED: schema},
                                       "required": [WRAPPED]}),
                        description,
                        wrapped: true,
                    }
                })
            }
        }
    }

    /// The answer's text from the tool's whole input.
    fn answer(&self, input: &Value) -> String {
        if self.wrapped {
            input.get(WRAPPED).unwrap_or(&Value::Null).to_string()
        } else {
            input.to_string()
        }
    }
}

/// A tool's `input_schema`: its parameters, an object schema (`type`
/// added when missing; anything but an object becomes the empty one).
fn input_schema(parameters: &str) -> Value {
    match serde_json::from_str::<Value>(parameters) {
        Ok(Value::Object(mut schema)) => {
            schema.entry("type").or_insert(json!("object"));
            Value::Object(schema)
        }
        _ => json!({"type": "object"}),
    }
}

/// A tool call's arguments as a `tool_use` input (an object; empty
/// arguments are `{}`).
fn tool_input(call: &ToolCall) -> Result<Value, ProviderError> {
    if call.arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ProviderError::InvalidRequest(format!(
            "the arguments of tool call {} are not a JSON object, as Anthropic needs",
            call.id
        ))),
    }
}

/// The conversation as Messages API turns: (role, content blocks).
fn turns(request: &CompletionRequest) -> Result<Vec<Value>, ProviderError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let text = |t: &str| json!({"type": "text", "text": t});
    for m in request.messages.iter().filter(|m| m.role != Role::System) {
        // A user turn that holds tool results takes the results and text
        // that follow it.
        let after_results = matches!(turns.last(), Some(("user", blocks))
            if blocks.iter().any(|b| b["type"] == "tool_result"));
        match (m.role, &m.tool_call_id) {
            (Role::Tool, Some(id)) => {
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": m.content});
                match turns.last_mut() {
                    Some((_, blocks)) if after_results => blocks.push(block),
                    _ => turns.push(("user", vec![block])),
                }
            }
            (Role::Assistant, _) => {
                let mut blocks = Vec::with_capacity(1 + m.tool_calls.len());
                if !m.content.is_empty() || m.tool_calls.is_empty() {
                    blocks.push(text(&m.content));
                }
                for call in &m.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
                                       "input": tool_input(call)?}));
                }
                turns.push(("assistant", blocks));
            }
            // User text, and a tool message without the id of the call it
            // answers (sent as user text).
            _ => match turns.last_mut() {
                Some((_, blocks)) if after_results => blocks.push(text(&m.content)),
                _ => turns.push(("user", vec![text(&m.content)])),
            },
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // A turn of one text block goes as a plain string.
            let content = if blocks.len() == 1 && blocks[0]["type"] == "text" {
                blocks.swap_remove(0)["text"].take()
            } else {
                Value::Array(blocks)
            };
            json!({"role": role, "content": content})
        })
        .collect())
}

/// `tools` and `tool_choice` for `request` (none when it offers no tools
/// and asks for no JSON output).
fn tooling(
    request: &CompletionRequest,
    json_output: Option<&JsonOutput>,
) -> Result<Option<(Vec<Value>, Value)>, ProviderError> {
    let mut tools: Vec<Value> = Vec::with_capacity(request.tools.len() + 1);
    for t in &request.tools {
        if json_output.is_some() && t.name == JSON_TOOL {
            return Err(ProviderError::InvalidRequest(format!(
                "a tool named {JSON_TOOL} cannot be offered with a JSON response format on Anthropic (the name carries the JSON answer)"
            )));
        }
        let mut tool = json!({"name": t.name, "input_schema": input_schema(&t.parameters)});
        if let Some(d) = &t.description {
            tool["description"] = json!(d);
        }
        tools.push(tool);
    }
    let mut choice = match (json_output, &request.tool_choice) {
        (Some(out), choice) => {
            let forced = tools.is_empty() || matches!(choice, Some(ToolChoice::None));
            tools.push(json!({"name": JSON_TOOL, "description": out.description,
                              "input_schema": out.schema}));
            if forced {
                // One answer: no parallel calls.
                json!({"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": true})
            } else {
                json!({"type": "any"})
            }
        }
        (None, _) if tools.is_empty() => return Ok(None),
        (None, None | Some(ToolChoice::Auto)) => json!({"type": "auto"}),
        (None, Some(ToolChoice::None)) => json!({"type": "none"}),
        (None, Some(ToolChoice::Required)) => json!({"type": "any"}),
        (None, Some(ToolChoice::Named(name))) => json!({"type": "tool", "name": name}),
    };
    if request.parallel_tool_calls == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some((tools, choice)))
}

/// The JSON body for `request`, sent to `model`.
pub fn request_body(
    request: &CompletionRequest,
    model: &str,
    settings: &Settings,
    stream: bool,
) -> Result<Value, ProviderError> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let max_tokens = request
        .max_tokens
        .or(settings.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": turns(request)?});
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        // Anthropic's range is 0 to 1.
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if !request.stop.is_empty() {
        body["stop_sequences"] = json!(request.stop);
    }
    let json_output = JsonOutput::of(request);
    if let Some((tools, choice)) = tooling(request, json_output.as_ref())? {
        body["tools"] = Value::Array(tools);
        // An explicit `auto` is the API's default: only sent when it says more.
        if choice != json!({"type": "auto"}) || request.tool_choice.is_some() {
            body["tool_choice"] = choice;
        }
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(body)
}

fn usage_field(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The canonical finish reason: a `tool_use` stop that only answered
/// through [`JSON_TOOL`] is a plain stop.
fn finish(stop_reason: Option<&str>, calls: &[ToolCall]) -> Result<FinishReason, ProviderError> {
    match finish_reason(stop_reason)? {
        FinishReason::ToolCalls if calls.is_empty() => Ok(FinishReason::Stop),
        other => Ok(other),
    }
}

/// Parses a whole (non-streamed) response body.
pub fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
    model: &str,
) -> Result<CompletionResponse, ProviderError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Other(format!("the upstream answer is not JSON: {e}")))?;
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Other("the upstream answer has no content".into()))?;
    let json_output = JsonOutput::of(request);
    let mut text = String::new();
    let mut answer = None;
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                match &json_output {
                    Some(out) if name == JSON_TOOL => answer = Some(out.answer(&input)),
                    _ => tool_calls.push(ToolCall {
                        id: block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name: name.to_string(),
                        arguments: input.to_string(),
                    }),
                }
            }
            _ => {} // thinking and other blocks carry no answer
        }
    }
    // A JSON answer is the text: text around the call is not JSON.
    if let Some(answer) = answer {
        text = answer;
    }
    let finish = finish(v.get("stop_reason").and_then(Value::as_str), &tool_calls)?;
    let usage = v.get("usage").and_then(|u| {
        Some(Usage {
            input_tokens: usage_field(u, "input_tokens")?,
            output_tokens: usage_field(u, "output_tokens").unwrap_or(0),
        })
    });
    Ok(CompletionResponse {
        usage: usage.unwrap_or_else(|| estimate_usage(request, &text)),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string(),
        finish_reason: finish,
        text,
        tool_calls,
        logprobs: None,
    })
}

/// What one content block of a stream is.
#[derive(Debug)]
enum Block {
    /// Text, or anything else that is not a tool call.
    Text,
    /// A tool call: its index among the answer's calls.
    Call(usize),
    /// The [`JSON_TOOL`] call: its input so far. Its pieces are the
    /// answer's text, unless it is wrapped (then the answer is known only
    /// at its end).
    Json(String),
}

/// What a stream has said so far.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Text received so far.
    pub text: String,
    /// The model from `message_start`.
    pub model: Option<String>,
    /// Prompt tokens from `message_start`.
    pub input_tokens: Option<u32>,
    /// Completion tokens from the latest `message_delta`.
    pub output_tokens: Option<u32>,
    /// The `stop_reason` from `message_delta`.
    pub stop_reason: Option<String>,
    /// `message_stop` was received.
    pub done: bool,
    /// Tool calls assembled from their pieces so far.
    pub tool_calls: Vec<ToolCall>,
    /// Pieces of tool calls received by the last [`Self::on_event`], to
    /// hand to `stream.emit-tool-call`.
    pub tool_call_deltas: Vec<ToolCallDelta>,
    /// The request's JSON output, if any.
    json_output: Option<JsonOutput>,
    /// The content blocks started so far, by their `index`.
    blocks: Vec<(u64, Block)>,
}

impl StreamState {
    /// The state at the start of the stream answering `request`.
    pub fn new(request: &CompletionRequest) -> Self {
        StreamState {
            json_output: JsonOutput::of(request),
            ..StreamState::default()
        }
    }

    fn block(&mut self, index: u64) -> Option<&mut Block> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    /// Queues a piece of call `call` for the host and adds it to the call.
    fn call_piece(&mut self, call: usize, arguments: &str) {
        if let Some(c) = self.tool_calls.get_mut(call) {
            c.arguments.push_str(arguments);
        }
        self.tool_call_deltas.push(ToolCallDelta {
            index: u32::try_from(call).unwrap_or(u32::MAX),
            id: None,
            name: None,
            arguments: arguments.to_string(),
        });
    }

    /// Text to hand on: kept, and returned unless empty.
    fn text(&mut self, text: &str) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        self.text.push_str(text);
        Some(text.to_string())
    }

    /// A `content_block_start`: a `tool_use` block begins a tool call.
    fn on_block_start(&mut self, v: &Value) {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let block = v.get("content_block").unwrap_or(&Value::Null);
        if block.get("type").and_then(Value::as_str) != Some("tool_use") {
            self.blocks.push((index, Block::Text));
            return;
        }
        let name = block.get("name").and_then(Value::as_str).unwrap_or("");
        if self.json_output.is_some() && name == JSON_TOOL {
            self.blocks.push((index, Block::Json(String::new())));
            return;
        }
        let id = block.get("id").and_then(Value::as_str).unwrap_or("");
        let call = self.tool_calls.len();
        self.tool_calls.push(ToolCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments: String::new(),
        });
        self.blocks.push((index, Block::Call(call)));
        self.tool_call_deltas.push(ToolCallDelta {
            index: u32::try_from(call).unwrap_or(u32::MAX),
            id: Some(id.to_string()),
            name: Some(name.to_string()),
            arguments: String::new(),
        });
    }

    /// A `content_block_delta`: text, or a piece of a tool call's input.
    fn on_block_delta(&mut self, v: &Value) -> Option<String> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let delta = v.get("delta")?;
        match delta.get("type").and_then(Value::as_str)? {
            "text_delta" => self.text(delta.get("text").and_then(Value::as_str)?),
            "input_json_delta" => {
                let piece = delta.get("partial_json").and_then(Value::as_str)?;
                let wrapped = self.json_output.as_ref().is_some_and(|o| o.wrapped);
                match self.block(index)? {
                    Block::Call(call) => {
                        let call = *call;
                        self.call_piece(call, piece);
                        None
                    }
                    Block::Json(input) => {
                        input.push_str(piece);
                        if wrapped { None } else { self.text(piece) }
                    }
                    Block::Text => None,
                }
            }
            _ => None, // thinking, signatures, citations
        }
    }

    /// A `content_block_stop`: a call without arguments gets `{}`; a
    /// wrapped JSON answer is unwrapped and handed on whole.
    fn on_block_stop(&mut self, v: &Value) -> Option<String> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let wrapped = self.json_output.as_ref().is_some_and(|o| o.wrapped);
        match self.block(index)? {
            Block::Call(call) => {
                let call = *call;
                if self
                    .tool_calls
                    .get(call)
                    .is_some_and(|c| c.arguments.trim().is_empty())
                {
                    self.call_piece(call, "{}");
                }
                None
            }
            Block::Json(input) => {
                let input = std::mem::take(input);
                if wrapped {
                    let input: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
                    let answer = input.get(WRAPPED).unwrap_or(&Value::Null).to_string();
                    self.text(&answer)
                } else if input.trim().is_empty() {
                    // An empty input streams no pieces: the answer is `{}`.
                    self.text("{}")
                } else {
                    None
                }
            }
            Block::Text => None,
        }
    }

    /// Takes one SSE event and returns the text delta it carries; pieces
    /// of tool calls go to [`Self::tool_call_deltas`].
    pub fn on_event(&mut self, event: &Event) -> Result<Option<String>, ProviderError> {
        if event.data.is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Other(format!("bad stream event from upstream: {e}")))?;
        // The event type is in the `event:` line and repeated in the data.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        match kind {
            "message_start" => {
                let message = v.get("message");
                self.model = message
                    .and_then(|m| m.get("model"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let usage = message.and_then(|m| m.get("usage"));
                self.input_tokens = usage.and_then(|u| usage_field(u, "input_tokens"));
                self.output_tokens = usage.and_then(|u| usage_field(u, "output_tokens"));
            }
            "content_block_start" => self.on_block_start(&v),
            "content_block_delta" => return Ok(self.on_block_delta(&v)),
            "content_block_stop" => return Ok(self.on_block_stop(&v)),
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                if let Some(n) = v.get("usage").and_then(|u| usage_field(u, "output_tokens")) {
                    self.output_tokens = Some(n);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let message = errors::upstream_message(event.data.as_bytes());
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(match kind {
                    "overloaded_error" | "api_error" => {
                        ProviderError::Unavailable(format!("upstream failed mid-stream: {message}"))
                    }
                    "rate_limit_error" => ProviderError::RateLimited(None),
                    _ => ProviderError::Other(format!("upstream failed mid-stream: {message}")),
                });
            }
            _ => {} // ping
        }
        Ok(None)
    }

    /// The response at the end of the stream.
    pub fn finish(
        self,
        cancelled: bool,
        request: &CompletionRequest,
        model: &str,
    ) -> Result<CompletionResponse, ProviderError> {
        let finish = if cancelled {
            FinishReason::Cancelled
        } else {
            finish(self.stop_reason.as_deref(), &self.tool_calls)?
        };
        let estimate = estimate_usage(request, &self.text);
        Ok(CompletionResponse {
            usage: Usage {
                input_tokens: self.input_tokens.unwrap_or(estimate.input_tokens),
                output_tokens: self.output_tokens.unwrap_or(estimate.output_tokens),
            },
            model: self.model.unwrap_or_else(|| model.to_string()),
            finish_reason: finish,
            text: self.text,
            tool_calls: self.tool_calls,
            logprobs: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vel_guest_http::completion::{JsonSchemaFormat, ToolDefinition};
    use vel_guest_http::types::{Message, TaskType};

    fn request() -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            messages: vec![
                Message {
                    role: Role::System,
                    content: "Be terse.".into(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::User,
                    content: "Hi".into(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::Assistant,
                    content: "Hello.".into(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::User,
                    content: "Again".into(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    name: None,
                },
            ],
            temperature: Some(1.7),
            max_tokens: None,
            stop: vec![],
            task_type: TaskType::General,
            metadata: "{}".into(),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: vel_guest_http::completion::ResponseFormat::Text,
            seed: None,
            logprobs: false,
            top_logprobs: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            base_url: "https://api.anthropic.com".into(),
            default_model: "claude-3-5-sonnet".into(),
            timeout: None,
            max_tokens: None,
        }
    }

    #[test]
    fn system_is_split_out() {
        let body = request_body(&request(), "claude-3-5-haiku", &settings(), true).unwrap();
        assert_eq!(body["system"], "Be terse.");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": "Hi"})
        );
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["stream"], true);
        assert!(body.get("stop_sequences").is_none());
    }

    #[test]
    fn parses_a_whole_answer() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}],"stop_reason":"max_tokens","usage":{"input_tokens":12,"output_tokens":3}}"#;
        let r = parse_response(body, &request(), "m").unwrap();
        assert_eq!(r.text, "Hi there");
        assert_eq!(r.finish_reason, FinishReason::Length);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (12, 3));
        assert_eq!(r.model, "claude-3-5-sonnet-20241022");
        let refused = br#"{"content":[],"stop_reason":"refusal"}"#;
        assert!(matches!(
            parse_response(refused, &request(), "m"),
            Err(ProviderError::ContentFiltered(_))
        ));
    }

    #[test]
    fn stream_events() {
        let ev = |event: &str, data: &str| Event {
            event: event.into(),
            data: data.into(),
        };
        let mut s = StreamState::default();
        let events = [
            ev(
                "message_start",
                r#"{"type":"message_start","message":{"model":"claude-3-5-haiku","usage":{"input_tokens":20,"output_tokens":1}}}"#,
            ),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ev("ping", r#"{"type":"ping"}"#),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
            ),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            ),
            ev("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let deltas: Vec<_> = events
            .iter()
            .filter_map(|e| s.on_event(e).unwrap())
            .collect();
        assert_eq!(deltas, ["Hel", "lo"]);
        assert!(s.done);
        let r = s.finish(false, &request(), "m").unwrap();
        assert_eq!(
            (r.text.as_str(), r.model.as_str()),
            ("Hello", "claude-3-5-haiku")
        );
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (20, 7));
        assert_eq!(r.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn stream_errors() {
        let mut s = StreamState::default();
        let overloaded = Event {
            event: "error".into(),
            data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .into(),
        };
        assert!(
            matches!(s.on_event(&overloaded), Err(ProviderError::Unavailable(m)) if m.contains("Overloaded"))
        );
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

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn tool_result(id: &str, content: &str) -> Message {
        Message {
            tool_call_id: Some(id.into()),
            ..message(Role::Tool, content)
        }
    }

    /// A request offering `get_weather` and `get_time`.
    fn tool_request() -> CompletionRequest {
        let tool = |name: &str, parameters: &str| ToolDefinition {
            name: name.into(),
            description: Some(format!("{name} somewhere")),
            parameters: parameters.into(),
            strict: None,
        };
        CompletionRequest {
            messages: vec![message(Role::User, "Paris?")],
            temperature: None,
            tools: vec![
                tool(
                    "get_weather",
                    r#"{"type":"object","properties":{"city":{"type":"string"}}}"#,
                ),
                tool("get_time", "{}"),
            ],
            ..request()
        }
    }

    fn body(request: &CompletionRequest) -> Value {
        request_body(request, "claude-3-5-haiku", &settings(), false).unwrap()
    }

    fn ev(data: Value) -> Event {
        Event {
            event: data["type"].as_str().unwrap_or("").into(),
            data: data.to_string(),
        }
    }

    #[test]
    fn tools_and_tool_choice_map_to_anthropic() {
        let mut r = tool_request();
        let b = body(&r);
        assert_eq!(
            b["tools"],
            json!([
                {"name": "get_weather", "description": "get_weather somewhere",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time", "description": "get_time somewhere",
                 "input_schema": {"type": "object"}},
            ])
        );
        // Left to the model: the API's default, not sent.
        assert!(b.get("tool_choice").is_none(), "{b}");
        for (choice, wire) in [
            (ToolChoice::Auto, json!({"type": "auto"})),
            (ToolChoice::None, json!({"type": "none"})),
            (ToolChoice::Required, json!({"type": "any"})),
            (
                ToolChoice::Named("get_time".into()),
                json!({"type": "tool", "name": "get_time"}),
            ),
        ] {
            r.tool_choice = Some(choice);
            assert_eq!(body(&r)["tool_choice"], wire);
        }
        r.parallel_tool_calls = Some(false);
        assert_eq!(
            body(&r)["tool_choice"],
            json!({"type": "tool", "name": "get_time", "disable_parallel_tool_use": true})
        );
        r.tool_choice = None;
        assert_eq!(
            body(&r)["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        // `none` takes no parallel flag.
        r.tool_choice = Some(ToolChoice::None);
        assert_eq!(body(&r)["tool_choice"], json!({"type": "none"}));
    }

    #[test]
    fn tool_calls_and_results_become_blocks_results_share_a_user_turn() {
        let mut r = tool_request();
        r.messages = vec![
            message(Role::System, "Be terse."),
            message(Role::User, "Paris?"),
            Message {
                tool_calls: vec![
                    call("toolu_1", "get_weather", r#"{"city":"Paris"}"#),
                    call("toolu_2", "get_time", ""),
                ],
                ..message(Role::Assistant, "Checking.")
            },
            tool_result("toolu_1", "sunny"),
            tool_result("toolu_2", "noon"),
            message(Role::User, "And so?"),
            Message {
                tool_calls: vec![call("toolu_3", "get_time", "{}")],
                ..message(Role::Assistant, "")
            },
            tool_result("toolu_3", "one"),
        ];
        let b = body(&r);
        assert_eq!(b["system"], "Be terse.");
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                     "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                    {"type": "text", "text": "And so?"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_3", "name": "get_time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_3", "content": "one"},
                ]},
            ])
        );
        // Arguments that are not an object cannot be a `tool_use` input.
        r.messages[2].tool_calls[0].arguments = "[1]".into();
        assert!(matches!(
            request_body(&r, "m", &settings(), false),
            Err(ProviderError::InvalidRequest(m)) if m.contains("toolu_1")
        ));
    }

    #[test]
    fn tool_use_blocks_come_back_as_tool_calls() {
        let r = tool_request();
        let answer = json!({"model": "claude-3-5-haiku", "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ],
            "usage": {"input_tokens": 5, "output_tokens": 9}});
        let out = parse_response(answer.to_string().as_bytes(), &r, "m").unwrap();
        assert_eq!(out.finish_reason, FinishReason::ToolCalls);
        assert_eq!(out.text, "Let me look.");
        assert_eq!(out.tool_calls.len(), 1);
        let c = &out.tool_calls[0];
        assert_eq!(
            (c.id.as_str(), c.name.as_str(), c.arguments.as_str()),
            ("toolu_9", "get_weather", r#"{"city":"Paris"}"#)
        );
    }

    /// The events of a streamed answer: a text block, then two tool calls
    /// in pieces (the second without arguments).
    fn tool_stream() -> Vec<Event> {
        vec![
            ev(
                json!({"type": "message_start", "message": {"model": "claude-3-5-haiku",
                "usage": {"input_tokens": 20, "output_tokens": 1}}}),
            ),
            ev(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})),
            ev(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Looking."}})),
            ev(json!({"type": "content_block_stop", "index": 0})),
            ev(
                json!({"type": "content_block_start", "index": 1, "content_block":
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
            ),
            ev(json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": ""}})),
            ev(json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}})),
            ev(json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}})),
            ev(json!({"type": "content_block_stop", "index": 1})),
            ev(
                json!({"type": "content_block_start", "index": 2, "content_block":
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 2})),
            ev(
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 30}}),
            ),
            ev(json!({"type": "message_stop"})),
        ]
    }

    #[test]
    fn streamed_tool_use_becomes_tool_call_pieces() {
        let r = tool_request();
        let mut s = StreamState::new(&r);
        let mut text = Vec::new();
        let mut pieces = Vec::new();
        for e in tool_stream() {
            text.extend(s.on_event(&e).unwrap());
            pieces.extend(
                s.tool_call_deltas
                    .drain(..)
                    .map(|d| (d.index, d.id, d.name, d.arguments)),
            );
        }
        assert_eq!(text, ["Looking."]);
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            pieces,
            [
                (0, some("toolu_a"), some("get_weather"), String::new()),
                (0, None, None, String::new()),
                (0, None, None, "{\"city\": \"Pa".into()),
                (0, None, None, "ris\"}".into()),
                (1, some("toolu_b"), some("get_time"), String::new()),
                (1, None, None, "{}".into()),
            ]
        );
        let out = s.finish(false, &r, "m").unwrap();
        assert_eq!(out.finish_reason, FinishReason::ToolCalls);
        let calls: Vec<_> = out
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("toolu_a", "get_weather", "{\"city\": \"Paris\"}"),
                ("toolu_b", "get_time", "{}")
            ]
        );
        assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (20, 30));
    }

    fn schema_request(schema: Value) -> CompletionRequest {
        CompletionRequest {
            response_format: ResponseFormat::JsonSchema(JsonSchemaFormat {
                name: "weather".into(),
                description: Some("The weather.".into()),
                schema: schema.to_string(),
                strict: true,
            }),
            ..request()
        }
    }

    #[test]
    fn json_output_is_a_forced_tool_whose_input_is_the_text() {
        let schema = json!({"type": "object", "properties": {"warm": {"type": "boolean"}}});
        let r = schema_request(schema.clone());
        let b = body(&r);
        assert_eq!(b["tools"][0]["name"], JSON_TOOL);
        assert_eq!(b["tools"][0]["input_schema"], schema);
        assert!(
            b["tools"][0]["description"]
                .as_str()
                .unwrap()
                .contains("The weather."),
            "{b}"
        );
        assert_eq!(
            b["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": true})
        );
        let answer = json!({"stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "toolu_j", "name": JSON_TOOL, "input": {"warm": true}}]});
        let out = parse_response(answer.to_string().as_bytes(), &r, "m").unwrap();
        assert_eq!(out.text, r#"{"warm":true}"#);
        assert_eq!(out.finish_reason, FinishReason::Stop);
        assert!(out.tool_calls.is_empty());

        // json-object: a permissive object schema.
        let r = CompletionRequest {
            response_format: ResponseFormat::JsonObject,
            ..request()
        };
        assert_eq!(
            body(&r)["tools"][0]["input_schema"],
            json!({"type": "object"})
        );

        // With tools of the caller's: one of them or the answer.
        let mut r = tool_request();
        r.response_format = ResponseFormat::JsonObject;
        let b = body(&r);
        assert_eq!(b["tools"].as_array().unwrap().len(), 3);
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
        // A required tool leaves no room for an answer.
        r.tool_choice = Some(ToolChoice::Required);
        let b = body(&r);
        assert_eq!(b["tools"].as_array().unwrap().len(), 2);
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
        // A tool of the caller's may not take the answer's name.
        r.tool_choice = None;
        r.tools[0].name = JSON_TOOL.into();
        assert!(matches!(
            request_body(&r, "m", &settings(), false),
            Err(ProviderError::InvalidRequest(m)) if m.contains(JSON_TOOL)
        ));
    }

    #[test]
    fn streamed_json_output_is_text_and_non_object_schemas_are_wrapped() {
        let stream = |r: &CompletionRequest, pieces: &[&str]| {
            let mut events = vec![ev(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_j", "name": JSON_TOOL,
                                  "input": {}}}))];
            for p in pieces {
                events.push(ev(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": p}})));
            }
            events.push(ev(json!({"type": "content_block_stop", "index": 0})));
            events.push(ev(
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
            ));
            let mut s = StreamState::new(r);
            let mut text = Vec::new();
            for e in &events {
                text.extend(s.on_event(e).unwrap());
                assert!(s.tool_call_deltas.is_empty());
            }
            (text, s.finish(false, r, "m").unwrap())
        };
        let r = schema_request(json!({"type": "object"}));
        let (text, out) = stream(&r, &["{\"warm\":", " true}"]);
        assert_eq!(text, ["{\"warm\":", " true}"]);
        assert_eq!(out.text, "{\"warm\": true}");
        assert_eq!(out.finish_reason, FinishReason::Stop);
        assert!(out.tool_calls.is_empty());
        let (text, _) = stream(&r, &[]);
        assert_eq!(text, ["{}"]);

        // An array schema goes as the `value` of an object, and comes back.
        let list = json!({"type": "array", "items": {"type": "string"}});
        let r = schema_request(list.clone());
        let b = body(&r);
        assert_eq!(
            b["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {"value": list}, "required": ["value"]})
        );
        let (text, out) = stream(&r, &["{\"value\": [\"a\",", " \"b\"]}"]);
        assert_eq!(text, [r#"["a","b"]"#]);
        assert_eq!(out.text, r#"["a","b"]"#);
        let answer = json!({"stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"value": ["c"]}}]});
        let out = parse_response(answer.to_string().as_bytes(), &r, "m").unwrap();
        assert_eq!(out.text, r#"["c"]"#);
    }
}
