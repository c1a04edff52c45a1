//! The pure comparison logic, free of bindings calls so it runs in native tests.

use crate::exports::vel::plugins::evaluation::{ConditionError, ConditionInput, Outcome};
use serde::Deserialize;
use serde_json::Value;

/// JSON Schema of the arguments, returned by `info()`.
pub const ARGS_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["op", "value"],
  "additionalProperties": false,
  "properties": {
    "source": {"enum": ["output", "state"], "default": "output"},
    "pointer": {"type": "string", "default": "", "description": "JSON pointer, e.g. /scores/quality; empty for the whole document"},
    "op": {"enum": ["gt", "gte", "lt", "lte", "eq", "ne"]},
    "value": {"type": "number"}
  }
}"#;

/// Where the number is read from.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    #[default]
    Output,
    State,
}

/// How the number is compared with `value`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Ne,
}

/// The condition's arguments as the workflow author wrote them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    source: Source,
    #[serde(default)]
    pointer: String,
    op: Op,
    value: f64,
}

/// Judge `input` according to its arguments.
pub fn evaluate(input: &ConditionInput) -> Result<Outcome, ConditionError> {
    let args: Args = parse_args(&input.args)?;
    if !args.pointer.is_empty() && !args.pointer.starts_with('/') {
        return Err(ConditionError::InvalidArgs(format!(
            "pointer: {:?} is not a JSON pointer (it must be empty or start with '/')",
            args.pointer
        )));
    }
    let (name, document) = match args.source {
        Source::Output => ("output", &input.output),
        Source::State => ("state", &input.state),
    };
    let document: Value = serde_json::from_str(document.trim())
        .map_err(|e| ConditionError::Other(format!("the {name} is not valid JSON: {e}")))?;
    let found = document.pointer(&args.pointer).ok_or_else(|| {
        ConditionError::Other(format!("the {name} has no value at {:?}", args.pointer))
    })?;
    let number = found.as_f64().ok_or_else(|| {
        ConditionError::Other(format!(
            "the value at {:?} in the {name} is {}, not a number",
            args.pointer,
            kind_of(found)
        ))
    })?;

    let matched = compare(number, args.op, args.value);
    let verb = if matched { "holds" } else { "does not hold" };
    Ok(Outcome {
        matched,
        branch: None,
        score: Some(number),
        explanation: format!(
            "{name}{} = {number}: {number} {} {} {verb}",
            args.pointer,
            op_symbol(args.op),
            args.value
        ),
    })
}

/// Parses the arguments; the error names the field at fault (`value: invalid type…`).
fn parse_args<T: serde::de::DeserializeOwned>(args: &str) -> Result<T, ConditionError> {
    vel_guest_condition::parse_args(args).map_err(|e| ConditionError::InvalidArgs(e.0))
}

/// Float comparison; `eq`/`ne` allow a relative error of 1e-9 so that values
/// that went through text and back still compare equal.
fn compare(x: f64, op: Op, y: f64) -> bool {
    let close = (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    match op {
        Op::Gt => x > y,
        Op::Gte => x >= y || close,
        Op::Lt => x < y,
        Op::Lte => x <= y || close,
        Op::Eq => close,
        Op::Ne => !close,
    }
}

fn op_symbol(op: Op) -> &'static str {
    match op {
        Op::Gt => ">",
        Op::Gte => ">=",
        Op::Lt => "<",
        Op::Lte => "<=",
        Op::Eq => "==",
        Op::Ne => "!=",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(output: &str, state: &str, args: &str) -> Result<Outcome, ConditionError> {
        evaluate(&ConditionInput {
            output: output.into(),
            state: state.into(),
            args: args.into(),
        })
    }

    #[test]
    fn reads_output_and_state() {
        let out = eval(
            r#"{"quality": {"score": 0.91}}"#,
            "{}",
            r#"{"pointer": "/quality/score", "op": "gte", "value": 0.8}"#,
        )
        .unwrap();
        assert!(out.matched);
        assert_eq!(out.score, Some(0.91));
        let out = eval(
            "",
            r#"{"retries": 3}"#,
            r#"{"source": "state", "pointer": "/retries", "op": "lt", "value": 3}"#,
        )
        .unwrap();
        assert!(!out.matched);
        let out = eval(" 42\n", "{}", r#"{"op": "eq", "value": 42}"#).unwrap();
        assert!(out.matched, "a bare number with an empty pointer");
    }

    #[test]
    fn every_op() {
        let cases = [
            ("gt", 2.0, true),
            ("gt", 3.0, false),
            ("gte", 3.0, true),
            ("lt", 4.0, true),
            ("lte", 3.0, true),
            ("lte", 2.9, false),
            ("eq", 3.0, true),
            ("ne", 3.0, false),
            ("ne", 3.5, true),
        ];
        for (op, value, want) in cases {
            let args = serde_json::json!({"op": op, "value": value}).to_string();
            assert_eq!(
                eval("3", "{}", &args).unwrap().matched,
                want,
                "3 {op} {value}"
            );
        }
        assert!(compare(0.1 + 0.2, Op::Eq, 0.3));
    }

    #[test]
    fn errors_are_clear() {
        let invalid = |args: &str| match eval("1", "{}", args) {
            Err(ConditionError::InvalidArgs(m)) => m,
            other => panic!("{args}: {other:?}"),
        };
        assert!(invalid(r#"{"value": 1}"#).contains("op"));
        assert!(invalid(r#"{"op": "gt"}"#).contains("value"));
        assert!(invalid(r#"{"op": "about", "value": 1}"#).contains("about"));
        assert!(invalid(r#"{"op": "gt", "value": "high"}"#).starts_with("value:"));
        assert!(invalid(r#"{"op": "gt", "value": 1, "pointer": "a"}"#).contains("pointer"));
        let other = |output: &str, args: &str| match eval(output, "{}", args) {
            Err(ConditionError::Other(m)) => m,
            res => panic!("{output} {args}: {res:?}"),
        };
        assert!(other("not json", r#"{"op": "gt", "value": 1}"#).contains("not valid JSON"));
        assert!(
            other(
                r#"{"a": "x"}"#,
                r#"{"pointer": "/a", "op": "gt", "value": 1}"#
            )
            .contains("a string, not a number")
        );
        assert!(other("{}", r#"{"pointer": "/b", "op": "gt", "value": 1}"#).contains("no value"));
    }
}
