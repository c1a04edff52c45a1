//! What an organization can call: its active integrations, each with the
//! provider plugin that talks to it and the models that plugin declares
//! (with their prices). The catalog turns into the router's candidates and
//! resolves the router's plan back into integrations to call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vel_runtime::types::{Candidate, ModelInfo, TaskType};
use vel_runtime::{Limits, PluginInfo, ProviderCall, Secret};

use super::cost::Prices;
use super::dispatch::StreamFailover;
use super::observed::Observed;
use crate::budgets::Budget;
use crate::plugins::Plugins;
use crate::plugins::registry::{Deployed, Owner};
use crate::secrets::MasterKey;
use crate::store::{self, Db, integrations::Integration};

/// One integration the organization can call.
#[derive(Debug, Clone)]
pub struct Target {
    /// The stored integration (its key still sealed).
    pub integration: Integration,
    /// The provider plugin version serving it.
    pub deployed: Arc<Deployed>,
    /// Models offered: the plugin's, plus the integration's default model
    /// when the plugin does not list it (priced at zero: unknown).
    pub models: Vec<ModelInfo>,
}

impl Target {
    /// The declared prices of `model` in nano-dollars (zero when the plugin
    /// does not list it).
    pub fn prices(&self, model: &str) -> Prices {
        self.deployed.prices.get(model).unwrap_or_default()
    }
}

/// The organization's callable integrations.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// In the organization's creation order.
    pub targets: Vec<Target>,
    /// The organization's routing policy (router plugin), if it set one.
    pub routing_policy: Option<String>,
    /// The organization's budgets: those that apply to a call limit it.
    pub budgets: Vec<Arc<Budget>>,
    /// The organization's stream failover mode, if it set one (a request's
    /// `X-Vel-Stream-Failover` wins over it).
    pub stream_failover: Option<StreamFailover>,
}

impl Catalog {
    /// Reads the organization's active integrations and pairs each with its
    /// live provider plugin (the organization's own, else the platform's);
    /// integrations whose plugin is missing, disabled or not a provider are
    /// left out (their tests say why).
    pub async fn load(db: &Db, plugins: &Plugins, org_id: &str) -> Result<Catalog, sqlx::Error> {
        let mut tx = db.tenant_read(org_id).await?;
        let rows = store::integrations::list(&mut tx, org_id).await?;
        let settings = store::organizations::dispatch_settings(&mut tx, org_id).await?;
        let budgets = store::budgets::list(&mut tx, org_id).await?;
        tx.commit().await?;
        let targets = rows
            .into_iter()
            .filter(|i| i.status == "active")
            .filter_map(|integration| {
                let deployed = plugins.lookup(org_id, &integration.plugin)?;
                let PluginInfo::Provider(info) = deployed.plugin.info() else {
                    return None;
                };
                let mut models = info.models.clone();
                if let Some(default) = &integration.default_model
                    && !models.iter().any(|m| &m.id == default)
                {
                    models.push(ModelInfo {
                        id: default.clone(),
                        input_price_per_1k: 0.0,
                        output_price_per_1k: 0.0,
                        context_window: 0,
                        good_for: Vec::new(),
                        features: info.features,
                    });
                }
                Some(Target {
                    integration,
                    deployed,
                    models,
                })
            })
            .collect();
        Ok(Catalog {
            targets,
            routing_policy: settings.routing_policy,
            budgets: budgets.into_iter().map(Arc::new).collect(),
            stream_failover: settings.stream_failover,
        })
    }

    /// Every (integration, model) pair as a router candidate, with the live
    /// circuit and figures. With `only`, just those integrations' models.
    pub fn candidates(
        &self,
        observed: &Observed,
        only: Option<&[&str]>,
        remaining_budget: Option<f64>,
    ) -> Vec<Candidate> {
        let now = Instant::now();
        self.targets
            .iter()
            .filter(|t| only.is_none_or(|names| names.contains(&t.integration.name.as_str())))
            .flat_map(|t| {
                t.models.iter().map(move |m| {
                    let circuit = observed.circuit(&t.integration.id, &m.id, now);
                    let figures = observed.figures(&t.integration.id, &m.id);
                    Candidate {
                        provider: t.integration.name.clone(),
                        model: m.id.clone(),
                        input_price_per_1k: m.input_price_per_1k,
                        output_price_per_1k: m.output_price_per_1k,
                        good_for: m.good_for.clone(),
                        circuit,
                        p50_latency_ms: figures.p50_ms,
                        p95_latency_ms: figures.p95_ms,
                        error_rate: figures.error_rate,
                        remaining_budget,
                        features: m.features,
                    }
                })
            })
            .collect()
    }

    /// The integration called `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.integration.name == name)
    }

    /// True when some integration offers `model`.
    pub fn offers(&self, model: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t.models.iter().any(|m| m.id == model))
    }
}

/// Why an integration cannot be called as configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallSetupError {
    /// The base URL is not an http(s) URL with a host.
    #[error("base URL {0:?} has no host")]
    InvalidBaseUrl(String),
    /// The sealed key does not open with this server's master key.
    #[error("the stored key cannot be decrypted (was VEL_SECRET_KEY changed?); set the key again")]
    CredentialUnreadable,
    /// An organization's own provider may reach only the hosts a platform
    /// admin approved, and the base URL's host is not one of them.
    #[error(
        "the plugin may not connect to {0}: not among its approved outbound hosts (list `{0}` in \
         the manifest's [outbound] hosts, publish it and have a platform admin approve it; a host \
         without a port allows only 443 and 80)"
    )]
    HostNotApproved(String),
}

impl CallSetupError {
    /// The error kind clients see.
    pub fn kind(&self) -> &'static str {
        match self {
            CallSetupError::InvalidBaseUrl(_) => "invalid_base_url",
            CallSetupError::CredentialUnreadable => "credential_unreadable",
            CallSetupError::HostNotApproved(_) => "host_not_approved",
        }
    }
}

/// Extra wall-clock time the sandbox allows beyond an integration's own
/// timeout.
pub const WALL_TIME_MARGIN: Duration = Duration::from_secs(1);

/// What a call to an integration carries besides the request.
#[derive(Debug)]
pub struct CallSetup {
    /// `base-url`, `default-model` and `timeout-ms`.
    pub settings: Vec<(String, String)>,
    /// The base URL's host.
    pub allowed_hosts: Vec<String>,
    /// The decrypted key. The host adds it to outbound requests and uses it
    /// to scrub error messages; it never enters the guest.
    pub key: Option<String>,
}

impl CallSetup {
    /// The runtime's view of the call.
    pub fn into_call(self) -> ProviderCall {
        ProviderCall {
            settings: self.settings,
            secret: self.key.map(Secret::new),
            allowed_hosts: self.allowed_hosts,
            allow_base_url_host: false,
            deltas: None,
        }
    }

    /// `text` with every occurrence of the key replaced by `***` (an
    /// upstream may echo the key it refused).
    pub fn scrub(&self, text: &str) -> String {
        scrub_secret(self.key.as_deref(), text)
    }
}

/// `text` with every occurrence of `secret` replaced by `***`.
pub fn scrub_secret(secret: Option<&str>, text: &str) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && text.contains(secret) => text.replace(secret, "***"),
        _ => text.to_string(),
    }
}

/// The settings, allowed hosts and credential of a call to `integration`
/// through `deployed`: a platform plugin may reach its declared hosts and
/// the base URL's host (the tenant configured it); an organization's own
/// plugin only its approved hosts. The key is decrypted here.
pub fn call_setup(
    integration: &Integration,
    deployed: &Deployed,
    keys: &MasterKey,
) -> Result<CallSetup, CallSetupError> {
    let mut settings = Vec::new();
    let mut allowed_hosts = deployed.outbound_hosts.clone();
    if let Some(url) = &integration.base_url {
        let (https, host, port) =
            origin(url).ok_or_else(|| CallSetupError::InvalidBaseUrl(url.clone()))?;
        let allowed = allowed_hosts
            .iter()
            .any(|entry| vel_runtime::host_allows(entry, https, &host, port));
        if !allowed {
            let host = format!("{host}:{port}");
            if deployed.owner != Owner::Platform {
                return Err(CallSetupError::HostNotApproved(host));
            }
            allowed_hosts.push(host);
        }
        settings.push(("base-url".to_string(), url.clone()));
    }
    if let Some(m) = &integration.default_model {
        settings.push(("default-model".to_string(), m.clone()));
    }
    settings.push(("timeout-ms".to_string(), integration.timeout_ms.to_string()));
    let key = match &integration.key_ciphertext {
        Some(sealed) => match keys.decrypt(sealed, &integration.id) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(integration_id = %integration.id, error = %e, "integration key cannot be decrypted");
                return Err(CallSetupError::CredentialUnreadable);
            }
        },
        None => None,
    };
    Ok(CallSetup {
        settings,
        allowed_hosts,
        key,
    })
}

/// The limits of a call to `integration` through `deployed`: the
/// version's own, with the sandbox's wall time bounded by the integration's
/// timeout plus [`WALL_TIME_MARGIN`], so the plugin's own timeout (a typed
/// `timeout`) fires first.
pub fn provider_limits(deployed: &Deployed, integration: &Integration) -> Limits {
    let mut limits = deployed.limits.clone();
    limits.wall_time = limits
        .wall_time
        .min(timeout(integration) + WALL_TIME_MARGIN);
    limits
}

/// The integration's own timeout.
pub fn timeout(integration: &Integration) -> Duration {
    Duration::from_millis(u64::try_from(integration.timeout_ms).unwrap_or(0))
}

/// Whether `url` is https, and its lower-case host and port (the scheme's
/// default when it names none).
fn origin(url: &str) -> Option<(bool, String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let https = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((https, host, port))
}

/// A task type's name in the API and the database.
pub fn task_type_name(t: TaskType) -> &'static str {
    match t {
        TaskType::Reasoning => "reasoning",
        TaskType::CodeGeneration => "code_generation",
        TaskType::Research => "research",
        TaskType::Light => "light",
        TaskType::General => "general",
    }
}

/// The task type called `name` in the API.
pub fn parse_task_type(name: &str) -> Option<TaskType> {
    [
        TaskType::Reasoning,
        TaskType::CodeGeneration,
        TaskType::Research,
        TaskType::Light,
        TaskType::General,
    ]
    .into_iter()
    .find(|t| task_type_name(*t) == name)
}

#[cfg(test)]
mod tests {
    use super::{origin, scrub_secret};

    #[test]
    fn origins_of_base_urls() {
        assert_eq!(
            origin("https://API.openai.com/v1"),
            Some((true, "api.openai.com".into(), 443))
        );
        assert_eq!(
            origin("http://127.0.0.1:4000/v1"),
            Some((false, "127.0.0.1".into(), 4000))
        );
        assert_eq!(origin("not a url"), None);
        assert_eq!(origin("ftp://x.y/"), None);
    }

    #[test]
    fn secrets_are_scrubbed() {
        assert_eq!(scrub_secret(Some("sk-1"), "bad key sk-1!"), "bad key ***!");
        assert_eq!(scrub_secret(None, "bad key sk-1"), "bad key sk-1");
        assert_eq!(scrub_secret(Some(""), "x"), "x");
    }
}
