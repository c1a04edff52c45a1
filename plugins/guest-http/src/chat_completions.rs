//! The OpenAI chat-completions wire format, spoken by OpenAI, Groq,
//! Perplexity and many OpenAI-compatible servers:
//! `POST {base-url}/chat/completions`, plain JSON or SSE streaming.
//!
//! Perplexity adds a top-level `citations` list of URLs; when present it is
//! appended to the text as a numbered "Sources" list (the last delta of a
//! stream), since the canonical response has no field for it.

use crate::completion::{CompletionRequest, CompletionResponse, FinishReason, ProviderError};
use crate::http::{self, Post};
use crate::settings::Settings;
use crate::types::{Role, Usage};
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
}

/// One message of [`RequestBody`].
#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
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
            // A tool message needs a tool-call id the canonical request does
            // not carry; send it as user text rather than have it refused.
            role: match m.role {
                Role::Tool => "user",
                other => crate::role_name(other),
            },
            content: &m.content,
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
}

/// A `message` or `delta`: only its text is read.
#[derive(Debug, Deserialize)]
struct WireContent {
    #[serde(default)]
    content: Option<String>,
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
    let mut text = choice.message.and_then(|m| m.content).unwrap_or_default();
    if let Some(s) = sources {
        text.push_str(&s);
    }
    Ok(CompletionResponse {
        usage: usage.unwrap_or_else(|| estimate_usage(request, &text)),
        model: v.model.unwrap_or_else(|| model.to_string()),
        finish_reason: finish,
        text,
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
        let delta = choice
            .delta
            .and_then(|d| d.content)
            .filter(|d| !d.is_empty());
        if let Some(d) = &delta {
            self.text.push_str(d);
        }
        Ok(delta)
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
            if let Some(delta) = state.on_data(&event.data)?
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
                Message {
                    role: Role::System,
                    content: "Be terse.".into(),
                },
                Message {
                    role: Role::User,
                    content: "Hi".into(),
                },
            ],
            temperature: Some(0.5),
            max_tokens: None,
            stop: vec!["END".into()],
            task_type: TaskType::General,
            metadata: "{}".into(),
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
        bare.messages.push(Message {
            role: Role::Tool,
            content: "tool said \"hi\"\n\u{1F600}".into(),
        });
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
    }
}
