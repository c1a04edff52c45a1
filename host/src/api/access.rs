//! Who may call which route: one rule per documented operation, checked by
//! one guard before the handler runs. Handlers never check permissions
//! themselves; where an operation's rule depends on its input (a platform
//! plugin rather than the organization's, a public template) the business
//! layer adds that check.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::error::ApiError;
use crate::auth::{Permission, Principal};
use crate::limits::LimitError;
use crate::limits::counter::Admitted;
use crate::state::AppState;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (login, the OpenAPI document, health).
    Public,
    /// Any signed-in caller, whatever they hold (their own account).
    SignedIn,
    /// A permission in the caller's organization.
    Needs(Permission),
    /// A platform admin.
    PlatformAdmin,
}

impl Access {
    /// The rule as the OpenAPI document states it.
    pub fn describe(self) -> String {
        match self {
            Access::Public => "public".into(),
            Access::SignedIn => "any signed-in caller".into(),
            Access::Needs(p) => format!("the {p} permission"),
            Access::PlatformAdmin => "the platform admin role".into(),
        }
    }
}

use Access::{Needs, PlatformAdmin, Public, SignedIn};
use Permission::*;

/// Every documented operation's rule, by method and path template.
pub const RULES: &[(&str, &str, Access)] = &[
    ("POST", "/api/auth/login", Public),
    ("POST", "/api/auth/refresh", SignedIn),
    ("POST", "/api/auth/logout", SignedIn),
    ("GET", "/api/users/me", SignedIn),
    ("PUT", "/api/users/me", SignedIn),
    ("POST", "/api/users/me/email/confirm", SignedIn),
    ("GET", "/api/users", Needs(ManageUsers)),
    ("POST", "/api/users", PlatformAdmin),
    ("PUT", "/api/users/{id}/roles", Needs(ManageUsers)),
    ("GET", "/api/permissions", SignedIn),
    ("GET", "/api/rate-limits", SignedIn),
    (
        "PUT",
        "/api/organizations/{id}/rate-limits",
        Needs(ManageOrganization),
    ),
    ("PUT", "/api/users/{id}/rate-limits", Needs(ManageUsers)),
    (
        "PUT",
        "/api/api-keys/{id}/rate-limits",
        Needs(ManageApiKeys),
    ),
    ("GET", "/api/organizations", SignedIn),
    ("POST", "/api/organizations", PlatformAdmin),
    ("GET", "/api/organizations/{id}", Needs(View)),
    ("GET", "/api/organizations/{id}/members", Needs(ManageUsers)),
    ("POST", "/api/organizations/{id}/members", PlatformAdmin),
    (
        "PUT",
        "/api/organizations/{id}/members/{user_id}",
        Needs(ManageUsers),
    ),
    (
        "DELETE",
        "/api/organizations/{id}/members/{user_id}",
        Needs(ManageUsers),
    ),
    (
        "GET",
        "/api/organizations/{id}/invitations",
        Needs(ManageUsers),
    ),
    (
        "POST",
        "/api/organizations/{id}/invitations",
        Needs(ManageUsers),
    ),
    ("GET", "/api/organizations/{id}/roles", Needs(View)),
    ("POST", "/api/organizations/{id}/roles", Needs(ManageUsers)),
    (
        "PUT",
        "/api/organizations/{id}/roles/{name}",
        Needs(ManageUsers),
    ),
    (
        "DELETE",
        "/api/organizations/{id}/roles/{name}",
        Needs(ManageUsers),
    ),
    (
        "PUT",
        "/api/organizations/{id}/routing-policy",
        Needs(ManageOrganization),
    ),
    (
        "GET",
        "/api/organizations/{id}/stream-failover",
        Needs(View),
    ),
    (
        "PUT",
        "/api/organizations/{id}/stream-failover",
        Needs(ManageOrganization),
    ),
    ("POST", "/api/invitations/accept", Public),
    ("GET", "/api/agents", Needs(View)),
    ("POST", "/api/agents", Needs(CreateAgent)),
    ("GET", "/api/agents/{id}", Needs(View)),
    ("PUT", "/api/agents/{id}", Needs(CreateAgent)),
    ("DELETE", "/api/agents/{id}", Needs(CreateAgent)),
    ("GET", "/api/agents/{id}/history", Needs(View)),
    ("POST", "/api/agents/{id}/test", Needs(CreateAgent)),
    ("GET", "/api/integrations", Needs(View)),
    ("POST", "/api/integrations", Needs(ManageIntegrations)),
    ("GET", "/api/integrations/{id}", Needs(View)),
    ("PUT", "/api/integrations/{id}", Needs(ManageIntegrations)),
    (
        "DELETE",
        "/api/integrations/{id}",
        Needs(ManageIntegrations),
    ),
    (
        "POST",
        "/api/integrations/{id}/test",
        Needs(ManageIntegrations),
    ),
    ("GET", "/api/integrations/{id}/tools", Needs(View)),
    ("GET", "/api/api-keys", Needs(ManageApiKeys)),
    ("POST", "/api/api-keys", Needs(ManageApiKeys)),
    ("DELETE", "/api/api-keys/{id}", Needs(ManageApiKeys)),
    ("GET", "/api/audit-logs", Needs(ViewAuditLog)),
    ("GET", "/api/webhooks", Needs(ManageWebhooks)),
    ("POST", "/api/webhooks", Needs(ManageWebhooks)),
    ("GET", "/api/webhooks/{id}", Needs(ManageWebhooks)),
    ("PATCH", "/api/webhooks/{id}", Needs(ManageWebhooks)),
    ("DELETE", "/api/webhooks/{id}", Needs(ManageWebhooks)),
    ("POST", "/api/webhooks/{id}/test", Needs(ManageWebhooks)),
    (
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        Needs(ManageWebhooks),
    ),
    (
        "GET",
        "/api/webhooks/{id}/deliveries",
        Needs(ManageWebhooks),
    ),
    ("GET", "/api/tasks", Needs(View)),
    ("POST", "/api/tasks", Needs(ExecuteTask)),
    ("GET", "/api/tasks/{id}", Needs(View)),
    ("POST", "/api/tasks/{id}/cancel", Needs(ExecuteTask)),
    ("GET", "/api/tasks/{id}/stream", Needs(View)),
    ("GET", "/api/batches", Needs(View)),
    ("POST", "/api/batches", Needs(ExecuteTask)),
    ("GET", "/api/batches/{id}", Needs(View)),
    ("POST", "/api/batches/{id}/cancel", Needs(ExecuteTask)),
    ("GET", "/api/batches/{id}/results", Needs(View)),
    ("GET", "/api/benchmarks", Needs(ViewAnalytics)),
    ("POST", "/api/benchmarks", Needs(ExecuteTask)),
    ("GET", "/api/benchmarks/{id}", Needs(ViewAnalytics)),
    ("POST", "/api/benchmarks/{id}/ratings", Needs(ExecuteTask)),
    ("GET", "/api/analytics/usage", Needs(ViewAnalytics)),
    ("GET", "/api/analytics/latency", Needs(ViewAnalytics)),
    ("GET", "/api/analytics/costs", Needs(ViewAnalytics)),
    ("GET", "/api/budgets", Needs(ViewAnalytics)),
    (
        "GET",
        "/api/budgets/{scope}/{subject_id}/{period}",
        Needs(ViewAnalytics),
    ),
    (
        "PUT",
        "/api/budgets/{scope}/{subject_id}/{period}",
        Needs(ManageBudgets),
    ),
    (
        "DELETE",
        "/api/budgets/{scope}/{subject_id}/{period}",
        Needs(ManageBudgets),
    ),
    ("GET", "/api/alerts", Needs(ViewAnalytics)),
    (
        "POST",
        "/api/alerts/{id}/acknowledge",
        Needs(AcknowledgeAlerts),
    ),
    ("GET", "/api/workflows", Needs(View)),
    ("POST", "/api/workflows", Needs(ExecuteTask)),
    ("GET", "/api/workflows/{id}", Needs(View)),
    ("GET", "/api/workflows/{id}/state", Needs(View)),
    ("GET", "/api/workflows/{id}/graph", Needs(View)),
    ("GET", "/api/workflows/{id}/stream", Needs(View)),
    ("POST", "/api/workflows/{id}/cancel", Needs(ExecuteTask)),
    (
        "POST",
        "/api/workflows/{id}/approve",
        Needs(ApproveWorkflows),
    ),
    (
        "POST",
        "/api/workflows/{id}/reject",
        Needs(ApproveWorkflows),
    ),
    (
        "POST",
        "/api/workflows/{id}/retry-from-step/{step_id}",
        Needs(ExecuteTask),
    ),
    (
        "POST",
        "/api/workflows/from-template/{template_id}",
        Needs(ExecuteTask),
    ),
    ("GET", "/api/workflow-templates", Needs(View)),
    ("POST", "/api/workflow-templates", Needs(ExecuteTask)),
    ("GET", "/api/workflow-templates/{id}", Needs(View)),
    ("PATCH", "/api/workflow-templates/{id}", Needs(ExecuteTask)),
    ("DELETE", "/api/workflow-templates/{id}", Needs(ExecuteTask)),
    ("GET", "/api/workflow-templates/{id}/versions", Needs(View)),
    ("POST", "/v1/chat/completions", Needs(ExecuteTask)),
    ("POST", "/v1/embeddings", Needs(ExecuteTask)),
    ("GET", "/v1/models", Needs(View)),
    // A catch-all: a model id may hold a slash (`mock/echo`).
    ("GET", "/v1/models/{*id}", Needs(View)),
    ("GET", "/api/plugins", Needs(View)),
    ("POST", "/api/plugins", Needs(ManagePlugins)),
    ("GET", "/api/plugins/{name}", Needs(View)),
    ("GET", "/api/plugins/{name}/stats", Needs(View)),
    (
        "POST",
        "/api/plugins/{name}/versions/{version}/activate",
        Needs(ManagePlugins),
    ),
    (
        "DELETE",
        "/api/plugins/{name}/versions/{version}",
        Needs(ManagePlugins),
    ),
    ("POST", "/api/plugins/{name}/rollback", Needs(ManagePlugins)),
    ("POST", "/api/plugins/{name}/disable", Needs(ManagePlugins)),
    ("POST", "/api/plugins/{name}/enable", Needs(ManagePlugins)),
    ("GET", "/api/plugin-approvals", PlatformAdmin),
    ("POST", "/api/plugin-approvals/{id}/approve", PlatformAdmin),
    ("POST", "/api/plugin-approvals/{id}/reject", PlatformAdmin),
    ("GET", "/metrics", PlatformAdmin),
    ("GET", "/api/health", Public),
    ("GET", "/api/openapi.json", Public),
];

/// The route that reads the caller's rate limits: not counted against
/// them, so a client at its limit can still learn when to come back.
const UNCOUNTED: &str = "/api/rate-limits";

/// The rule of `method` on `path` (a route template); `None` for a route
/// without one, which [`guard`] refuses.
pub fn rule(method: &str, path: &str) -> Option<Access> {
    static BY_ROUTE: OnceLock<HashMap<(&'static str, &'static str), Access>> = OnceLock::new();
    let table = BY_ROUTE.get_or_init(|| RULES.iter().map(|(m, p, a)| ((*m, *p), *a)).collect());
    table.get(&(method, path)).copied()
}

/// Check the matched route's rule before its handler runs: authenticate
/// (401), check the permission (403), count the request against the
/// caller's rate limits (429 with `Retry-After`), and hand the principal to
/// the handler so it is not authenticated twice. `HEAD` follows `GET`.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = match req.method().as_str() {
        "HEAD" => "GET",
        m => m,
    };
    let Some(path) = req.extensions().get::<MatchedPath>().map(|m| m.as_str()) else {
        return next.run(req).await;
    };
    let Some(access) = rule(method, path) else {
        tracing::error!(method, path, "route without an access rule refused");
        return ApiError::forbidden("this route has no access rule").into_response();
    };
    if access == Public {
        return next.run(req).await;
    }
    let uncounted = path == UNCOUNTED;
    let (mut parts, body) = req.into_parts();
    let principal =
        match <Principal as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
    let allowed = match access {
        Public | SignedIn => Ok(()),
        Needs(p) => principal.require(p),
        PlatformAdmin => principal.require_platform_admin(),
    };
    if let Err(forbidden) = allowed {
        return ApiError::from(forbidden).into_response();
    }
    // Every authenticated request counts against its rate limits, but for
    // the one that tells a limited client when to come back.
    let admission = if uncounted {
        Ok(None)
    } else {
        state.limits.admit_request(&principal).await
    };
    let admitted = match admission {
        Ok(admitted) => admitted,
        Err(e) => {
            let full = match &e {
                LimitError::Exceeded(over) => Some(Admitted {
                    limit: over.limit,
                    remaining: 0,
                    resets_at: over.resets_at,
                }),
                LimitError::Storage(_) => None,
            };
            let mut response = ApiError::from(e).into_response();
            if let Some(full) = full {
                rate_limit_headers(response.headers_mut(), Unit::Requests, full);
            }
            return response;
        }
    };
    parts.extensions.insert(principal);
    req = Request::from_parts(parts, body);
    let mut response = next.run(req).await;
    if let Some(admitted) = admitted {
        rate_limit_headers(response.headers_mut(), Unit::Requests, admitted);
    }
    response
}

/// The request limit's headers: limit, remaining, reset.
const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];

/// The token limit's headers: limit, remaining, reset.
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// What a rate-limit header counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Requests (every route).
    Requests,
    /// Tokens (`/v1`, when a token limit applies).
    Tokens,
}

/// The `x-ratelimit-*` headers OpenAI clients read, for requests or
/// tokens: the tightest limit, what is left of it and when its window
/// resets (`1m30s`, `45s`).
pub fn rate_limit_headers(headers: &mut HeaderMap, unit: Unit, a: Admitted) {
    let secs = crate::limits::seconds_until(a.resets_at);
    let reset = match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    };
    let [limit, remaining, resets] = match unit {
        Unit::Requests => REQUEST_HEADERS,
        Unit::Tokens => TOKEN_HEADERS,
    };
    headers.insert(limit, HeaderValue::from(a.limit));
    headers.insert(remaining, HeaderValue::from(a.remaining));
    if let Ok(value) = HeaderValue::from_str(&reset) {
        headers.insert(resets, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_has_exactly_one_rule() {
        let doc = crate::api::openapi_document();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (method, present) in ops {
                if present {
                    assert!(
                        rule(method, path).is_some(),
                        "{method} {path} has no rule in api/access.rs"
                    );
                    documented.insert((method, path.as_str()));
                }
            }
        }
        for (method, path, _) in RULES {
            assert!(
                documented.contains(&(*method, *path)),
                "{method} {path} has a rule but is not documented"
            );
        }
        assert_eq!(documented.len(), RULES.len(), "a rule is listed twice");
    }
}
