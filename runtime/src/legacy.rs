//! The adapter that serves components built against the frozen
//! `vel:plugins@0.1.0` contract (`wit/v0.1.0/`): conversions between its
//! types and the current (0.2.0) ones, and the 0.1.0 host imports.
//!
//! What 0.1.0 cannot express is explicit, never silently dropped: a 0.1.0
//! provider's `info()` is served with its `tools` and `json-mode` features
//! cleared (the old contract has no way to pass a tool or a response
//! format), and a request that needs tools, a JSON output mode or logprobs
//! is refused before the component runs, with an `invalid-request` error
//! naming what is missing. A `seed` is best effort and is left out. Routers
//! get the task and candidates without the 0.2.0 feature fields (the host
//! offers only candidates that have what the request needs).

use crate::bindings::v0_1::condition::exports::vel::plugins::evaluation as old_eval;
use crate::bindings::v0_1::provider::exports::vel::plugins::completion as old;
use crate::bindings::v0_1::provider::vel::plugins::{
    config as old_config, log as old_log, stream as old_stream, types as old_types,
};
use crate::bindings::v0_1::router::exports::vel::plugins::routing as old_routing;
use crate::sandbox::CallState;
use crate::types::{
    Attempt, Candidate, CircuitState, CompletionRequest, CompletionResponse, ConditionError,
    ConditionInfo, ConditionInput, CredentialHeader, Features, FinishReason, ModelInfo, Outcome,
    Plan, Preference, Priority, ProviderError, ProviderInfo, Role, RouteError, RouterInfo,
    TaskInfo, TaskType, Usage, feature_names,
};

/// The refusal of a request a 0.1.0 provider cannot serve, or `None`.
pub(crate) fn refusal(request: &CompletionRequest, plugin: &str) -> Option<ProviderError> {
    let needs = request.required_features();
    if needs == Features::empty() {
        return None;
    }
    Some(ProviderError::InvalidRequest(format!(
        "the provider plugin `{plugin}` is built against vel:plugins@0.1.0, which has no {}; \
         it cannot serve this request (choose a provider whose plugin supports it)",
        feature_names(needs)
            .iter()
            .map(|f| describe_feature(f))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A feature in words, for error messages.
fn describe_feature(name: &str) -> String {
    match name {
        "tools" => "tool calling (`tools`)".to_string(),
        "json-mode" => "JSON mode (`response_format` json_object)".to_string(),
        "json-schema" => "structured output (`response_format` json_schema)".to_string(),
        "logprobs" => "log probabilities (`logprobs`)".to_string(),
        other => format!("`{other}`"),
    }
}

/// A 0.2.0 request as 0.1.0 sees it; call [`refusal`] first.
pub(crate) fn request(request: &CompletionRequest) -> old::CompletionRequest {
    old::CompletionRequest {
        model: request.model.clone(),
        messages: request
            .messages
            .iter()
            .map(|m| old_types::Message {
                role: role(m.role),
                content: m.content.clone(),
            })
            .collect(),
        temperature: request.temperature,
        max_tokens: request.max_tokens,
        stop: request.stop.clone(),
        task_type: task_type(request.task_type),
        metadata: request.metadata.clone(),
    }
}

/// A 0.1.0 answer as 0.2.0: no tool calls, no logprobs.
pub(crate) fn response(
    answer: Result<old::CompletionResponse, old::ProviderError>,
) -> Result<CompletionResponse, ProviderError> {
    let r = answer.map_err(provider_error)?;
    Ok(CompletionResponse {
        text: r.text,
        finish_reason: match r.finish_reason {
            old::FinishReason::Stop => FinishReason::Stop,
            old::FinishReason::Length => FinishReason::Length,
            old::FinishReason::ContentFilter => FinishReason::ContentFilter,
            // It was given no tools: a tool-call stop means nothing here.
            old::FinishReason::ToolCalls | old::FinishReason::Other => FinishReason::Other,
            old::FinishReason::Cancelled => FinishReason::Cancelled,
        },
        model: r.model,
        usage: Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
        },
        tool_calls: Vec::new(),
        logprobs: None,
    })
}

fn provider_error(e: old::ProviderError) -> ProviderError {
    match e {
        old::ProviderError::RateLimited(ms) => ProviderError::RateLimited(ms),
        old::ProviderError::Unavailable(m) => ProviderError::Unavailable(m),
        old::ProviderError::Timeout => ProviderError::Timeout,
        old::ProviderError::InvalidRequest(m) => ProviderError::InvalidRequest(m),
        old::ProviderError::Auth(m) => ProviderError::Auth(m),
        old::ProviderError::ContentFiltered(m) => ProviderError::ContentFiltered(m),
        old::ProviderError::Other(m) => ProviderError::Other(m),
    }
}

/// Only streaming survives: 0.1.0 cannot be given tools or a JSON mode.
fn features(f: old::Features) -> Features {
    if f.contains(old::Features::STREAMING) {
        Features::STREAMING
    } else {
        Features::empty()
    }
}

/// A 0.1.0 provider's `info()`, its features as the adapter serves them.
pub(crate) fn provider_info(i: old::ProviderInfo) -> ProviderInfo {
    ProviderInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        models: i
            .models
            .into_iter()
            .map(|m| ModelInfo {
                id: m.id,
                input_price_per_1k: m.input_price_per_1k,
                output_price_per_1k: m.output_price_per_1k,
                context_window: m.context_window,
                good_for: m.good_for.into_iter().map(task_type_back).collect(),
                features: features(m.features),
            })
            .collect(),
        features: features(i.features),
        credential: i.credential.map(|c| CredentialHeader {
            name: c.name,
            prefix: c.prefix,
        }),
        base_url_setting: i.base_url_setting,
    }
}

/// A 0.1.0 router's `info()`.
pub(crate) fn router_info(i: old_routing::RouterInfo) -> RouterInfo {
    RouterInfo {
        name: i.name,
        version: i.version,
        description: i.description,
    }
}

/// A 0.1.0 condition's `info()`.
pub(crate) fn condition_info(i: old_eval::ConditionInfo) -> ConditionInfo {
    ConditionInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        args_schema: i.args_schema,
    }
}

/// The task as a 0.1.0 router sees it (no required features).
pub(crate) fn task_info(t: &TaskInfo) -> old_routing::TaskInfo {
    old_routing::TaskInfo {
        id: t.id.clone(),
        organization_id: t.organization_id.clone(),
        task_type: task_type(t.task_type),
        priority: match t.priority {
            Priority::Low => old_types::Priority::Low,
            Priority::Medium => old_types::Priority::Medium,
            Priority::High => old_types::Priority::High,
        },
        requested_model: t.requested_model.clone(),
        estimated_input_tokens: t.estimated_input_tokens,
        max_tokens: t.max_tokens,
        prefer: match t.prefer {
            Preference::Balanced => old_routing::Preference::Balanced,
            Preference::Cost => old_routing::Preference::Cost,
            Preference::Latency => old_routing::Preference::Latency,
        },
        metadata: t.metadata.clone(),
    }
}

/// The candidates as a 0.1.0 router sees them (no features).
pub(crate) fn candidates(list: &[Candidate]) -> Vec<old_routing::Candidate> {
    list.iter()
        .map(|c| old_routing::Candidate {
            provider: c.provider.clone(),
            model: c.model.clone(),
            input_price_per_1k: c.input_price_per_1k,
            output_price_per_1k: c.output_price_per_1k,
            good_for: c.good_for.iter().copied().map(task_type).collect(),
            circuit: match c.circuit {
                CircuitState::Closed => old_types::CircuitState::Closed,
                CircuitState::HalfOpen => old_types::CircuitState::HalfOpen,
                CircuitState::Open => old_types::CircuitState::Open,
            },
            p50_latency_ms: c.p50_latency_ms,
            p95_latency_ms: c.p95_latency_ms,
            error_rate: c.error_rate,
            remaining_budget: c.remaining_budget,
        })
        .collect()
}

/// A 0.1.0 router's answer.
pub(crate) fn plan(
    answer: Result<old_routing::Plan, old_routing::RouteError>,
) -> Result<Plan, RouteError> {
    match answer {
        Ok(p) => Ok(Plan {
            attempts: p
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    provider: a.provider,
                    model: a.model,
                })
                .collect(),
            reason: p.reason,
        }),
        Err(old_routing::RouteError::NoCandidate(m)) => Err(RouteError::NoCandidate(m)),
        Err(old_routing::RouteError::InvalidInput(m)) => Err(RouteError::InvalidInput(m)),
    }
}

/// The input as a 0.1.0 condition sees it (the same fields).
pub(crate) fn condition_input(i: &ConditionInput) -> old_eval::ConditionInput {
    old_eval::ConditionInput {
        output: i.output.clone(),
        state: i.state.clone(),
        args: i.args.clone(),
    }
}

/// A 0.1.0 condition's verdict.
pub(crate) fn outcome(
    answer: Result<old_eval::Outcome, old_eval::ConditionError>,
) -> Result<Outcome, ConditionError> {
    match answer {
        Ok(o) => Ok(Outcome {
            matched: o.matched,
            branch: o.branch,
            score: o.score,
            explanation: o.explanation,
        }),
        Err(old_eval::ConditionError::InvalidArgs(m)) => Err(ConditionError::InvalidArgs(m)),
        Err(old_eval::ConditionError::Other(m)) => Err(ConditionError::Other(m)),
    }
}

fn role(r: Role) -> old_types::Role {
    match r {
        Role::System => old_types::Role::System,
        Role::User => old_types::Role::User,
        Role::Assistant => old_types::Role::Assistant,
        Role::Tool => old_types::Role::Tool,
    }
}

fn task_type(t: TaskType) -> old_types::TaskType {
    match t {
        TaskType::Reasoning => old_types::TaskType::Reasoning,
        TaskType::CodeGeneration => old_types::TaskType::CodeGeneration,
        TaskType::Research => old_types::TaskType::Research,
        TaskType::Light => old_types::TaskType::Light,
        TaskType::General => old_types::TaskType::General,
    }
}

fn task_type_back(t: old_types::TaskType) -> TaskType {
    match t {
        old_types::TaskType::Reasoning => TaskType::Reasoning,
        old_types::TaskType::CodeGeneration => TaskType::CodeGeneration,
        old_types::TaskType::Research => TaskType::Research,
        old_types::TaskType::Light => TaskType::Light,
        old_types::TaskType::General => TaskType::General,
    }
}

// The 0.1.0 imports: the same host functions as 0.2.0's.

impl old_log::Host for CallState {
    fn log(&mut self, level: old_log::Level, message: String) -> wasmtime::Result<()> {
        use crate::bindings::provider::vel::plugins::log::{Host, Level};
        let level = match level {
            old_log::Level::Trace => Level::Trace,
            old_log::Level::Debug => Level::Debug,
            old_log::Level::Info => Level::Info,
            old_log::Level::Warn => Level::Warn,
            old_log::Level::Error => Level::Error,
        };
        Host::log(self, level, message)
    }
}

impl old_config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        crate::bindings::provider::vel::plugins::config::Host::get(self, key)
    }

    fn all(&mut self) -> Vec<(String, String)> {
        crate::bindings::provider::vel::plugins::config::Host::all(self)
    }
}

impl old_stream::Host for CallState {
    fn emit(&mut self, delta: String) -> wasmtime::Result<bool> {
        self.emit_text(delta)
    }
}

impl old_types::Host for CallState {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Message, ResponseFormat, ToolDefinition};

    fn plain() -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            messages: vec![Message {
                role: Role::User,
                content: "hi".into(),
                tool_calls: Vec::new(),
                tool_call_id: None,
                name: None,
            }],
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
            task_type: TaskType::General,
            metadata: "{}".into(),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: ResponseFormat::Text,
            seed: Some(7),
            logprobs: false,
            top_logprobs: None,
        }
    }

    #[test]
    fn a_plain_request_passes_and_tools_are_refused_by_name() {
        assert!(refusal(&plain(), "old").is_none(), "a seed is best effort");
        let mut tools = plain();
        tools.tools.push(ToolDefinition {
            name: "get_weather".into(),
            description: None,
            parameters: "{}".into(),
            strict: None,
        });
        tools.response_format = ResponseFormat::JsonObject;
        let Some(ProviderError::InvalidRequest(message)) = refusal(&tools, "old") else {
            panic!("tools must be refused");
        };
        assert!(message.contains("vel:plugins@0.1.0"), "{message}");
        assert!(message.contains("tool calling"), "{message}");
        assert!(message.contains("JSON mode"), "{message}");
    }

    #[test]
    fn old_features_lose_what_old_requests_cannot_carry() {
        let all = old::Features::STREAMING | old::Features::TOOLS | old::Features::JSON_MODE;
        assert_eq!(features(all), Features::STREAMING);
        assert_eq!(features(old::Features::TOOLS), Features::empty());
    }
}
