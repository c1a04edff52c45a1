//! Small calls the API makes through plugins to see that things work: a
//! router planning a one-candidate task (the health check) and a provider
//! answering a tiny prompt (`POST /api/integrations/{id}/test`, and the
//! agent dry run of `POST /api/agents/{id}/test`).

use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;
use vel_runtime::types::{
    Candidate, CircuitState, CompletionRequest, Features, Message, Preference, Priority,
    ProviderError, ResponseFormat, Role, TaskInfo, TaskType,
};
use vel_runtime::{Limits, Plugin, PluginError, PluginKind, ProviderCall, Runtime, Secret};

use super::provider_error;
use super::stats::error_kind;

/// Asks `router` to plan a general task with one `mock`/`echo` candidate;
/// returns the plan as `provider/model`, or why there is none.
pub async fn route_one_candidate(
    runtime: &Runtime,
    router: &Plugin,
    limits: &Limits,
) -> Result<String, String> {
    let task = TaskInfo {
        id: "health-check".into(),
        organization_id: "health-check".into(),
        task_type: TaskType::General,
        priority: Priority::Low,
        requested_model: None,
        estimated_input_tokens: 8,
        max_tokens: Some(8),
        prefer: Preference::Balanced,
        metadata: "{}".into(),
        required_features: Features::empty(),
    };
    let candidates = [Candidate {
        provider: "mock".into(),
        model: "echo".into(),
        input_price_per_1k: 0.0001,
        output_price_per_1k: 0.0002,
        good_for: vec![TaskType::General],
        circuit: CircuitState::Closed,
        p50_latency_ms: 0,
        p95_latency_ms: 0,
        error_rate: 0.0,
        remaining_budget: None,
        features: Features::STREAMING,
    }];
    let call = runtime.route(router, limits, &task, &candidates).await;
    match call.result {
        Ok(Ok(plan)) => match plan.attempts.first() {
            Some(a) if a.provider == "mock" && a.model == "echo" => {
                Ok(format!("{}/{}", a.provider, a.model))
            }
            Some(a) => Err(format!(
                "{} planned {}/{}, which is not among the candidates",
                router.name(),
                a.provider,
                a.model
            )),
            None => Err(format!("{} returned an empty plan", router.name())),
        },
        Ok(Err(e)) => Err(format!("{} refused to plan: {e:?}", router.name())),
        Err(e) => Err(format!("{} call failed: {e}", router.name())),
    }
}

/// The prompt of a connectivity test: short, so it costs next to nothing.
pub const TEST_PROMPT: &str = "Reply with the single word: pong";
/// Completion tokens a connectivity test asks for at most.
pub const TEST_MAX_TOKENS: u32 = 8;

/// The conversation a provider test sends. [`Prompt::connectivity`] is the
/// integration test's; an agent dry run builds its own from the agent's
/// configuration.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// Sampling temperature, when the caller sets one.
    pub temperature: Option<f32>,
    /// Completion tokens to ask for at most.
    pub max_tokens: u32,
}

impl Prompt {
    /// [`TEST_PROMPT`] as the only user message, capped at [`TEST_MAX_TOKENS`].
    pub fn connectivity() -> Prompt {
        Prompt {
            messages: vec![Message::text(Role::User, TEST_PROMPT)],
            temperature: None,
            max_tokens: TEST_MAX_TOKENS,
        }
    }
}

/// What a provider connectivity test needs besides the plugin.
#[derive(Debug)]
pub struct ProviderTest {
    /// The integration's settings (`base-url`, `default-model`, `timeout-ms`).
    pub settings: Vec<(String, String)>,
    /// The decrypted key, held by the host.
    pub secret: Option<Secret>,
    /// Hosts the plugin may reach (the base URL's host).
    pub allowed_hosts: Vec<String>,
    /// Model to ask for; empty lets the plugin pick its default.
    pub model: String,
    /// Limits for the call.
    pub limits: Limits,
}

/// Token counts of a successful test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestUsage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
}

/// Why a test failed, typed so clients can act on it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestError {
    /// Who failed: `provider` (the upstream answered with an error),
    /// `plugin` (the sandbox stopped the plugin) or `configuration` (the
    /// integration cannot be called as configured).
    pub source: String,
    /// For `provider`: `rate_limited`, `unavailable`, `timeout`,
    /// `invalid_request`, `auth`, `content_filtered`, `other`. For `plugin`:
    /// `limit_exceeded`, `trap`, `panic`, `http_request_denied`,
    /// `destination_denied`, `wrong_kind`, `instantiate`, `host`. For `configuration`: `plugin_not_found`,
    /// `not_a_provider`, `invalid_base_url`, `credential_unreadable`, and for
    /// an agent dry run `integration_not_found`.
    pub kind: String,
    /// What happened, for people (never contains the key).
    pub message: String,
    /// For `rate_limited`: how long the provider asked to wait, when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u32>,
}

impl TestError {
    /// A configuration problem found before calling anything.
    pub fn configuration(kind: &str, message: impl Into<String>) -> TestError {
        TestError {
            source: "configuration".into(),
            kind: kind.into(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn provider(e: ProviderError) -> TestError {
        let retry_after_ms = match &e {
            ProviderError::RateLimited(after) => *after,
            _ => None,
        };
        let (kind, message) = provider_error::describe(e);
        TestError {
            source: "provider".into(),
            kind: kind.into(),
            message,
            retry_after_ms,
        }
    }

    fn plugin(e: &PluginError) -> TestError {
        TestError {
            source: "plugin".into(),
            kind: error_kind(e).into(),
            message: e.to_string(),
            retry_after_ms: None,
        }
    }
}

/// The outcome of a connectivity test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestOutcome {
    /// True when the provider answered the prompt.
    pub ok: bool,
    /// Wall-clock time of the call, in milliseconds.
    pub latency_ms: u64,
    /// The model that answered (or was asked for, on failure; absent when
    /// the plugin's default was used and nothing answered).
    pub model: Option<String>,
    /// Tokens used, on success.
    pub usage: Option<TestUsage>,
    /// Why it failed, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TestError>,
}

impl TestOutcome {
    /// Replaces every occurrence of `secret` in the error message with
    /// `***`: an upstream may echo the key it refused, and the outcome is
    /// returned to clients and stored.
    pub fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        if let Some(e) = &mut self.error
            && e.message.contains(secret)
        {
            e.message = e.message.replace(secret, "***");
        }
    }

    /// A test that failed before any call.
    pub fn failed_before_call(model: Option<String>, error: TestError) -> TestOutcome {
        TestOutcome {
            ok: false,
            latency_ms: 0,
            model,
            usage: None,
            error: Some(error),
        }
    }
}

/// A provider test's outcome plus the text the provider answered (on success).
#[derive(Debug, Clone)]
pub struct Sample {
    /// What happened.
    pub outcome: TestOutcome,
    /// The generated text, when the provider answered.
    pub text: Option<String>,
}

/// Sends [`TEST_PROMPT`] through `provider`. Never fails: every failure is
/// an outcome with `ok = false` and a typed [`TestError`].
pub async fn test_provider(
    runtime: &Runtime,
    provider: &Plugin,
    test: ProviderTest,
) -> TestOutcome {
    sample_provider(runtime, provider, test, Prompt::connectivity())
        .await
        .outcome
}

/// Sends `prompt` through `provider` and keeps the answer's text. Never
/// fails: every failure is an outcome with `ok = false` and a typed
/// [`TestError`].
pub async fn sample_provider(
    runtime: &Runtime,
    provider: &Plugin,
    test: ProviderTest,
    prompt: Prompt,
) -> Sample {
    let requested = (!test.model.is_empty()).then(|| test.model.clone());
    if provider.kind() != PluginKind::Provider {
        return Sample {
            outcome: TestOutcome::failed_before_call(
                requested,
                TestError::configuration(
                    "not_a_provider",
                    format!(
                        "plugin `{}` is a {}, not a provider",
                        provider.name(),
                        provider.kind()
                    ),
                ),
            ),
            text: None,
        };
    }
    let request = CompletionRequest {
        model: test.model,
        messages: prompt.messages,
        temperature: prompt.temperature,
        max_tokens: Some(prompt.max_tokens),
        stop: Vec::new(),
        task_type: TaskType::Light,
        metadata: "{}".into(),
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: ResponseFormat::Text,
        seed: None,
        logprobs: false,
        top_logprobs: None,
    };
    let call = ProviderCall {
        settings: test.settings,
        secret: test.secret,
        allowed_hosts: test.allowed_hosts,
        allow_base_url_host: false,
        deltas: None,
    };
    let started = Instant::now();
    let result = runtime
        .complete(provider, &test.limits, call, &request)
        .await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let failed = |error: TestError| Sample {
        outcome: TestOutcome {
            ok: false,
            latency_ms,
            model: requested.clone(),
            usage: None,
            error: Some(error),
        },
        text: None,
    };
    match result.result {
        Ok(Ok(response)) => Sample {
            outcome: TestOutcome {
                ok: true,
                latency_ms,
                model: Some(response.model),
                usage: Some(TestUsage {
                    input_tokens: response.usage.input_tokens,
                    output_tokens: response.usage.output_tokens,
                }),
                error: None,
            },
            text: Some(response.text),
        },
        Ok(Err(e)) => failed(TestError::provider(e)),
        Err(e) => failed(TestError::plugin(&e)),
    }
}
