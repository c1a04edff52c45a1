//! `POST /api/integrations/{id}/test`: reach the provider through its
//! plugin with a tiny prompt, the way a task would — the integration's
//! plugin, its settings, its key held by the host — and report what
//! happened. A provider or plugin failure is the test's answer (200 with
//! `ok: false` and a typed error), not a server error.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;
use tracing::Instrument;
use vel_runtime::{PluginKind, Secret};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::ClientInfo;
use crate::audit;
use crate::auth::{Principal, Role};
use crate::plugins::probe::{self, ProviderTest, TestError, TestOutcome};
use crate::state::AppState;
use crate::store::{self, integrations::Integration, now_ms};

/// Extra wall-clock time the sandbox allows beyond the integration's own
/// timeout, so the plugin's timeout (a typed `timeout`) fires first.
const WALL_TIME_MARGIN: Duration = Duration::from_secs(1);

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
    Path(id): Path<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    p.require(Role::OrgAdmin)?;
    let integration = {
        let mut tx = state.db.tenant(&p.org_id).await?;
        let row = store::integrations::get(&mut tx, &p.org_id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("integration"))?;
        tx.commit().await?;
        row
    };
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
    let model = integration.default_model.clone().unwrap_or_default();
    let requested = integration.default_model.clone();
    let fail = |error: TestError| TestOutcome::failed_before_call(requested.clone(), error);
    let Some(plugin) = state.plugins.lookup(&integration.plugin) else {
        return fail(TestError::configuration(
            "plugin_not_found",
            format!("no plugin called `{}` is loaded", integration.plugin),
        ));
    };
    let mut settings = Vec::new();
    let mut allowed_hosts = Vec::new();
    if let Some(url) = &integration.base_url {
        match authority(url) {
            Some(host) => allowed_hosts.push(host),
            None => {
                return fail(TestError::configuration(
                    "invalid_base_url",
                    format!("base URL {url:?} has no host"),
                ));
            }
        }
        settings.push(("base-url".to_string(), url.clone()));
    }
    if let Some(m) = &integration.default_model {
        settings.push(("default-model".to_string(), m.clone()));
    }
    settings.push(("timeout-ms".to_string(), integration.timeout_ms.to_string()));
    let key = match &integration.key_ciphertext {
        Some(sealed) => match state.keys.decrypt(sealed, &integration.id) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "integration key cannot be decrypted");
                return fail(TestError::configuration(
                    "credential_unreadable",
                    "the stored key cannot be decrypted (was VEL_SECRET_KEY changed?); \
                     set the key again",
                ));
            }
        },
        None => None,
    };
    let mut limits = state.plugins.limits(PluginKind::Provider).clone();
    let timeout = Duration::from_millis(u64::try_from(integration.timeout_ms).unwrap_or(0));
    limits.wall_time = limits.wall_time.min(timeout + WALL_TIME_MARGIN);
    let test = ProviderTest {
        settings,
        secret: key.clone().map(Secret::new),
        allowed_hosts,
        model,
        limits,
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

/// `host` or `host:port` of an http(s) URL, as the outbound allowlist wants it.
fn authority(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    Some(match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn authority_of_base_urls() {
        assert_eq!(
            authority("https://api.openai.com/v1").as_deref(),
            Some("api.openai.com")
        );
        assert_eq!(
            authority("http://127.0.0.1:4000/v1").as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(authority("not a url"), None);
    }
}
