//! Agents' settings: the configuration an agent's tasks run with, its
//! checks, and which of the organization's integrations its provider names.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::orchestrator::request::AgentTools;
use crate::orchestrator::sampling::Sampling;
use crate::orchestrator::tool_loop::{DEFAULT_MAX_TOOL_ROUNDS, MAX_TOOL_ROUNDS};
use crate::orchestrator::tools::is_tool_server;
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
    /// Tool servers whose tools the agent's model may call: names of the
    /// organization's `mcp` or `taskmaster` integrations (at most 16, no
    /// repeats). Its tasks then run a bounded tool loop (see
    /// [`crate::orchestrator::tool_loop`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub tools: Vec<String>,
    /// Most rounds of tool calls in one task, 1–32 (default 8): a model
    /// that still asks for tools after them fails the task with
    /// `tool_rounds_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 32)]
    pub max_tool_rounds: Option<u32>,
}

impl AgentConfig {
    /// Record every bad field in `errors`, each named `config.…`; whether
    /// the provider and tools exist is [`check_references`]'s question.
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
        errors.check(
            self.tools.len() <= MAX_AGENT_TOOL_SERVERS,
            "config.tools",
            "must name at most 16 integrations",
        );
        for (i, name) in self.tools.iter().enumerate() {
            errors.check(
                !self.tools[..i].contains(name),
                &format!("config.tools[{i}]"),
                "names an integration already listed",
            );
        }
        if let Some(rounds) = self.max_tool_rounds {
            errors.check(
                (1..=MAX_TOOL_ROUNDS).contains(&rounds),
                "config.max_tool_rounds",
                "must be between 1 and 32",
            );
        }
    }

    /// The tool servers its tasks may call and their round limit, when it
    /// lists any.
    pub fn agent_tools(&self) -> Option<AgentTools> {
        (!self.tools.is_empty()).then(|| AgentTools {
            integrations: self.tools.clone(),
            max_rounds: self.max_tool_rounds.unwrap_or(DEFAULT_MAX_TOOL_ROUNDS),
        })
    }

    /// The configuration stored with an agent; `None` when it does not read
    /// as one.
    pub fn parse(stored: &str) -> Option<AgentConfig> {
        serde_json::from_str(stored).ok()
    }
}

/// Most tool servers one agent lists.
pub const MAX_AGENT_TOOL_SERVERS: usize = 16;

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
/// (enabled or disabled) answers to (see [`named_by`]), and a
/// `config.tools` entry that is not one of its tool-server (`mcp`,
/// `taskmaster`) integrations.
pub async fn check_references(
    conn: &mut AnyConnection,
    org_id: &str,
    config: &AgentConfig,
) -> Result<(), ConfigError> {
    let integrations = store::integrations::list(conn, org_id).await?;
    let provider = &config.provider;
    let mut errors = FieldErrors::new();
    if named_by(&integrations, provider, |i| i).is_empty() {
        errors.add(
            "config.provider",
            &format!(
                "no integration of this organization is named `{provider}` or has provider \
                 `{provider}`; create one first"
            ),
        );
    }
    for (i, name) in config.tools.iter().enumerate() {
        let field = format!("config.tools[{i}]");
        match integrations.iter().find(|g| &g.name == name) {
            None => errors.add(
                &field,
                &format!("no integration of this organization is named `{name}`"),
            ),
            Some(g) if !is_tool_server(&g.provider) => errors.add(
                &field,
                &format!(
                    "integration `{name}` is a {} integration, not a tool server (mcp or \
                     taskmaster)",
                    g.provider
                ),
            ),
            Some(_) => {}
        }
    }
    errors.finish()?;
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
