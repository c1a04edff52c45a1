//! What `shout` answers, free of host calls so it runs in native tests.

use crate::exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, Features, FinishReason, ModelInfo, ProviderError,
    ProviderInfo,
};
use crate::vel::plugins::types::{Role, TaskType, Usage};

/// The plugin name (what a manifest must say).
pub const NAME: &str = "shout";
/// The plugin version: the `v2` feature builds the second release.
pub const VERSION: &str = if cfg!(feature = "v2") {
    "2.0.0"
} else {
    "1.0.0"
};
/// The one model served.
pub const MODEL: &str = "shout-1";
/// US dollars per 1,000 prompt tokens: small, not zero, so costs show.
const INPUT_PRICE: f64 = 0.001;
/// US dollars per 1,000 completion tokens.
const OUTPUT_PRICE: f64 = 0.002;

/// What `info()` returns.
pub fn info() -> ProviderInfo {
    ProviderInfo {
        name: NAME.to_string(),
        version: VERSION.to_string(),
        description: "Test fixture: answers the last user message in capitals".to_string(),
        models: vec![ModelInfo {
            id: MODEL.to_string(),
            input_price_per_1k: INPUT_PRICE,
            output_price_per_1k: OUTPUT_PRICE,
            context_window: 8192,
            good_for: vec![
                TaskType::Reasoning,
                TaskType::CodeGeneration,
                TaskType::Research,
                TaskType::Light,
                TaskType::General,
            ],
            features: Features::STREAMING,
        }],
        features: Features::STREAMING,
        credential: None,
        base_url_setting: None,
    }
}

/// A successful answer, before it is streamed or returned.
#[derive(Debug)]
pub struct Answer {
    /// `[shout <version>] `.
    prefix: String,
    /// The last user message, in capitals.
    shouted: String,
    /// Words in the whole prompt, at least 1.
    input_tokens: u32,
}

impl Answer {
    /// The whole answer text.
    pub fn full_text(&self) -> String {
        format!("{}{}", self.prefix, self.shouted)
    }

    /// The text as a stream sends it: the prefix, then the shouted message.
    pub fn deltas(&self) -> Vec<String> {
        let mut deltas = vec![self.prefix.clone()];
        if !self.shouted.is_empty() {
            deltas.push(self.shouted.clone());
        }
        deltas
    }

    /// The completion response for `text` (the whole answer, or what was
    /// streamed before the host cancelled).
    pub fn response(&self, text: String, finish_reason: FinishReason) -> CompletionResponse {
        CompletionResponse {
            usage: Usage {
                input_tokens: self.input_tokens,
                output_tokens: count_words(&text),
            },
            text,
            finish_reason,
            model: MODEL.to_string(),
        }
    }
}

/// Decide what `request` gets. An empty model means `shout-1`; any other
/// model is refused as an invalid request.
pub fn answer(request: &CompletionRequest) -> Result<Answer, ProviderError> {
    if !request.model.is_empty() && request.model != MODEL {
        return Err(ProviderError::InvalidRequest(format!(
            "unknown model {:?}; {NAME} serves {MODEL}",
            request.model
        )));
    }
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let input_words: u32 = request
        .messages
        .iter()
        .map(|m| count_words(&m.content))
        .fold(0, u32::saturating_add);
    Ok(Answer {
        prefix: format!("[{NAME} {VERSION}] "),
        shouted: last_user.to_uppercase(),
        input_tokens: input_words.max(1),
    })
}

/// Tokens, as `shout` counts them: whitespace-separated words, at least 1.
pub fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count())
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vel::plugins::types::Message;

    fn request(model: &str) -> CompletionRequest {
        CompletionRequest {
            model: model.into(),
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be loud".into(),
                },
                Message {
                    role: Role::User,
                    content: "hello there".into(),
                },
            ],
            temperature: None,
            max_tokens: None,
            stop: vec![],
            task_type: TaskType::General,
            metadata: "{}".into(),
        }
    }

    #[test]
    fn shouts_the_last_user_message_with_the_version() {
        let a = answer(&request("")).unwrap();
        let r = a.response(a.full_text(), FinishReason::Stop);
        assert_eq!(r.text, format!("[shout {VERSION}] HELLO THERE"));
        assert_eq!(r.model, MODEL);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (4, 4));
        assert_eq!(a.deltas().concat(), r.text);
        assert_eq!(a.deltas().len(), 2);
    }

    #[test]
    fn refuses_other_models() {
        assert!(answer(&request(MODEL)).is_ok());
        assert!(
            matches!(answer(&request("gpt-9")), Err(ProviderError::InvalidRequest(m)) if m.contains("gpt-9"))
        );
    }

    #[test]
    fn info_names_one_priced_model() {
        let i = info();
        assert_eq!((i.name.as_str(), i.version.as_str()), (NAME, VERSION));
        assert_eq!(i.models.len(), 1);
        assert!(i.models[0].input_price_per_1k > 0.0 && i.models[0].output_price_per_1k > 0.0);
    }
}
