//! Plugins: the list (the organization's and the platform's), a plugin's
//! versions with their sha256 and signature, and activate, roll back,
//! disable and enable; for platform admins, the tenant provider versions
//! whose outbound hosts await approval, each with its approve button and
//! its reject form (an optional reason).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::instrument;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartRejection;

use super::html::{self, Control, esc, t};
use super::{Console, Draft, Session, enc, redirect};
use crate::auth::Permission;
use http::Method;

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
    list_page(&console, &session, Draft::none()).await
}

async fn list_page(console: &Console, session: &Session, draft: Draft<'_>) -> Response {
    let mut body = String::from("<h1>Plugins</h1>");
    let mut code = match console.get(session, "/api/plugins").await {
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
    if session.principal.is_platform_admin() {
        body.push_str(&approvals(console, session).await);
    }
    body.push_str(&draft.refusal(&mut code));
    if session.can(Permission::ManagePlugins) {
        body.push_str("<h2>Upload a version</h2>");
        let scopes: &[(&str, &str)] = if session.principal.is_platform_admin() {
            &[
                ("organization", "This organization's"),
                ("platform", "The platform's"),
            ]
        } else {
            &[("organization", "This organization's")]
        };
        let none = serde_json::Value::Null;
        let fields = [
            html::field(
                "upload-component",
                "component",
                "Component (.wasm)",
                Control::Input("file"),
                "",
                true,
            ),
            html::field(
                "upload-manifest",
                "manifest",
                "Manifest (vel-plugin.toml)",
                Control::Input("file"),
                "",
                true,
            ),
            html::field(
                "upload-signature",
                "signature",
                "Signature (base64 or hex; optional)",
                Control::Input("text"),
                &draft.value("signature", &none),
                false,
            ),
            html::field(
                "upload-scope",
                "scope",
                "Scope",
                Control::Select(scopes),
                &draft.value("scope", &none),
                true,
            ),
            html::field(
                "upload-activate",
                "activate",
                "Activate at once",
                Control::Select(&[("true", "yes"), ("false", "no")]),
                &draft.value("activate", &none),
                true,
            ),
        ]
        .concat();
        body.push_str(&html::form(
            session,
            "/console/plugins",
            "upload",
            &fields,
            "Upload",
            true,
        ));
    }
    (code, html::page(Some(session), "Plugins", "Plugins", &body)).into_response()
}

/// The tenant provider versions whose outbound hosts await a platform
/// admin (`GET /api/plugin-approvals`), each with its approve button and
/// its reject form (a reason, optional); the
/// caller shows it to platform admins only (the API refuses anyone else).
async fn approvals(console: &Console, session: &Session) -> String {
    let mut out = String::from("<h2>Awaiting approval</h2>");
    let list = match console.get(session, "/api/plugin-approvals").await {
        Ok(list) => list,
        Err(failed) => {
            out.push_str(&html::failed_inline(&failed));
            return out;
        }
    };
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        out.push_str(r#"<p id="no-approvals">No version awaits approval.</p>"#);
        return out;
    }
    let mut rows = String::new();
    for v in items {
        let id = html::text(&v["id"]);
        let hosts: Vec<String> = v["outbound_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(html::text)
            .collect();
        rows.push_str(&format!(
            r#"<tr data-approval="{id}"><td>{plugin}</td><td class="mono">{version}</td><td class="mono">{org}</td><td class="mono">{hosts}</td><td class="mono hide-narrow">{sha}</td><td>{uploaded}</td><td>{approve}</td></tr>"#,
            id = esc(&id),
            plugin = t(&v["plugin"]),
            version = t(&v["version"]),
            org = t(&v["organization_id"]),
            hosts = esc(&hosts.join(", ")),
            sha = t(&v["sha256"]),
            uploaded = t(&v["uploaded_at"]),
            approve = html::button(
                session,
                &format!("/console/plugin-approvals/{}/approve", enc(&id)),
                "Approve",
                "secondary",
                &[],
            ) + &reject_form(session, &id),
        ));
    }
    out.push_str(&html::table(
        "approvals",
        &[
            ("Plugin", ""),
            ("Version", ""),
            ("Organization", ""),
            ("Outbound hosts", ""),
            ("sha256", "hide-narrow"),
            ("Uploaded", ""),
            ("Action", ""),
        ],
        &rows,
    ));
    out
}

/// The reject form of the pending version `id`: a reason (optional, shown
/// to the organization) and the button.
fn reject_form(session: &Session, id: &str) -> String {
    let field = format!("reason-{id}");
    format!(
        r#"<form method="post" action="/console/plugin-approvals/{href}/reject" class="inline reject"><input type="hidden" name="csrf" value="{csrf}"><label for="{field}">Reason (optional)</label><input type="text" id="{field}" name="reason" maxlength="2000"><button type="submit" class="danger">Reject</button></form>"#,
        href = esc(&enc(id)),
        csrf = esc(session.csrf()),
        field = esc(&field),
    )
}

/// `POST /console/plugin-approvals/{id}/reject`: a tenant provider
/// version rejected, with the reason typed (`POST
/// /api/plugin-approvals/{id}/reject`, platform admins only); it can then
/// never be approved or activated. The plugins page again.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn reject(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let api = format!("/api/plugin-approvals/{}/reject", enc(&id));
    let reason = form
        .get("reason")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    console
        .form_write(
            &session,
            &form,
            Method::POST,
            &api,
            Some(&json!({ "reason": reason })),
            "/console/plugins",
        )
        .await
}

/// `POST /console/plugin-approvals/{id}/approve`: a tenant provider
/// version's outbound hosts approved (`POST
/// /api/plugin-approvals/{id}/approve`, platform admins only), then the
/// plugins page again.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn approve(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let api = format!("/api/plugin-approvals/{}/approve", enc(&id));
    console
        .form_write(
            &session,
            &form,
            Method::POST,
            &api,
            Some(&json!({})),
            "/console/plugins",
        )
        .await
}

/// A `multipart/form-data` body of `parts` (name, file name, bytes): its
/// content type and bytes.
fn multipart_body(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("vel-console-{}", hex::encode(rand::random::<[u8; 16]>()));
    let mut out = Vec::new();
    for (name, file, bytes) in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(file) = file {
            out.extend_from_slice(
                format!("; filename=\"{file}\"\r\nContent-Type: application/octet-stream")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

/// `POST /console/plugins`: the upload form's component, manifest and
/// signature sent on to `POST /api/plugins` (multipart, as the API takes
/// them), then the plugin's page; the API's refusal is shown above the
/// form.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn upload(
    State(console): State<Console>,
    session: Session,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => return html::error_page(e.status(), &e.body_text()),
    };
    let mut texts = HashMap::new();
    let mut component = Vec::new();
    let mut manifest = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return html::error_page(e.status(), &format!("the upload could not be read: {e}"));
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return html::error_page(e.status(), &format!("the upload could not be read: {e}"));
            }
        };
        match name.as_str() {
            "component" => component = bytes.to_vec(),
            "manifest" => manifest = bytes.to_vec(),
            _ => {
                texts.insert(name, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    if let Err(refused) = session.check_csrf(&texts) {
        return refused.into_response();
    }
    let scope = scope_of(&texts).unwrap_or("organization");
    let activate = texts.get("activate").is_some_and(|a| a == "true");
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![
        ("component", Some("component.wasm"), &component),
        ("manifest", None, &manifest),
    ];
    let signature = texts.get("signature").map(|s| s.trim()).unwrap_or("");
    if !signature.is_empty() {
        parts.push(("signature", None, signature.as_bytes()));
    }
    let (content_type, bytes) = multipart_body(&parts);
    let path = format!("/api/plugins?scope={scope}&activate={activate}");
    match console.post_raw(&session, &path, content_type, bytes).await {
        Ok(version) => redirect(&with_scope(
            &format!("/console/plugins/{}", enc(&html::text(&version["plugin"]))),
            Some(scope),
        )),
        Err(failed) => list_page(&console, &session, Draft::sent(&texts, &failed)).await,
    }
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
            approval = match v["approval"].as_str() {
                Some("pending") => " (awaiting approval)".to_string(),
                Some("rejected") => match v["rejection_reason"].as_str() {
                    Some(why) => format!(r#" <span class="rejected">(rejected: {})</span>"#, esc(why)),
                    None => r#" <span class="rejected">(rejected)</span>"#.to_string(),
                },
                _ => String::new(),
            },
        ));
        if may {
            body.push_str("<td>");
            if !active && v["approval"] != "rejected" {
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
    let scope = scope_of(q);
    let api = with_scope(&format!("/api/plugins/{}/{what}", enc(name)), scope);
    let back = with_scope(&format!("/console/plugins/{}", enc(name)), scope);
    console
        .form_write(session, form, Method::POST, &api, Some(&json!({})), &back)
        .await
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
