//! Signing in and out of the console, the session cookie and CSRF.
//!
//! The session is the API's own access token (issued by
//! `POST /api/auth/login`, revoked by `POST /api/auth/logout`), kept in an
//! httpOnly, `SameSite=Strict` cookie scoped to `/console` (`Secure` when
//! `VEL_HTTPS`): scripts cannot read it and other sites cannot send it.
//! Every write form carries a CSRF token, an HMAC of the session token,
//! checked before anything is sent to the API. The login form, before any
//! session exists, is protected by a random double-submit token.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use sha2::Sha256;
use tracing::instrument;

use super::html::{self, esc};
use super::{Console, Origin, redirect};
use crate::auth::{Permission, Principal};

/// The session cookie.
const SESSION_COOKIE: &str = "vel_session";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "vel_login";
/// The form field every write carries.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// A signed-in browser: its access token, who it is, and the CSRF token
/// its forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    token: String,
    /// The caller, as the API authenticates them now.
    pub(crate) principal: Principal,
    csrf: String,
    origin: Origin,
}

impl Session {
    /// The access token (sent to the API as the bearer).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The browser's address and agent, passed on to the API.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The CSRF token of this session's forms.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether the holder may do `p` (write controls are shown only then;
    /// the API decides anyway).
    pub(crate) fn can(&self, p: Permission) -> bool {
        self.principal.can(p)
    }

    /// Refuse a write whose form lacks this session's CSRF token (403).
    pub(crate) fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), CsrfRefused> {
        let sent = form.get(CSRF_FIELD).map(String::as_str).unwrap_or("");
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            tracing::warn!("console write refused: missing or wrong CSRF token");
            Err(CsrfRefused)
        }
    }
}

/// A write refused for its missing or wrong CSRF token (a 403 page).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        html::error_page(
            StatusCode::FORBIDDEN,
            "This form's security token is missing or out of date; reload the page and try again.",
        )
    }
}

/// The CSRF token of the session holding `token`.
fn csrf_of(token: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(b"vel-console-csrf");
    hex::encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && !b.is_empty()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in `headers`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: httpOnly, `SameSite=Strict`, under `path`,
/// `Secure` with HTTPS; `max_age` 0 deletes it.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
    secure: bool,
) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// `resp` with the `Set-Cookie` value `cookie` added.
pub(crate) fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    resp
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Session, Response> {
        let to_login = |parts: &Parts| {
            if parts.method == Method::GET {
                let here = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/console");
                // The nested router sees paths without `/console`.
                let next = format!("/console{}", here.trim_end_matches('/'));
                redirect(&format!("/console/login?next={}", super::enc(&next)))
            } else {
                html::error_page(
                    StatusCode::UNAUTHORIZED,
                    "You are not signed in (or your session ended); sign in again.",
                )
            }
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        let principal = match crate::auth::authenticate(&console.state, token).await {
            Ok(p) => p,
            Err(crate::auth::AuthError::Unauthenticated(why)) => {
                tracing::debug!(why, "console session refused");
                let secure = console.state.config.operations.https;
                return Err(with_cookie(
                    to_login(parts),
                    &set_cookie(SESSION_COOKIE, "", "/console", 0, secure),
                ));
            }
            Err(crate::auth::AuthError::Store(e)) => {
                tracing::error!(error = %e, "console session check failed");
                return Err(html::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database could not be reached; try again in a moment.",
                ));
            }
        };
        // API keys are not sessions: only an access token signs a browser in.
        if principal.api_key_id().is_some() {
            return Err(to_login(parts));
        }
        Ok(Session {
            csrf: csrf_of(token),
            token: token.to_string(),
            principal,
            origin: Origin::of(&parts.extensions, &parts.headers, &console.state),
        })
    }
}

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => {
            n.clone()
        }
        _ => "/console".to_string(),
    }
}

/// `GET /console/login`: the sign-in form (with a fresh double-submit
/// token).
#[instrument(skip_all)]
pub(crate) async fn login_form(
    State(console): State<Console>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    login_page(&console, query.get("next"), None, StatusCode::OK)
}

fn login_page(
    console: &Console,
    next: Option<&String>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let secure = console.state.config.operations.https;
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<section class="login">
<h1>Sign in to vel</h1>
{error}
<form method="post" action="/console/login">
<input type="hidden" name="{CSRF_FIELD}" value="{nonce}">
<input type="hidden" name="next" value="{next}">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
</section>"#,
        next = esc(&safe_next(next)),
    );
    let resp = (status, html::page(None, "Sign in", "", &body)).into_response();
    with_cookie(
        resp,
        &set_cookie(LOGIN_COOKIE, &nonce, "/console/login", 600, secure),
    )
}

/// `POST /console/login`: exchange the form's email and password for an
/// access token through `POST /api/auth/login`, kept as the session.
#[instrument(skip_all)]
pub(crate) async fn login(
    State(console): State<Console>,
    parts: http::request::Parts,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let next = form.get("next");
    let sent = form.get(CSRF_FIELD).map(String::as_str).unwrap_or("");
    let expected = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or("");
    if !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return login_page(
            &console,
            next,
            Some("The sign-in form expired; please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let origin = Origin::of(&parts.extensions, &parts.headers, &console.state);
    let body = json!({
        "email": form.get("email").cloned().unwrap_or_default(),
        "password": form.get("password").cloned().unwrap_or_default(),
    });
    let answer = console
        .call(Method::POST, "/api/auth/login", None, Some(&body), &origin)
        .await;
    match answer {
        Ok(token) => {
            let secure = console.state.config.operations.https;
            with_cookie(
                signed_in(&console, &token, &safe_next(next)),
                &set_cookie(LOGIN_COOKIE, "", "/console/login", 0, secure),
            )
        }
        Err(failed) => {
            let status = failed.status;
            login_page(&console, next, Some(&failed.message), status)
        }
    }
}

/// A 303 to `to` setting the session cookie to the access token of
/// `answer` (a `POST /api/auth/login` answer), expiring with it.
fn signed_in(console: &Console, answer: &serde_json::Value, to: &str) -> Response {
    let Some(access) = answer["token"].as_str() else {
        return html::error_page(StatusCode::BAD_GATEWAY, "The login answer had no token.");
    };
    let ttl = answer["expires_at"]
        .as_str()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .map(|e| e.timestamp() - chrono::Utc::now().timestamp())
        .unwrap_or(3600)
        .max(1);
    let secure = console.state.config.operations.https;
    with_cookie(
        redirect(to),
        &set_cookie(SESSION_COOKIE, access, "/console", ttl, secure),
    )
}

/// `GET /console/organizations`: the organizations the holder belongs to
/// (every one, for a platform admin), the current one marked, and a form
/// to act in another. An access token acts in one organization, so moving
/// to another is signing in there: the password is asked again
/// (`POST /api/auth/login` with the organization), and the old token is
/// revoked.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn organizations(State(console): State<Console>, session: Session) -> Response {
    organizations_page(&console, &session, None).await
}

async fn organizations_page(
    console: &Console,
    session: &Session,
    refused: Option<&super::Failed>,
) -> Response {
    let mut body = String::from("<h1>Organizations</h1>");
    let mut code = StatusCode::OK;
    if let Some(failed) = refused {
        body.push_str(&html::failed_inline(failed));
        code = failed.status;
    }
    match console.get(session, "/api/organizations?limit=100").await {
        Ok(list) => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let current = &session.principal.org_id;
            let rows: String = items
                .iter()
                .map(|o| {
                    let here = o["id"] == current.as_str();
                    format!(
                        r#"<tr data-org="{id}"><td>{name}{mark}</td><td class="mono">{id}</td></tr>"#,
                        id = html::t(&o["id"]),
                        name = html::t(&o["name"]),
                        mark = if here { " <strong>(current)</strong>" } else { "" },
                    )
                })
                .collect();
            body.push_str(&html::table(
                "organizations",
                &[("Name", ""), ("Id", "mono")],
                &rows,
            ));
            let others: Vec<(String, String)> = items
                .iter()
                .filter(|o| o["id"] != current.as_str())
                .map(|o| (html::text(&o["id"]), html::text(&o["name"])))
                .collect();
            if others.is_empty() {
                body.push_str("<p>You belong to this organization only.</p>");
            } else {
                let options: Vec<(&str, &str)> = others
                    .iter()
                    .map(|(i, n)| (i.as_str(), n.as_str()))
                    .collect();
                let fields = [
                    html::field(
                        "switch-org",
                        "org_id",
                        "Organization",
                        html::Control::Select(&options),
                        "",
                        true,
                    ),
                    html::field(
                        "switch-password",
                        "password",
                        "Your password",
                        html::Control::Input("password"),
                        "",
                        true,
                    ),
                ]
                .concat();
                body.push_str("<h2>Act in another organization</h2>");
                body.push_str(&html::form(
                    session,
                    "/console/organizations",
                    "switch",
                    &fields,
                    "Switch",
                    false,
                ));
            }
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            code = failed.status;
        }
    }
    (code, html::page(Some(session), "Organizations", "", &body)).into_response()
}

/// `POST /console/organizations`: sign in again in the chosen
/// organization (the password checked by the API as at sign-in), take the
/// new token as the session and revoke the old one.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn switch_organization(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return refused.into_response();
    }
    let me = match console.get(&session, "/api/users/me").await {
        Ok(me) => me,
        Err(failed) => return failed.into_response(),
    };
    let body = json!({
        "email": me["email"],
        "password": form.get("password").cloned().unwrap_or_default(),
        "org_id": form.get("org_id").cloned().unwrap_or_default(),
    });
    let answer = console
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(&body),
            session.origin(),
        )
        .await;
    match answer {
        Ok(token) => {
            if let Err(failed) = console.post(&session, "/api/auth/logout", &json!({})).await {
                tracing::warn!(message = %failed.message, "console switch: the old token was not revoked");
            }
            signed_in(&console, &token, "/console")
        }
        Err(failed) => organizations_page(&console, &session, Some(&failed)).await,
    }
}

/// `POST /console/logout`: revoke the token (`POST /api/auth/logout`) and
/// forget the cookie.
#[instrument(skip_all)]
pub(crate) async fn logout(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return refused.into_response();
    }
    if let Err(failed) = console.post(&session, "/api/auth/logout", &json!({})).await {
        tracing::warn!(message = %failed.message, "console logout: the token was not revoked");
    }
    let secure = console.state.config.operations.https;
    with_cookie(
        redirect("/console/login"),
        &set_cookie(SESSION_COOKIE, "", "/console", 0, secure),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_csrf() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vel_session=tok; b="),
        );
        assert_eq!(cookie(&h, "vel_session"), Some("tok"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(cookie(&h, "c"), None);
        assert_ne!(csrf_of("one"), csrf_of("two"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"", b""));
        let c = set_cookie("n", "v", "/console", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("n", "v", "/", 60, false).contains("Secure"));
    }

    #[test]
    fn next_stays_on_the_console() {
        let n = |s: &str| safe_next(Some(&s.to_string()));
        assert_eq!(n("/console/tasks?x=1"), "/console/tasks?x=1");
        assert_eq!(n("https://evil.test/"), "/console");
        assert_eq!(n("//evil.test"), "/console");
        assert_eq!(safe_next(None), "/console");
    }
}
