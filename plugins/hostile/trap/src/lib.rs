//! Hostile condition: executes `unreachable`, a plain WebAssembly trap.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-trap".to_string(),
            version: "0.1.0".to_string(),
            description: "Executes an unreachable instruction".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        if core::hint::black_box(input.output.len()) < usize::MAX {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_arch = "wasm32"))]
            std::process::abort();
        }
        Err(ConditionError::Other("not reached".to_string()))
    }
}

export!(Hostile);
