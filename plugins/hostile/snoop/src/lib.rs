//! Hostile condition: tries to read files, list directories, write a file,
//! and read the environment and arguments. It reports what it managed;
//! the sandbox grants nothing, so `matched` must come back false.

wit_bindgen::generate!({ path: "../../../wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Hostile;

impl Guest for Hostile {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: "hostile-snoop".to_string(),
            version: "0.1.0".to_string(),
            description: "Tries to read files, environment variables and arguments".to_string(),
            args_schema: "{}".to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let _ = input;
        let mut leaked = false;
        let mut report = Vec::new();
        for path in ["/etc/passwd", "/proc/self/environ", ".", "/"] {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    leaked = true;
                    report.push(format!("read {path}: {} bytes", text.len()));
                }
                Err(err) => report.push(format!("read {path}: denied ({err})")),
            }
            if let Ok(entries) = std::fs::read_dir(path) {
                leaked = true;
                report.push(format!("listed {path}: {} entries", entries.count()));
            }
        }
        match std::fs::write("/tmp/vel-hostile-snoop", b"pwned") {
            Ok(()) => {
                leaked = true;
                report.push("wrote /tmp/vel-hostile-snoop".to_string());
            }
            Err(err) => report.push(format!("write: denied ({err})")),
        }
        let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        if vars.is_empty() {
            report.push("environment: empty".to_string());
        } else {
            leaked = true;
            report.push(format!("environment: {}", vars.join(",")));
        }
        let args: Vec<String> = std::env::args().collect();
        if args.is_empty() {
            report.push("arguments: empty".to_string());
        } else {
            leaked = true;
            report.push(format!("arguments: {}", args.join(" ")));
        }
        Ok(Outcome {
            matched: leaked,
            branch: None,
            score: None,
            explanation: report.join("; "),
        })
    }
}

export!(Hostile);
