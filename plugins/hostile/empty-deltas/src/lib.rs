//! Hostile provider: streams empty deltas for as long as the host lets it
//! (each would be a chunk on a client's stream), then answers.

wit_bindgen::generate!({ path: "../../../wit", world: "provider" });

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, FinishReason, Guest, ProviderError, ProviderInfo,
};
use vel::plugins::types::Features;
use vel::plugins::types::Usage;

struct Hostile;

impl Guest for Hostile {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: "hostile-empty-deltas".to_string(),
            version: "0.1.0".to_string(),
            description: "Streams empty deltas without end".to_string(),
            models: Vec::new(),
            features: Features::STREAMING,
            credential: None,
            base_url_setting: None,
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        Ok(CompletionResponse {
            text: String::new(),
            finish_reason: FinishReason::Stop,
            model: request.model,
            usage: Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
            tool_calls: Vec::new(),
            logprobs: None,
        })
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let mut sent: u64 = 0;
        while vel::plugins::stream::emit("") {
            sent += 1;
        }
        let mut response = Self::complete(request)?;
        response.text = format!("emitted {sent} empty deltas");
        Ok(response)
    }
}

export!(Hostile);
