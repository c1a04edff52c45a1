//! The OpenAPI document's frame (title, security scheme, tags) and the
//! handler that serves it at `GET /api/openapi.json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::Extension;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Title, description, tags and the bearer security scheme; the paths come
/// from the handlers via `utoipa-axum`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vel",
        description = "Multi-provider AI task orchestration with WebAssembly plugins. \
                       Errors have the shape {\"error\":{\"code\",\"message\",\"details\"}}; \
                       under /v1 (the OpenAI-compatible gateway), OpenAI's \
                       {\"error\":{\"message\",\"type\",\"param\",\"code\"}}, an invalid field being a 400 there."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "users", description = "Users"),
        (name = "organizations", description = "Tenants and their members"),
        (name = "rate-limits", description = "Requests per minute and per hour, tasks per hour, per organization, user and API key, held across instances; 429 with Retry-After and x-ratelimit-* headers"),
        (name = "roles", description = "Permissions, the built-in roles' sets, custom roles and role assignment; every operation states the permission it needs"),
        (name = "agents", description = "Agent configuration"),
        (name = "integrations", description = "Provider credentials and settings"),
        (name = "api-keys", description = "Keys for machine clients"),
        (name = "audit", description = "Audit trail"),
        (name = "plugins", description = "The plugin registry: upload, activate, roll back, statistics"),
        (name = "analytics", description = "Usage over time, costs and latency percentiles, from one-minute buckets"),
        (name = "budgets", description = "Spend limits per organization, agent, API key or user, per day or month, enforced before every provider call across instances"),
        (name = "alerts", description = "What needs attention: budget thresholds passed"),
        (name = "webhooks", description = "Endpoints told of an organization's events: signed (X-Vel-Signature), retried with back-off, logged"),
        (name = "batches", description = "Up to 10,000 tasks submitted at once, run a set number at a time; progress, cancellation, results as JSON, JSON Lines or CSV"),
        (name = "benchmarks", description = "Provider benchmarks: prompts × targets × repetitions run as ordinary tasks; latency distributions, cost, tokens, errors, ratings, and pairwise comparisons by Welch's t-test"),
        (name = "workflows", description = "Durable multi-step workflows: tasks, condition-decided choices, approvals"),
        (name = "workflow-templates", description = "Versioned workflow templates with typed variables, private, organization-wide or public (the marketplace), and workflows started from them"),
        (name = "system", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or vel_ API key")
                    .build(),
            ),
        );
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document(Extension(doc): Extension<Arc<Value>>) -> Json<Value> {
    Json((*doc).clone())
}

/// The document as served: what the handlers' annotations produce, with
/// what is the same for every operation filled in by one rule rather than
/// written on each: a description on every response (its status's reason
/// unless it says more), 400 on every operation, 401 on every secured one,
/// 413, 415 and 422 on every operation that takes a JSON body (under
/// `/v1`: OpenAI's error body, and no 422, an invalid field being a 400
/// there), and unique operation ids (`{tag}_{function}` where a function
/// name repeats). A catch-all path parameter (`{*id}`, which may hold a
/// slash) reads as an ordinary one (`{id}`).
pub fn complete(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    let ids = unique_operation_ids(paths);
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            complete_operation(op, path.starts_with("/v1/"));
            if let Some(access) = super::access::rule(&method.to_ascii_uppercase(), path) {
                op.insert("x-vel-access".into(), Value::String(access.describe()));
            }
            if let Some(id) = ids.get(&(path.clone(), method.clone())) {
                op.insert("operationId".into(), Value::String(id.clone()));
            }
        }
    }
    if paths.keys().any(|path| path.contains("{*")) {
        *paths = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| (path.replace("{*", "{"), item))
            .collect();
    }
    doc
}

/// An id for every operation, by (path, method): the function's name where
/// no other operation has it, else `{tag}_{function}`, else (one tag with
/// two functions of that name) `{method}_{path words}`.
fn unique_operation_ids(paths: &Map<String, Value>) -> HashMap<(String, String), String> {
    let mut ops = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or(method);
            let tag = op
                .get("tags")
                .and_then(|t| t.get(0))
                .and_then(Value::as_str)
                .unwrap_or("api")
                .replace('-', "_");
            ops.push((path.clone(), method.clone(), id.to_string(), tag));
        }
    }
    let count = |ids: &mut dyn Iterator<Item = String>| {
        let mut n: HashMap<String, usize> = HashMap::new();
        for id in ids {
            *n.entry(id).or_default() += 1;
        }
        n
    };
    let plain = count(&mut ops.iter().map(|o| o.2.clone()));
    let tagged: Vec<String> = ops
        .iter()
        .map(|(_, _, id, tag)| {
            if plain[id] > 1 {
                format!("{tag}_{id}")
            } else {
                id.clone()
            }
        })
        .collect();
    let again = count(&mut tagged.iter().cloned());
    ops.into_iter()
        .zip(tagged)
        .map(|((path, method, _, _), id)| {
            let id = if again[&id] > 1 {
                format!("{method}_{}", path_words(&path))
            } else {
                id
            };
            ((path, method), id)
        })
        .collect()
}

/// `/api/organizations/{id}/members` → `api_organizations_id_members`.
fn path_words(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_start_matches('{')
                .trim_end_matches('}')
                .replace('-', "_")
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// Fills in one operation's common responses and descriptions; `openai`:
/// the gateway's, whose errors are OpenAI's.
fn complete_operation(op: &mut Map<String, Value>, openai: bool) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let json_body = op
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .is_some_and(|c| c.get("application/json").is_some());
    let responses = op
        .entry("responses")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    // Any URL can be malformed: a NUL, a path segment or query parameter
    // that does not parse, an unknown parameter.
    let mut common: Vec<(&str, &str)> =
        vec![("400", "The URL, a parameter or the body is malformed")];
    if secured {
        common.push((
            "401",
            "No valid credentials: a missing, expired or revoked token or key",
        ));
    }
    if json_body {
        common.extend([
            ("413", "The body is larger than the route accepts"),
            ("415", "The body is not `application/json`"),
        ]);
        if !openai {
            common.push(("422", "A field is invalid; `details` names each"));
        }
    }
    let schema = if openai {
        "#/components/schemas/OpenAiErrorBody"
    } else {
        "#/components/schemas/ErrorBody"
    };
    for (status, description) in common {
        responses.entry(status).or_insert_with(|| {
            json!({ "description": description,
                    "content": { "application/json": {
                        "schema": { "$ref": schema } } } })
        });
    }
    for (status, response) in responses.iter_mut() {
        if let Some(response) = response.as_object_mut()
            && !response.contains_key("description")
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Response");
            response.insert("description".into(), Value::String(reason.to_string()));
        }
    }
}
