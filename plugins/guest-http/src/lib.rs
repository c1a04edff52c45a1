//! The vel provider SDK: what every provider plugin that talks to an
//! upstream API over HTTP needs. The built-in providers use it, and plugin
//! authors depend on it by path or git from outside vel's workspace
//! (`vel-guest-http = { path = "../vel/plugins/guest-http" }`); see
//! `plugins/README.md` for a worked example of a non-OpenAI JSON API.
//!
//! Every provider that talks to an upstream API over HTTP needs the same
//! parts: the `provider` world's bindings, a blocking client over
//! `wasi:http/outgoing-handler`, a Server-Sent Events parser, the mapping of
//! HTTP failures to `provider-error`, and its settings. They live here once.
//! The OpenAI chat-completions wire format, spoken by OpenAI, Groq and
//! Perplexity, lives here too ([`chat_completions`]).
//!
//! A provider crate implements [`completion::Guest`] and exports it with
//! `vel_guest_http::export_provider!(MyProvider);`. One that also serves
//! embeddings implements [`embeddings::Guest`] too and exports both with
//! `vel_guest_http::export_embedding_provider!(MyProvider);`.

pub mod chat_completions;
pub mod errors;
pub mod http;
pub mod openai_embeddings;
pub mod settings;
pub mod sse;

/// Bindings for the `embedding-provider` world (the `provider` world plus
/// the `embeddings` export), shared by every HTTP provider crate.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "embedding-provider",
        pub_export_macro: true,
        export_macro_name: "export_embedding_provider",
        default_bindings_module: "vel_guest_http::bindings",
    });
}

pub use bindings::export_embedding_provider;
pub use bindings::exports::vel::plugins::completion;
pub use bindings::exports::vel::plugins::embeddings;

/// Exports a provider that serves completions only: `T` implements
/// [`completion::Guest`]; its `embeddings` export lists no models (and
/// refuses any request), so the host never sends it one.
#[macro_export]
macro_rules! export_provider {
    ($ty:ident) => {
        const _: () = {
            struct CompletionsOnly;
            impl $crate::completion::Guest for CompletionsOnly {
                fn info() -> $crate::completion::ProviderInfo {
                    <$ty as $crate::completion::Guest>::info()
                }
                fn complete(
                    request: $crate::completion::CompletionRequest,
                ) -> Result<$crate::completion::CompletionResponse, $crate::completion::ProviderError>
                {
                    <$ty as $crate::completion::Guest>::complete(request)
                }
                fn complete_stream(
                    request: $crate::completion::CompletionRequest,
                ) -> Result<$crate::completion::CompletionResponse, $crate::completion::ProviderError>
                {
                    <$ty as $crate::completion::Guest>::complete_stream(request)
                }
            }
            impl $crate::embeddings::Guest for CompletionsOnly {
                fn models() -> Vec<$crate::embeddings::EmbeddingModel> {
                    Vec::new()
                }
                fn embed(
                    _request: $crate::embeddings::EmbeddingRequest,
                ) -> Result<$crate::embeddings::EmbeddingResponse, $crate::embeddings::EmbeddingError>
                {
                    Err($crate::embeddings::EmbeddingError::InvalidRequest(
                        "this provider serves no embeddings".to_string(),
                    ))
                }
            }
            $crate::export_embedding_provider!(CompletionsOnly);
        };
    };
}
pub use bindings::vel::plugins::{config, log, stream, types};

use completion::{CompletionRequest, ProviderError, ResponseFormat};
use types::{Features, Role, Usage};

/// The upstream name of a message role (OpenAI and Anthropic agree).
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// What answering `request` needs beyond plain text, as the host
/// computes it: `tools` for tools, a tool choice or tool calls and results
/// in the conversation; `json-mode` / `json-schema` for those response
/// formats; `logprobs` when asked for. A `seed` is best effort.
pub fn required_features(request: &CompletionRequest) -> Features {
    let mut needs = Features::empty();
    let tool_history = request
        .messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some());
    if !request.tools.is_empty() || request.tool_choice.is_some() || tool_history {
        needs |= Features::TOOLS;
    }
    match request.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => needs |= Features::JSON_MODE,
        ResponseFormat::JsonSchema(_) => needs |= Features::JSON_SCHEMA,
    }
    if request.logprobs || request.top_logprobs.is_some() {
        needs |= Features::LOGPROBS;
    }
    needs
}

/// Refuses, naming them, what `request` needs and a provider with
/// `supported` features cannot do, rather than silently dropping it. The
/// host routes such requests elsewhere; this guards direct calls
/// (`vel plugin run`) and mistakes.
pub fn require_features(
    request: &CompletionRequest,
    provider: &str,
    supported: Features,
) -> Result<(), ProviderError> {
    let missing = required_features(request) & !supported;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = [
        (Features::TOOLS, "tool calling"),
        (Features::JSON_MODE, "JSON mode (json-object)"),
        (Features::JSON_SCHEMA, "structured output (json-schema)"),
        (Features::LOGPROBS, "logprobs"),
    ]
    .iter()
    .filter(|(flag, _)| missing.contains(*flag))
    .map(|(_, name)| *name)
    .collect();
    Err(ProviderError::InvalidRequest(format!(
        "{provider} does not support {}",
        names.join(", ")
    )))
}

/// A rough token count (4 characters a token), used only when the upstream
/// does not report usage, e.g. when a stream was cancelled before its end.
pub fn estimate_usage(request: &CompletionRequest, output: &str) -> Usage {
    let tokens = |chars: usize| u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX);
    let input: usize = request
        .messages
        .iter()
        .map(|m| m.content.chars().count())
        .sum();
    Usage {
        input_tokens: tokens(input),
        output_tokens: tokens(output.chars().count()),
    }
}
