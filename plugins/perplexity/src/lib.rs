//! `perplexity`: a provider for Perplexity's Sonar models.
//!
//! Perplexity speaks the OpenAI chat-completions format
//! (`POST {base-url}/chat/completions`, default `https://api.perplexity.ai`)
//! and adds `citations`, the URLs its answer draws on; they are appended to
//! the text as a numbered "Sources" list. The wire format is shared with
//! `openai-compatible` in [`vel_guest_http::chat_completions`].
//!
//! Settings: `base-url`, `default-model` (default `sonar`), `timeout-ms`,
//! `max-tokens`.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use vel_guest_http::chat_completions;
use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, Guest, ModelInfo, ProviderError,
    ProviderInfo,
};
use vel_guest_http::settings::Settings;
use vel_guest_http::types::Features;
use vel_guest_http::types::TaskType;

/// Perplexity's API, used when `base-url` is not set.
const DEFAULT_BASE_URL: &str = "https://api.perplexity.ai";
/// Model used when neither the request nor `default-model` names one.
const DEFAULT_MODEL: &str = "sonar";

/// Models and prices: id, US dollars per 1K tokens in and out, context window.
const MODELS: [(&str, f64, f64, u32); 3] = [
    ("sonar", 0.001, 0.001, 127_072),
    ("sonar-pro", 0.003, 0.015, 200_000),
    ("sonar-large", 0.001, 0.001, 127_072),
];

/// The component's export.
struct Perplexity;

impl Guest for Perplexity {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: "perplexity".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Perplexity Sonar: web-connected research answers with sources"
                .to_string(),
            models: MODELS
                .iter()
                .map(|(id, input, output, context)| ModelInfo {
                    id: id.to_string(),
                    input_price_per_1k: *input,
                    output_price_per_1k: *output,
                    context_window: *context,
                    good_for: vec![TaskType::Research],
                    features: Features::STREAMING,
                })
                .collect(),
            features: Features::STREAMING,
            credential: Some(CredentialHeader {
                name: "authorization".to_string(),
                prefix: "Bearer ".to_string(),
            }),
            base_url_setting: Some("base-url".to_string()),
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        // Sonar has no tool calling, JSON modes or logprobs: say so.
        vel_guest_http::require_features(&request, "perplexity", Features::STREAMING)?;
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        chat_completions::complete(&settings, &request)
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        vel_guest_http::require_features(&request, "perplexity", Features::STREAMING)?;
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        chat_completions::complete_stream(&settings, &request)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
vel_guest_http::export_provider!(Perplexity);
