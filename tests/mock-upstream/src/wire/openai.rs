//! OpenAI-style chat completions, as spoken by OpenAI, Groq and Perplexity.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::request::{Completion, Message, Provider, Stop, ToolCall, conversation};
use crate::answer::{Answer, Finish};

/// Fixed citations Perplexity answers carry.
pub const PERPLEXITY_CITATIONS: [&str; 2] = [
    "https://example.com/vel-mock/source-1",
    "https://example.com/vel-mock/source-2",
];

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u8>,
}

/// The log probabilities of the `i`-th chunk of an answer's text: the
/// chunk is one token, its log probability `-(i + 1) / 10`, and its `top`
/// most likely tokens are the chunk itself and `alt<n>` at `n` less.
fn token_logprob(i: usize, token: &str, top: u8) -> serde_json::Value {
    let logprob = -((i + 1) as f64) / 10.0;
    let top: Vec<serde_json::Value> = (0..top)
        .map(|n| {
            let t = if n == 0 {
                token.to_string()
            } else {
                format!("alt{n}")
            };
            serde_json::json!({"token": t, "logprob": logprob - f64::from(n),
                               "bytes": t.as_bytes()})
        })
        .collect();
    serde_json::json!({"token": token, "logprob": logprob, "bytes": token.as_bytes(),
                       "top_logprobs": top})
}

/// A choice's `logprobs` for the chunks `tokens`, the first of them the
/// `first`-th of the answer.
fn choice_logprobs<'a>(
    first: usize,
    tokens: impl Iterator<Item = &'a str>,
    top: u8,
) -> serde_json::Value {
    let content: Vec<serde_json::Value> = tokens
        .enumerate()
        .map(|(i, t)| token_logprob(first + i, t, top))
        .collect();
    serde_json::json!({ "content": content })
}

/// The tool call for `request`: none without tools, with `tool_choice:
/// "none"`, or after a tool result.
fn tool_call(request: &ChatRequest, last_user: &str, seq: u64) -> Option<ToolCall> {
    let tools = request.tools.as_ref().filter(|t| !t.is_empty())?;
    if request.messages.last().is_some_and(|m| m.role == "tool")
        || request.tool_choice.as_ref().and_then(|c| c.as_str()) == Some("none")
    {
        return None;
    }
    let named = request
        .tool_choice
        .as_ref()
        .and_then(|c| c.pointer("/function/name"))
        .and_then(serde_json::Value::as_str);
    let tool = tools.iter().find(|t| {
        named.is_none() || t.pointer("/function/name").and_then(|n| n.as_str()) == named
    })?;
    let name = tool.pointer("/function/name")?.as_str()?.to_string();
    let parameters = tool
        .pointer("/function/parameters")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    Some(ToolCall {
        id: format!("call_mock_{seq}"),
        name,
        arguments: crate::answer::instance(&parameters, last_user).to_string(),
    })
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Parses and validates a request body; the error is the message for a 400.
pub(crate) fn parse(
    provider: Provider,
    body: &[u8],
    seq: u64,
    created: u64,
) -> Result<Completion, String> {
    let mut request: ChatRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if request.messages.is_empty() {
        return Err("'messages' must contain at least one message".into());
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(format!("'temperature' must be between 0 and 2, got {t}"));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    if max_tokens == Some(0) {
        return Err("'max_tokens' must be at least 1".into());
    }
    let stops = request.stop.take().map(Stop::into_vec).unwrap_or_default();
    let (input_tokens, last_user, prefill) = conversation(&request.messages, None, false);
    let stream = request.stream.unwrap_or(false);
    let tool_call = tool_call(&request, &last_user, seq);
    Ok(Completion {
        tool_call,
        provider,
        id: format!("chatcmpl-mock-{seq}"),
        model: request.model,
        stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        answer: Answer::compose(&last_user, input_tokens, &stops, max_tokens).continuing(&prefill),
        created,
        logprobs: (request.logprobs == Some(true)).then(|| request.top_logprobs.unwrap_or(0)),
    })
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn usage(answer: &Answer) -> Usage {
    Usage {
        prompt_tokens: answer.input_tokens,
        completion_tokens: answer.output_tokens,
        total_tokens: answer.input_tokens + answer.output_tokens,
    }
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Complete | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
    }
}

#[derive(Serialize)]
struct ChatResponse<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    citations: Option<&'static [&'static str]>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<serde_json::Value>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCall<'a>; 1]>,
}

/// A tool call in OpenAI's format; in a chunk, `id`, `type` and the name
/// come only with the first piece.
#[derive(Serialize)]
struct WireToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

fn whole_call(call: &ToolCall) -> WireToolCall<'_> {
    WireToolCall {
        index: 0,
        id: Some(&call.id),
        kind: Some("function"),
        function: WireFunction {
            name: Some(&call.name),
            arguments: &call.arguments,
        },
    }
}

fn citations(c: &Completion) -> Option<&'static [&'static str]> {
    (c.provider == Provider::Perplexity).then_some(&PERPLEXITY_CITATIONS[..])
}

/// The `chat.completion` JSON body.
pub(crate) fn render_plain(c: &Completion) -> Bytes {
    let response = ChatResponse {
        id: &c.id,
        object: "chat.completion",
        created: c.created,
        model: &c.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: c.tool_call.is_none().then_some(c.answer.text.as_str()),
                tool_calls: c.tool_call.as_ref().map(|call| [whole_call(call)]),
            },
            logprobs: c
                .logprobs
                .filter(|_| c.tool_call.is_none())
                .map(|top| choice_logprobs(0, c.answer.chunks(), top)),
            finish_reason: if c.tool_call.is_some() {
                "tool_calls"
            } else {
                finish_reason(&c.answer.finish)
            },
        }],
        usage: usage(&c.answer),
        citations: citations(c),
    };
    Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    citations: Option<&'static [&'static str]>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<serde_json::Value>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCall<'a>; 1]>,
}

/// One `data: {chunk}` SSE frame.
fn data_frame(c: &Completion, choices: &[ChunkChoice<'_>], usage: Option<Usage>) -> Bytes {
    let chunk = Chunk {
        id: &c.id,
        object: "chat.completion.chunk",
        created: c.created,
        model: &c.model,
        choices,
        usage,
        citations: citations(c),
    };
    let mut frame = b"data: ".to_vec();
    // Serialising plain structs of strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut frame, &chunk);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// OpenAI's mid-stream error event.
pub(crate) fn stream_error() -> Bytes {
    Bytes::from_static(
        b"data: {\"error\":{\"message\":\"the mock failed mid-stream\",\"type\":\"server_error\",\"code\":null}}\n\n",
    )
}

/// The SSE frames of a streamed answer, and how many of them come before the
/// first content delta. Frames: a role chunk, one chunk per word, a chunk with
/// `finish_reason` (Perplexity: with `usage`), for OpenAI/Groq with
/// `include_usage` a chunk with empty `choices` and `usage`, then `data: [DONE]`.
pub(crate) fn render_stream(c: &Completion) -> (Vec<Bytes>, usize) {
    let mut frames = Vec::with_capacity(c.answer.chunk_count() + 4);
    frames.push(data_frame(
        c,
        &[ChunkChoice {
            index: 0,
            delta: Delta {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: None,
        }],
        None,
    ));
    if let Some(call) = &c.tool_call {
        // The call in three pieces: id, type and name; then the arguments
        // in two halves.
        let half = (0..=call.arguments.len() / 2)
            .rev()
            .find(|n| call.arguments.is_char_boundary(*n))
            .unwrap_or(0);
        let (a, b) = call.arguments.split_at(half);
        let first = WireToolCall {
            index: 0,
            id: Some(&call.id),
            kind: Some("function"),
            function: WireFunction {
                name: Some(&call.name),
                arguments: "",
            },
        };
        let piece = |arguments| WireToolCall {
            index: 0,
            id: None,
            kind: None,
            function: WireFunction {
                name: None,
                arguments,
            },
        };
        for tool_call in [first, piece(a), piece(b)] {
            frames.push(data_frame(
                c,
                &[ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: None,
                        content: None,
                        tool_calls: Some([tool_call]),
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            ));
        }
        frames.push(data_frame(
            c,
            &[ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: None,
                    tool_calls: None,
                },
                logprobs: None,
                finish_reason: Some("tool_calls"),
            }],
            None,
        ));
        if c.include_usage {
            frames.push(data_frame(c, &[], Some(usage(&c.answer))));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return (frames, 1);
    }
    for (i, text) in c.answer.chunks().enumerate() {
        frames.push(data_frame(
            c,
            &[ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: Some(text),
                    tool_calls: None,
                },
                logprobs: c
                    .logprobs
                    .map(|top| choice_logprobs(i, std::iter::once(text), top)),
                finish_reason: None,
            }],
            None,
        ));
    }
    let perplexity = c.provider == Provider::Perplexity;
    frames.push(data_frame(
        c,
        &[ChunkChoice {
            index: 0,
            delta: Delta {
                role: None,
                content: None,
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: Some(finish_reason(&c.answer.finish)),
        }],
        perplexity.then(|| usage(&c.answer)),
    ));
    if c.include_usage && !perplexity {
        frames.push(data_frame(c, &[], Some(usage(&c.answer))));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    (frames, 1)
}
