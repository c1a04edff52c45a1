//! `GET /api/health`: database, plugin runtime, provider reachability,
//! uptime, version. 200 when every check passes, 503 naming the failing
//! ones; each check is bounded by the configured timeout (500 ms by
//! default) and they run concurrently, so load balancers get an answer
//! quickly. Provider reachability is reported, never failing (see
//! [`providers`]).

pub mod providers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::state::AppState;

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `failing`; `providers` may also say `degraded`, `untested`
    /// `not_configured` or `unknown`, none of which makes the server unhealthy.
    pub status: String,
    /// How long the check took.
    pub latency_ms: u64,
    /// Why it failed, or extra detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The health report: the status and the names of failing checks for
/// everyone, the details for platform admins only (they describe every
/// tenant's integrations together).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Names of failing checks (empty when healthy).
    pub failing: Vec<String>,
    /// The rest, for platform admins (absent for everyone else).
    #[serde(flatten)]
    pub details: HealthDetails,
}

/// What a platform admin sees beyond the status; every field is absent
/// for other callers.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct HealthDetails {
    /// Server version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// `sqlite` or `postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_backend: Option<String>,
    /// Per-dependency results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<String, Check>>,
}

async fn timed<F, E>(timeout: Duration, fut: F) -> Check
where
    F: Future<Output = Result<Option<String>, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, fut).await;
    let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(Ok(detail)) => Check {
            status: "ok".into(),
            latency_ms,
            detail,
        },
        Ok(Err(e)) => Check {
            status: "failing".into(),
            latency_ms,
            detail: Some(e.to_string()),
        },
        Err(_) => Check {
            status: "failing".into(),
            latency_ms,
            detail: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}

/// Provider reachability: its own status (never `failing`, so a provider
/// outage does not take the instance out); a database error shows as
/// `unknown` (the database check reports the failure itself).
async fn providers_check(db: &crate::store::Db, timeout: Duration) -> Check {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, providers::reachability(db)).await;
    let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, detail) = match outcome {
        Ok(Ok(r)) => (r.status.to_string(), r.detail),
        Ok(Err(e)) => (
            "unknown".to_string(),
            format!("cannot read integrations: {e}"),
        ),
        Err(_) => (
            "unknown".to_string(),
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    };
    Check {
        status,
        latency_ms,
        detail: Some(detail),
    }
}

/// Report the server's health: no authentication needed for the status;
/// a platform admin's credential adds the checks and their details.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(
    State(state): State<AppState>,
    caller: Result<Principal, ApiError>,
) -> (StatusCode, Json<Health>) {
    let timeout = state.config.health_timeout;
    let db = state.db.clone();
    let database = timed(timeout, async move { db.ping().await.map(|()| None) });
    let plugins = &state.plugins;
    let plugin_runtime = timed(timeout, crate::plugins::health_check(plugins, timeout));
    let providers = providers_check(&state.db, timeout);
    let (database, plugin_runtime, providers) = tokio::join!(database, plugin_runtime, providers);
    let mut checks = BTreeMap::new();
    checks.insert("database".to_string(), database);
    checks.insert("plugin_runtime".to_string(), plugin_runtime);
    checks.insert("providers".to_string(), providers);
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, c)| c.status == "failing")
        .map(|(k, _)| k.clone())
        .collect();
    let healthy = failing.is_empty();
    let admin = caller.is_ok_and(|p| p.is_platform_admin());
    let body = Health {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        failing,
        details: if admin {
            HealthDetails {
                version: Some(env!("CARGO_PKG_VERSION").into()),
                uptime_seconds: Some(state.started.elapsed().as_secs()),
                database_backend: Some(state.db.backend().name().into()),
                checks: Some(checks),
            }
        } else {
            HealthDetails::default()
        },
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
