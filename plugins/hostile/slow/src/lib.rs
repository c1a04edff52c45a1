//! Hostile condition: sleeps for an hour. The host must stop it at its
//! wall-clock limit without blocking other calls.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-slow".to_string(),
            version: "0.1.0".to_string(),
            description: "Sleeps past the wall-clock limit".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let _ = input;
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Ok(Outcome {
            matched: true,
            branch: None,
            score: None,
            explanation: "woke up".to_string(),
        })
    }
}

export!(Hostile);
