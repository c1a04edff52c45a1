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
use serde_json::{Value, json};

/// Largest non-streamed response body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The JSON body for `request`, sent to `model`.
pub fn request_body(
    request: &CompletionRequest,
    model: &str,
    settings: &Settings,
    stream: bool,
) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            // A tool message needs a tool-call id the canonical request does
            // not carry; send it as user text rather than have it refused.
            let role = match m.role {
                Role::Tool => "user",
                other => crate::role_name(other),
            };
            json!({"role": role, "content": m.content})
        })
        .collect();
    let mut body = json!({"model": model, "messages": messages});
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

/// Reads `usage.prompt_tokens` / `usage.completion_tokens`.
fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| !u.is_null())?;
    let n = |k: &str| {
        u.get(k)
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        input_tokens: n("prompt_tokens")?,
        output_tokens: n("completion_tokens").unwrap_or(0),
    })
}

/// The "Sources" block for Perplexity's citations, or nothing.
fn sources(v: &Value) -> Option<String> {
    let urls: Vec<&str> = v
        .get("citations")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if urls.is_empty() {
        return None;
    }
    let list: Vec<String> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("[{}] {u}", i + 1))
        .collect();
    Some(format!("\n\nSources:\n{}", list.join("\n")))
}

/// Parses a whole (non-streamed) response body.
pub fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
    model: &str,
) -> Result<CompletionResponse, ProviderError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Other(format!("the upstream answer is not JSON: {e}")))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| ProviderError::Other("the upstream answer has no choices".into()))?;
    let mut text = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let finish = finish_reason(choice.get("finish_reason").and_then(Value::as_str))?;
    if let Some(s) = sources(&v) {
        text.push_str(&s);
    }
    Ok(CompletionResponse {
        usage: usage_of(&v).unwrap_or_else(|| estimate_usage(request, &text)),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string(),
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
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::Other(format!("bad stream chunk from upstream: {e}")))?;
        if v.get("error").is_some() {
            return Err(ProviderError::Unavailable(format!(
                "the upstream failed mid-stream: {}",
                crate::errors::upstream_message(data.as_bytes())
            )));
        }
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            self.model = Some(m.to_string());
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
        if let Some(s) = sources(&v) {
            self.sources = Some(s);
        }
        let choice = v.pointer("/choices/0");
        if let Some(f) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.finish = Some(f.to_string());
        }
        let delta = choice
            .and_then(|c| c.pointer("/delta/content"))
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        if let Some(d) = &delta {
            self.text.push_str(d);
        }
        Ok(delta)
    }
}

/// POSTs `body` to `{base-url}/chat/completions`.
fn send(settings: &Settings, body: &Value, stream: bool) -> Result<http::Response, ProviderError> {
    let url = format!("{}/chat/completions", settings.base_url);
    let bytes = body.to_string().into_bytes();
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

    #[test]
    fn builds_the_wire_request() {
        let body = request_body(&request(), "gpt-4o", &settings(), true);
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be terse."})
        );
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        let plain = request_body(&request(), "gpt-4o", &settings(), false);
        assert!(plain.get("stream").is_none());
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
