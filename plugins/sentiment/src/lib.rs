//! `sentiment`: a vel condition that scores the output's sentiment.
//!
//! A small built-in lexicon, negation aware ("not good" counts as negative)
//! and with intensifiers ("very good"). The score is in [-1, 1]; the branch
//! is `positive`, `negative` or `neutral`. Optional arguments (JSON):
//! `{"threshold": 0.2, "expect": "positive"|"negative"|"neutral"}`.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod lexicon;
mod score;

wit_bindgen::generate!({
    path: "../../wit",
    world: "condition",
});

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

/// The component's export.
struct Sentiment;

impl Guest for Sentiment {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "sentiment".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Lexicon-based sentiment score (-1..1) and label".to_string(),
            args_schema: score::ARGS_SCHEMA.to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        score::evaluate(&input)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(Sentiment);
