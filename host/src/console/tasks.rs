//! Tasks: search and filters (description or prompt, date range, status,
//! provider, agent), 50 a page, and a task's drill-down (request, plan,
//! attempts with timings, cost, output) whose status follows the task's
//! event stream without a reload.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};
use tracing::instrument;

use super::html::{self, esc, t};
use super::{Console, Failed, Id, Session, enc, redirect};
use crate::auth::Permission;

/// Tasks a page shows.
pub(crate) const PAGE_SIZE: i64 = 50;

/// The statuses a task can have.
const STATUSES: &[&str] = &["pending", "in_progress", "completed", "failed", "cancelled"];

/// The API query of the console's filters (dates are whole UTC days;
/// `to` includes its day).
pub(crate) fn api_query(filters: &HashMap<String, String>, page: i64) -> String {
    let get = |k: &str| filters.get(k).map(|v| v.trim()).unwrap_or("");
    let mut pairs = vec![
        ("limit".to_string(), PAGE_SIZE.to_string()),
        ("offset".to_string(), ((page - 1) * PAGE_SIZE).to_string()),
    ];
    for key in ["q", "status", "provider", "agent_id"] {
        if !get(key).is_empty() {
            pairs.push((key.to_string(), get(key).to_string()));
        }
    }
    if !get("from").is_empty() {
        pairs.push(("from".into(), format!("{}T00:00:00Z", get("from"))));
    }
    if !get("to").is_empty() {
        let to = chrono::NaiveDate::parse_from_str(get("to"), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.succ_opt())
            .map(|d| format!("{d}T00:00:00Z"))
            // Not a date: the API names the problem.
            .unwrap_or_else(|| get("to").to_string());
        pairs.push(("to".into(), to));
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("/api/tasks?{}", query.join("&"))
}

fn options(current: &str, choices: &[(String, String)]) -> String {
    let mut out = String::from(r#"<option value="">Any</option>"#);
    for (value, label) in choices {
        let selected = if value == current { " selected" } else { "" };
        out.push_str(&format!(
            r#"<option value="{}"{selected}>{}</option>"#,
            esc(value),
            esc(label)
        ));
    }
    out
}

/// `GET /console/tasks`: the filtered list.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(
    State(console): State<Console>,
    session: Session,
    Query(filters): Query<HashMap<String, String>>,
) -> Response {
    let page = filters
        .get("page")
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1);
    let get = |k: &str| filters.get(k).map(String::as_str).unwrap_or("");
    let tasks_path = api_query(&filters, page);
    let (tasks, agents, integrations) = tokio::join!(
        console.get(&session, &tasks_path),
        console.get(&session, "/api/agents?limit=100"),
        console.get(&session, "/api/integrations?limit=100"),
    );
    let named = |list: &Result<Value, Failed>, value: &str| -> Vec<(String, String)> {
        list.as_ref()
            .ok()
            .and_then(|l| l["items"].as_array())
            .into_iter()
            .flatten()
            .map(|i| (html::text(&i[value]), html::text(&i["name"])))
            .collect()
    };
    let statuses: Vec<(String, String)> = STATUSES
        .iter()
        .map(|s| (s.to_string(), s.replace('_', " ")))
        .collect();
    let mut body = format!(
        r#"<h1>Tasks</h1>
<form class="filters" method="get" action="/console/tasks" role="search">
<div><label for="f-q">Description or prompt</label><input id="f-q" name="q" value="{q}" maxlength="200"></div>
<div><label for="f-status">Status</label><select id="f-status" name="status">{status}</select></div>
<div><label for="f-provider">Provider</label><select id="f-provider" name="provider">{provider}</select></div>
<div><label for="f-agent">Agent</label><select id="f-agent" name="agent_id">{agent}</select></div>
<div><label for="f-from">From (UTC day)</label><input id="f-from" name="from" type="date" value="{from}"></div>
<div><label for="f-to">To (UTC day)</label><input id="f-to" name="to" type="date" value="{to}"></div>
<div><button type="submit" id="search">Search</button></div>
</form>"#,
        q = esc(get("q")),
        status = options(get("status"), &statuses),
        provider = options(get("provider"), &named(&integrations, "name")),
        agent = options(get("agent_id"), &named(&agents, "id")),
        from = esc(get("from")),
        to = esc(get("to")),
    );
    let status = match &tasks {
        Ok(list) => {
            let total = list["total"].as_i64().unwrap_or(0);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            body.push_str(&format!(
                r#"<p><span id="task-total">{total}</span> matching tasks</p><div class="table-wrap"><table id="tasks">
<thead><tr><th scope="col">Created</th><th scope="col">Description</th><th scope="col">Status</th><th scope="col" class="hide-narrow">Provider</th><th scope="col" class="hide-narrow">Model</th><th scope="col" class="num">Cost ($)</th></tr></thead><tbody>"#
            ));
            for task in &items {
                let id = html::text(&task["id"]);
                let description = match html::text(&task["description"]) {
                    d if d.is_empty() => id.clone(),
                    d => d,
                };
                body.push_str(&format!(
                    r#"<tr data-task="{id}"><td class="mono">{created}</td><td><a href="/console/tasks/{href}">{description}</a></td><td>{status}</td><td class="hide-narrow">{provider}</td><td class="hide-narrow">{model}</td><td class="num">{cost}</td></tr>"#,
                    id = esc(&id),
                    href = enc(&id),
                    created = t(&task["created_at"]),
                    description = esc(&description),
                    status = html::status(&task["status"]),
                    provider = t(&task["provider"]),
                    model = t(&task["model"]),
                    cost = esc(&html::money(&task["cost_usd"])),
                ));
            }
            body.push_str("</tbody></table></div>");
            let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
            let link = |p: i64| {
                let p = p.to_string();
                html::href(
                    "/console/tasks",
                    &[
                        ("q", get("q")),
                        ("status", get("status")),
                        ("provider", get("provider")),
                        ("agent_id", get("agent_id")),
                        ("from", get("from")),
                        ("to", get("to")),
                        ("page", p.as_str()),
                    ],
                )
            };
            body.push_str(r#"<nav class="pager" aria-label="Pages">"#);
            if page > 1 {
                body.push_str(&format!(
                    r#"<a href="{}" rel="prev">Previous</a>"#,
                    esc(&link(page - 1))
                ));
            }
            body.push_str(&format!("<span>Page {page} of {pages}</span>"));
            if page < pages {
                body.push_str(&format!(
                    r#"<a href="{}" rel="next">Next</a>"#,
                    esc(&link(page + 1))
                ));
            }
            body.push_str("</nav>");
            http::StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(failed));
            failed.status
        }
    };
    (status, html::page(Some(&session), "Tasks", "Tasks", &body)).into_response()
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// The part of a task's page that changes while it runs.
fn summary_html(session: &Session, task: &Value) -> String {
    let id = html::text(&task["id"]);
    let status = html::text(&task["status"]);
    let mut out = format!(
        r#"<dl class="facts">
<dt>Status</dt><dd><span data-field="status" class="status status-{status_class}">{status}</span></dd>
<dt>Provider</dt><dd>{provider}</dd><dt>Model</dt><dd>{model}</dd>
<dt>Cost</dt><dd>$<span data-field="cost">{cost}</span></dd>
<dt>Tokens</dt><dd>{input} in · {output} out</dd>
<dt>Runs</dt><dd>{runs}</dd><dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd>
</dl>"#,
        status_class = esc(&status),
        status = esc(&status),
        provider = t(&task["provider"]),
        model = t(&task["model"]),
        cost = esc(&html::money(&task["cost_usd"])),
        input = t(&task["input_tokens"]),
        output = t(&task["output_tokens"]),
        runs = t(&task["runs"]),
        started = t(&task["started_at"]),
        finished = t(&task["finished_at"]),
    );
    if !is_terminal(&status) && session.can(Permission::ExecuteTask) {
        out.push_str(r#"<div class="actions">"#);
        out.push_str(&html::button(
            session,
            &format!("/console/tasks/{}/cancel", enc(&id)),
            "Cancel task",
            "danger",
            &[],
        ));
        out.push_str("</div>");
    }
    out.push_str("<h2>Output</h2>");
    match &task["result"]["text"] {
        Value::String(text) => out.push_str(&format!(r#"<pre id="output">{}</pre>"#, esc(text))),
        _ if !task["error"].is_null() => {
            out.push_str(&format!(
                r#"<p class="error" id="task-error">{}: {}</p>"#,
                t(&task["error"]["kind"]),
                t(&task["error"]["message"])
            ));
        }
        _ => out.push_str(r#"<p id="output">No output yet.</p>"#),
    }
    if let Some(partial) = task["partial_output"].as_str() {
        out.push_str(&format!(
            "<h2>Partial output</h2><pre>{}</pre>",
            esc(partial)
        ));
    }
    out.push_str("<h2>Plan</h2>");
    match &task["plan"] {
        Value::Null => out.push_str("<p>Not routed yet.</p>"),
        plan => {
            out.push_str(&format!(
                r#"<dl class="facts"><dt>Router</dt><dd>{} {}</dd><dt>Reason</dt><dd>{}</dd><dt>Fallback</dt><dd>{}</dd></dl>"#,
                t(&plan["router"]),
                t(&plan["router_version"]),
                t(&plan["reason"]),
                t(&plan["fallback"]),
            ));
            let steps: Vec<String> = plan["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(html::text)
                .collect();
            if !steps.is_empty() {
                out.push_str(&format!(
                    "<ol>{}</ol>",
                    steps
                        .iter()
                        .map(|s| format!("<li class=\"mono\">{}</li>", esc(s)))
                        .collect::<String>()
                ));
            }
        }
    }
    out.push_str("<h2>Attempts</h2>");
    let attempts = task["attempts"].as_array().cloned().unwrap_or_default();
    if attempts.is_empty() {
        out.push_str("<p>None yet.</p>");
    } else {
        out.push_str(r#"<div class="table-wrap"><table id="attempts"><thead><tr><th scope="col">#</th><th scope="col">Provider / model</th><th scope="col">Outcome</th><th scope="col" class="num">Latency (ms)</th><th scope="col" class="num">Tokens</th><th scope="col" class="num">Cost ($)</th><th scope="col" class="hide-narrow">Started</th></tr></thead><tbody>"#);
        for a in &attempts {
            let error = if a["error"].is_null() {
                String::new()
            } else {
                format!(
                    "<br><small>{}: {}</small>",
                    t(&a["error"]["kind"]),
                    t(&a["error"]["message"])
                )
            };
            out.push_str(&format!(
                r#"<tr><td>{}</td><td class="mono">{} / {}</td><td>{}{error}</td><td class="num">{}</td><td class="num">{} / {}</td><td class="num">{}</td><td class="hide-narrow mono">{}</td></tr>"#,
                t(&a["seq"]),
                t(&a["provider"]),
                t(&a["model"]),
                html::status(&a["outcome"]),
                t(&a["latency_ms"]),
                t(&a["input_tokens"]),
                t(&a["output_tokens"]),
                esc(&html::money(&a["cost_usd"])),
                t(&a["started_at"]),
            ));
        }
        out.push_str("</tbody></table></div>");
    }
    out
}

/// `GET /console/tasks/{id}`: one task.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    let task = match console
        .get(&session, &format!("/api/tasks/{}", enc(&id)))
        .await
    {
        Ok(task) => task,
        Err(failed) => return failed.into_response(),
    };
    let summary = summary_html(&session, &task);
    let live = if is_terminal(task["status"].as_str().unwrap_or("")) {
        String::new()
    } else {
        format!(
            r#" data-live-src="/console/tasks/{id}/events" data-live-fragment="/console/tasks/{id}/summary" data-live-events="status" data-live-version="{v}""#,
            id = esc(&enc(&id)),
            v = html::version(&summary),
        )
    };
    let body = format!(
        r#"<p><a href="/console/tasks">← Tasks</a></p>
<h1>{title}</h1>
<p class="mono">{id} · {source} · created {created}{agent}</p>
<section id="task"{live} aria-live="polite">{summary}</section>
<h2>Request</h2>{request}"#,
        title = esc(&match html::text(&task["description"]) {
            d if d.is_empty() => "Task".to_string(),
            d => d,
        }),
        id = esc(&id),
        source = t(&task["source"]),
        created = t(&task["created_at"]),
        agent = match task["agent_id"].as_str() {
            Some(a) => format!(" · agent {}", esc(a)),
            None => String::new(),
        },
        request = html::json_block(&task["request"]),
    );
    html::page(Some(&session), "Task", "Tasks", &body).into_response()
}

/// `GET /console/tasks/{id}/summary`: the changing part of the task's
/// page, for the live refresh.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn summary(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    match console
        .get(&session, &format!("/api/tasks/{}", enc(&id)))
        .await
    {
        Ok(task) => html::fragment(summary_html(&session, &task)),
        Err(failed) => (failed.status, Html(html::failed_inline(&failed))).into_response(),
    }
}

/// `GET /console/tasks/{id}/events`: the task's event stream.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn events(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    headers: HeaderMap,
) -> Response {
    console
        .stream(
            &session,
            &format!("/api/tasks/{}/stream", enc(&id)),
            &headers,
        )
        .await
}

/// `POST /console/tasks/{id}/cancel`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn cancel(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return refused.into_response();
    }
    match console
        .post(
            &session,
            &format!("/api/tasks/{}/cancel", enc(&id)),
            &json!({}),
        )
        .await
    {
        Ok(_) => redirect(&format!("/console/tasks/{}", enc(&id))),
        Err(failed) => failed.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_api_query() {
        let f: HashMap<String, String> = [
            ("q", "invoice 7"),
            ("status", "failed"),
            ("from", "2026-01-02"),
            ("to", "2026-01-31"),
            ("provider", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            api_query(&f, 2),
            "/api/tasks?limit=50&offset=50&q=invoice%207&status=failed&from=2026-01-02T00%3A00%3A00Z&to=2026-02-01T00%3A00%3A00Z"
        );
    }
}
