//! Hostile condition: unbounded recursion. The host must report a stack
//! overflow and keep serving.

/// Recurses forever; the addition after the call keeps it from becoming a loop.
fn recurse(n: u64) -> u64 {
    if core::hint::black_box(n) == u64::MAX {
        return 0;
    }
    recurse(n + 1).wrapping_add(core::hint::black_box(n))
}

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-deep-recursion".to_string(),
            version: "0.1.0".to_string(),
            description: "Recurses until the stack runs out".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let depth = recurse(core::hint::black_box(input.output.len() as u64));
        Ok(Outcome {
            matched: depth > 0,
            branch: None,
            score: None,
            explanation: format!("recursed {depth} times"),
        })
    }
}

export!(Hostile);
