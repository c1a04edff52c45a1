//! Members and roles: the organization's members with their roles (change
//! one, remove one), its open invitations and a new invitation's form
//! (whose one-time token is shown once, on the answer's page), and the
//! roles there are with their permissions, and a new custom role's form
//! (its name, description and permissions as checkboxes). Adding an
//! existing account directly is a platform admin's act in the API and is
//! not offered here.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::instrument;

use super::html::{self, Control, esc, t};
use super::session::CSRF_FIELD;
use super::{Console, Draft, Id, Sent, Session, enc, given, redirect, texts};
use crate::auth::Permission;

/// The built-in organization roles, when the organization's own list
/// cannot be read.
const BUILT_IN: &[&str] = &["org_admin", "agent_manager", "task_executor", "viewer"];

/// The names of the roles of the session's organization (built-in first).
pub(crate) async fn role_options(console: &Console, session: &Session) -> Vec<String> {
    let path = format!(
        "/api/organizations/{}/roles",
        enc(&session.principal.org_id)
    );
    match console.get(session, &path).await {
        Ok(list) => list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect(),
        Err(_) => BUILT_IN.iter().map(|r| (*r).to_string()).collect(),
    }
}

fn org_path(session: &Session, rest: &str) -> String {
    format!(
        "/api/organizations/{}/{rest}",
        enc(&session.principal.org_id)
    )
}

/// A member's row form: their role chosen from `roles`, saved by the
/// button.
fn role_form(
    session: &Session,
    user_id: &str,
    email: &str,
    role: &str,
    roles: &[String],
) -> String {
    let options: String = roles
        .iter()
        .map(|r| {
            let selected = if r == role { " selected" } else { "" };
            format!(r#"<option value="{r}"{selected}>{r}</option>"#, r = esc(r))
        })
        .collect();
    format!(
        r#"<form method="post" action="/console/members/{href}/role" class="inline"><input type="hidden" name="{CSRF_FIELD}" value="{csrf}"><label class="sr-only" for="role-{id}">Role of {email}</label><select id="role-{id}" name="role">{options}</select> <button type="submit" class="secondary">Change</button></form>"#,
        href = enc(user_id),
        csrf = esc(session.csrf()),
        id = esc(user_id),
        email = esc(email),
    )
}

/// `GET /console/members`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(State(console): State<Console>, session: Session) -> Response {
    list_page(&console, &session, Draft::none(), None).await
}

/// The page; `invited` is an invitation just made (its token shown once).
async fn list_page(
    console: &Console,
    session: &Session,
    draft: Draft<'_>,
    invited: Option<&Value>,
) -> Response {
    let mut body = String::from("<h1>Members and roles</h1>");
    if let Some(inv) = invited {
        body.push_str(&html::shown_once(
            "invitation",
            &format!(
                "{} is invited as {}. Give them this token; they accept it with <code>POST /api/invitations/accept</code>.",
                t(&inv["email"]),
                t(&inv["role"])
            ),
            "invitation-token",
            &inv["token"],
        ));
    }
    let may = session.can(Permission::ManageUsers);
    let roles = role_options(console, session).await;
    let mut code = match console.get(session, &org_path(session, "members")).await {
        Ok(list) => {
            let mut rows = String::new();
            for m in list["items"].as_array().into_iter().flatten() {
                let uid = html::text(&m["user_id"]);
                let email = html::text(&m["email"]);
                let role = html::text(&m["role"]);
                let (role_cell, remove) = if may {
                    (
                        role_form(session, &uid, &email, &role, &roles),
                        html::button(
                            session,
                            &format!("/console/members/{}/remove", enc(&uid)),
                            "Remove",
                            "danger",
                            &[],
                        ),
                    )
                } else {
                    (esc(&role), String::new())
                };
                rows.push_str(&format!(
                    r#"<tr data-member="{uid}"><td>{email}</td><td class="hide-narrow">{name}</td><td data-field="role">{role_cell}</td><td class="mono hide-narrow">{joined}</td><td>{remove}</td></tr>"#,
                    uid = esc(&uid),
                    email = esc(&email),
                    name = t(&m["name"]),
                    joined = t(&m["created_at"]),
                ));
            }
            body.push_str(&html::table(
                "members",
                &[
                    ("Email", ""),
                    ("Name", "hide-narrow"),
                    ("Role", ""),
                    ("Member since", "hide-narrow"),
                    ("", ""),
                ],
                &rows,
            ));
            StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    body.push_str(&draft.refusal(&mut code));
    if may {
        body.push_str("<h2>Open invitations</h2>");
        match console
            .get(session, &org_path(session, "invitations"))
            .await
        {
            Ok(list) => {
                let rows: String = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        format!(
                            r#"<tr><td>{}</td><td>{}</td><td class="mono">{}</td></tr>"#,
                            t(&i["email"]),
                            t(&i["role"]),
                            t(&i["expires_at"])
                        )
                    })
                    .collect();
                if rows.is_empty() {
                    body.push_str("<p>None.</p>");
                } else {
                    body.push_str(&html::table(
                        "invitations",
                        &[("Email", ""), ("Role", ""), ("Expires", "")],
                        &rows,
                    ));
                }
            }
            Err(failed) => body.push_str(&html::failed_inline(&failed)),
        }
        body.push_str("<h2>Invite someone</h2>");
        let options: Vec<(&str, &str)> = roles.iter().map(|r| (r.as_str(), r.as_str())).collect();
        let none = Value::Null;
        let mut role = draft.value("role", &none);
        if role.is_empty() {
            role = "viewer".into();
        }
        let fields = [
            html::field(
                "invite-email",
                "email",
                "Email",
                Control::Input("email"),
                &draft.value("email", &none),
                true,
            ),
            html::field(
                "invite-role",
                "role",
                "Role",
                Control::Select(&options),
                &role,
                true,
            ),
        ]
        .concat();
        body.push_str(&html::form(
            session,
            "/console/members/invite",
            "invite",
            &fields,
            "Invite",
            false,
        ));
    }
    body.push_str("<h2>Roles</h2>");
    match console.get(session, &org_path(session, "roles")).await {
        Ok(list) => {
            let rows: String = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let perms: Vec<String> = r["permissions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(html::text)
                        .collect();
                    format!(
                        r#"<tr data-role="{n}"><td>{n}{b}</td><td class="hide-narrow">{d}</td><td>{p}</td></tr>"#,
                        n = t(&r["name"]),
                        b = if r["built_in"] == true { " <small>(built in)</small>" } else { "" },
                        d = t(&r["description"]),
                        p = esc(&perms.join(", ")),
                    )
                })
                .collect();
            body.push_str(&html::table(
                "roles",
                &[
                    ("Role", ""),
                    ("Description", "hide-narrow"),
                    ("Permissions", ""),
                ],
                &rows,
            ));
        }
        Err(failed) => body.push_str(&html::failed_inline(&failed)),
    }
    if may {
        body.push_str("<h2>New role</h2>");
        body.push_str(&role_create_form(session, draft));
    }
    (code, html::page(Some(session), "Members", "Members", &body)).into_response()
}

/// The checkbox field of permission `p` in the new role's form.
fn permission_field(p: Permission) -> String {
    format!("perm-{}", p.as_str())
}

/// The new custom role's form: name, description, and a checkbox per
/// permission (what was typed kept when the API refused it).
fn role_create_form(session: &Session, draft: Draft<'_>) -> String {
    let none = Value::Null;
    let boxes: String = Permission::ALL
        .iter()
        .map(|p| {
            let field = permission_field(*p);
            let checked = if draft.value(&field, &none).is_empty() {
                ""
            } else {
                " checked"
            };
            format!(
                r#"<label class="check"><input type="checkbox" id="{field}" name="{field}" value="on"{checked}> {name}</label>"#,
                name = p.as_str(),
            )
        })
        .collect();
    let fields = [
        html::field(
            "role-name",
            "name",
            "Name (a-z, 0-9, _ and -)",
            Control::Input("text"),
            &draft.value("name", &none),
            true,
        ),
        html::field(
            "role-description",
            "description",
            "Description",
            Control::Input("text"),
            &draft.value("description", &none),
            false,
        ),
        format!(
            r#"<fieldset id="role-permissions"><legend>Permissions (at most yours)</legend>{boxes}</fieldset>"#
        ),
    ]
    .concat();
    html::form(
        session,
        "/console/members/roles",
        "new-role",
        &fields,
        "Create role",
        false,
    )
}

/// `POST /console/members/roles`: define a custom role from the
/// permissions ticked, then the members page again (the API's reason, and
/// what was typed, when it refuses).
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn create_role(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut body = texts(&form, &["name", "description"]);
    let permissions: Vec<Value> = Permission::ALL
        .iter()
        .filter(|p| given(&form, &permission_field(**p)).is_some())
        .map(|p| Value::from(p.as_str()))
        .collect();
    body.insert("permissions".into(), Value::Array(permissions));
    let path = org_path(&session, "roles");
    match console
        .submit(
            &session,
            &form,
            Method::POST,
            &path,
            Some(&Value::Object(body)),
        )
        .await
    {
        Sent::Done(_) => redirect("/console/members"),
        Sent::Refused(failed) => {
            list_page(&console, &session, Draft::sent(&form, &failed), None).await
        }
        Sent::Stop(resp) => resp,
    }
}

/// `POST /console/members/invite`: invite and show the token once.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn invite(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let body = Value::Object(texts(&form, &["email", "role"]));
    let path = org_path(&session, "invitations");
    match console
        .submit(&session, &form, Method::POST, &path, Some(&body))
        .await
    {
        Sent::Done(invited) => list_page(&console, &session, Draft::none(), Some(&invited)).await,
        Sent::Refused(failed) => {
            list_page(&console, &session, Draft::sent(&form, &failed), None).await
        }
        Sent::Stop(resp) => resp,
    }
}

/// `POST /console/members/{user_id}/role`: change a member's role.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn set_role(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(user_id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = org_path(&session, &format!("members/{}", enc(&user_id)));
    let body = json!({ "role": form.get("role").cloned().unwrap_or_default() });
    console
        .form_write(
            &session,
            &form,
            Method::PUT,
            &path,
            Some(&body),
            "/console/members",
        )
        .await
}

/// `POST /console/members/{user_id}/remove`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn remove(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(user_id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = org_path(&session, &format!("members/{}", enc(&user_id)));
    console
        .form_write(
            &session,
            &form,
            Method::DELETE,
            &path,
            None,
            "/console/members",
        )
        .await
}
