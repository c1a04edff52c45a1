//! Plugins: the list (the organization's and the platform's), a plugin's
//! versions with their sha256 and signature, and activate, roll back,
//! disable and enable.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::instrument;

use super::html::{self, esc, t};
use super::{Console, Session, enc, redirect};
use crate::auth::Permission;

/// The `?scope=` of a plugin route (platform or organization), checked.
fn scope_of(q: &HashMap<String, String>) -> Option<&'static str> {
    match q.get("scope").map(String::as_str) {
        Some("platform") => Some("platform"),
        Some("organization") => Some("organization"),
        _ => None,
    }
}

fn with_scope(path: &str, scope: Option<&str>) -> String {
    match scope {
        Some(s) => format!("{path}?scope={s}"),
        None => path.to_string(),
    }
}

/// `GET /console/plugins`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(State(console): State<Console>, session: Session) -> Response {
    let mut body = String::from("<h1>Plugins</h1>");
    let code = match console.get(&session, "/api/plugins").await {
        Ok(list) => {
            body.push_str(r#"<div class="table-wrap"><table id="plugins"><thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Scope</th><th scope="col">Status</th><th scope="col">Active version</th><th scope="col" class="hide-narrow">Previous</th></tr></thead><tbody>"#);
            for p in list["items"].as_array().into_iter().flatten() {
                let name = html::text(&p["name"]);
                let scope = html::text(&p["scope"]);
                body.push_str(&format!(
                    r#"<tr data-plugin="{n}"><td><a href="/console/plugins/{href}?scope={s}">{n}</a>{builtin}</td><td>{kind}</td><td>{s}</td><td>{status}</td><td class="mono">{active}</td><td class="mono hide-narrow">{previous}</td></tr>"#,
                    n = esc(&name),
                    href = enc(&name),
                    s = esc(&scope),
                    builtin = if p["builtin"] == true { " <small>(built in)</small>" } else { "" },
                    kind = t(&p["kind"]),
                    status = html::status(&p["status"]),
                    active = t(&p["active_version"]),
                    previous = t(&p["previous_version"]),
                ));
            }
            body.push_str("</tbody></table></div>");
            http::StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    (
        code,
        html::page(Some(&session), "Plugins", "Plugins", &body),
    )
        .into_response()
}

/// `GET /console/plugins/{name}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let scope = scope_of(&q);
    let p = match console
        .get(
            &session,
            &with_scope(&format!("/api/plugins/{}", enc(&name)), scope),
        )
        .await
    {
        Ok(p) => p,
        Err(failed) => return failed.into_response(),
    };
    let scope = scope.or(match p["scope"].as_str() {
        Some("platform") => Some("platform"),
        Some("organization") => Some("organization"),
        _ => None,
    });
    let may = session.can(Permission::ManagePlugins);
    let action = |what: &str| with_scope(&format!("/console/plugins/{}/{what}", enc(&name)), scope);
    let mut body = format!(
        r#"<p><a href="/console/plugins">← Plugins</a></p><h1>{n}</h1>
<dl class="facts"><dt>Kind</dt><dd>{kind}</dd><dt>Scope</dt><dd>{scope}</dd><dt>Status</dt><dd>{status}</dd>
<dt>Active version</dt><dd class="mono" id="active-version">{active}</dd><dt>Previous</dt><dd class="mono">{previous}</dd><dt>Serving here</dt><dd class="mono">{live}</dd></dl>"#,
        n = esc(&name),
        kind = t(&p["kind"]),
        scope = t(&p["scope"]),
        status = html::status(&p["status"]),
        active = t(&p["active_version"]),
        previous = t(&p["previous_version"]),
        live = t(&p["live_version"]),
    );
    if may {
        body.push_str(r#"<div class="actions">"#);
        if !p["previous_version"].is_null() {
            body.push_str(&html::button(
                &session,
                &action("rollback"),
                "Roll back",
                "secondary",
                &[],
            ));
        }
        if p["status"] == "disabled" {
            body.push_str(&html::button(
                &session,
                &action("enable"),
                "Enable",
                "secondary",
                &[],
            ));
        } else {
            body.push_str(&html::button(
                &session,
                &action("disable"),
                "Disable",
                "danger",
                &[],
            ));
        }
        body.push_str("</div>");
    }
    body.push_str(r#"<h2>Versions</h2><div class="table-wrap"><table id="versions"><thead><tr><th scope="col">Version</th><th scope="col">sha256</th><th scope="col">Signed</th><th scope="col" class="num">Size (bytes)</th><th scope="col" class="hide-narrow">Description</th><th scope="col">Hosts</th>"#);
    if may {
        body.push_str(r#"<th scope="col">Action</th>"#);
    }
    body.push_str("</tr></thead><tbody>");
    for v in p["versions"].as_array().into_iter().flatten() {
        let version = html::text(&v["version"]);
        let active = p["active_version"] == v["version"];
        let hosts: Vec<String> = v["outbound_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(html::text)
            .collect();
        body.push_str(&format!(
            r#"<tr data-version="{ver}"><td class="mono">{ver}{mark}</td><td class="mono">{sha}</td><td>{signed}</td><td class="num">{size}</td><td class="hide-narrow">{desc}</td><td>{hosts}{approval}</td>"#,
            ver = esc(&version),
            mark = if active { " (active)" } else { "" },
            sha = t(&v["sha256"]),
            signed = if v["signed"] == true { "yes" } else { "no" },
            size = t(&v["size_bytes"]),
            desc = t(&v["description"]),
            hosts = esc(&hosts.join(", ")),
            approval = if !hosts.is_empty() && v["hosts_approved"] != true { " (awaiting approval)" } else { "" },
        ));
        if may {
            body.push_str("<td>");
            if !active {
                body.push_str(&html::button(
                    &session,
                    &action(&format!("versions/{}/activate", enc(&version))),
                    "Activate",
                    "secondary",
                    &[],
                ));
            }
            body.push_str("</td>");
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></div>");
    html::page(Some(&session), "Plugin", "Plugins", &body).into_response()
}

async fn act(
    console: &Console,
    session: &Session,
    name: &str,
    what: &str,
    q: &HashMap<String, String>,
    form: &HashMap<String, String>,
) -> Response {
    if let Err(refused) = session.check_csrf(form) {
        return refused.into_response();
    }
    let scope = scope_of(q);
    let api = with_scope(&format!("/api/plugins/{}/{what}", enc(name)), scope);
    match console.post(session, &api, &json!({})).await {
        Ok(_) => redirect(&with_scope(
            &format!("/console/plugins/{}", enc(name)),
            scope,
        )),
        Err(failed) => failed.into_response(),
    }
}

/// `POST /console/plugins/{name}/versions/{version}/activate`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn activate(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path((name, version)): axum::extract::Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let what = format!("versions/{}/activate", enc(&version));
    act(&console, &session, &name, &what, &q, &form).await
}

/// `POST /console/plugins/{name}/rollback`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn rollback(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    act(&console, &session, &name, "rollback", &q, &form).await
}

/// `POST /console/plugins/{name}/disable`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn disable(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    act(&console, &session, &name, "disable", &q, &form).await
}

/// `POST /console/plugins/{name}/enable`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn enable(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    act(&console, &session, &name, "enable", &q, &form).await
}
