//! Hostile condition: logs without end (the `log` import, or stdout when
//! its arguments contain "stdout"). The host must cap the volume.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-log-flood".to_string(),
            version: "0.1.0".to_string(),
            description: "Logs without end, through the log import or stdout".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        if input.args.contains("stdout") {
            let mut n: u64 = 0;
            loop {
                println!("flooding stdout, line {n}");
                n += 1;
            }
        }
        let mut n: u64 = 0;
        loop {
            vel::plugins::log::log(
                vel::plugins::log::Level::Info,
                &format!("flooding the log, line {n}"),
            );
            n += 1;
        }
    }
}

export!(Hostile);
