//! Hostile condition: exits with status 7 (`wasi:cli/exit.exit-with-code`)
//! instead of answering. The host
//! must report the exit, with its status, as the call's error.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-exit-code".to_string(),
            version: "0.1.0".to_string(),
            description: "Exits with status 7".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let _ = input;
        wasip2::cli::exit::exit_with_code(7);
        unreachable!("exit-with-code returned")
    }
}

export!(Hostile);
