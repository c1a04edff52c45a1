//! What every condition plugin does the same way: read its `args` (a JSON
//! object) into a typed struct, with an error that names the field at
//! fault (`value: invalid type: string "x", expected f64`), so a workflow
//! author sees what to fix. The caller turns the message into its world's
//! `condition-error::invalid-args`.
//!
//! The condition helper crate: the built-in conditions use it, and plugin
//! authors depend on it by path or git from outside vel's workspace
//! (`vel-guest-condition = { path = "../vel/plugins/guest-condition" }`).

use serde::de::DeserializeOwned;

/// Why a condition's arguments were refused: `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(pub String);

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

/// Parse `args` (a JSON object) into `T`.
pub fn parse_args<T: DeserializeOwned>(args: &str) -> Result<T, ArgsError> {
    let value: serde_json::Value =
        serde_json::from_str(args).map_err(|e| ArgsError(format!("args: not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ArgsError("args: must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "args".to_string()
        } else {
            path
        };
        ArgsError(format!("{field}: {}", e.inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        value: f64,
        #[serde(default)]
        pointer: String,
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        let bad = parse_args::<Args>(r#"{"value": "x"}"#).unwrap_err();
        assert!(bad.0.starts_with("value: invalid type"), "{bad}");
        let missing = parse_args::<Args>("{}").unwrap_err();
        assert!(
            missing.0.starts_with("args: missing field `value`"),
            "{missing}"
        );
        assert_eq!(
            parse_args::<Args>("[1]").unwrap_err().0,
            "args: must be a JSON object"
        );
        assert!(
            parse_args::<Args>("{")
                .unwrap_err()
                .0
                .starts_with("args: not valid JSON")
        );
        assert_eq!(parse_args::<Args>(r#"{"value": 2}"#).unwrap().value, 2.0);
    }
}
