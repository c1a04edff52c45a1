//! Anthropic's Messages API (`POST /v1/messages`), plain and streamed.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{Completion, Content, Message, Provider, conversation};
use crate::answer::{Answer, Finish};

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
    let (input_tokens, last_user, prefill) =
        conversation(&request.messages, request.system.as_ref(), true);
    let stops = request.stop_sequences.unwrap_or_default();
    Ok(Completion {
        tool_call: None,
        provider: Provider::Anthropic,
        id: format!("msg_mock_{seq}"),
        model: request.model,
        stream: request.stream.unwrap_or(false),
        include_usage: true,
        answer: Answer::compose(&last_user, input_tokens, &stops, Some(request.max_tokens))
            .continuing(&prefill),
        created,
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
    let body = json!({
        "id": c.id,
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": [{"type": "text", "text": c.answer.text}],
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
/// `content_block_delta` (`text_delta`) per word, `content_block_stop`,
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
    frames.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    let preamble = frames.len();
    for text in c.answer.chunks() {
        frames.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    frames.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    let (reason, sequence) = stop_reason(&c.answer.finish);
    frames.push(event(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": {"output_tokens": c.answer.output_tokens}}),
    ));
    frames.push(event("message_stop", &json!({"type": "message_stop"})));
    (frames, preamble)
}
