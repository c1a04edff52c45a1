//! The mock models' behaviour, free of host calls so it runs in native tests.

use crate::exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, FinishReason, ModelInfo, ProviderError, ProviderInfo,
    ResponseFormat, TokenLogprob, ToolChoice, TopLogprob,
};
use crate::vel::plugins::types::{Features, Role, TaskType, ToolCall, Usage};
use serde_json::{Value, json};
use std::time::Duration;

/// Price per 1K tokens, in and out: tiny, not zero, so costs show.
const INPUT_PRICE: f64 = 0.0001;
const OUTPUT_PRICE: f64 = 0.0002;
/// `slow`'s default delay before answering.
const DEFAULT_DELAY_MS: u64 = 2000;
/// `slow`'s default pause between streamed words.
const DEFAULT_WORD_DELAY_MS: u64 = 20;
/// Longest delay a caller may ask for, so a typo cannot hang a worker for hours.
const MAX_DELAY_MS: u64 = 600_000;

/// The model ids this provider serves (`tools` last, so that routers that
/// rank equal candidates in order keep preferring `echo`).
pub const MODELS: [&str; 6] = ["echo", "slow", "flaky", "error", "rate-limited", "tools"];

/// What every model supports: JSON output, logprobs (each word a token,
/// log probability 0) and seed (answers are deterministic anyway).
const FEATURES: Features = Features::STREAMING
    .union(Features::JSON_MODE)
    .union(Features::JSON_SCHEMA)
    .union(Features::LOGPROBS)
    .union(Features::SEED);

/// The features of model `id`: only `tools` calls tools.
fn features(id: &str) -> Features {
    if id == "tools" {
        FEATURES | Features::TOOLS
    } else {
        FEATURES
    }
}

/// What `info()` returns.
pub fn info() -> ProviderInfo {
    let all_tasks = vec![
        TaskType::Reasoning,
        TaskType::CodeGeneration,
        TaskType::Research,
        TaskType::Light,
        TaskType::General,
    ];
    ProviderInfo {
        name: "mock".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        description: "Offline, deterministic models for the quick start and tests".to_string(),
        models: MODELS
            .iter()
            .map(|id| ModelInfo {
                id: id.to_string(),
                input_price_per_1k: INPUT_PRICE,
                output_price_per_1k: OUTPUT_PRICE,
                context_window: 128_000,
                good_for: all_tasks.clone(),
                features: features(id),
            })
            .collect(),
        features: FEATURES | Features::TOOLS,
        credential: None,
        base_url_setting: None,
    }
}

/// A successful answer, before it is streamed or returned.
#[derive(Debug)]
pub struct Answer {
    /// The whole text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Words in the prompt.
    pub input_tokens: u32,
    /// How long to wait before answering.
    pub delay: Duration,
    /// How long to wait between streamed words.
    pub word_delay: Duration,
    /// The tools the model calls instead of answering (model `tools`).
    pub tool_calls: Vec<ToolCall>,
    /// Per-word log probabilities, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

impl Answer {
    /// The completion response for `self.text` as it stands; a stop with
    /// tool calls is a `tool-calls` stop.
    pub fn into_response(self, finish_reason: FinishReason) -> CompletionResponse {
        let finish_reason = if finish_reason == FinishReason::Stop && !self.tool_calls.is_empty() {
            FinishReason::ToolCalls
        } else {
            finish_reason
        };
        let arguments: u32 = self
            .tool_calls
            .iter()
            .map(|c| count_words(&c.arguments))
            .sum();
        CompletionResponse {
            usage: Usage {
                input_tokens: self.input_tokens,
                output_tokens: count_words(&self.text) + arguments,
            },
            text: self.text,
            finish_reason,
            model: self.model,
            tool_calls: self.tool_calls,
            logprobs: self.logprobs,
        }
    }
}

/// A JSON value that fits `schema` (the simple schemas tests use): objects
/// get each property, strings the prompt (or an enum's first value),
/// numbers the prompt's word count, booleans `true`, arrays one item.
pub fn instance(schema: &Value, prompt: &str) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or(
        if schema.get("properties").is_some() {
            "object"
        } else {
            "string"
        },
    );
    match kind {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    out.insert(name.clone(), instance(prop, prompt));
                }
            }
            Value::Object(out)
        }
        "integer" | "number" => json!(count_words(prompt)),
        "boolean" => json!(true),
        "array" => json!([instance(
            schema.get("items").unwrap_or(&Value::Null),
            prompt
        )]),
        "null" => Value::Null,
        _ => json!(prompt),
    }
}

/// The tool call model `tools` makes: the tool `tool-choice` names, else
/// the one the `tool` metadata names (exactly, or as the end of a
/// namespaced name such as `everything__echo`), else the first offered;
/// with the `tool-arguments` metadata as its arguments, else arguments
/// built from its parameters and the prompt. A `tool` named that is not
/// offered is called anyway (a model's mistake, for tests).
fn tool_call(request: &CompletionRequest, metadata: &Value, prompt: &str) -> Option<ToolCall> {
    if matches!(request.tool_choice, Some(ToolChoice::None)) {
        return None;
    }
    let scripted = metadata.get("tool").and_then(Value::as_str);
    let tool = match (&request.tool_choice, scripted) {
        (Some(ToolChoice::Named(name)), _) => request.tools.iter().find(|t| &t.name == name),
        (_, Some(name)) => request.tools.iter().find(|t| {
            t.name == name
                || t.name
                    .strip_suffix(name)
                    .is_some_and(|head| head.ends_with("__"))
        }),
        _ => request.tools.first(),
    };
    // A scripted name offered nowhere is called all the same, as a
    // confused model would (with the scripted arguments, else none).
    let (name, schema) = match (tool, scripted) {
        (Some(tool), _) => (
            tool.name.clone(),
            serde_json::from_str(&tool.parameters).unwrap_or(Value::Null),
        ),
        (None, Some(name)) if !request.tools.is_empty() => (name.to_string(), Value::Null),
        (None, _) => return None,
    };
    let arguments = metadata
        .get("tool-arguments")
        .or_else(|| metadata.get("tool_arguments"))
        .cloned()
        .unwrap_or_else(|| instance(&schema, prompt));
    Some(ToolCall {
        id: format!("call_mock_{}", request.messages.len()),
        name,
        arguments: arguments.to_string(),
    })
}

/// Each word of `text` as a token of log probability 0 (certain), with
/// `top` alternatives (the word itself first).
fn logprobs(text: &str, top: u8) -> Vec<TokenLogprob> {
    text.split_inclusive(' ')
        .map(|word| TokenLogprob {
            token: word.to_string(),
            logprob: 0.0,
            top: (0..top)
                .map(|i| TopLogprob {
                    token: if i == 0 {
                        word.to_string()
                    } else {
                        format!("alt{i}")
                    },
                    logprob: if i == 0 { 0.0 } else { -10.0 * f64::from(i) },
                })
                .collect(),
        })
        .collect()
}

/// Decide what `request` gets: an answer or the model's error.
pub fn answer(request: &CompletionRequest) -> Result<Answer, ProviderError> {
    let model = if request.model.is_empty() {
        "echo"
    } else {
        request.model.as_str()
    };
    let metadata: serde_json::Value =
        serde_json::from_str(&request.metadata).unwrap_or(serde_json::Value::Null);
    let number = |key: &str, default: u64| {
        metadata
            .get(key)
            .or_else(|| metadata.get(key.replace('-', "_")))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(default)
    };
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let mut answer = Answer {
        text: format!("echo: {last_user}"),
        model: model.to_string(),
        input_tokens: request
            .messages
            .iter()
            .map(|m| count_words(&m.content))
            .sum(),
        delay: Duration::ZERO,
        word_delay: Duration::ZERO,
        tool_calls: Vec::new(),
        logprobs: None,
    };
    match model {
        "echo" => {}
        "tools" => {
            // After the last user turn: the tool results, and how many
            // turns called tools. Once `tool-rounds` (default 1) turns
            // have, answer with the results.
            let since_user = || {
                request
                    .messages
                    .iter()
                    .rev()
                    .take_while(|m| m.role != Role::User)
            };
            let mut results: Vec<&str> = since_user()
                .filter(|m| m.role == Role::Tool)
                .map(|m| m.content.as_str())
                .collect();
            let rounds = since_user()
                .filter(|m| m.role == Role::Assistant && !m.tool_calls.is_empty())
                .count() as u64;
            let wanted = number("tool-rounds", 1).max(1);
            let done = !results.is_empty() && rounds.max(1) >= wanted;
            if done {
                results.reverse();
                answer.text = format!("tool said: {}", results.join("; "));
            } else if let Some(call) = tool_call(request, &metadata, last_user) {
                answer.text = ["tool-preamble", "tool_preamble"]
                    .iter()
                    .find_map(|k| metadata.get(k).and_then(Value::as_str))
                    .unwrap_or_default()
                    .to_string();
                answer.tool_calls.push(call);
            }
        }
        "slow" => {
            answer.delay =
                Duration::from_millis(number("delay-ms", DEFAULT_DELAY_MS).min(MAX_DELAY_MS));
            answer.word_delay = Duration::from_millis(
                number("word-delay-ms", DEFAULT_WORD_DELAY_MS).min(MAX_DELAY_MS),
            );
        }
        "flaky" => {
            let attempt = number("attempt", 1);
            if attempt % 2 == 1 {
                return Err(ProviderError::Unavailable(format!(
                    "flaky: attempt {attempt} fails (odd attempts fail, even ones succeed)"
                )));
            }
        }
        "error" => {
            return Err(ProviderError::Other(
                "error: this mock model always fails".to_string(),
            ));
        }
        "rate-limited" => return Err(ProviderError::RateLimited(Some(1000))),
        other => {
            return Err(ProviderError::InvalidRequest(format!(
                "unknown model {other:?}; the mock serves {}",
                MODELS.join(", ")
            )));
        }
    }
    if !request.tools.is_empty() && model != "tools" {
        return Err(ProviderError::InvalidRequest(format!(
            "the mock model {model:?} does not call tools; use \"tools\""
        )));
    }
    if answer.tool_calls.is_empty() {
        match &request.response_format {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => answer.text = json!({ "echo": answer.text }).to_string(),
            ResponseFormat::JsonSchema(format) => {
                let schema: Value = serde_json::from_str(&format.schema).unwrap_or(Value::Null);
                answer.text = instance(&schema, last_user).to_string();
            }
        }
    }
    if request.logprobs {
        answer.logprobs = Some(logprobs(&answer.text, request.top_logprobs.unwrap_or(0)));
    }
    Ok(answer)
}

/// Tokens, as the mock counts them: whitespace-separated words.
pub fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vel::plugins::types::Message;

    fn request(model: &str, metadata: &str) -> CompletionRequest {
        CompletionRequest {
            model: model.into(),
            messages: vec![
                message(Role::System, "be brief"),
                message(Role::User, "hello there world"),
            ],
            temperature: None,
            max_tokens: None,
            stop: vec![],
            task_type: TaskType::General,
            metadata: metadata.into(),
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

    #[test]
    fn tools_calls_the_first_tool_then_answers_with_its_result() {
        use crate::exports::vel::plugins::completion::ToolDefinition;
        let mut r = request("tools", "{}");
        r.tools.push(ToolDefinition {
            name: "get_weather".into(),
            description: None,
            parameters: r#"{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}"#.into(),
            strict: None,
        });
        let first = answer(&r).unwrap().into_response(FinishReason::Stop);
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        assert_eq!(first.tool_calls.len(), 1);
        let call = &first.tool_calls[0];
        assert_eq!(call.name, "get_weather");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, json!({"city": "hello there world", "days": 3}));
        r.messages.push(Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: first.tool_calls.clone(),
            tool_call_id: None,
            name: None,
        });
        r.messages.push(Message {
            role: Role::Tool,
            content: "sunny".into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call.id.clone()),
            name: None,
        });
        let last = answer(&r).unwrap().into_response(FinishReason::Stop);
        assert_eq!(last.finish_reason, FinishReason::Stop);
        assert_eq!(last.text, "tool said: sunny");
        assert!(last.tool_calls.is_empty());
        r.tools.truncate(0);
        assert!(answer(&r).unwrap().tool_calls.is_empty());
    }

    #[test]
    fn tools_follows_its_script() {
        use crate::exports::vel::plugins::completion::ToolDefinition;
        let mut r = request(
            "tools",
            r#"{"tool": "echo", "tool-rounds": 2, "tool-arguments": {"message": "hi"}}"#,
        );
        for name in ["everything__add", "everything__echo"] {
            r.tools.push(ToolDefinition {
                name: name.into(),
                description: None,
                parameters: "{}".into(),
                strict: None,
            });
        }
        for round in 1..=2 {
            let a = answer(&r).unwrap();
            assert_eq!(a.tool_calls.len(), 1, "round {round}");
            let call = &a.tool_calls[0];
            assert_eq!(call.name, "everything__echo");
            assert_eq!(call.arguments, r#"{"message":"hi"}"#);
            r.messages.push(Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: a.tool_calls.clone(),
                tool_call_id: None,
                name: None,
            });
            r.messages.push(Message {
                role: Role::Tool,
                content: format!("Echo: hi {round}"),
                tool_calls: Vec::new(),
                tool_call_id: Some(call.id.clone()),
                name: None,
            });
        }
        let last = answer(&r).unwrap();
        assert!(last.tool_calls.is_empty());
        assert_eq!(last.text, "tool said: Echo: hi 1; Echo: hi 2");
    }

    #[test]
    fn json_formats_answer_json() {
        use crate::exports::vel::plugins::completion::JsonSchemaFormat;
        let mut r = request("echo", "{}");
        r.response_format = ResponseFormat::JsonObject;
        let text = answer(&r).unwrap().text;
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"echo": "echo: hello there world"})
        );
        r.response_format = ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "answer".into(),
            description: None,
            schema: r#"{"type":"object","properties":{"ok":{"type":"boolean"},"tags":{"type":"array","items":{"type":"string","enum":["a","b"]}}}}"#.into(),
            strict: true,
        });
        let text = answer(&r).unwrap().text;
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"ok": true, "tags": ["a"]})
        );
        r.logprobs = true;
        r.top_logprobs = Some(2);
        let lp = answer(&r).unwrap().logprobs.unwrap();
        assert_eq!(lp[0].top.len(), 2);
    }

    #[test]
    fn echo_answers_with_the_last_user_message() {
        let a = answer(&request("echo", "{}")).unwrap();
        let r = a.into_response(FinishReason::Stop);
        assert_eq!(r.text, "echo: hello there world");
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (5, 4));
        assert_eq!(answer(&request("", "{}")).unwrap().model, "echo");
    }

    #[test]
    fn slow_reads_its_delays_from_metadata() {
        let a = answer(&request("slow", "{}")).unwrap();
        assert_eq!(a.delay, Duration::from_millis(2000));
        let a = answer(&request("slow", r#"{"delay-ms": 5, "word_delay_ms": 1}"#)).unwrap();
        assert_eq!(
            (a.delay, a.word_delay),
            (Duration::from_millis(5), Duration::from_millis(1))
        );
    }

    #[test]
    fn flaky_fails_on_odd_attempts() {
        assert!(matches!(
            answer(&request("flaky", "{}")),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            answer(&request("flaky", r#"{"attempt": 3}"#)),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(answer(&request("flaky", r#"{"attempt": 2}"#)).is_ok());
    }

    #[test]
    fn failing_models() {
        assert!(matches!(
            answer(&request("error", "{}")),
            Err(ProviderError::Other(_))
        ));
        assert!(matches!(
            answer(&request("rate-limited", "")),
            Err(ProviderError::RateLimited(Some(1000)))
        ));
        assert!(
            matches!(answer(&request("gpt-9", "{}")), Err(ProviderError::InvalidRequest(m)) if m.contains("gpt-9"))
        );
    }

    #[test]
    fn info_lists_every_model_with_prices() {
        let i = info();
        assert_eq!(i.models.len(), MODELS.len());
        assert!(i.models.iter().all(|m| m.input_price_per_1k > 0.0));
        assert!(i.credential.is_none());
    }
}
