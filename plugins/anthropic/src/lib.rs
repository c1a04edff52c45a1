//! `anthropic`: a provider for Anthropic's Messages API.
//!
//! `POST {base-url}/v1/messages` (default base `https://api.anthropic.com`)
//! with `anthropic-version: 2023-06-01`; the host adds the key as
//! `x-api-key`. System messages go to the top-level `system` field; streams
//! are read event by event (see [`messages`]).
//!
//! Settings: `base-url`, `default-model` (default `claude-3-5-sonnet`),
//! `timeout-ms`, `max-tokens` (the API requires one; default 4096).
//!
//! Tools and tool calls map to `tool_use` / `tool_result` blocks, streamed
//! ones included; JSON output (`json-object`, `json-schema`), which the API
//! has no mode for, is a forced tool call whose input is the answer (see
//! [`messages`]). No logprobs; `seed` is dropped (best effort by
//! contract).

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod messages;

use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, Guest, ModelInfo, ProviderError,
    ProviderInfo,
};
use vel_guest_http::http::{self, Post};
use vel_guest_http::settings::Settings;
use vel_guest_http::sse;
use vel_guest_http::types::{Features, TaskType};

/// Anthropic's API, used when `base-url` is not set.
const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// Model used when neither the request nor `default-model` names one.
const DEFAULT_MODEL: &str = "claude-3-5-sonnet";
/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";
/// Largest non-streamed response body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Models and prices: id, US dollars per 1K tokens in and out, good for.
const MODELS: [(&str, f64, f64, &[TaskType]); 2] = [
    (
        "claude-3-5-sonnet",
        0.003,
        0.015,
        &[
            TaskType::Reasoning,
            TaskType::CodeGeneration,
            TaskType::General,
        ],
    ),
    (
        "claude-3-5-haiku",
        0.0008,
        0.004,
        &[TaskType::Light, TaskType::General],
    ),
];

/// What every model supports (see [`messages`] for how tools and JSON
/// output map to the Messages API).
const FEATURES: Features = Features::STREAMING
    .union(Features::TOOLS)
    .union(Features::JSON_MODE)
    .union(Features::JSON_SCHEMA);

/// The component's export.
struct Anthropic;

impl Guest for Anthropic {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: "anthropic".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Anthropic Claude through the Messages API".to_string(),
            models: MODELS
                .iter()
                .map(|(id, input, output, good_for)| ModelInfo {
                    id: id.to_string(),
                    input_price_per_1k: *input,
                    output_price_per_1k: *output,
                    context_window: 200_000,
                    good_for: good_for.to_vec(),
                    features: FEATURES,
                })
                .collect(),
            features: FEATURES,
            credential: Some(CredentialHeader {
                name: "x-api-key".to_string(),
                prefix: String::new(),
            }),
            base_url_setting: Some("base-url".to_string()),
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        vel_guest_http::require_features(&request, "anthropic", FEATURES)?;
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        let model = settings.model_for(&request.model).to_string();
        let mut response = send(
            &settings,
            &messages::request_body(&request, &model, &settings, false)?,
        )?;
        let body = response.read_to_end(MAX_BODY)?;
        messages::parse_response(&body, &request, &model)
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        vel_guest_http::require_features(&request, "anthropic", FEATURES)?;
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        let model = settings.model_for(&request.model).to_string();
        let mut response = send(
            &settings,
            &messages::request_body(&request, &model, &settings, true)?,
        )?;
        let mut parser = sse::Parser::new();
        let mut state = messages::StreamState::new(&request);
        let mut cancelled = false;
        'read: while !state.done {
            let events = match response.next_chunk()? {
                Some(chunk) => parser.feed(&chunk),
                None => match parser.finish() {
                    Some(last) => vec![last],
                    None => break,
                },
            };
            for event in events {
                let delta = state.on_event(&event)?;
                for piece in std::mem::take(&mut state.tool_call_deltas) {
                    if !vel_guest_http::stream::emit_tool_call(&piece) {
                        cancelled = true;
                        break 'read;
                    }
                }
                if let Some(delta) = delta
                    && !vel_guest_http::stream::emit(&delta)
                {
                    cancelled = true;
                    break 'read;
                }
            }
        }
        state.finish(cancelled, &request, &model)
    }
}

/// POSTs `body` to `{base-url}/v1/messages`.
fn send(settings: &Settings, body: &serde_json::Value) -> Result<http::Response, ProviderError> {
    let url = format!("{}/v1/messages", settings.base_url);
    let bytes = body.to_string().into_bytes();
    http::post(&Post {
        url: &url,
        headers: vec![
            ("content-type", "application/json"),
            ("anthropic-version", API_VERSION),
        ],
        body: &bytes,
        timeout: settings.timeout,
    })?
    .error_for_status()
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
vel_guest_http::export_provider!(Anthropic);
