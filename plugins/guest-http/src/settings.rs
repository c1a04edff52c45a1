//! A provider's settings, read from the `config` import.

use crate::completion::ProviderError;
use std::time::Duration;

/// The settings every HTTP provider understands.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Upstream base URL without a trailing slash (`base-url`).
    pub base_url: String,
    /// Model used when the request names none (`default-model`).
    pub default_model: String,
    /// Timeout for connecting, the first byte and between bytes (`timeout-ms`).
    pub timeout: Option<Duration>,
    /// Completion token limit used when the request sets none (`max-tokens`).
    pub max_tokens: Option<u32>,
}

impl Settings {
    /// Reads the settings from the host's `config` import.
    pub fn from_config(default_base_url: &str, default_model: &str) -> Result<Self, ProviderError> {
        Self::from_lookup(crate::config::get, default_base_url, default_model)
    }

    /// Reads the settings through `get`, with defaults for what is unset.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_base_url: &str,
        default_model: &str,
    ) -> Result<Self, ProviderError> {
        let non_empty = |key: &str| {
            get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let base_url = non_empty("base-url").unwrap_or_else(|| default_base_url.to_string());
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ProviderError::InvalidRequest(format!(
                "setting base-url: {base_url:?} must start with http:// or https://"
            )));
        }
        let number = |key: &str| -> Result<Option<u32>, ProviderError> {
            non_empty(key)
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        ProviderError::InvalidRequest(format!(
                            "setting {key}: {v:?} is not a whole number"
                        ))
                    })
                })
                .transpose()
        };
        Ok(Settings {
            base_url: base_url.trim_end_matches('/').to_string(),
            default_model: non_empty("default-model").unwrap_or_else(|| default_model.to_string()),
            timeout: number("timeout-ms")?.map(|ms| Duration::from_millis(u64::from(ms))),
            max_tokens: number("max-tokens")?,
        })
    }

    /// The request's model, or the default when it names none.
    pub fn model_for<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.trim().is_empty() {
            &self.default_model
        } else {
            requested
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_lookup(lookup(&[]), "https://api.openai.com/v1", "gpt-4o").unwrap();
        assert_eq!(s.base_url, "https://api.openai.com/v1");
        assert_eq!(s.model_for(""), "gpt-4o");
        assert_eq!(s.model_for("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(s.timeout, None);
        let s = Settings::from_lookup(
            lookup(&[
                ("base-url", "http://127.0.0.1:9/v1/"),
                ("timeout-ms", "1500"),
                ("default-model", "m"),
            ]),
            "https://x",
            "gpt-4o",
        )
        .unwrap();
        assert_eq!(s.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(s.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.default_model, "m");
    }

    #[test]
    fn bad_settings_are_invalid_requests() {
        let e =
            Settings::from_lookup(lookup(&[("timeout-ms", "soon")]), "https://x", "m").unwrap_err();
        assert!(matches!(e, ProviderError::InvalidRequest(m) if m.contains("timeout-ms")));
        let e = Settings::from_lookup(lookup(&[("base-url", "ftp://x")]), "https://x", "m")
            .unwrap_err();
        assert!(matches!(e, ProviderError::InvalidRequest(m) if m.contains("base-url")));
    }
}
