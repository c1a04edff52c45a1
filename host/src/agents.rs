//! Agents' settings: the configuration an agent's tasks run with, its
//! checks, and which of the organization's integrations its provider names.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::orchestrator::sampling::Sampling;
use crate::plugins::manifest::is_plugin_name;
use crate::store::{self, integrations::Integration};
use crate::validation::{FieldErrors, Invalid, check_text};

/// An agent's configuration: the settings its tasks run with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The provider its tasks run on: the name of one of the organization's
    /// integrations, or a provider kind (`openai`, `groq`, …) that some of
    /// them have (lower-case slug).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub provider: String,
    /// Model name (≤ 128 chars).
    #[schema(max_length = 128, pattern = "\\S")]
    pub model: String,
    /// Sampling temperature, 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Output token cap, 1–1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_tokens: Option<u32>,
    /// System prompt (≤ 20,000 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 20_000)]
    pub system_prompt: Option<String>,
    /// Routing policy (router plugin name) for this agent's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub routing_policy: Option<String>,
}

impl AgentConfig {
    /// Record every bad field in `errors`, each named `config.…`; whether
    /// the provider exists is [`check_provider`]'s question.
    pub fn check(&self, errors: &mut FieldErrors) {
        errors.check(
            is_plugin_name(&self.provider),
            "config.provider",
            "must be a lower-case name (a-z, 0-9, -, _), at most 64 characters",
        );
        // The model is required here and kept to the stored configuration's
        // length; the other sampling parameters have the common ranges.
        check_text(errors, "config.model", &self.model, 128);
        Sampling {
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            ..Sampling::default()
        }
        .check("config.", errors);
        if let Some(sp) = &self.system_prompt {
            errors.check(
                sp.chars().count() <= 20_000,
                "config.system_prompt",
                "must be at most 20000 characters",
            );
        }
        if let Some(rp) = &self.routing_policy {
            errors.check(
                is_plugin_name(rp),
                "config.routing_policy",
                "must be a lower-case plugin name",
            );
        }
    }

    /// The configuration stored with an agent; `None` when it does not read
    /// as one.
    pub fn parse(stored: &str) -> Option<AgentConfig> {
        serde_json::from_str(stored).ok()
    }
}

/// Why a configuration cannot be saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range or names nothing.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The organization's integrations could not be read.
    #[error("could not read the integrations: {0}")]
    Storage(#[from] sqlx::Error),
}

/// Refuse a `config.provider` that none of the organization's integrations
/// (enabled or disabled) answers to (see [`named_by`]).
pub async fn check_provider(
    conn: &mut AnyConnection,
    org_id: &str,
    provider: &str,
) -> Result<(), ConfigError> {
    let integrations = store::integrations::list(conn, org_id).await?;
    if named_by(&integrations, provider, |i| i).is_empty() {
        return Err(Invalid::field(
            "config.provider",
            format!(
                "no integration of this organization is named `{provider}` or has provider \
                 `{provider}`; create one first"
            ),
        )
        .into());
    }
    Ok(())
}

/// The items whose integration an agent's `provider` names: the one called
/// `provider`, else, in their order, those whose provider kind is
/// `provider`.
pub fn named_by<'a, T>(
    items: &'a [T],
    provider: &str,
    integration: impl Fn(&T) -> &Integration,
) -> Vec<&'a T> {
    if let Some(named) = items.iter().find(|t| integration(t).name == provider) {
        return vec![named];
    }
    items
        .iter()
        .filter(|t| integration(t).provider == provider)
        .collect()
}
