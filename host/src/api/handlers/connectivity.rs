//! `POST /api/integrations/{id}/test`: reach the provider through its
//! plugin with a tiny prompt, the way a task would — the integration's
//! plugin, its settings, its key held by the host — and report what
//! happened. A provider or plugin failure is the test's answer (200 with
//! `ok: false` and a typed error), not a server error. A tool server (an
//! `mcp` or `taskmaster` integration) is tested by listing its tools.

use axum::Json;
use axum::extract::State;
use serde_json::json;
use tracing::Instrument;
use vel_runtime::{Plugin, Secret};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiPath, ClientInfo};
use crate::api::handlers::integrations;
use crate::audit;
use crate::auth::Principal;
use crate::orchestrator::{catalog, tools};
use crate::plugins::probe::{self, ProviderTest, TestError, TestOutcome};
use crate::state::AppState;
use crate::store::{self, integrations::Integration, now_ms};

/// Test an integration (org_admin): send a tiny prompt through its plugin.
#[utoipa::path(post, path = "/api/integrations/{id}/test", tag = "integrations",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 200, description = "The test ran; `ok` says whether the provider answered", body = TestOutcome),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    let integration = integrations::load(&state, &p.org_id, &id).await?;
    // No transaction is held while the provider is called.
    let span = tracing::info_span!(
        "integration_test",
        integration_id = %integration.id,
        provider = %integration.provider,
        plugin = %integration.plugin,
    );
    let outcome = run(&state, &integration).instrument(span).await;
    let result_json = serde_json::to_string(&outcome).map_err(ApiError::internal)?;
    let mut tx = state.db.tenant(&p.org_id).await?;
    store::integrations::record_test(&mut tx, &p.org_id, &integration.id, now_ms(), &result_json)
        .await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "integration_tested",
        json!({
            "integration_id": integration.id,
            "name": integration.name,
            "provider": integration.provider,
            "plugin": integration.plugin,
            "ok": outcome.ok,
            "latency_ms": outcome.latency_ms,
            "model": outcome.model,
            "error": outcome.error.as_ref().map(|e| json!({ "source": e.source, "kind": e.kind })),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(outcome))
}

/// Calls the integration's plugin; every failure becomes an outcome.
async fn run(state: &AppState, integration: &Integration) -> TestOutcome {
    if tools::is_tool_server(&integration.provider) {
        return list_tools(state, integration).await;
    }
    let model = integration.default_model.clone().unwrap_or_default();
    let PreparedCall { plugin, test, key } = match prepare(state, integration, model) {
        Ok(call) => call,
        Err(error) => {
            return TestOutcome::failed_before_call(integration.default_model.clone(), error);
        }
    };
    let mut outcome = probe::test_provider(state.plugins.runtime(), &plugin, test).await;
    if let Some(key) = &key {
        outcome.redact(key);
    }
    tracing::info!(
        ok = outcome.ok,
        latency_ms = outcome.latency_ms,
        error_kind = outcome.error.as_ref().map(|e| e.kind.as_str()),
        "integration tested"
    );
    outcome
}

/// Tests a tool server by listing its tools through its plugin: `ok` when
/// the server answered with its list; the failure's kind otherwise (the
/// server's as `provider`, the sandbox's as `plugin`, a setup problem as
/// `configuration`).
async fn list_tools(state: &AppState, integration: &Integration) -> TestOutcome {
    let servers = state.dispatcher.tools();
    let server = match servers.serving(&integration.org_id, integration.clone()) {
        Ok(server) => server,
        Err(e) => {
            return TestOutcome::failed_before_call(
                None,
                TestError::configuration(e.kind, e.message),
            );
        }
    };
    let started = std::time::Instant::now();
    let listed = servers.list(&server).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let error = listed.err().map(|e| TestError {
        source: match e.kind {
            "tool_error" | "unknown_tool" | "invalid_arguments" | "auth" | "rate_limited"
            | "unavailable" | "timeout" | "protocol" | "server_error" | "other" => "provider",
            _ if e.is_setup() => "configuration",
            _ => "plugin",
        }
        .into(),
        kind: e.kind.into(),
        message: e.message,
        retry_after_ms: None,
    });
    tracing::info!(ok = error.is_none(), latency_ms, "tool server tested");
    TestOutcome {
        ok: error.is_none(),
        latency_ms,
        model: None,
        usage: None,
        error,
    }
}

/// An integration made ready to be called through its plugin: what both the
/// integration test and the agent dry run send to the provider.
pub(crate) struct PreparedCall {
    /// The integration's provider plugin (its kind is checked by the probe).
    pub plugin: Plugin,
    /// Settings, key, allowed hosts, model and limits of the call.
    pub test: ProviderTest,
    /// The decrypted key, to redact it from whatever the call returns.
    pub key: Option<String>,
}

/// Assembles a call of `integration` asking for `model` (empty: the
/// plugin's default): looks its plugin up, turns its base URL, default
/// model and timeout into settings and the outbound allowlist, decrypts its
/// key, and bounds the sandbox's wall time by its timeout. A problem is a
/// configuration [`TestError`], reported as the test's answer.
pub(crate) fn prepare(
    state: &AppState,
    integration: &Integration,
    model: String,
) -> Result<PreparedCall, TestError> {
    let Some(deployed) = state
        .plugins
        .lookup(&integration.org_id, &integration.plugin)
    else {
        return Err(TestError::configuration(
            "plugin_not_found",
            format!("no plugin called `{}` is live", integration.plugin),
        ));
    };
    let setup = catalog::call_setup(integration, &deployed, &state.keys)
        .map_err(|e| TestError::configuration(e.kind(), e.to_string()))?;
    let limits = catalog::provider_limits(&deployed, integration);
    let plugin = deployed.plugin.clone();
    let key = setup.key.clone();
    let test = ProviderTest {
        settings: setup.settings,
        secret: setup.key.map(Secret::new),
        allowed_hosts: setup.allowed_hosts,
        model,
        limits,
    };
    Ok(PreparedCall { plugin, test, key })
}
