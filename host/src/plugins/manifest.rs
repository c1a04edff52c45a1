//! A plugin's manifest (`vel-plugin.toml`): what the registry must know
//! before it stores a component — name, version, kind, the outbound hosts a
//! provider needs, the limits it asks for and the schema of its settings —
//! and the checks that hold it to the component and to the operator's
//! maxima.

use std::time::Duration;

use serde::Deserialize;
use vel_runtime::{Limits, Plugin, PluginKind};

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase slug: letters, digits and `-`.
    pub name: String,
    /// Semantic version; must be what the component's `info()` says.
    pub version: String,
    /// `provider`, `router` or `condition`: the world it implements.
    pub kind: String,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Where a provider may connect.
    #[serde(default)]
    pub outbound: Outbound,
    /// Limits it asks for, each at most the operator's maximum.
    #[serde(default)]
    pub limits: RequestedLimits,
    /// JSON schema of the plugin's settings (written as a TOML table).
    #[serde(default)]
    pub config_schema: Option<toml::Table>,
    /// What the host may rely on a provider's upstream to do.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The plugin class it runs in (e.g. `python`), one the operator
    /// configured: its limits, code size and upload size replace the
    /// defaults. Absent: the default limits.
    #[serde(default)]
    pub class: Option<String>,
}

/// The `[capabilities]` section (providers only): behaviour of the
/// upstream API the host relies on. Every entry defaults to `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// The upstream continues a conversation that ends with an assistant
    /// message: its answer is the rest of that message (Anthropic's
    /// Messages API does; OpenAI's chat completions do not). A stream that
    /// continues after its provider failed (`X-Vel-Stream-Failover:
    /// continue`) then gets the text already sent as that trailing
    /// assistant message; without it, as context followed by a user
    /// message asking to continue without repeating.
    #[serde(default)]
    pub assistant_prefill: bool,
}

/// The `[outbound]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// `host` or `host:port` entries.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// The `[limits]` section: every field optional; a missing one gets the
/// operator's value for the plugin's kind and profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Linear memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Instruction budget.
    pub fuel: Option<u64>,
    /// CPU time, ms.
    pub cpu_time: Option<u64>,
    /// Wall-clock time, ms.
    pub wall_time: Option<u64>,
    /// Input size, bytes.
    pub max_input_bytes: Option<u64>,
    /// Output size, bytes.
    pub max_output_bytes: Option<u64>,
    /// Log volume, bytes.
    pub max_log_bytes: Option<u64>,
    /// Streamed deltas per call.
    pub max_deltas: Option<u64>,
    /// Calls running at once.
    pub max_concurrency: Option<u64>,
}

/// Why a manifest was refused. Each is a 400 naming the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML or not the manifest's shape.
    #[error("the manifest is not valid: {0}")]
    Invalid(String),
    /// A field's value is not acceptable.
    #[error("manifest field `{field}`: {message}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// A requested limit exceeds the operator's maximum.
    #[error("manifest limit `{limit}` = {requested} is above the maximum {maximum}")]
    LimitAboveMaximum {
        /// Which limit.
        limit: &'static str,
        /// What the manifest asks for.
        requested: u64,
        /// What the operator allows.
        maximum: u64,
    },
    /// The component says something else than the manifest.
    #[error("the manifest does not match the component: {0}")]
    Mismatch(String),
}

impl ManifestError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Invalid(_) | ManifestError::Field { .. } => "invalid_manifest",
            ManifestError::LimitAboveMaximum { .. } => "limits_above_maximum",
            ManifestError::Mismatch(_) => "manifest_mismatch",
        }
    }
}

impl Manifest {
    /// Parse and check a manifest's own fields.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Invalid(e.message().to_string()))?;
        if !is_plugin_name(&manifest.name) {
            return Err(ManifestError::Field {
                field: "name",
                message: format!("must be 1–{MAX_NAME_LEN} lowercase letters, digits, `-` and `_`"),
            });
        }
        if semver::Version::parse(&manifest.version).is_err() {
            return Err(ManifestError::Field {
                field: "version",
                message: format!("{:?} is not a semantic version", manifest.version),
            });
        }
        manifest.plugin_kind()?;
        if manifest.description.chars().count() > 1000 {
            return Err(ManifestError::Field {
                field: "description",
                message: "at most 1000 characters".into(),
            });
        }
        if !manifest.outbound.hosts.is_empty()
            && !matches!(
                manifest.plugin_kind()?,
                PluginKind::Provider | PluginKind::Tool
            )
        {
            return Err(ManifestError::Field {
                field: "outbound.hosts",
                message: "only provider and tool plugins make outbound requests".into(),
            });
        }
        if manifest.capabilities != Capabilities::default()
            && manifest.plugin_kind()? != PluginKind::Provider
        {
            return Err(ManifestError::Field {
                field: "capabilities",
                message: "only provider plugins declare capabilities".into(),
            });
        }
        if let Some(class) = &manifest.class
            && !is_plugin_name(class)
        {
            return Err(ManifestError::Field {
                field: "class",
                message: format!(
                    "{class:?} is not a class name (lowercase letters, digits, `-`, `_`)"
                ),
            });
        }
        for host in &manifest.outbound.hosts {
            if !is_host(host) {
                return Err(ManifestError::Field {
                    field: "outbound.hosts",
                    message: format!("{host:?} is not a host or host:port"),
                });
            }
        }
        Ok(manifest)
    }

    /// The declared kind.
    pub fn plugin_kind(&self) -> Result<PluginKind, ManifestError> {
        self.kind.parse().map_err(|_| ManifestError::Field {
            field: "kind",
            message: format!(
                "{:?} is not one of provider, router, condition, tool",
                self.kind
            ),
        })
    }

    /// The settings schema as JSON.
    pub fn config_schema_json(&self) -> Option<serde_json::Value> {
        self.config_schema
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
    }

    /// The limits calls of this plugin run under: what it asks for, else
    /// `maxima` (the operator's limits for its kind and profile). Asking
    /// for more than a maximum is refused.
    pub fn effective_limits(&self, maxima: &Limits) -> Result<Limits, ManifestError> {
        let r = &self.limits;
        let pick = |limit: &'static str, requested: Option<u64>, maximum: u64| match requested {
            Some(v) if v > maximum => Err(ManifestError::LimitAboveMaximum {
                limit,
                requested: v,
                maximum,
            }),
            Some(0) => Err(ManifestError::Field {
                field: "limits",
                message: format!("`{limit}` must be above zero"),
            }),
            Some(v) => Ok(v),
            None => Ok(maximum),
        };
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let fuel = match (r.fuel, maxima.fuel) {
            (requested, Some(max)) => Some(pick("fuel", requested, max)?),
            // Unmetered by the operator: a plugin may still ask to be metered.
            (requested, None) => requested,
        };
        Ok(Limits {
            memory_bytes: pick("memory_bytes", r.memory_bytes, maxima.memory_bytes)?,
            fuel,
            cpu_time: Duration::from_millis(pick("cpu_time", r.cpu_time, millis(maxima.cpu_time))?),
            wall_time: Duration::from_millis(pick(
                "wall_time",
                r.wall_time,
                millis(maxima.wall_time),
            )?),
            max_input_bytes: pick("max_input_bytes", r.max_input_bytes, maxima.max_input_bytes)?,
            max_output_bytes: pick(
                "max_output_bytes",
                r.max_output_bytes,
                maxima.max_output_bytes,
            )?,
            max_log_bytes: pick("max_log_bytes", r.max_log_bytes, maxima.max_log_bytes)?,
            max_deltas: pick("max_deltas", r.max_deltas, maxima.max_deltas)?,
            max_concurrency: pick("max_concurrency", r.max_concurrency, maxima.max_concurrency)?,
            share: maxima.share.clone(),
        })
    }

    /// The component must be what the manifest says: same kind (world),
    /// name and version.
    pub fn check_against(&self, plugin: &Plugin) -> Result<(), ManifestError> {
        let kind = self.plugin_kind()?;
        if plugin.kind() != kind {
            return Err(ManifestError::Mismatch(format!(
                "the manifest says {kind} but the component implements the {} world",
                plugin.kind()
            )));
        }
        if plugin.name() != self.name {
            return Err(ManifestError::Mismatch(format!(
                "the manifest says name {:?} but info() says {:?}",
                self.name,
                plugin.name()
            )));
        }
        if plugin.version() != self.version {
            return Err(ManifestError::Mismatch(format!(
                "the manifest says version {:?} but info() says {:?}",
                self.version,
                plugin.version()
            )));
        }
        Ok(())
    }
}

/// A plugin name: a lowercase slug (letters, digits, `-`, `_`) starting
/// with a letter or digit. Integrations and policies name plugins by it.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The host of a `host` or `host:port` entry.
pub fn host_of(entry: &str) -> &str {
    entry.rsplit_once(':').map_or(entry, |(host, _)| host)
}

/// `host` or `host:port`, as the outbound allowlist compares them.
fn is_host(entry: &str) -> bool {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (entry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maxima() -> Limits {
        vel_runtime::KindLimits::tenant().router
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(
            r#"
            name = "acme-router"
            version = "1.2.0"
            kind = "router"
            description = "Acme's policy"
            [limits]
            fuel = 1000
            wall_time = 100
            [config_schema]
            type = "object"
            "#,
        )
        .unwrap();
        assert_eq!(m.plugin_kind().unwrap(), PluginKind::Router);
        let limits = m.effective_limits(&maxima()).unwrap();
        assert_eq!(limits.fuel, Some(1000));
        assert_eq!(limits.wall_time, Duration::from_millis(100));
        assert_eq!(limits.memory_bytes, maxima().memory_bytes);
        assert_eq!(m.config_schema_json().unwrap()["type"], "object");
    }

    #[test]
    fn refuses_bad_fields_and_limits_above_the_maxima() {
        let bad = |text: &str| Manifest::parse(text).unwrap_err();
        assert_eq!(
            bad("name = \"x\"\nversion = \"1\"\nkind = \"router\"").code(),
            "invalid_manifest"
        );
        assert_eq!(
            bad("name = \"X\"\nversion = \"1.0.0\"\nkind = \"router\"").code(),
            "invalid_manifest"
        );
        assert_eq!(
            bad("name = \"x\"\nversion = \"1.0.0\"\nkind = \"robot\"").code(),
            "invalid_manifest"
        );
        assert_eq!(
            bad("name = \"x\"\nversion = \"1.0.0\"\nkind = \"router\"\nextra = 1").code(),
            "invalid_manifest"
        );
        assert_eq!(
            bad("name = \"x\"\nversion = \"1.0.0\"\nkind = \"router\"\n[outbound]\nhosts = [\"a.b\"]")
                .code(),
            "invalid_manifest"
        );
        assert_eq!(
            bad("name = \"x\"\nversion = \"1.0.0\"\nkind = \"provider\"\n[outbound]\nhosts = [\"http://a.b\"]")
                .code(),
            "invalid_manifest"
        );
        let m = Manifest::parse(
            "name = \"x\"\nversion = \"1.0.0\"\nkind = \"router\"\n[limits]\nmemory_bytes = 999999999999",
        )
        .unwrap();
        let err = m.effective_limits(&maxima()).unwrap_err();
        assert_eq!(err.code(), "limits_above_maximum");
        assert!(err.to_string().contains("memory_bytes"), "{err}");
    }

    #[test]
    fn providers_declare_assistant_prefill() {
        let provider = "name = \"x\"\nversion = \"1.0.0\"\nkind = \"provider\"\n";
        let m = Manifest::parse(provider).unwrap();
        assert!(!m.capabilities.assistant_prefill);
        let m = Manifest::parse(&format!(
            "{provider}[capabilities]\nassistant_prefill = true"
        ))
        .unwrap();
        assert!(m.capabilities.assistant_prefill);
        let unknown = Manifest::parse(&format!("{provider}[capabilities]\nteleport = true"));
        assert_eq!(unknown.unwrap_err().code(), "invalid_manifest");
        let router = Manifest::parse(
            "name = \"x\"\nversion = \"1.0.0\"\nkind = \"router\"\n[capabilities]\nassistant_prefill = true",
        );
        assert_eq!(router.unwrap_err().code(), "invalid_manifest");
    }

    #[test]
    fn hosts_may_carry_a_port() {
        assert!(is_host("api.example.com"));
        assert!(is_host("127.0.0.1:8080"));
        assert!(!is_host("a.b:0"));
        assert!(!is_host("a/b"));
        assert!(!is_host(""));
    }
}
