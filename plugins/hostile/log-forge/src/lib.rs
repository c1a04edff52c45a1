//! Hostile condition: logs its input's `output` text verbatim, through the
//! `log` import (at error level) and through stdout. A text with newlines
//! and carriage returns tries to forge records in the server's log.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-log-forge".to_string(),
            version: "0.1.0".to_string(),
            description: "Logs text that tries to forge log records".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        vel::plugins::log::log(vel::plugins::log::Level::Error, &input.output);
        println!("{}", input.output);
        Ok(Outcome {
            matched: true,
            branch: None,
            score: None,
            explanation: "logged".to_string(),
        })
    }
}

export!(Hostile);
