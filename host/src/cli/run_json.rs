//! The JSON `vel plugin run` and `vel plugin test` read and print: the
//! API's spelling (snake_case field names and enum values, e.g.
//! `"task_type": "code_generation"`), whatever spelling the input used.
//!
//! On input, field names and enum values may be written in snake_case,
//! kebab-case (the WIT's `code-generation`), camelCase or CamelCase (the
//! Rust bindings' `CodeGeneration`); they are turned into what the
//! generated bindings read. On output, a guest's answer is turned back into
//! snake_case, and its own error (`result<_, E>`'s `E`) into
//! `{"kind": "no_candidate", "message": "…"}`.

use serde_json::{Map, Value};

/// Fields whose values are WIT enums (a list of them for `good_for`).
const ENUM_FIELDS: [&str; 8] = [
    "role",
    "task_type",
    "priority",
    "prefer",
    "circuit",
    "finish_reason",
    "good_for",
    "level",
];

/// Fields that hold JSON documents of their own: left as they are.
const JSON_FIELDS: [&str; 3] = ["metadata", "state", "args"];

/// The lower-case words of an identifier in any of the usual spellings.
fn words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c == '_' || c == '-' || c == ' ' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// `code_generation` for `CodeGeneration`, `code-generation`, `codeGeneration`.
pub fn snake(name: &str) -> String {
    words(name).join("_")
}

/// `CodeGeneration` for `code_generation`, `code-generation`, `codeGeneration`.
pub fn camel(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// An input as the bindings read it: snake_case field names, CamelCase
/// enum values; JSON-typed fields untouched.
pub fn normalise_input(value: Value) -> Value {
    respell(value, camel)
}

/// A guest's answer in the API's spelling: snake_case field names and
/// enum values.
pub fn snake_output(value: Value) -> Value {
    respell(value, snake)
}

/// `value` with snake_case field names and its enum fields' values spelled
/// by `enum_case`; JSON-typed fields untouched.
fn respell(value: Value, enum_case: fn(&str) -> String) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| {
                    let key = snake(&key);
                    let v = if JSON_FIELDS.contains(&key.as_str()) {
                        v
                    } else if ENUM_FIELDS.contains(&key.as_str()) {
                        map_strings(v, enum_case)
                    } else {
                        respell(v, enum_case)
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| respell(v, enum_case)).collect())
        }
        other => other,
    }
}

/// A guest's own error (a WIT variant, serialised as `"Timeout"` or
/// `{"NoCandidate": "why"}`) as `{"kind": "no_candidate", "message":
/// "why"}`; a payload that is not text is `detail`.
pub fn guest_error(value: Value) -> Value {
    let mut out = Map::new();
    match value {
        Value::String(kind) => {
            out.insert("kind".into(), Value::String(snake(&kind)));
        }
        Value::Object(map) if map.len() == 1 => {
            let Some((kind, payload)) = map.into_iter().next() else {
                return Value::Object(out);
            };
            out.insert("kind".into(), Value::String(snake(&kind)));
            match payload {
                Value::String(message) => {
                    out.insert("message".into(), Value::String(message));
                }
                Value::Null => {}
                other => {
                    out.insert("detail".into(), snake_output(other));
                }
            }
        }
        other => {
            out.insert("kind".into(), Value::String("other".into()));
            out.insert("detail".into(), other);
        }
    }
    Value::Object(out)
}

/// `value` with `f` applied to its string (or its list's strings).
fn map_strings(value: Value, f: fn(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| map_strings(v, f)).collect()),
        other => other,
    }
}

/// Whether `actual` has everything `expected` has: objects may have more
/// fields, lists and scalars must be equal (numbers compare as numbers).
/// On a difference, the path to it.
pub fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, want) in e {
                let here = format!("{path}.{key}");
                match a.get(key) {
                    Some(got) => contains(got, want, &here)?,
                    None => return Err(format!("{here}: missing, expected {want}")),
                }
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!(
                    "{path}: {} items, expected {} ({expected})",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (got, want)) in a.iter().zip(e).enumerate() {
                contains(got, want, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(e)) if a.as_f64() == e.as_f64() => Ok(()),
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("{path}: got {a}, expected {e}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_spelling_reads_the_same() {
        for name in [
            "code_generation",
            "code-generation",
            "CodeGeneration",
            "codeGeneration",
        ] {
            assert_eq!(camel(name), "CodeGeneration", "{name}");
            assert_eq!(snake(name), "code_generation", "{name}");
        }
        assert_eq!(camel("half-open"), "HalfOpen");
        assert_eq!(snake("p50LatencyMs"), "p50_latency_ms");
    }

    #[test]
    fn inputs_are_normalised_and_json_fields_left_alone() {
        let input = json!({
            "task": { "taskType": "code-generation", "prefer": "cost",
                      "metadata": { "tenantTier": "Gold" } },
            "candidates": [{ "good-for": ["light", "code_generation"], "circuit": "half_open" }]
        });
        assert_eq!(
            normalise_input(input),
            json!({
                "task": { "task_type": "CodeGeneration", "prefer": "Cost",
                          "metadata": { "tenantTier": "Gold" } },
                "candidates": [{ "good_for": ["Light", "CodeGeneration"], "circuit": "HalfOpen" }]
            })
        );
    }

    #[test]
    fn outputs_and_errors_are_snake_case() {
        assert_eq!(
            snake_output(json!({ "finish_reason": "ContentFilter", "text": "Ok" })),
            json!({ "finish_reason": "content_filter", "text": "Ok" })
        );
        assert_eq!(
            guest_error(json!({ "NoCandidate": "none cheap" })),
            json!({ "kind": "no_candidate", "message": "none cheap" })
        );
        assert_eq!(guest_error(json!("Timeout")), json!({ "kind": "timeout" }));
        assert_eq!(
            guest_error(json!({ "RateLimited": 30 })),
            json!({ "kind": "rate_limited", "detail": 30 })
        );
    }

    #[test]
    fn expectations_are_subsets() {
        let actual =
            json!({ "result": { "attempts": [{ "provider": "a", "model": "m" }], "reason": "r" } });
        assert!(contains(&actual, &json!({ "result": { "reason": "r" } }), "$").is_ok());
        let err = contains(
            &actual,
            &json!({ "result": { "attempts": [{ "provider": "b" }] } }),
            "$",
        )
        .unwrap_err();
        assert!(err.contains("$.result.attempts[0].provider"), "{err}");
        assert!(contains(&json!(1.0), &json!(1), "$").is_ok());
    }
}
