//! `shout`: a test-only provider that the registry's end-to-end tests
//! upload to a running server (it is not a built-in).
//!
//! It answers the last user message in capitals, prefixed with its own
//! version (`[shout 1.0.0] HELLO`), so a test can tell which uploaded
//! version served a task. The `v2` cargo feature builds version 2.0.0 of
//! the same plugin. It makes no network calls.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod shout;

// Built against the frozen 0.1.0 contract on purpose: the registry's
// tests then prove the host still serves 0.1.0 components (through its
// adapter) next to 0.2.0 ones such as the built-in `mock`.
wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "provider",
});

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, FinishReason, Guest, ProviderError, ProviderInfo,
};

/// The component's export.
struct Shout;

impl Guest for Shout {
    fn info() -> ProviderInfo {
        shout::info()
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let answer = shout::answer(&request)?;
        Ok(answer.response(answer.full_text(), FinishReason::Stop))
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let answer = shout::answer(&request)?;
        let mut sent = String::new();
        for delta in answer.deltas() {
            sent.push_str(&delta);
            if !vel::plugins::stream::emit(&delta) {
                return Ok(answer.response(sent, FinishReason::Cancelled));
            }
        }
        Ok(answer.response(sent, FinishReason::Stop))
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(Shout);
