//! Integrations: the organization's provider credentials. The list, a new
//! one's form, an integration's page with its edit form, the test button
//! (`POST /api/integrations/{id}/test`, whose outcome the API keeps as
//! the integration's last test and the page shows), disable, enable and
//! delete. The key is write-only here as in the API: only its fingerprint
//! is ever shown.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::instrument;

use super::html::{self, Control, esc, t};
use super::{Console, Draft, Id, Sent, Session, enc, number, redirect, texts};
use crate::auth::Permission;

/// The provider kinds the API takes, as (value, label).
const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("groq", "Groq"),
    ("perplexity", "Perplexity"),
    ("openai_compatible", "OpenAI-compatible"),
    ("custom", "Custom (your provider plugin)"),
    ("mcp", "MCP tool server"),
    ("taskmaster", "Task Master (MCP)"),
    ("mock", "Mock (offline)"),
];

/// The form's text fields sent as they are.
const TEXT_FIELDS: &[&str] = &["name", "plugin", "base_url", "default_model", "api_key"];

/// A test's outcome in words: passed with its latency and model, or the
/// failure's source, kind and message.
pub(crate) fn outcome(result: &Value) -> String {
    if result.is_null() {
        return "Not tested yet.".to_string();
    }
    if result["ok"] == true {
        let model = match result["model"].as_str() {
            Some(m) if !m.is_empty() => format!(" (model {})", esc(m)),
            _ => String::new(),
        };
        format!(
            r#"<span class="status status-succeeded">passed</span> in {} ms{model}"#,
            t(&result["latency_ms"])
        )
    } else {
        let e = &result["error"];
        format!(
            r#"<span class="status status-failed">failed</span> {} / {}: {}"#,
            t(&e["source"]),
            t(&e["kind"]),
            t(&e["message"])
        )
    }
}

/// The fields of an integration's form; `current` (the integration, or
/// null for a new one) fills them unless `draft` was sent back.
fn fields(prefix: &str, current: &Value, draft: Draft<'_>) -> String {
    let value = |key: &str| draft.value(key, &current[key]);
    let mut out = html::field(
        &format!("{prefix}-name"),
        "name",
        "Name",
        Control::Input("text"),
        &value("name"),
        true,
    );
    if current.is_null() {
        out.push_str(&html::field(
            &format!("{prefix}-provider"),
            "provider",
            "Provider",
            Control::Select(PROVIDERS),
            &value("provider"),
            true,
        ));
    }
    out.push_str(&html::field(
        &format!("{prefix}-plugin"),
        "plugin",
        "Plugin (blank: the provider's own)",
        Control::Input("text"),
        &value("plugin"),
        false,
    ));
    out.push_str(&html::field(
        &format!("{prefix}-base-url"),
        "base_url",
        "Base URL (blank: the provider's)",
        Control::Input("text"),
        &value("base_url"),
        false,
    ));
    out.push_str(&html::field(
        &format!("{prefix}-model"),
        "default_model",
        "Default model",
        Control::Input("text"),
        &value("default_model"),
        false,
    ));
    out.push_str(&html::field(
        &format!("{prefix}-timeout"),
        "timeout_ms",
        "Timeout (ms)",
        Control::Input("number"),
        &value("timeout_ms"),
        false,
    ));
    let key_label = if current.is_null() {
        "API key"
    } else {
        "New API key (blank: keep the stored one)"
    };
    // Never filled in, not even from a refused form.
    out.push_str(&html::field(
        &format!("{prefix}-key"),
        "api_key",
        key_label,
        Control::Input("password"),
        "",
        false,
    ));
    out
}

/// The API body of an integration's form.
fn body(form: &HashMap<String, String>, new: bool) -> Value {
    let mut body = texts(form, TEXT_FIELDS);
    if new && let Some(p) = super::given(form, "provider") {
        body.insert("provider".into(), Value::from(p));
    }
    if let Some(t) = number(form, "timeout_ms") {
        body.insert("timeout_ms".into(), t);
    }
    Value::Object(body)
}

/// `GET /console/integrations`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(State(console): State<Console>, session: Session) -> Response {
    list_page(&console, &session, Draft::none()).await
}

async fn list_page(console: &Console, session: &Session, draft: Draft<'_>) -> Response {
    let mut body = String::from("<h1>Integrations</h1>");
    let mut code = match console.get(session, "/api/integrations?limit=100").await {
        Ok(list) => {
            let mut rows = String::new();
            for i in list["items"].as_array().into_iter().flatten() {
                let id = html::text(&i["id"]);
                rows.push_str(&format!(
                    r#"<tr data-integration="{id}"><td><a href="/console/integrations/{href}">{name}</a></td><td>{provider}</td><td class="hide-narrow">{plugin}</td><td class="hide-narrow">{model}</td><td>{status}</td><td>{test}</td></tr>"#,
                    id = esc(&id),
                    href = enc(&id),
                    name = t(&i["name"]),
                    provider = t(&i["provider"]),
                    plugin = t(&i["plugin"]),
                    model = t(&i["default_model"]),
                    status = html::status(&i["status"]),
                    test = outcome(&i["last_test_result"]),
                ));
            }
            if rows.is_empty() {
                body.push_str("<p>No integrations yet.</p>");
            } else {
                body.push_str(&html::table(
                    "integrations",
                    &[
                        ("Name", ""),
                        ("Provider", ""),
                        ("Plugin", "hide-narrow"),
                        ("Default model", "hide-narrow"),
                        ("Status", ""),
                        ("Last test", ""),
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
    if session.can(Permission::ManageIntegrations) {
        body.push_str("<h2>New integration</h2>");
        body.push_str(&html::form(
            session,
            "/console/integrations",
            "new-integration",
            &fields("new", &Value::Null, draft),
            "Add integration",
            false,
        ));
    }
    (
        code,
        html::page(Some(session), "Integrations", "Integrations", &body),
    )
        .into_response()
}

/// `POST /console/integrations`: create one, then its page.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn create(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let body = body(&form, true);
    let sent = console.submit(
        &session,
        &form,
        Method::POST,
        "/api/integrations",
        Some(&body),
    );
    match sent.await {
        Sent::Done(created) => redirect(&format!(
            "/console/integrations/{}",
            enc(&html::text(&created["id"]))
        )),
        Sent::Refused(failed) => list_page(&console, &session, Draft::sent(&form, &failed)).await,
        Sent::Stop(resp) => resp,
    }
}

/// `GET /console/integrations/{id}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    detail_page(&console, &session, &id, Draft::none()).await
}

async fn detail_page(console: &Console, session: &Session, id: &str, draft: Draft<'_>) -> Response {
    let i = match console
        .get(session, &format!("/api/integrations/{}", enc(id)))
        .await
    {
        Ok(i) => i,
        Err(failed) => return failed.into_response(),
    };
    let base = format!("/console/integrations/{}", enc(id));
    let mut body = html::heading("/console/integrations", "Integrations", &i["name"]);
    body.push_str(&html::facts(&[
        ("Provider", t(&i["provider"])),
        ("Plugin", t(&i["plugin"])),
        ("Base URL", t(&i["base_url"])),
        ("Default model", t(&i["default_model"])),
        ("Timeout (ms)", t(&i["timeout_ms"])),
        ("Status", html::status(&i["status"])),
        (
            "Key",
            if i["has_api_key"] == true {
                format!(r#"<span class="mono">{}</span>"#, t(&i["key_fingerprint"]))
            } else {
                "none".into()
            },
        ),
        ("Created", t(&i["created_at"])),
    ]));
    body.push_str(&format!(
        r#"<h2>Last test</h2><p id="test-outcome">{}</p><p class="mono">{}</p>"#,
        outcome(&i["last_test_result"]),
        t(&i["last_test_at"]),
    ));
    let mut code = StatusCode::OK;
    body.push_str(&draft.refusal(&mut code));
    if session.can(Permission::ManageIntegrations) {
        body.push_str(r#"<div class="actions">"#);
        body.push_str(&html::button(
            session,
            &format!("{base}/test"),
            "Test",
            "",
            &[],
        ));
        let (what, label) = if i["status"] == "disabled" {
            ("enable", "Enable")
        } else {
            ("disable", "Disable")
        };
        body.push_str(&html::button(
            session,
            &format!("{base}/{what}"),
            label,
            "secondary",
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
            "edit-integration",
            &fields("edit", &i, draft),
            "Save",
            false,
        ));
    }
    (
        code,
        html::page(Some(session), "Integration", "Integrations", &body),
    )
        .into_response()
}

/// `POST /console/integrations/{id}`: save the edit form.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn update(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/integrations/{}", enc(&id));
    let body = body(&form, false);
    match console
        .submit(&session, &form, Method::PUT, &path, Some(&body))
        .await
    {
        Sent::Done(_) => redirect(&format!("/console/integrations/{}", enc(&id))),
        Sent::Refused(failed) => {
            detail_page(&console, &session, &id, Draft::sent(&form, &failed)).await
        }
        Sent::Stop(resp) => resp,
    }
}

/// `POST /console/integrations/{id}/{action}`: `test` (the API's test,
/// whose outcome the page then shows), `disable`, `enable` or `delete`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn act(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let api = format!("/api/integrations/{}", enc(&id));
    let page = format!("/console/integrations/{}", enc(&id));
    let (method, path, body, back) = match action.as_str() {
        "test" => (Method::POST, format!("{api}/test"), Some(json!({})), page),
        "disable" => (
            Method::PUT,
            api,
            Some(json!({ "status": "disabled" })),
            page,
        ),
        "enable" => (Method::PUT, api, Some(json!({ "status": "active" })), page),
        "delete" => (Method::DELETE, api, None, "/console/integrations".into()),
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
    fn outcomes_in_words() {
        assert_eq!(outcome(&Value::Null), "Not tested yet.");
        let ok = outcome(&json!({ "ok": true, "latency_ms": 12, "model": "m<1>" }));
        assert!(ok.contains("passed") && ok.contains("12 ms") && ok.contains("m&lt;1&gt;"));
        let bad = outcome(
            &json!({ "ok": false, "error": { "source": "provider", "kind": "auth", "message": "bad key" } }),
        );
        assert!(bad.contains("failed") && bad.contains("provider / auth: bad key"));
    }

    #[test]
    fn blank_fields_are_left_out() {
        let form: HashMap<String, String> = [
            ("name", " n "),
            ("provider", "mock"),
            ("base_url", ""),
            ("timeout_ms", "5000"),
            ("api_key", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            body(&form, true),
            json!({ "name": "n", "provider": "mock", "timeout_ms": 5000 })
        );
        assert_eq!(
            body(&form, false),
            json!({ "name": "n", "timeout_ms": 5000 })
        );
    }
}
