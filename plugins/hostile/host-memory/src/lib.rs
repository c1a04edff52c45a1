//! Hostile provider: makes the host allocate memory outside the sandbox.
//! Each `wasi:http` `fields` it creates holds a 120 KB header value in host
//! memory; it keeps creating them (20,000 would be 2.4 GB) while holding
//! every handle. The host must charge them to the call's memory limit.

wit_bindgen::generate!({ path: "../../../wit", world: "provider" });

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, FinishReason, Guest, ProviderError, ProviderInfo,
};
use vel::plugins::types::Features;
use vel::plugins::types::Usage;
use wasip2::http::types::Fields;

struct Hostile;

impl Guest for Hostile {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: "hostile-host-memory".to_string(),
            version: "0.1.0".to_string(),
            description: "Fills host memory with header fields".to_string(),
            models: Vec::new(),
            features: Features::empty(),
            credential: None,
            base_url_setting: None,
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let value = vec![b'x'; 120_000];
        let mut held = Vec::new();
        for _ in 0..20_000 {
            let fields = Fields::new();
            fields
                .append("x-fill", &value)
                .map_err(|e| ProviderError::Other(format!("append refused: {e:?}")))?;
            held.push(fields);
        }
        Ok(CompletionResponse {
            text: format!("held {} fields", held.len()),
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
        Self::complete(request)
    }
}

export!(Hostile);
