//! `threshold`: a vel condition that compares a number with a value.
//!
//! Arguments (JSON): `{"source": "output"|"state", "pointer": "/a/b",
//! "op": "gt"|"gte"|"lt"|"lte"|"eq"|"ne", "value": 0.8}`. With `source:
//! "output"` the output is parsed as JSON first (a bare number works, with
//! the pointer left empty). The number found is the outcome's score.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod compare;

wit_bindgen::generate!({
    path: "../../wit",
    world: "condition",
});

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

/// The component's export.
struct Threshold;

impl Guest for Threshold {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "threshold".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Compares a number in the output or state with a value".to_string(),
            args_schema: compare::ARGS_SCHEMA.to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        compare::evaluate(&input)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(Threshold);
