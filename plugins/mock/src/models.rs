//! The mock models' behaviour, free of host calls so it runs in native tests.

use crate::exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, Features, FinishReason, ModelInfo, ProviderError,
    ProviderInfo,
};
use crate::vel::plugins::types::{Role, TaskType, Usage};
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

/// The model ids this provider serves.
pub const MODELS: [&str; 5] = ["echo", "slow", "flaky", "error", "rate-limited"];

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
                features: Features::STREAMING,
            })
            .collect(),
        features: Features::STREAMING,
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
}

impl Answer {
    /// The completion response for `self.text` as it stands.
    pub fn into_response(self, finish_reason: FinishReason) -> CompletionResponse {
        CompletionResponse {
            usage: Usage {
                input_tokens: self.input_tokens,
                output_tokens: count_words(&self.text),
            },
            text: self.text,
            finish_reason,
            model: self.model,
        }
    }
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
    };
    match model {
        "echo" => {}
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
                Message {
                    role: Role::System,
                    content: "be brief".into(),
                },
                Message {
                    role: Role::User,
                    content: "hello there world".into(),
                },
            ],
            temperature: None,
            max_tokens: None,
            stop: vec![],
            task_type: TaskType::General,
            metadata: metadata.into(),
        }
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
