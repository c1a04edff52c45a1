//! Hostile condition: returns far more data than the host accepts.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-oversized-output".to_string(),
            version: "0.1.0".to_string(),
            description: "Returns an explanation far larger than allowed".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let _ = input;
        Ok(Outcome {
            matched: true,
            branch: None,
            score: None,
            // 4 MiB: fits in memory, but far over any output limit.
            explanation: "x".repeat(4 << 20),
        })
    }
}

export!(Hostile);
