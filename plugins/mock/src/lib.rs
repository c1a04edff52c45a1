//! `mock`: an offline, deterministic provider for the quick start and tests.
//!
//! Models (all answer `echo: <last user message>` when they succeed):
//! - `echo`: answers at once.
//! - `slow`: sleeps `delay-ms` (request metadata, default 2000) first; its
//!   stream then sends one word every `word-delay-ms` (default 20).
//! - `flaky`: fails with `unavailable` on odd attempts and succeeds on even
//!   ones. Instances keep no state between calls, so "every other call" is
//!   keyed on the `attempt` number the host passes in the request metadata
//!   (default 1, so a call without it fails).
//! - `error`: always fails with `other`.
//! - `rate-limited`: always fails with `rate-limited(1000)`.
//! - `tools`: the only model that calls tools. Offered tools, it calls the
//!   named one (`tool-choice`), else the one the `tool` metadata names
//!   (exactly, or the end of a namespaced `integration__tool` name), else
//!   the first, with the `tool-arguments` metadata as arguments, else
//!   arguments built from the tool's JSON Schema and the last user message
//!   (strings get the message, numbers its word count, booleans `true`),
//!   finish reason `tool-calls` (with the `tool-preamble` metadata as its
//!   text, else none); once `tool-rounds` (metadata, default 1)
//!   turns after the last user message called tools it answers
//!   `tool said: <results>` (every tool result since, in order). Other
//!   models refuse tools.
//!
//! - `embed` (embeddings): one vector per input, of 8 dimensions (or the
//!   request's `dimensions`, at most 256): each word (or token) adds to
//!   the component its hash picks, then the vector is scaled to length 1,
//!   so the same text always gives the same vector and texts sharing
//!   words point the same way.
//!
//! Every model answers JSON for the `json-object` format (`{"echo": …}`)
//! and an instance of the schema for `json-schema`, and per-word logprobs
//! when asked.
//!
//! Token usage counts whitespace-separated words; prices are tiny but not
//! zero so that cost arithmetic shows up in tests.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod embeddings;
mod models;

wit_bindgen::generate!({
    path: "../../wit",
    world: "embedding-provider",
});

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, FinishReason, Guest, ProviderError, ProviderInfo,
};
use vel::plugins::stream::ToolCallDelta;

/// The component's export.
struct Mock;

impl Guest for Mock {
    fn info() -> ProviderInfo {
        models::info()
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let answer = models::answer(&request)?;
        std::thread::sleep(answer.delay);
        Ok(answer.into_response(FinishReason::Stop))
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let mut answer = models::answer(&request)?;
        std::thread::sleep(answer.delay);
        // The text first, word by word, then the tool calls as OpenAI
        // streams them: the id and name first, then the arguments in two
        // pieces.
        let full = std::mem::take(&mut answer.text);
        let mut sent = String::new();
        if !full.is_empty() {
            for (i, word) in full.split(' ').enumerate() {
                let delta = if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                };
                if i > 0 {
                    std::thread::sleep(answer.word_delay);
                }
                sent.push_str(&delta);
                if !vel::plugins::stream::emit(&delta) {
                    answer.text = sent;
                    answer.tool_calls.clear();
                    return Ok(answer.into_response(FinishReason::Cancelled));
                }
            }
        }
        answer.text = sent;
        let calls = answer.tool_calls.clone();
        for (i, call) in calls.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let half = call.arguments.len() / 2;
            let half = (0..=half)
                .rev()
                .find(|n| call.arguments.is_char_boundary(*n))
                .unwrap_or(0);
            let (a, b) = call.arguments.split_at(half);
            let pieces = [
                ToolCallDelta {
                    index,
                    id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                    arguments: String::new(),
                },
                ToolCallDelta {
                    index,
                    id: None,
                    name: None,
                    arguments: a.to_string(),
                },
                ToolCallDelta {
                    index,
                    id: None,
                    name: None,
                    arguments: b.to_string(),
                },
            ];
            for piece in &pieces {
                if !vel::plugins::stream::emit_tool_call(piece) {
                    return Ok(answer.into_response(FinishReason::Cancelled));
                }
            }
        }
        Ok(answer.into_response(FinishReason::Stop))
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(Mock);
