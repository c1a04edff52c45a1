//! Checks of input field by field: every problem is collected under the
//! name of the field it is about, then reported at once as [`Invalid`].

use std::collections::BTreeMap;

/// Collects field errors; [`FieldErrors::finish`] fails with all of them.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// Start empty.
    pub fn new() -> FieldErrors {
        FieldErrors::default()
    }

    /// Record `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.add(field, message);
        }
    }

    /// Record `message` for `field`.
    pub fn add(&mut self, field: &str, message: &str) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.to_string());
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }
}

/// Trim, and reject empty or over-long text.
pub fn check_text(errors: &mut FieldErrors, field: &str, value: &str, max_chars: usize) {
    let n = value.trim().chars().count();
    if n == 0 {
        errors.add(field, "must not be empty");
    } else if value.chars().count() > max_chars {
        errors.add(field, &format!("must be at most {max_chars} characters"));
    }
}

/// Refuse a destination host about to be stored (a base URL's, a plugin
/// manifest's outbound host) when it names a restricted address (loopback,
/// private, link-local, …) the operator has not allowed
/// (`VEL_OUTBOUND_ALLOW_PRIVATE`). Names that resolve to such addresses are
/// refused when a connection is made.
pub fn check_destination(
    errors: &mut FieldErrors,
    field: &str,
    host: &str,
    allow: &vel_runtime::AllowPrivate,
) {
    if let Some(kind) = allow.refused_host(host) {
        errors.add(
            field,
            &format!(
                "`{host}` is a {kind} address: outbound requests may not go there (destination address not allowed)"
            ),
        );
    }
}

/// Input refused: messages by field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fields: {}", self.0.keys().map(String::as_str).collect::<Vec<_>>().join(", "))]
pub struct Invalid(pub BTreeMap<String, Vec<String>>);

impl Invalid {
    /// One message about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Invalid {
        Invalid(BTreeMap::from([(field.to_string(), vec![message.into()])]))
    }
}
