//! The pure matching logic, free of bindings calls so it runs in native tests.

use crate::exports::vel::plugins::evaluation::{ConditionError, ConditionInput, Outcome};
use serde::Deserialize;

/// JSON Schema of the arguments, returned by `info()`.
pub const ARGS_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["pattern"],
  "additionalProperties": false,
  "properties": {
    "mode": {"enum": ["contains", "equals", "regex", "starts_with", "ends_with"], "default": "contains"},
    "pattern": {"type": "string"},
    "case_sensitive": {"type": "boolean", "default": false},
    "target": {"type": "string", "default": "output", "description": "\"output\", or a JSON pointer (\"/a/b\") into the workflow state"}
  }
}"#;

/// How the pattern is compared with the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Contains,
    Equals,
    Regex,
    StartsWith,
    EndsWith,
}

/// The condition's arguments as the workflow author wrote them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    mode: Option<Mode>,
    pattern: Option<String>,
    #[serde(default)]
    case_sensitive: bool,
    #[serde(default)]
    target: Option<String>,
}

/// Judge `input` according to its arguments.
pub fn evaluate(input: &ConditionInput) -> Result<Outcome, ConditionError> {
    let args: Args = parse_args(&input.args)?;
    let pattern = args.pattern.ok_or_else(|| {
        ConditionError::InvalidArgs("pattern: missing (a string is required)".into())
    })?;
    let mode = args.mode.unwrap_or(Mode::Contains);
    let target = args.target.unwrap_or_else(|| "output".to_string());
    let text = target_text(input, &target)?;

    let matched = match mode {
        Mode::Regex => {
            let re = regex::RegexBuilder::new(&pattern)
                .case_insensitive(!args.case_sensitive)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ConditionError::InvalidArgs(format!("pattern: invalid regex: {e}")))?;
            re.is_match(&text)
        }
        _ => {
            let (text, pattern) = if args.case_sensitive {
                (text.clone(), pattern.clone())
            } else {
                (text.to_lowercase(), pattern.to_lowercase())
            };
            match mode {
                Mode::Contains => text.contains(&pattern),
                Mode::Equals => text == pattern,
                Mode::StartsWith => text.starts_with(&pattern),
                Mode::EndsWith => text.ends_with(&pattern),
                Mode::Regex => unreachable!("handled above"),
            }
        }
    };

    let case = if args.case_sensitive {
        "case-sensitive"
    } else {
        "case-insensitive"
    };
    let verb = if matched { "matches" } else { "does not match" };
    Ok(Outcome {
        matched,
        branch: Some(if matched { "matched" } else { "not_matched" }.to_string()),
        score: Some(if matched { 1.0 } else { 0.0 }),
        explanation: format!("{target} {verb} {} {pattern:?} ({case})", mode_name(mode)),
    })
}

/// The text the pattern is compared with: the output, or a value in the state.
fn target_text(input: &ConditionInput, target: &str) -> Result<String, ConditionError> {
    if target == "output" {
        return Ok(input.output.clone());
    }
    if !target.starts_with('/') {
        return Err(ConditionError::InvalidArgs(format!(
            "target: {target:?} is neither \"output\" nor a JSON pointer starting with '/'"
        )));
    }
    let state: serde_json::Value = serde_json::from_str(&input.state)
        .map_err(|e| ConditionError::Other(format!("state is not valid JSON: {e}")))?;
    match state.pointer(target) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(ConditionError::Other(format!(
            "state has no value at {target}"
        ))),
    }
}

/// The mode's name as written in the arguments.
fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Contains => "contains",
        Mode::Equals => "equals",
        Mode::Regex => "regex",
        Mode::StartsWith => "starts_with",
        Mode::EndsWith => "ends_with",
    }
}

/// Parses the arguments; the error names the field at fault (`value: invalid type…`).
fn parse_args<T: serde::de::DeserializeOwned>(args: &str) -> Result<T, ConditionError> {
    vel_guest_condition::parse_args(args).map_err(|e| ConditionError::InvalidArgs(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(output: &str, state: &str, args: &str) -> ConditionInput {
        ConditionInput {
            output: output.to_string(),
            state: state.to_string(),
            args: args.to_string(),
        }
    }

    fn eval(output: &str, args: &str) -> Result<Outcome, ConditionError> {
        evaluate(&input(output, "{}", args))
    }

    #[test]
    fn contains_is_case_insensitive_by_default() {
        let out = eval("The build PASSED", r#"{"pattern": "passed"}"#).unwrap();
        assert!(out.matched);
        assert_eq!(out.branch.as_deref(), Some("matched"));
        let out = eval(
            "The build PASSED",
            r#"{"pattern": "passed", "case_sensitive": true}"#,
        )
        .unwrap();
        assert!(!out.matched);
    }

    #[test]
    fn every_mode() {
        let cases = [
            ("equals", "hello world", "Hello World", true),
            ("equals", "hello world", "hello", false),
            ("starts_with", "hello world", "HELLO", true),
            ("ends_with", "hello world", "world", true),
            ("ends_with", "hello world", "hello", false),
            ("regex", "order #4521 shipped", r"#\d+ shipped$", true),
            ("regex", "order shipped", r"#\d+", false),
        ];
        for (mode, text, pattern, want) in cases {
            let args = serde_json::json!({"mode": mode, "pattern": pattern}).to_string();
            assert_eq!(eval(text, &args).unwrap().matched, want, "{mode} {pattern}");
        }
    }

    #[test]
    fn target_pointer_into_state() {
        let i = input(
            "ignored",
            r#"{"review": {"verdict": "Approved"}, "n": 42}"#,
            r#"{"mode": "equals", "pattern": "approved", "target": "/review/verdict"}"#,
        );
        assert!(evaluate(&i).unwrap().matched);
        let i = input(
            "",
            r#"{"n": 42}"#,
            r#"{"mode": "equals", "pattern": "42", "target": "/n"}"#,
        );
        assert!(evaluate(&i).unwrap().matched);
        let i = input("", "{}", r#"{"pattern": "x", "target": "/missing"}"#);
        assert!(matches!(evaluate(&i), Err(ConditionError::Other(m)) if m.contains("/missing")));
    }

    #[test]
    fn invalid_args_name_the_field() {
        let err = |args: &str| match eval("x", args) {
            Err(ConditionError::InvalidArgs(m)) => m,
            other => panic!("expected invalid-args for {args}, got {other:?}"),
        };
        assert!(err("{}").contains("pattern"));
        assert!(err(r#"{"pattern": "(", "mode": "regex"}"#).contains("pattern"));
        assert!(err(r#"{"pattern": "x", "mode": "fuzzy"}"#).contains("fuzzy"));
        assert!(err(r#"{"pattern": "x", "target": "state"}"#).contains("target"));
        assert!(err(r#"{"pattern": 3}"#).contains("string"));
        assert!(err("[1]").contains("args"));
    }
}
