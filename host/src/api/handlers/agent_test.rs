//! `POST /api/agents/{id}/test`: a dry run of an agent. The agent's
//! provider is resolved to one of the organization's integrations and sent
//! a short sample prompt (with the agent's system prompt, model and
//! sampling settings) through that integration's plugin, exactly as the
//! integration test does. The answer reports connectivity, tokens, the cost
//! at the plugin's declared prices, latency, and a cheaper or faster
//! alternative among the organization's integrations when there is one.
//! It is stored on the agent as its last test. As with the integration
//! test, a provider, plugin or configuration failure is the test's answer
//! (200 with `ok: false` and a typed error), not a server error.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;
use utoipa::ToSchema;
use vel_runtime::PluginInfo;
use vel_runtime::types::{Message, Role as MessageRole, TaskType};

use crate::agents::{AgentConfig, named_by};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiPath, ClientInfo};
use crate::api::handlers::connectivity::{PreparedCall, prepare};
use crate::audit;
use crate::auth::Principal;
use crate::money::{Money, Usd};
use crate::orchestrator::cost::Prices;
use crate::plugins::probe::{self, Prompt, TestError, TestOutcome};
use crate::state::AppState;
use crate::store::{self, integrations::Integration, now_ms, to_rfc3339};

/// The user message of every dry run: short, so it costs next to nothing,
/// yet it shows how the agent's system prompt shapes an answer.
pub const SAMPLE_PROMPT: &str = "In one short sentence, say what you can help with.";
/// Completion tokens a dry run asks for at most (lower when the agent's
/// `max_tokens` is lower).
pub const SAMPLE_MAX_TOKENS: u32 = 64;
/// Characters of the answer kept in the result.
const SAMPLE_OUTPUT_CHARS: usize = 500;
/// The offline provider plugin: its canned answers do no real work, so it is
/// never suggested to an agent on another plugin.
const OFFLINE_PLUGIN: &str = "mock";

/// Another integration and model the agent could use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alternative {
    /// Integration name (what `config.provider` would be set to).
    pub provider: String,
    /// That integration's id.
    pub integration_id: String,
    /// Model.
    pub model: String,
    /// Cost of the same token counts at this model's declared prices, in
    /// US dollars (null when its plugin declares no price for it).
    #[schema(value_type = Option<f64>)]
    pub estimated_cost_usd: Option<Usd>,
    /// For a faster alternative: the latency of that integration's last
    /// successful test, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// What the organization could use instead.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestion {
    /// The cheapest model (of any active integration's plugin) that is good
    /// for a task type the agent's model is good for and costs less than the
    /// agent's for the same token counts, or null. The offline `mock`
    /// provider is only suggested to agents already on it.
    pub cheaper: Option<Alternative>,
    /// The integration whose last successful test answered faster than this
    /// dry run, or null (always null when the dry run failed).
    pub faster: Option<Alternative>,
    /// The suggestion in words.
    pub message: String,
}

/// The result of a dry run; stored on the agent as its `last_test`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentTestResult {
    /// True when the provider answered the sample prompt.
    pub ok: bool,
    /// The agent tested.
    pub agent_id: String,
    /// The agent's `config.provider`.
    pub provider: String,
    /// The integration it resolved to (null when none did).
    pub integration_id: Option<String>,
    /// That integration's provider plugin.
    pub plugin: Option<String>,
    /// The agent's `config.model`.
    pub model: String,
    /// Wall-clock time of the provider call, in milliseconds (0 when no call was made).
    pub latency_ms: u64,
    /// Prompt tokens, on success.
    pub input_tokens: Option<u32>,
    /// Completion tokens, on success.
    pub output_tokens: Option<u32>,
    /// Tokens × the plugin's declared prices for the model, in US dollars,
    /// on success (null when the plugin declares no price for it).
    #[schema(value_type = Option<f64>)]
    pub estimated_cost_usd: Option<Usd>,
    /// The answer, truncated to 500 characters, on success.
    pub sample_output: Option<String>,
    /// Why it failed, on failure. `source: configuration` with `kind:
    /// integration_not_found` when no active integration matches
    /// `config.provider`; otherwise as for the integration test.
    pub error: Option<TestError>,
    /// Cheaper or faster alternatives.
    pub suggestion: Suggestion,
    /// RFC 3339.
    pub tested_at: String,
}

/// Dry-run an agent (agent_manager or above): send a sample prompt through
/// its provider and report tokens, cost, latency and alternatives.
#[utoipa::path(post, path = "/api/agents/{id}/test", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "The dry run ran; `ok` says whether the provider answered", body = AgentTestResult),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentTestResult>, ApiError> {
    let (agent, integrations) = {
        let mut tx = state.db.tenant_read(&p.org_id).await?;
        let agent = store::agents::get(&mut tx, &p.org_id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("agent"))?;
        let integrations = store::integrations::list(&mut tx, &p.org_id).await?;
        tx.commit().await?;
        (agent, integrations)
    };
    let config: AgentConfig = serde_json::from_str(&agent.config).map_err(ApiError::internal)?;
    let active: Vec<Integration> = integrations
        .into_iter()
        .filter(|i| i.status == "active")
        .collect();
    // No transaction is held while the provider is called.
    let span = tracing::info_span!(
        "agent_test",
        agent_id = %agent.id,
        provider = %config.provider,
        model = %config.model,
    );
    let mut result = run(&state, &agent.id, &config, &active)
        .instrument(span)
        .await;
    let at = now_ms();
    result.tested_at = to_rfc3339(at);
    let result_json = serde_json::to_string(&result).map_err(ApiError::internal)?;
    let mut tx = state.db.tenant(&p.org_id).await?;
    if !store::agents::record_test(&mut tx, &p.org_id, &agent.id, at, &result_json).await? {
        // Deleted while the provider was being called.
        return Err(ApiError::not_found("agent"));
    }
    audit::record(
        &mut tx,
        &p,
        &client,
        "agent_tested",
        audit::Payload::from(json!({
            "agent_id": agent.id,
            "provider": result.provider,
            "integration_id": result.integration_id,
            "plugin": result.plugin,
            "model": result.model,
            "ok": result.ok,
            "latency_ms": result.latency_ms,
            "error": result.error.as_ref().map(|e| json!({ "source": e.source, "kind": e.kind })),
        }))
        .usd(
            "estimated_cost_usd",
            result.estimated_cost_usd.map(|usd| usd.0),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(result))
}

/// Resolves the integration, calls it and works out cost and suggestions;
/// every failure becomes a result with `ok: false`.
async fn run(
    state: &AppState,
    agent_id: &str,
    config: &AgentConfig,
    active: &[Integration],
) -> AgentTestResult {
    let prompt = sample_prompt(config);
    let mut result = AgentTestResult {
        ok: false,
        agent_id: agent_id.to_string(),
        provider: config.provider.clone(),
        integration_id: None,
        plugin: None,
        model: config.model.clone(),
        latency_ms: 0,
        input_tokens: None,
        output_tokens: None,
        estimated_cost_usd: None,
        sample_output: None,
        error: None,
        suggestion: Suggestion {
            cheaper: None,
            faster: None,
            message: String::new(),
        },
        tested_at: String::new(),
    };
    let Some(integration) = named_by(active, &config.provider, |i| i).first().copied() else {
        result.error = Some(TestError::configuration(
            "integration_not_found",
            format!(
                "no active integration of this organization is named `{0}` or has provider `{0}`; \
                 create one or change the agent's config.provider",
                config.provider
            ),
        ));
        result.suggestion.message = "No suggestion: the agent's provider is not configured.".into();
        tracing::info!(error_kind = "integration_not_found", "agent tested");
        return result;
    };
    result.integration_id = Some(integration.id.clone());
    result.plugin = Some(integration.plugin.clone());

    let estimated_input = estimate_input_tokens(&prompt);
    let max_tokens = prompt.max_tokens;
    let (outcome, text) = match prepare(state, integration, config.model.clone()) {
        Ok(PreparedCall { plugin, test, key }) => {
            let mut sample =
                probe::sample_provider(state.plugins.runtime(), &plugin, test, prompt).await;
            if let Some(key) = key.as_deref().filter(|k| !k.is_empty()) {
                sample.outcome.redact(key);
                sample.text = sample.text.map(|t| t.replace(key, "***"));
            }
            (sample.outcome, sample.text)
        }
        Err(error) => (
            TestOutcome::failed_before_call(Some(config.model.clone()), error),
            None,
        ),
    };
    result.ok = outcome.ok;
    result.latency_ms = outcome.latency_ms;
    result.error = outcome.error;
    // Costs are compared for the tokens this call used or, when it failed,
    // for the prompt's estimate and the full completion allowance.
    let (input, output) = match &outcome.usage {
        Some(usage) => {
            result.input_tokens = Some(usage.input_tokens);
            result.output_tokens = Some(usage.output_tokens);
            (
                u64::from(usage.input_tokens),
                u64::from(usage.output_tokens),
            )
        }
        None => (estimated_input, u64::from(max_tokens)),
    };
    result.sample_output = text.map(|t| t.chars().take(SAMPLE_OUTPUT_CHARS).collect());
    let own_model = declared(state, integration, &config.model).or_else(|| {
        // The plugin may answer with a dated variant; price that when the
        // requested name is unknown.
        outcome
            .model
            .as_deref()
            .and_then(|m| declared(state, integration, m))
    });
    let own_cost = own_model.as_ref().map(|d| d.prices.cost(input, output));
    if result.ok {
        result.estimated_cost_usd = own_cost.map(Money::usd);
    }
    let cheaper = own_model
        .as_ref()
        .zip(own_cost)
        .and_then(|(own, own_cost)| {
            cheapest(
                state,
                active,
                integration,
                &config.model,
                &own.good_for,
                (input, output),
            )
            .filter(|alt| alt.estimated_cost_usd.is_some_and(|c| c.0 < own_cost))
        });
    let faster = if result.ok {
        fastest(
            state,
            active,
            integration,
            result.latency_ms,
            (input, output),
        )
    } else {
        None
    };
    result.suggestion = Suggestion {
        message: suggestion_message(own_cost, cheaper.as_ref(), faster.as_ref(), result.ok),
        cheaper,
        faster,
    };
    tracing::info!(
        ok = result.ok,
        latency_ms = result.latency_ms,
        error_kind = result.error.as_ref().map(|e| e.kind.as_str()),
        "agent tested"
    );
    result
}

/// The agent's system prompt (when set) and [`SAMPLE_PROMPT`], with the
/// agent's temperature and a completion cap of at most [`SAMPLE_MAX_TOKENS`].
fn sample_prompt(config: &AgentConfig) -> Prompt {
    let mut messages = Vec::new();
    if let Some(system) = config
        .system_prompt
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        messages.push(Message::text(MessageRole::System, system.to_string()));
    }
    messages.push(Message::text(MessageRole::User, SAMPLE_PROMPT));
    Prompt {
        messages,
        // Validated to 0–2, which f32 holds closely enough.
        temperature: config.temperature.map(|t| t as f32),
        max_tokens: config
            .max_tokens
            .map_or(SAMPLE_MAX_TOKENS, |m| m.min(SAMPLE_MAX_TOKENS)),
    }
}

/// A rough prompt size (four characters a token), used to compare prices
/// when the call failed and reported no usage.
fn estimate_input_tokens(prompt: &Prompt) -> u64 {
    prompt
        .messages
        .iter()
        .map(|m| (m.content.chars().count() as u64).div_ceil(4))
        .sum()
}

/// A model a provider plugin declares.
struct Declared {
    /// Model id.
    id: String,
    /// Its prices, in nano-dollars.
    prices: Prices,
    /// Task types it is good at.
    good_for: Vec<TaskType>,
}

/// Every model the plugin declares (empty when the plugin is not loaded or
/// is not a provider).
fn declared_models(state: &AppState, integration: &Integration) -> Vec<Declared> {
    let Some(deployed) = state
        .plugins
        .lookup(&integration.org_id, &integration.plugin)
    else {
        return Vec::new();
    };
    match deployed.plugin.info() {
        PluginInfo::Provider(info) => info
            .models
            .iter()
            .map(|m| Declared {
                id: m.id.clone(),
                prices: deployed.prices.get(&m.id).unwrap_or_default(),
                good_for: m.good_for.clone(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What the integration's plugin declares about `model`.
fn declared(state: &AppState, integration: &Integration, model: &str) -> Option<Declared> {
    declared_models(state, integration)
        .into_iter()
        .find(|d| d.id == model)
}

/// Whether `integration` may be suggested to an agent on `own`: not the
/// offline plugin unless the agent is on it too.
fn suggestible(integration: &Integration, own: &Integration) -> bool {
    integration.plugin != OFFLINE_PLUGIN || own.plugin == OFFLINE_PLUGIN
}

/// The cheapest (integration, model) for the same token counts, other than
/// the agent's own, among models good for a task type in `own_good_for`
/// (like-for-like substitutes); ties go to the first by integration name,
/// then by the plugin's model order.
fn cheapest(
    state: &AppState,
    active: &[Integration],
    own: &Integration,
    own_model: &str,
    own_good_for: &[TaskType],
    tokens: (u64, u64),
) -> Option<Alternative> {
    let mut best: Option<Alternative> = None;
    for integration in active.iter().filter(|i| suggestible(i, own)) {
        for model in declared_models(state, integration) {
            if integration.id == own.id && model.id == own_model {
                continue;
            }
            if !model.good_for.iter().any(|t| own_good_for.contains(t)) {
                continue;
            }
            let cost = model.prices.cost(tokens.0, tokens.1);
            if best
                .as_ref()
                .and_then(|b| b.estimated_cost_usd)
                .is_none_or(|b| cost < b.0)
            {
                best = Some(Alternative {
                    provider: integration.name.clone(),
                    integration_id: integration.id.clone(),
                    model: model.id,
                    estimated_cost_usd: Some(cost.usd()),
                    latency_ms: None,
                });
            }
        }
    }
    best
}

/// The other active integration whose last successful test was the fastest,
/// when it was faster than `latency_ms`.
fn fastest(
    state: &AppState,
    active: &[Integration],
    own: &Integration,
    latency_ms: u64,
    tokens: (u64, u64),
) -> Option<Alternative> {
    let mut best: Option<(u64, &Integration, Option<String>)> = None;
    for integration in active
        .iter()
        .filter(|i| i.id != own.id && suggestible(i, own))
    {
        let Some(last) = integration
            .last_test_result
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        else {
            continue;
        };
        if last["ok"] != true {
            continue;
        }
        let Some(latency) = last["latency_ms"].as_u64() else {
            continue;
        };
        if latency < latency_ms && best.as_ref().is_none_or(|(b, _, _)| latency < *b) {
            let model = last["model"].as_str().map(str::to_string);
            best = Some((latency, integration, model));
        }
    }
    let (latency, integration, tested_model) = best?;
    let declared = declared_models(state, integration);
    // The model its test used, else its default, else the plugin's first.
    let model = tested_model
        .or_else(|| integration.default_model.clone())
        .or_else(|| declared.first().map(|d| d.id.clone()))
        .unwrap_or_default();
    let estimated_cost_usd = declared
        .iter()
        .find(|d| d.id == model)
        .map(|d| d.prices.cost(tokens.0, tokens.1).usd());
    Some(Alternative {
        provider: integration.name.clone(),
        integration_id: integration.id.clone(),
        model,
        estimated_cost_usd,
        latency_ms: Some(latency),
    })
}

/// The suggestion in words.
fn suggestion_message(
    own_cost: Option<Money>,
    cheaper: Option<&Alternative>,
    faster: Option<&Alternative>,
    ok: bool,
) -> String {
    let mut parts = Vec::new();
    if let (Some(c), Some(own)) = (cheaper, own_cost) {
        parts.push(format!(
            "`{}` on `{}` would cost ${} instead of ${own} for the same tokens",
            c.model,
            c.provider,
            c.estimated_cost_usd.unwrap_or_default(),
        ));
    }
    if let Some(f) = faster {
        parts.push(format!(
            "`{}` answered its last test in {} ms",
            f.provider,
            f.latency_ms.unwrap_or_default()
        ));
    }
    if parts.is_empty() {
        let mut none = "No cheaper".to_string();
        if ok {
            none.push_str(" or faster");
        }
        none.push_str(" option among the organization's active integrations.");
        if own_cost.is_none() {
            none.push_str(" (The plugin declares no price for this model.)");
        }
        return none;
    }
    let mut message = parts.join("; ");
    message.push('.');
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_tokens: Option<u32>, system: Option<&str>) -> AgentConfig {
        AgentConfig {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            temperature: Some(0.5),
            max_tokens,
            system_prompt: system.map(str::to_string),
            routing_policy: None,
            tools: Vec::new(),
            max_tool_rounds: None,
        }
    }

    #[test]
    fn sample_prompt_caps_tokens_and_adds_the_system_prompt() {
        let p = sample_prompt(&config(None, None));
        assert_eq!(p.max_tokens, SAMPLE_MAX_TOKENS);
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.temperature, Some(0.5));
        let p = sample_prompt(&config(Some(10_000), Some("Be brief.")));
        assert_eq!(p.max_tokens, SAMPLE_MAX_TOKENS);
        assert_eq!(p.messages.len(), 2);
        assert!(matches!(p.messages[0].role, MessageRole::System));
        assert_eq!(p.messages[0].content, "Be brief.");
        assert_eq!(sample_prompt(&config(Some(5), None)).max_tokens, 5);
    }

    #[test]
    fn message_names_alternatives_or_says_none() {
        let alt = Alternative {
            provider: "groq".into(),
            integration_id: "i".into(),
            model: "mixtral-8x7b".into(),
            estimated_cost_usd: Some(Money::from_nanos(10_000).usd()),
            latency_ms: Some(12),
        };
        let own = Money::from_nanos(1_000_000);
        let m = suggestion_message(Some(own), Some(&alt), Some(&alt), true);
        assert!(m.contains("`mixtral-8x7b` on `groq`"), "{m}");
        assert!(m.contains("$0.00001 instead of $0.001"), "{m}");
        assert!(m.contains("12 ms"), "{m}");
        let m = suggestion_message(Some(own), None, None, true);
        assert!(m.starts_with("No cheaper or faster option"), "{m}");
    }
}
