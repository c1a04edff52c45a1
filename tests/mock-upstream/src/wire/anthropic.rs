//! Anthropic's Messages API (`POST /v1/messages`), plain and streamed, with
//! tools: `tools` and `tool_choice` are checked as the API checks them, so
//! are `tool_use` blocks and the `tool_result` blocks that must answer them
//! in the next (user) turn. A request with tools gets a `tool_use` answer
//! (the tool `tool_choice` names, else the first) unless the tool choice
//! is `none` or, not naming a tool, the last turn holds tool results: that
//! is answered with text, `echo: <the results' text>`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{Completion, Content, Message, Provider, ToolCall, conversation};
use crate::answer::{Answer, Finish, instance};

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    system: Option<Content>,
    messages: Vec<Message>,
    max_tokens: u64,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

/// The parts of `m` of type `kind`.
fn parts<'a>(m: &'a Message, kind: &'a str) -> impl Iterator<Item = &'a super::request::Part> {
    m.content
        .iter()
        .flat_map(|c| c.parts())
        .filter(move |p| p.kind.as_deref() == Some(kind))
}

/// Checks `tools` and `tool_choice` as the API does.
fn check_tools(tools: &[Value], choice: Option<&Value>) -> Result<(), String> {
    for (i, tool) in tools.iter().enumerate() {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            ));
        }
        if tool.pointer("/input_schema/type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "tools.{i}.custom.input_schema.type: Input should be 'object'"
            ));
        }
    }
    let Some(choice) = choice else {
        return Ok(());
    };
    if tools.is_empty() {
        return Err("tool_choice may only be specified while providing tools".into());
    }
    match choice.get("type").and_then(Value::as_str) {
        Some("auto" | "any" | "none") => Ok(()),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str);
            if tools
                .iter()
                .any(|t| t.get("name").and_then(Value::as_str) == name)
            {
                Ok(())
            } else {
                Err(format!(
                    "tool_choice.tool.name: tool {} not found in tools",
                    name.unwrap_or("(none)")
                ))
            }
        }
        other => Err(format!(
            "tool_choice.type: Input tag '{}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
            other.unwrap_or("")
        )),
    }
}

/// Checks the conversation's `tool_use` and `tool_result` blocks as the
/// API does: each `tool_use` (with an object `input`) is answered by a
/// `tool_result` in the very next turn, a user turn, and each
/// `tool_result` answers a `tool_use` of the turn before; text blocks are
/// not empty.
fn check_tool_blocks(messages: &[Message], has_tools: bool) -> Result<(), String> {
    for (i, m) in messages.iter().enumerate() {
        for (j, p) in m.content.iter().flat_map(|c| c.parts()).enumerate() {
            if p.kind.as_deref() == Some("text") && p.text.as_deref().unwrap_or("").is_empty() {
                return Err(format!(
                    "messages.{i}.content.{j}.text: text content blocks must be non-empty"
                ));
            }
            if matches!(p.kind.as_deref(), Some("tool_use" | "tool_result")) && !has_tools {
                return Err(
                    "Requests which include `tool_use` or `tool_result` blocks must define tools."
                        .into(),
                );
            }
            if p.kind.as_deref() == Some("tool_use")
                && !p.input.as_ref().is_some_and(Value::is_object)
            {
                return Err(format!(
                    "messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"
                ));
            }
        }
        let uses: Vec<&str> = parts(m, "tool_use")
            .filter_map(|p| p.id.as_deref())
            .collect();
        if m.role == "assistant" && !uses.is_empty() {
            let answered: Vec<&str> = messages
                .get(i + 1)
                .filter(|next| next.role == "user")
                .into_iter()
                .flat_map(|next| parts(next, "tool_result"))
                .filter_map(|p| p.tool_use_id.as_deref())
                .collect();
            let missing: Vec<&str> = uses
                .iter()
                .copied()
                .filter(|id| !answered.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    i + 1,
                    missing.join(", ")
                ));
            }
        }
        for result in parts(m, "tool_result") {
            let id = result.tool_use_id.as_deref().unwrap_or("");
            let asked = i
                .checked_sub(1)
                .and_then(|p| messages.get(p))
                .is_some_and(|prev| {
                    prev.role == "assistant"
                        && parts(prev, "tool_use").any(|u| u.id.as_deref() == Some(id))
                });
            if !asked {
                return Err(format!(
                    "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
    }
    Ok(())
}

/// The text of the tool results in the conversation's last turn, if it is
/// a user turn holding any.
fn last_results(messages: &[Message]) -> Option<String> {
    let last = messages.last().filter(|m| m.role == "user")?;
    let texts: Vec<String> = parts(last, "tool_result")
        .map(|p| {
            p.content
                .as_deref()
                .map(|c| c.text().into_owned())
                .unwrap_or_default()
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

/// The tool call answering the request, if any (see the module docs).
fn tool_call(
    request: &MessagesRequest,
    prompt: &str,
    seq: u64,
    after_results: bool,
) -> Option<ToolCall> {
    let tools = request.tools.as_deref().filter(|t| !t.is_empty())?;
    let choice = request.tool_choice.as_ref();
    let kind = choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let named = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    let tool = match kind {
        "none" => return None,
        "tool" => tools
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == named)?,
        _ if after_results => return None,
        _ => tools.first()?,
    };
    Some(ToolCall {
        id: format!("toolu_mock_{seq}"),
        name: tool.get("name")?.as_str()?.to_string(),
        arguments: instance(tool.get("input_schema").unwrap_or(&Value::Null), prompt).to_string(),
    })
}

/// Parses and validates a request body; the error is the message for a 400.
pub(crate) fn parse(body: &[u8], seq: u64, created: u64) -> Result<Completion, String> {
    let request: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if request.messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    if let Some(bad) = request
        .messages
        .iter()
        .find(|m| m.role != "user" && m.role != "assistant")
    {
        return Err(format!(
            "messages: unexpected role \"{}\"; use the top-level `system` parameter for system prompts",
            bad.role
        ));
    }
    if request.max_tokens == 0 {
        return Err("max_tokens: must be at least 1".into());
    }
    if let Some(t) = request.temperature
        && !(0.0..=1.0).contains(&t)
    {
        return Err(format!("temperature: must be between 0 and 1, got {t}"));
    }
    let tools = request.tools.as_deref().unwrap_or_default();
    check_tools(tools, request.tool_choice.as_ref())?;
    check_tool_blocks(&request.messages, !tools.is_empty())?;
    let (mut input_tokens, last_user, prefill) =
        conversation(&request.messages, request.system.as_ref(), true);
    let results = last_results(&request.messages);
    if let Some(r) = &results {
        input_tokens += crate::count_tokens(r);
    }
    let prompt = results.as_deref().unwrap_or(&last_user);
    let stops = request.stop_sequences.clone().unwrap_or_default();
    Ok(Completion {
        tool_call: tool_call(&request, prompt, seq, results.is_some()),
        provider: Provider::Anthropic,
        id: format!("msg_mock_{seq}"),
        stream: request.stream.unwrap_or(false),
        include_usage: true,
        answer: Answer::compose(prompt, input_tokens, &stops, Some(request.max_tokens))
            .continuing(&prefill),
        model: request.model,
        created,
        logprobs: None,
    })
}

fn stop_reason(finish: &Finish) -> (&'static str, Value) {
    match finish {
        Finish::Complete => ("end_turn", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", Value::String(s.clone())),
        Finish::Length => ("max_tokens", Value::Null),
    }
}

/// The `message` JSON body.
pub(crate) fn render_plain(c: &Completion) -> Bytes {
    let (reason, sequence) = stop_reason(&c.answer.finish);
    let (content, reason, sequence) = match &c.tool_call {
        Some(call) => (
            json!([{"type": "tool_use", "id": call.id, "name": call.name,
                    "input": serde_json::from_str::<Value>(&call.arguments).unwrap_or(json!({}))}]),
            "tool_use",
            Value::Null,
        ),
        None => (
            json!([{"type": "text", "text": c.answer.text}]),
            reason,
            sequence,
        ),
    };
    let body = json!({
        "id": c.id,
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": c.answer.input_tokens, "output_tokens": c.answer.output_tokens},
    });
    Bytes::from(body.to_string())
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Anthropic's mid-stream error event.
pub(crate) fn stream_error() -> Bytes {
    event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "the mock failed mid-stream"}}),
    )
}

/// The SSE frames of a streamed answer, and how many come before the first
/// content delta: `message_start`, `content_block_start`, one
/// `content_block_delta` (`text_delta`) per word (for a tool call three
/// `input_json_delta` pieces), `content_block_stop`,
/// `message_delta` (stop reason, output tokens), `message_stop`.
pub(crate) fn render_stream(c: &Completion) -> (Vec<Bytes>, usize) {
    let mut frames = Vec::with_capacity(c.answer.chunk_count() + 5);
    frames.push(event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": c.id, "type": "message", "role": "assistant", "model": c.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": c.answer.input_tokens, "output_tokens": 1},
        }}),
    ));
    let block = match &c.tool_call {
        Some(call) => json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
        None => json!({"type": "text", "text": ""}),
    };
    frames.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    let preamble = frames.len();
    if let Some(call) = &c.tool_call {
        // The input in pieces as the API sends them: an empty one, then
        // the JSON text in two halves.
        let half = (0..=call.arguments.len() / 2)
            .rev()
            .find(|n| call.arguments.is_char_boundary(*n))
            .unwrap_or(0);
        let (a, b) = call.arguments.split_at(half);
        for piece in ["", a, b] {
            frames.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        for text in c.answer.chunks() {
            frames.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
    }
    frames.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    let (mut reason, sequence) = stop_reason(&c.answer.finish);
    if c.tool_call.is_some() {
        reason = "tool_use";
    }
    frames.push(event(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": {"output_tokens": c.answer.output_tokens}}),
    ));
    frames.push(event("message_stop", &json!({"type": "message_stop"})));
    (frames, preamble)
}
