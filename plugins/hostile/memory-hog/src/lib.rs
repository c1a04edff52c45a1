//! Hostile condition: grows its memory until the host says no.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-memory-hog".to_string(),
            version: "0.1.0".to_string(),
            description: "Allocates memory without end".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let _ = input;
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            let chunk = vec![0x5a_u8; 1 << 20];
            hoard.push(core::hint::black_box(chunk));
        }
    }
}

export!(Hostile);
