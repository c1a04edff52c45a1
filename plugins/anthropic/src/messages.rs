//! The Messages API wire format: request body, whole responses and stream
//! events. Pure functions, tested natively.

use serde_json::{Value, json};
use vel_guest_http::chat_completions::finish_reason;
use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, FinishReason, ProviderError,
};
use vel_guest_http::settings::Settings;
use vel_guest_http::sse::Event;
use vel_guest_http::types::{Role, Usage};
use vel_guest_http::{errors, estimate_usage};

/// `max_tokens` when neither the request nor the settings set one (the API
/// requires a value).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The JSON body for `request`, sent to `model`.
pub fn request_body(
    request: &CompletionRequest,
    model: &str,
    settings: &Settings,
    stream: bool,
) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| {
            let role = if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": m.content})
        })
        .collect();
    let max_tokens = request
        .max_tokens
        .or(settings.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": messages});
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
    if stream {
        body["stream"] = json!(true);
    }
    body
}

fn usage_field(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Parses a whole (non-streamed) response body.
pub fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
    model: &str,
) -> Result<CompletionResponse, ProviderError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Other(format!("the upstream answer is not JSON: {e}")))?;
    let text: String = v
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .ok_or_else(|| ProviderError::Other("the upstream answer has no content".into()))?;
    let finish = finish_reason(v.get("stop_reason").and_then(Value::as_str))?;
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
        tool_calls: Vec::new(),
        logprobs: None,
    })
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
}

impl StreamState {
    /// Takes one SSE event and returns the text delta it carries.
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
            "content_block_delta" => {
                let delta = v.get("delta");
                if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta")
                    && let Some(text) = delta.and_then(|d| d.get("text")).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    self.text.push_str(text);
                    return Ok(Some(text.to_string()));
                }
            }
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
            _ => {} // ping, content_block_start, content_block_stop
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
            finish_reason(self.stop_reason.as_deref())?
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
            tool_calls: Vec::new(),
            logprobs: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let body = request_body(&request(), "claude-3-5-haiku", &settings(), true);
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
}
