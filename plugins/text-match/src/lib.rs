//! `text-match`: a vel condition that checks text against a pattern.
//!
//! Arguments (JSON): `{"mode": "contains"|"equals"|"regex"|"starts_with"|"ends_with",
//! "pattern": "...", "case_sensitive": false, "target": "output" | "/json/pointer"}`.
//! The logic lives in [`matcher`]; this file only wires it to the WIT world.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod matcher;

wit_bindgen::generate!({
    path: "../../wit",
    world: "condition",
});

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

/// The component's export.
struct TextMatch;

impl Guest for TextMatch {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "text-match".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Checks the output (or a state value) against a text pattern".to_string(),
            args_schema: matcher::ARGS_SCHEMA.to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        matcher::evaluate(&input)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(TextMatch);
