//! Sampling parameters: how a model is asked to answer (model, temperature,
//! completion token cap, stop sequences) and what the router should favour,
//! with the one set of range checks every caller applies: the task API
//! (`parameters.…`), an agent's configuration (`config.…`) and the gateway
//! (top-level fields).

use crate::validation::FieldErrors;

/// Longest `model`, in bytes.
pub const MAX_MODEL_BYTES: usize = 200;
/// Largest completion token cap.
pub const MAX_TOKENS: u32 = 1_000_000;
/// Most stop sequences.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 200;

/// Parameters a caller sets on one unit of work; absent ones are left to
/// the agent's settings, then to the provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// `model` or `integration/model`; `None` lets the router choose.
    pub model: Option<String>,
    /// Sampling temperature, 0–2.
    pub temperature: Option<f64>,
    /// Completion token cap, 1–[`MAX_TOKENS`].
    pub max_tokens: Option<u32>,
    /// Up to [`MAX_STOP_SEQUENCES`] stop sequences.
    pub stop: Option<Vec<String>>,
    /// `balanced`, `cost` or `latency`.
    pub prefer: Option<String>,
}

impl Sampling {
    /// Record every out-of-range parameter in `errors`, each named
    /// `{prefix}{parameter}` (`parameters.temperature`, `config.temperature`,
    /// `temperature`).
    pub fn check(&self, prefix: &str, errors: &mut FieldErrors) {
        let field = |name: &str| format!("{prefix}{name}");
        if let Some(model) = &self.model {
            errors.check(
                !model.trim().is_empty() && model.len() <= MAX_MODEL_BYTES,
                &field("model"),
                "must be 1–200 characters",
            );
        }
        if let Some(t) = self.temperature {
            errors.check(
                (0.0..=2.0).contains(&t),
                &field("temperature"),
                "must be between 0 and 2",
            );
        }
        if let Some(m) = self.max_tokens {
            check_max_tokens(errors, &field("max_tokens"), m);
        }
        if let Some(stop) = &self.stop {
            errors.check(
                stop.len() <= MAX_STOP_SEQUENCES
                    && stop
                        .iter()
                        .all(|s| !s.is_empty() && s.len() <= MAX_STOP_BYTES),
                &field("stop"),
                "at most 4 non-empty sequences of at most 200 characters",
            );
        }
        if let Some(prefer) = &self.prefer {
            errors.check(
                matches!(prefer.as_str(), "balanced" | "cost" | "latency"),
                &field("prefer"),
                "must be balanced, cost or latency",
            );
        }
    }
}

/// The range of a completion token cap, for a field that holds one under
/// another name (the gateway's `max_completion_tokens`).
pub fn check_max_tokens(errors: &mut FieldErrors, field: &str, value: u32) {
    errors.check(
        (1..=MAX_TOKENS).contains(&value),
        field,
        "must be between 1 and 1000000",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Invalid;

    fn fields(prefix: &str, s: &Sampling) -> Vec<String> {
        let mut errors = FieldErrors::new();
        s.check(prefix, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(Invalid(map)) => map.into_keys().collect(),
        }
    }

    #[test]
    fn every_bad_parameter_is_named_under_the_prefix() {
        let bad = Sampling {
            model: Some(" ".into()),
            temperature: Some(2.5),
            max_tokens: Some(0),
            stop: Some(vec![String::new()]),
            prefer: Some("speed".into()),
        };
        assert_eq!(
            fields("parameters.", &bad),
            [
                "parameters.max_tokens",
                "parameters.model",
                "parameters.prefer",
                "parameters.stop",
                "parameters.temperature"
            ]
        );
        assert_eq!(fields("", &bad)[0], "max_tokens");
    }

    #[test]
    fn the_bounds_are_inclusive() {
        let ok = Sampling {
            model: Some("m".repeat(MAX_MODEL_BYTES)),
            temperature: Some(2.0),
            max_tokens: Some(MAX_TOKENS),
            stop: Some(vec!["s".repeat(MAX_STOP_BYTES); MAX_STOP_SEQUENCES]),
            prefer: Some("cost".into()),
        };
        assert!(fields("config.", &ok).is_empty());
        assert!(fields("config.", &Sampling::default()).is_empty());
    }
}
