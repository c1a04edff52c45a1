//! `openai-compatible`: a provider for the OpenAI chat-completions API.
//!
//! Serves OpenAI (`https://api.openai.com/v1`, the default), Groq
//! (`https://api.groq.com/openai/v1`) and any other server speaking the same
//! wire format; the integration's `base-url` setting picks one. The wire
//! format itself is shared with the Perplexity provider, in
//! [`vel_guest_http::chat_completions`].
//!
//! Settings: `base-url`, `default-model` (used when a request names no
//! model; default `gpt-4o`), `timeout-ms`, `max-tokens`.
//!
//! Tools, tool choice, parallel tool calls, response formats (JSON mode
//! and JSON Schema), seed and logprobs pass through to the upstream; tool
//! calls come back, streamed ones as `stream.emit-tool-call` pieces.
//!
//! Embeddings (`embeddings.embed`): OpenAI's embedding models, through the
//! same base URL's `/embeddings`
//! ([`vel_guest_http::openai_embeddings`]).

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use vel_guest_http::chat_completions;
use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, Guest, ModelInfo, ProviderError,
    ProviderInfo,
};
use vel_guest_http::embeddings::{
    EmbeddingError, EmbeddingModel, EmbeddingRequest, EmbeddingResponse,
};
use vel_guest_http::openai_embeddings;
use vel_guest_http::settings::Settings;
use vel_guest_http::types::{Features, TaskType};

/// OpenAI's API, used when `base-url` is not set.
const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Model used when neither the request nor `default-model` names one.
const DEFAULT_MODEL: &str = "gpt-4o";

/// The component's export.
struct OpenAiCompatible;

/// What every model supports: the chat-completions API passes tools, tool
/// choice, response formats (JSON mode and JSON Schema), seed and logprobs
/// through, and maps tool calls back (streamed ones too). A model or
/// server that lacks one answers 400, which the host reports.
const FEATURES: Features = Features::STREAMING
    .union(Features::TOOLS)
    .union(Features::JSON_MODE)
    .union(Features::JSON_SCHEMA)
    .union(Features::LOGPROBS)
    .union(Features::SEED);

/// One row of the model table: id, $/1K in, $/1K out, context, good for.
type ModelRow = (&'static str, f64, f64, u32, &'static [TaskType]);

/// Models and prices (US dollars per 1K tokens, from the specification).
const MODELS: [ModelRow; 4] = [
    (
        "gpt-4o",
        0.0025,
        0.0100,
        128_000,
        &[TaskType::Reasoning, TaskType::General],
    ),
    (
        "gpt-4o-mini",
        0.0002,
        0.0006,
        128_000,
        &[TaskType::Light, TaskType::Research, TaskType::General],
    ),
    (
        "llama-3.1-70b",
        0.00079,
        0.00079,
        128_000,
        &[TaskType::CodeGeneration, TaskType::General],
    ),
    (
        "mixtral-8x7b",
        0.00027,
        0.00027,
        32_768,
        &[TaskType::CodeGeneration, TaskType::Light],
    ),
];

/// Embedding models: id, $/1K in, default dimensions (OpenAI's prices).
const EMBEDDING_MODELS: [(&str, f64, u32); 3] = [
    ("text-embedding-3-small", 0.00002, 1536),
    ("text-embedding-3-large", 0.00013, 3072),
    ("text-embedding-ada-002", 0.0001, 1536),
];

impl vel_guest_http::embeddings::Guest for OpenAiCompatible {
    fn models() -> Vec<EmbeddingModel> {
        EMBEDDING_MODELS
            .iter()
            .map(|(id, price, dimensions)| EmbeddingModel {
                id: id.to_string(),
                input_price_per_1k: *price,
                dimensions: *dimensions,
            })
            .collect()
    }

    fn embed(request: EmbeddingRequest) -> Result<EmbeddingResponse, EmbeddingError> {
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)
            .map_err(openai_embeddings::from_provider_error)?;
        openai_embeddings::embed(&settings, &request)
    }
}

impl Guest for OpenAiCompatible {
    fn info() -> ProviderInfo {
        let features = FEATURES;
        ProviderInfo {
            name: "openai-compatible".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "OpenAI chat completions: OpenAI, Groq and compatible APIs".to_string(),
            models: MODELS
                .iter()
                .map(|(id, input, output, context, good_for)| ModelInfo {
                    id: id.to_string(),
                    input_price_per_1k: *input,
                    output_price_per_1k: *output,
                    context_window: *context,
                    good_for: good_for.to_vec(),
                    features,
                })
                .collect(),
            features,
            credential: Some(CredentialHeader {
                name: "authorization".to_string(),
                prefix: "Bearer ".to_string(),
            }),
            base_url_setting: Some("base-url".to_string()),
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        chat_completions::complete(&settings, &request)
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        chat_completions::complete_stream(&settings, &request)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
vel_guest_http::export_embedding_provider!(OpenAiCompatible);
