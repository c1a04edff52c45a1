//! Operational settings: log format, audit retention, browser access
//! (CORS) and HTTPS-only headers.

use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, FileConfig, Sources};

/// Operational settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    /// How logs are written to stderr (`VEL_LOG_FORMAT`: `text`, the
    /// default, or `json`, one object per line).
    pub log_format: LogFormat,
    /// Audit entries older than this many days are deleted
    /// (`VEL_AUDIT_RETENTION_DAYS`, default 90; 0 keeps them forever).
    pub audit_retention_days: u32,
    /// How often the audit retention job runs
    /// (`VEL_AUDIT_RETENTION_INTERVAL_MS`, default one hour).
    pub audit_retention_interval: Duration,
    /// Origins a browser may call the API from (`VEL_CORS_ALLOWED_ORIGINS`,
    /// comma-separated, such as `https://app.example.com`, or `*` for any;
    /// default none: no CORS headers, so browsers refuse cross-origin calls).
    pub cors_allowed_origins: CorsOrigins,
    /// The deployment is reached over HTTPS only (`VEL_HTTPS`, default
    /// false): responses carry `Strict-Transport-Security`.
    pub https: bool,
}

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".into()),
        }
    }
}

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// None (no CORS headers at all).
    #[default]
    None,
    /// Any origin (`*`).
    Any,
    /// These exact origins (`scheme://host[:port]`, lower case).
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if items == ["*"] {
            return Ok(CorsOrigins::Any);
        }
        items
            .into_iter()
            .map(|origin| {
                let lower = origin.to_ascii_lowercase();
                let (scheme, host) = lower
                    .split_once("://")
                    .ok_or_else(|| format!("{origin}: expected scheme://host[:port]"))?;
                let valid_host = !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
                if !matches!(scheme, "http" | "https") || !valid_host {
                    return Err(format!(
                        "{origin}: expected scheme://host[:port] (http or https, no path), or * alone"
                    ));
                }
                Ok(lower)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorsOrigins::List)
    }
}

/// Longest interval accepted between audit retention passes: a day.
const MAX_RETENTION_INTERVAL_MS: u64 = 86_400_000;

/// Read the operational settings.
pub(super) fn load(src: &Sources<'_>, file: &FileConfig) -> Result<Operations, ConfigError> {
    let parse_file = |key: &str, raw: &Option<String>| -> Result<Option<_>, ConfigError> {
        raw.as_deref()
            .map(|s| super::parse_file::<CorsOrigins>(key, s))
            .transpose()
    };
    let interval_ms = src.get(
        "VEL_AUDIT_RETENTION_INTERVAL_MS",
        file.audit_retention_interval_ms,
        3_600_000,
    )?;
    if !(100..=MAX_RETENTION_INTERVAL_MS).contains(&interval_ms) {
        return Err(ConfigError::Invalid {
            name: "VEL_AUDIT_RETENTION_INTERVAL_MS".into(),
            value: interval_ms.to_string(),
            reason: format!("must be 100–{MAX_RETENTION_INTERVAL_MS}"),
        });
    }
    Ok(Operations {
        log_format: src.get(
            "VEL_LOG_FORMAT",
            file.log_format
                .as_deref()
                .map(|s| super::parse_file::<LogFormat>("log_format", s))
                .transpose()?,
            LogFormat::Text,
        )?,
        audit_retention_days: src.get("VEL_AUDIT_RETENTION_DAYS", file.audit_retention_days, 90)?,
        audit_retention_interval: Duration::from_millis(interval_ms),
        cors_allowed_origins: src.get(
            "VEL_CORS_ALLOWED_ORIGINS",
            parse_file("cors_allowed_origins", &file.cors_allowed_origins)?,
            CorsOrigins::None,
        )?,
        https: src.get("VEL_HTTPS", file.https, false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse() {
        assert_eq!("".parse::<CorsOrigins>().unwrap(), CorsOrigins::None);
        assert_eq!(" * ".parse::<CorsOrigins>().unwrap(), CorsOrigins::Any);
        assert_eq!(
            "https://App.example.com, http://localhost:3000"
                .parse::<CorsOrigins>()
                .unwrap(),
            CorsOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        for bad in [
            "app.example.com",
            "https://a.example/path",
            "ftp://a.example",
            "*,https://a.example",
        ] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad}");
        }
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
