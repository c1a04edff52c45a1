//! API keys: the organization's keys (never the key itself), a new key's
//! form whose key is shown once, and revoking one.
//!
//! A created key is shown by Post/Redirect/Get, so that reloading the page
//! does not post the form again: the answer to the form is a redirect to
//! the list carrying the new key in a one-time cookie (`vel_new_key`,
//! httpOnly, `SameSite=Strict`, only sent to `/console/api-keys`, two
//! minutes at most), sealed with the server's master key and bound to the
//! session (another session cannot open it, and any instance can). The
//! list shows it and deletes the cookie in the same answer: a reload shows
//! the list without it.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tracing::instrument;

use super::html::{self, Control, esc, t};
use super::members::role_options;
use super::session::{cookie, set_cookie, with_cookie};
use super::{Console, Draft, Id, Sent, Session, enc, given, redirect, texts};
use crate::auth::Permission;

/// An expiry as the API takes it: a `datetime-local` value read as UTC,
/// anything else as typed (the API names the problem).
fn expiry(v: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M") {
        Ok(t) => t.and_utc().format("%Y-%m-%dT%H:%M:00Z").to_string(),
        Err(_) => v.to_string(),
    }
}

/// The API body of the new key's form.
fn body(form: &HashMap<String, String>) -> Value {
    let mut body = texts(form, &["name", "role"]);
    if let Some(e) = given(form, "expires_at") {
        body.insert("expires_at".into(), Value::from(expiry(e)));
    }
    Value::Object(body)
}

/// The one-time cookie of a key just created.
const NEW_KEY_COOKIE: &str = "vel_new_key";
/// Where the browser sends it.
const NEW_KEY_PATH: &str = "/console/api-keys";
/// How long it may wait for the redirect to be followed, in seconds.
const NEW_KEY_MAX_AGE: i64 = 120;

/// What the sealed key is bound to: this session (its CSRF token is an
/// HMAC of its token).
fn new_key_context(session: &Session) -> String {
    format!("console-new-key:{}", session.csrf())
}

/// `GET /console/api-keys`; with the one-time cookie of a key just
/// created, the key is shown (this once) and the cookie deleted.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let Some(sealed) = cookie(&headers, NEW_KEY_COOKIE) else {
        return list_page(&console, &session, Draft::none(), None).await;
    };
    let created = console
        .state
        .keys
        .decrypt(sealed, &new_key_context(&session))
        .ok()
        .and_then(|json| serde_json::from_str::<Value>(&json).ok());
    if created.is_none() {
        tracing::debug!("a new key's cookie that this session cannot open; dropped");
    }
    let resp = list_page(&console, &session, Draft::none(), created.as_ref()).await;
    let secure = console.state.config.operations.https;
    with_cookie(
        resp,
        &set_cookie(NEW_KEY_COOKIE, "", NEW_KEY_PATH, 0, secure),
    )
}

/// The page; `created` is a key just made (the only time it is shown).
async fn list_page(
    console: &Console,
    session: &Session,
    draft: Draft<'_>,
    created: Option<&Value>,
) -> Response {
    let mut body = String::from("<h1>API keys</h1>");
    if let Some(key) = created {
        body.push_str(&html::shown_once(
            "new-key",
            &format!(
                "Key <strong>{}</strong> created. Copy it now.",
                t(&key["name"])
            ),
            "new-key-value",
            &key["key"],
        ));
    }
    let may = session.can(Permission::ManageApiKeys);
    let mut code = match console.get(session, "/api/api-keys?limit=100").await {
        Ok(list) => {
            let mut rows = String::new();
            for k in list["items"].as_array().into_iter().flatten() {
                let id = html::text(&k["id"]);
                let state = if k["revoked_at"].is_null() {
                    if may {
                        html::button(
                            session,
                            &format!("/console/api-keys/{}/revoke", enc(&id)),
                            "Revoke",
                            "danger",
                            &[],
                        )
                    } else {
                        "active".into()
                    }
                } else {
                    format!("{} ({})", t(&k["revoked_reason"]), t(&k["revoked_at"]))
                };
                rows.push_str(&format!(
                    r#"<tr data-key="{id}"><td>{name}</td><td>{role}</td><td class="mono">{prefix}</td><td class="mono hide-narrow">{created}</td><td class="mono hide-narrow">{used}</td><td class="mono hide-narrow">{expires}</td><td>{state}</td></tr>"#,
                    id = esc(&id),
                    name = t(&k["name"]),
                    role = t(&k["role"]),
                    prefix = t(&k["prefix"]),
                    created = t(&k["created_at"]),
                    used = t(&k["last_used_at"]),
                    expires = t(&k["expires_at"]),
                ));
            }
            if rows.is_empty() {
                body.push_str("<p>No API keys yet.</p>");
            } else {
                body.push_str(&html::table(
                    "api-keys",
                    &[
                        ("Name", ""),
                        ("Role", ""),
                        ("Prefix", ""),
                        ("Created", "hide-narrow"),
                        ("Last used", "hide-narrow"),
                        ("Expires", "hide-narrow"),
                        ("State", ""),
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
    if may {
        body.push_str("<h2>New key</h2>");
        let roles = role_options(console, session).await;
        let options: Vec<(&str, &str)> = roles.iter().map(|r| (r.as_str(), r.as_str())).collect();
        let none = Value::Null;
        let mut role = draft.value("role", &none);
        if role.is_empty() {
            role = session.principal.holding.role.clone().unwrap_or_default();
        }
        let fields = [
            html::field(
                "key-name",
                "name",
                "Name",
                Control::Input("text"),
                &draft.value("name", &none),
                true,
            ),
            html::field(
                "key-role",
                "role",
                "Role",
                Control::Select(&options),
                &role,
                true,
            ),
            html::field(
                "key-expires",
                "expires_at",
                "Expires (UTC; blank: never)",
                Control::Input("datetime-local"),
                &draft.value("expires_at", &none),
                false,
            ),
        ]
        .concat();
        body.push_str(&html::form(
            session,
            "/console/api-keys",
            "new-key-form",
            &fields,
            "Create key",
            false,
        ));
    }
    (
        code,
        html::page(Some(session), "API keys", "API keys", &body),
    )
        .into_response()
}

/// `POST /console/api-keys`: create a key, then a redirect to the list,
/// which shows it once (see the module's comment).
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn create(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let body = body(&form);
    let sent = console.submit(&session, &form, Method::POST, "/api/api-keys", Some(&body));
    match sent.await {
        Sent::Done(created) => {
            let shown = serde_json::json!({ "name": created["name"], "key": created["key"] });
            match console
                .state
                .keys
                .encrypt(&shown.to_string(), &new_key_context(&session))
            {
                Ok(sealed) => {
                    let secure = console.state.config.operations.https;
                    with_cookie(
                        redirect(NEW_KEY_PATH),
                        &set_cookie(
                            NEW_KEY_COOKIE,
                            &sealed,
                            NEW_KEY_PATH,
                            NEW_KEY_MAX_AGE,
                            secure,
                        ),
                    )
                }
                // Not sealed: shown on this answer instead (a reload
                // would ask to post again, but the key is not lost).
                Err(e) => {
                    tracing::warn!(error = %e, "a new key could not be sealed for the redirect");
                    list_page(&console, &session, Draft::none(), Some(&created)).await
                }
            }
        }
        Sent::Refused(failed) => {
            list_page(&console, &session, Draft::sent(&form, &failed), None).await
        }
        Sent::Stop(resp) => resp,
    }
}

/// `POST /console/api-keys/{id}/revoke`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn revoke(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/api-keys/{}", enc(&id));
    console
        .form_write(
            &session,
            &form,
            Method::DELETE,
            &path,
            None,
            "/console/api-keys",
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_as_utc() {
        assert_eq!(expiry("2030-01-02T03:04"), "2030-01-02T03:04:00Z");
        assert_eq!(expiry("soon"), "soon");
    }
}
