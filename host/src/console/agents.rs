//! Agents: the list, a new one's form, an agent's page with its
//! configuration, its edit form, the dry run (`POST /api/agents/{id}/test`,
//! whose result the API keeps as the agent's last test and the page
//! shows: tokens, cost, latency, the sample answer, a cheaper or faster
//! alternative) and delete.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::instrument;

use super::html::{self, Control, esc, t};
use super::integrations::outcome;
use super::{Console, Draft, Id, Sent, Session, enc, number, redirect, texts};
use crate::auth::Permission;

const TYPES: &[(&str, &str)] = &[
    ("code_generator", "Code generator"),
    ("researcher", "Researcher"),
    ("mcp_orchestrator", "MCP orchestrator"),
];

const STATUSES: &[(&str, &str)] = &[
    ("active", "active"),
    ("pending", "pending"),
    ("inactive", "inactive"),
    ("error", "error"),
];

/// The fields of an agent's form; `current` (the agent, or null for a new
/// one) fills them unless `draft` was sent back.
fn fields(prefix: &str, current: &Value, draft: Draft<'_>) -> String {
    let top = |key: &str| draft.value(key, &current[key]);
    let config = |key: &str| draft.value(key, &current["config"][key]);
    let id = |name: &str| format!("{prefix}-{name}");
    let mut status = top("status");
    if status.is_empty() {
        status = "active".into();
    }
    [
        html::field(
            &id("name"),
            "name",
            "Name",
            Control::Input("text"),
            &top("name"),
            true,
        ),
        html::field(
            &id("type"),
            "type",
            "Type",
            Control::Select(TYPES),
            &top("type"),
            true,
        ),
        html::field(
            &id("status"),
            "status",
            "Status",
            Control::Select(STATUSES),
            &status,
            true,
        ),
        html::field(
            &id("provider"),
            "provider",
            "Provider (an integration's name or a provider kind)",
            Control::Input("text"),
            &config("provider"),
            true,
        ),
        html::field(
            &id("model"),
            "model",
            "Model",
            Control::Input("text"),
            &config("model"),
            true,
        ),
        html::field(
            &id("temperature"),
            "temperature",
            "Temperature (0–2)",
            Control::Input("text"),
            &config("temperature"),
            false,
        ),
        html::field(
            &id("max-tokens"),
            "max_tokens",
            "Max output tokens",
            Control::Input("number"),
            &config("max_tokens"),
            false,
        ),
        html::field(
            &id("routing"),
            "routing_policy",
            "Routing policy (router plugin)",
            Control::Input("text"),
            &config("routing_policy"),
            false,
        ),
        html::field(
            &id("system-prompt"),
            "system_prompt",
            "System prompt",
            Control::TextArea,
            &config("system_prompt"),
            false,
        ),
    ]
    .concat()
}

/// The API body of an agent's form (the whole configuration: the API
/// replaces it and records a version when it changed).
fn body(form: &HashMap<String, String>) -> Value {
    let mut config = texts(form, &["provider", "model", "routing_policy"]);
    // A system prompt is kept as typed (its spacing may matter).
    if let Some(sp) = form.get("system_prompt").filter(|s| !s.trim().is_empty()) {
        config.insert("system_prompt".into(), Value::from(sp.as_str()));
    }
    for key in ["temperature", "max_tokens"] {
        if let Some(n) = number(form, key) {
            config.insert(key.into(), n);
        }
    }
    let mut body = texts(form, &["name", "type", "status"]);
    body.insert("config".into(), Value::Object(config));
    Value::Object(body)
}

/// `GET /console/agents`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(State(console): State<Console>, session: Session) -> Response {
    list_page(&console, &session, Draft::none()).await
}

async fn list_page(console: &Console, session: &Session, draft: Draft<'_>) -> Response {
    let mut body = String::from("<h1>Agents</h1>");
    let mut code = match console.get(session, "/api/agents?limit=100").await {
        Ok(list) => {
            let mut rows = String::new();
            for a in list["items"].as_array().into_iter().flatten() {
                let id = html::text(&a["id"]);
                rows.push_str(&format!(
                    r#"<tr data-agent="{id}"><td><a href="/console/agents/{href}">{name}</a></td><td class="hide-narrow">{kind}</td><td>{status}</td><td>{provider}</td><td class="hide-narrow">{model}</td><td>{test}</td></tr>"#,
                    id = esc(&id),
                    href = enc(&id),
                    name = t(&a["name"]),
                    kind = t(&a["type"]),
                    status = html::status(&a["status"]),
                    provider = t(&a["config"]["provider"]),
                    model = t(&a["config"]["model"]),
                    test = outcome(&a["last_test"]),
                ));
            }
            if rows.is_empty() {
                body.push_str("<p>No agents yet.</p>");
            } else {
                body.push_str(&html::table(
                    "agents",
                    &[
                        ("Name", ""),
                        ("Type", "hide-narrow"),
                        ("Status", ""),
                        ("Provider", ""),
                        ("Model", "hide-narrow"),
                        ("Last dry run", ""),
                    ],
                    &rows,
                ));
            }
            StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    body.push_str(&draft.refusal(&mut code));
    if session.can(Permission::CreateAgent) {
        body.push_str("<h2>New agent</h2>");
        body.push_str(&html::form(
            session,
            "/console/agents",
            "new-agent",
            &fields("new", &Value::Null, draft),
            "Add agent",
            false,
        ));
    }
    (code, html::page(Some(session), "Agents", "Agents", &body)).into_response()
}

/// `POST /console/agents`: create one, then its page.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn create(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let body = body(&form);
    let sent = console.submit(&session, &form, Method::POST, "/api/agents", Some(&body));
    match sent.await {
        Sent::Done(created) => redirect(&format!(
            "/console/agents/{}",
            enc(&html::text(&created["id"]))
        )),
        Sent::Refused(failed) => list_page(&console, &session, Draft::sent(&form, &failed)).await,
        Sent::Stop(resp) => resp,
    }
}

/// The last dry run: its outcome, tokens, cost, answer and suggestion.
fn dry_run(test: &Value) -> String {
    let mut out = format!(r#"<p id="dry-run-outcome">{}</p>"#, outcome(test));
    if test.is_null() {
        return out;
    }
    out.push_str(&html::facts(&[
        ("Integration", t(&test["integration_id"])),
        ("Tokens in", t(&test["input_tokens"])),
        ("Tokens out", t(&test["output_tokens"])),
        (
            "Estimated cost ($)",
            esc(&html::money(&test["estimated_cost_usd"])),
        ),
        ("Tested at", t(&test["tested_at"])),
        ("Suggestion", t(&test["suggestion"]["message"])),
    ]));
    if let Some(sample) = test["sample_output"].as_str() {
        out.push_str(&format!(
            r#"<h3>Sample answer</h3><pre id="sample-output">{}</pre>"#,
            esc(sample)
        ));
    }
    out
}

/// `GET /console/agents/{id}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    detail_page(&console, &session, &id, Draft::none()).await
}

async fn detail_page(console: &Console, session: &Session, id: &str, draft: Draft<'_>) -> Response {
    let a = match console
        .get(session, &format!("/api/agents/{}", enc(id)))
        .await
    {
        Ok(a) => a,
        Err(failed) => return failed.into_response(),
    };
    let base = format!("/console/agents/{}", enc(id));
    let mut body = html::heading("/console/agents", "Agents", &a["name"]);
    body.push_str(&html::facts(&[
        ("Type", t(&a["type"])),
        ("Status", html::status(&a["status"])),
        ("Provider", t(&a["config"]["provider"])),
        ("Model", t(&a["config"]["model"])),
        ("Configuration version", t(&a["config_version"])),
        ("Updated", t(&a["updated_at"])),
    ]));
    body.push_str("<h2>Configuration</h2>");
    body.push_str(&html::json_block(&a["config"]));
    body.push_str(&format!(
        r#"<h2>Last dry run</h2><section id="dry-run">{}</section>"#,
        dry_run(&a["last_test"])
    ));
    let mut code = StatusCode::OK;
    body.push_str(&draft.refusal(&mut code));
    if session.can(Permission::CreateAgent) {
        body.push_str(r#"<div class="actions">"#);
        body.push_str(&html::button(
            session,
            &format!("{base}/test"),
            "Dry run",
            "",
            &[],
        ));
        body.push_str(&html::button(
            session,
            &format!("{base}/delete"),
            "Delete",
            "danger",
            &[],
        ));
        body.push_str("</div><h2>Edit</h2>");
        body.push_str(&html::form(
            session,
            &base,
            "edit-agent",
            &fields("edit", &a, draft),
            "Save",
            false,
        ));
    }
    (code, html::page(Some(session), "Agent", "Agents", &body)).into_response()
}

/// `POST /console/agents/{id}`: save the edit form.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn update(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/agents/{}", enc(&id));
    match console
        .submit(&session, &form, Method::PUT, &path, Some(&body(&form)))
        .await
    {
        Sent::Done(_) => redirect(&format!("/console/agents/{}", enc(&id))),
        Sent::Refused(failed) => {
            detail_page(&console, &session, &id, Draft::sent(&form, &failed)).await
        }
        Sent::Stop(resp) => resp,
    }
}

/// `POST /console/agents/{id}/{action}`: `test` (the dry run, whose
/// result the page then shows) or `delete`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn act(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let api = format!("/api/agents/{}", enc(&id));
    let (method, path, body, back) = match action.as_str() {
        "test" => (
            Method::POST,
            format!("{api}/test"),
            Some(json!({})),
            format!("/console/agents/{}", enc(&id)),
        ),
        "delete" => (Method::DELETE, api, None, "/console/agents".into()),
        _ => return html::error_page(StatusCode::NOT_FOUND, "No such action."),
    };
    console
        .form_write(&session, &form, method, &path, body.as_ref(), &back)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_the_api_body() {
        let form: HashMap<String, String> = [
            ("name", "Coder"),
            ("type", "code_generator"),
            ("status", "active"),
            ("provider", "mock"),
            ("model", "gpt-4o"),
            ("temperature", "0.5"),
            ("max_tokens", "100"),
            ("routing_policy", ""),
            ("system_prompt", "  Be brief.\n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            body(&form),
            json!({ "name": "Coder", "type": "code_generator", "status": "active",
                    "config": { "provider": "mock", "model": "gpt-4o", "temperature": 0.5,
                                "max_tokens": 100, "system_prompt": "  Be brief.\n" } })
        );
    }
}
