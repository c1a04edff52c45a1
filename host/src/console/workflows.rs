//! Workflows: the list, and a workflow's graph with each step's status and
//! the branches taken (inline SVG drawn here from `graph` of
//! `GET /api/workflows/{id}`, with the same facts as a table), its step
//! runs, approve or reject at a gate, retry from a step. The graph
//! follows the workflow's event stream.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};
use tracing::instrument;

use super::html::{self, esc, t};
use super::{Console, Id, Session, enc, redirect};
use crate::auth::Permission;

/// Workflows a page shows.
const PAGE_SIZE: i64 = 50;

const STATUSES: &[&str] = &[
    "running",
    "awaiting_approval",
    "completed",
    "failed",
    "cancelled",
];

/// `GET /console/workflows`.
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
    let status = filters.get("status").map(String::as_str).unwrap_or("");
    let mut path = format!(
        "/api/workflows?limit={PAGE_SIZE}&offset={}",
        (page - 1) * PAGE_SIZE
    );
    if !status.is_empty() {
        path.push_str(&format!("&status={}", enc(status)));
    }
    let options: String = STATUSES
        .iter()
        .map(|s| {
            let selected = if *s == status { " selected" } else { "" };
            format!(
                r#"<option value="{s}"{selected}>{}</option>"#,
                s.replace('_', " ")
            )
        })
        .collect();
    let mut body = format!(
        r#"<h1>Workflows</h1>
<form class="filters" method="get" action="/console/workflows">
<div><label for="f-status">Status</label><select id="f-status" name="status"><option value="">Any</option>{options}</select></div>
<div><button type="submit">Filter</button></div></form>"#
    );
    let code = match console.get(&session, &path).await {
        Ok(list) => {
            let total = list["total"].as_i64().unwrap_or(0);
            body.push_str(&format!(
                r#"<p>{total} workflows</p><div class="table-wrap"><table id="workflows"><thead><tr><th scope="col">Created</th><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Current step</th><th scope="col" class="num">Cost ($)</th></tr></thead><tbody>"#
            ));
            for w in list["items"].as_array().into_iter().flatten() {
                let id = html::text(&w["id"]);
                body.push_str(&format!(
                    r#"<tr data-workflow="{id}"><td class="mono">{created}</td><td><a href="/console/workflows/{href}">{name}</a></td><td>{status}</td><td>{step}</td><td class="num">{cost}</td></tr>"#,
                    id = esc(&id),
                    href = enc(&id),
                    created = t(&w["created_at"]),
                    name = t(&w["name"]),
                    status = html::status(&w["status"]),
                    step = t(&w["current_step"]),
                    cost = esc(&html::money(&w["cost_usd"])),
                ));
            }
            body.push_str("</tbody></table></div>");
            let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
            body.push_str(r#"<nav class="pager" aria-label="Pages">"#);
            let link = |p: i64| {
                let p = p.to_string();
                esc(&html::href(
                    "/console/workflows",
                    &[("status", status), ("page", p.as_str())],
                ))
            };
            if page > 1 {
                body.push_str(&format!(
                    r#"<a href="{}" rel="prev">Previous</a>"#,
                    link(page - 1)
                ));
            }
            body.push_str(&format!("<span>Page {page} of {pages}</span>"));
            if page < pages {
                body.push_str(&format!(
                    r#"<a href="{}" rel="next">Next</a>"#,
                    link(page + 1)
                ));
            }
            body.push_str("</nav>");
            http::StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    (
        code,
        html::page(Some(&session), "Workflows", "Workflows", &body),
    )
        .into_response()
}

/// Node width and height, and the gaps between them, in the SVG.
const NODE_W: usize = 160;
const NODE_H: usize = 40;
const GAP_X: usize = 40;
const GAP_Y: usize = 16;

/// The graph as inline SVG: steps in columns by their distance from the
/// start, transitions as lines (thick when this run took them).
pub(crate) fn graph_svg(graph: &Value) -> String {
    let nodes = graph["nodes"].as_array().cloned().unwrap_or_default();
    let edges = graph["edges"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = nodes.iter().map(|n| html::text(&n["id"])).collect();
    let mut incoming: HashMap<&str, usize> = ids.iter().map(|i| (i.as_str(), 0)).collect();
    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &edges {
        let (Some(from), Some(to)) = (e["from"].as_str(), e["to"].as_str()) else {
            continue;
        };
        if let Some(n) = incoming.get_mut(to) {
            *n += 1;
        }
        next.entry(from).or_default().push(to);
    }
    // Columns: breadth-first from the steps nothing leads to (the start).
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut queue: VecDeque<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|i| incoming.get(i) == Some(&0))
        .collect();
    if queue.is_empty()
        && let Some(first) = ids.first()
    {
        queue.push_back(first);
    }
    for q in &queue {
        depth.insert(*q, 0);
    }
    while let Some(at) = queue.pop_front() {
        let d = depth.get(at).copied().unwrap_or(0);
        for to in next.get(at).into_iter().flatten() {
            if !depth.contains_key(to) {
                depth.insert(*to, d + 1);
                queue.push_back(*to);
            }
        }
    }
    let deepest = depth.values().copied().max().unwrap_or(0);
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for id in &ids {
        let d = depth.get(id.as_str()).copied().unwrap_or(deepest + 1);
        columns.entry(d).or_default().push(id);
    }
    let mut at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (col, (_, members)) in columns.iter().enumerate() {
        for (row, id) in members.iter().enumerate() {
            at.insert(
                *id,
                (10 + col * (NODE_W + GAP_X), 10 + row * (NODE_H + GAP_Y)),
            );
        }
    }
    let width = 20 + columns.len() * (NODE_W + GAP_X);
    let rows = columns.values().map(Vec::len).max().unwrap_or(1);
    let height = 20 + rows * (NODE_H + GAP_Y);
    let mut svg = format!(
        r#"<svg class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="The workflow's steps and transitions (the table below lists them)">"#
    );
    for e in &edges {
        let (Some(from), Some(to)) = (e["from"].as_str(), e["to"].as_str()) else {
            continue;
        };
        let (Some(a), Some(b)) = (at.get(from), at.get(to)) else {
            continue;
        };
        let taken = if e["taken"] == true {
            " class=\"taken\""
        } else {
            ""
        };
        svg.push_str(&format!(
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}"{taken}><title>{} → {} ({})</title></line>"#,
            a.0 + NODE_W,
            a.1 + NODE_H / 2,
            b.0,
            b.1 + NODE_H / 2,
            esc(from),
            esc(to),
            t(&e["label"]),
        ));
    }
    for n in &nodes {
        let id = html::text(&n["id"]);
        let Some((x, y)) = at.get(id.as_str()) else {
            continue;
        };
        let status = html::text(&n["status"]);
        let current = if n["current"] == true { " current" } else { "" };
        let short: String = id.chars().take(20).collect();
        svg.push_str(&format!(
            r#"<g class="node s-{class}{current}" data-step="{id}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/><text x="{tx}" y="{ty1}">{short}</text><text x="{tx}" y="{ty2}">{kind} · {status}</text></g>"#,
            class = esc(&status),
            id = esc(&id),
            tx = x + 8,
            ty1 = y + 16,
            ty2 = y + 32,
            short = esc(&short),
            kind = t(&n["kind"]),
            status = esc(&status),
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The part of a workflow's page that changes while it runs: its status,
/// the gate's controls, the graph, the step runs.
fn live_html(session: &Session, w: &Value) -> String {
    let id = html::text(&w["id"]);
    let status = html::text(&w["status"]);
    let mut out = format!(
        r#"<dl class="facts"><dt>Status</dt><dd><span data-field="status" class="status status-{s}">{s}</span></dd>
<dt>Current step</dt><dd>{current}</dd><dt>Steps run</dt><dd>{steps}</dd><dt>Cost</dt><dd>${cost}</dd><dt>Finished</dt><dd>{finished}</dd></dl>"#,
        s = esc(&status),
        current = t(&w["current_step"]),
        steps = t(&w["steps_run"]),
        cost = esc(&html::money(&w["cost_usd"])),
        finished = t(&w["finished_at"]),
    );
    if status == "awaiting_approval" {
        let awaiting = &w["awaiting"];
        out.push_str(&format!(
            r#"<section class="notice" id="gate" aria-labelledby="gate-title"><h2 id="gate-title">Waiting for approval at {step}</h2><p>{message}</p><p>Needs the permissions of: {role}</p>"#,
            step = t(&awaiting["step"]),
            message = t(&awaiting["message"]),
            role = t(&awaiting["role"]),
        ));
        if session.can(Permission::ApproveWorkflows) {
            out.push_str(&format!(
                r#"<form method="post" class="actions" id="decide"><input type="hidden" name="csrf" value="{csrf}">
<label for="comment">Comment (optional)</label><textarea id="comment" name="comment" maxlength="2000"></textarea>
<button type="submit" id="approve" formaction="/console/workflows/{href}/approve">Approve</button>
<button type="submit" id="reject" class="danger" formaction="/console/workflows/{href}/reject">Reject</button></form>"#,
                csrf = esc(session.csrf()),
                href = esc(&enc(&id)),
            ));
        }
        out.push_str("</section>");
    }
    if let Some(error) = w["error"].as_object() {
        out.push_str(&format!(
            r#"<p class="error" id="workflow-error">{}: {}</p>"#,
            t(error.get("kind").unwrap_or(&Value::Null)),
            t(error.get("message").unwrap_or(&Value::Null))
        ));
    }
    if !w["output"].is_null() {
        out.push_str("<h2>Output</h2>");
        out.push_str(&html::json_block(&w["output"]));
    }
    out.push_str("<h2>Graph</h2>");
    out.push_str(r#"<div class="table-wrap">"#);
    out.push_str(&graph_svg(&w["graph"]));
    out.push_str("</div>");
    let may_retry = session.can(Permission::ExecuteTask) && matches!(status.as_str(), "failed");
    out.push_str(r#"<div class="table-wrap"><table id="steps"><thead><tr><th scope="col">Step</th><th scope="col">Kind</th><th scope="col">Status</th><th scope="col" class="num">Runs</th><th scope="col">Branch</th>"#);
    if may_retry {
        out.push_str(r#"<th scope="col">Retry</th>"#);
    }
    out.push_str("</tr></thead><tbody>");
    for n in w["graph"]["nodes"].as_array().into_iter().flatten() {
        let step = html::text(&n["id"]);
        let branch = match (&n["parent"], &n["branch_index"]) {
            (Value::String(p), Value::Number(i)) => format!("{} branch {i}", esc(p)),
            _ => "—".to_string(),
        };
        out.push_str(&format!(
            r#"<tr data-step="{s}"><td>{s}{current}</td><td>{kind}</td><td>{status}</td><td class="num">{runs}</td><td>{branch}</td>"#,
            s = esc(&step),
            current = if n["current"] == true { " (current)" } else { "" },
            kind = t(&n["kind"]),
            status = html::status(&n["status"]),
            runs = t(&n["runs"]),
        ));
        if may_retry {
            out.push_str("<td>");
            if n["runs"].as_u64().unwrap_or(0) > 0 {
                out.push_str(&html::button(
                    session,
                    &format!("/console/workflows/{}/retry/{}", enc(&id), enc(&step)),
                    "Retry from here",
                    "secondary",
                    &[],
                ));
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    let edges: Vec<String> = w["graph"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["taken"] == true)
        .map(|e| {
            format!(
                "{} → {} ({})",
                html::text(&e["from"]),
                html::text(&e["to"]),
                html::text(&e["label"])
            )
        })
        .collect();
    if !edges.is_empty() {
        out.push_str(&format!(
            r#"<p>Branches taken: <span id="taken">{}</span></p>"#,
            esc(&edges.join(", "))
        ));
    }
    out.push_str("<h2>Step runs</h2>");
    let runs = w["steps"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        out.push_str("<p>None yet.</p>");
    } else {
        out.push_str(r#"<div class="table-wrap"><table id="runs"><thead><tr><th scope="col">#</th><th scope="col">Step</th><th scope="col">Attempt</th><th scope="col">Status</th><th scope="col">Task</th><th scope="col" class="num">Duration (ms)</th><th scope="col">Decision / next</th></tr></thead><tbody>"#);
        for r in &runs {
            let task = match r["task_id"].as_str() {
                Some(task) => format!(
                    r#"<a class="mono" href="/console/tasks/{}">{}</a>"#,
                    enc(task),
                    esc(task)
                ),
                None => "—".into(),
            };
            let decision = if r["decision"].is_null() {
                t(&r["next"])
            } else {
                let d = &r["decision"];
                format!(
                    "{} by {}{}",
                    if d["approved"] == true {
                        "approved"
                    } else {
                        "rejected"
                    },
                    t(&d["by"]),
                    d["comment"]
                        .as_str()
                        .map(|c| format!(": {}", esc(c)))
                        .unwrap_or_default()
                )
            };
            out.push_str(&format!(
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{task}</td><td class="num">{}</td><td>{decision}</td></tr>"#,
                t(&r["seq"]),
                t(&r["step"]),
                t(&r["attempt"]),
                html::status(&r["status"]),
                t(&r["duration_ms"]),
            ));
        }
        out.push_str("</tbody></table></div>");
    }
    out
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// `GET /console/workflows/{id}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    let w = match console
        .get(&session, &format!("/api/workflows/{}", enc(&id)))
        .await
    {
        Ok(w) => w,
        Err(failed) => return failed.into_response(),
    };
    let live_html = live_html(&session, &w);
    let live = if is_terminal(w["status"].as_str().unwrap_or("")) {
        String::new()
    } else {
        format!(
            r#" data-live-src="/console/workflows/{id}/events" data-live-fragment="/console/workflows/{id}/graph" data-live-events="status,step_started,step_completed,step_failed,step_cancelled,branch_taken,awaiting_approval" data-live-version="{v}""#,
            id = esc(&enc(&id)),
            v = html::version(&live_html),
        )
    };
    let body = format!(
        r#"<p><a href="/console/workflows">← Workflows</a></p>
<h1>{name}</h1><p class="mono">{id} · created {created}</p>
<section id="workflow"{live} aria-live="polite">{live_html}</section>
<h2>Input</h2>{input}"#,
        name = t(&w["name"]),
        id = esc(&id),
        created = t(&w["created_at"]),
        input = html::json_block(&w["input"]),
    );
    html::page(Some(&session), "Workflow", "Workflows", &body).into_response()
}

/// `GET /console/workflows/{id}/graph`: the changing part, for the live
/// refresh.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn graph_fragment(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    match console
        .get(&session, &format!("/api/workflows/{}", enc(&id)))
        .await
    {
        Ok(w) => html::fragment(live_html(&session, &w)),
        Err(failed) => (failed.status, Html(html::failed_inline(&failed))).into_response(),
    }
}

/// `GET /console/workflows/{id}/events`: the workflow's event stream.
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
            &format!("/api/workflows/{}/stream", enc(&id)),
            &headers,
        )
        .await
}

async fn decide(
    console: &Console,
    session: &Session,
    id: &str,
    action: &str,
    form: &HashMap<String, String>,
) -> Response {
    if let Err(refused) = session.check_csrf(form) {
        return refused.into_response();
    }
    let comment = form
        .get("comment")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty());
    let body = match comment {
        Some(c) => json!({ "comment": c }),
        None => json!({}),
    };
    match console
        .post(
            session,
            &format!("/api/workflows/{}/{action}", enc(id)),
            &body,
        )
        .await
    {
        Ok(_) => redirect(&format!("/console/workflows/{}", enc(id))),
        Err(failed) => failed.into_response(),
    }
}

/// `POST /console/workflows/{id}/approve`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn approve(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    decide(&console, &session, &id, "approve", &form).await
}

/// `POST /console/workflows/{id}/reject`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn reject(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    decide(&console, &session, &id, "reject", &form).await
}

/// `POST /console/workflows/{id}/retry/{step}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn retry(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path((id, step)): axum::extract::Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return refused.into_response();
    }
    match console
        .post(
            &session,
            &format!("/api/workflows/{}/retry-from-step/{}", enc(&id), enc(&step)),
            &json!({}),
        )
        .await
    {
        Ok(_) => redirect(&format!("/console/workflows/{}", enc(&id))),
        Err(failed) => failed.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_is_drawn_in_columns() {
        let graph = json!({
            "nodes": [
                { "id": "gate", "kind": "approval", "status": "awaiting_approval", "runs": 1, "current": true },
                { "id": "publish", "kind": "succeed", "status": "pending", "runs": 0, "current": false },
                { "id": "<shelved>", "kind": "succeed", "status": "pending", "runs": 0, "current": false }
            ],
            "edges": [
                { "from": "gate", "to": "publish", "label": "next", "taken": false },
                { "from": "gate", "to": "<shelved>", "label": "catch[0].next", "taken": true }
            ]
        });
        let svg = graph_svg(&graph);
        assert!(svg.contains(r#"data-step="gate""#), "{svg}");
        assert!(svg.contains("&lt;shelved&gt;") && !svg.contains("<shelved>"));
        assert_eq!(svg.matches("class=\"taken\"").count(), 1);
        assert!(svg.contains(r#"<rect x="210""#), "the next column: {svg}");
        assert_eq!(graph_svg(&json!({})), "");
    }
}
