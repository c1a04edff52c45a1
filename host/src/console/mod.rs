//! The web console: server-rendered pages under `/console` for operators
//! and tenant admins (overview, tasks, workflows, agents, integrations,
//! plugins, alerts, API keys, members and roles).
//!
//! Every page reads and writes through the API itself, in process: a
//! console handler builds the API request with the session's access token
//! as its bearer and sends it to the API router (no socket, no second
//! copy of any rule). The access guard, the tenancy of every query, the
//! rate limits and the audit log therefore apply to the console exactly as
//! they do to `/api`, and the console shows the numbers the API answers.
//!
//! The session is the access token in an httpOnly, `SameSite=Strict`
//! cookie (`Secure` when `VEL_HTTPS`); every write carries a CSRF token
//! derived from the session ([`session`]). Assets (one CSS and one
//! JavaScript file) are embedded in the binary ([`assets`]).

mod agents;
mod alerts;
mod analytics;
mod api_keys;
mod assets;
mod benchmarks;
mod budgets;
mod chart;
mod html;
mod integrations;
mod members;
mod overview;
mod plugins;
mod session;
mod tasks;
mod workflows;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::state::AppState;

pub(crate) use self::session::Session;

/// The pages' Content-Security-Policy: everything from this origin only,
/// no inline script or style, no framing, forms posted here only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The largest API answer the console reads (a page of tasks is far less).
const MAX_API_BODY: usize = 16 * 1024 * 1024;

/// What console handlers share: the application state and the API router
/// they send their requests to.
#[derive(Clone)]
pub(crate) struct Console {
    /// The application state (configuration, keys, database).
    pub(crate) state: AppState,
    /// The API, with all its layers.
    api: Router,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// The API router `api` with the console mounted beside it under
/// `/console`; every other path goes to the API unchanged.
pub fn with_console(state: AppState, api: Router) -> Router {
    let https = state.config.operations.https;
    // An upload's form: the API's own limit, and room for the console's
    // fields.
    let upload_limit = crate::api::handlers::plugins::upload_body_limit(&state.config.registry)
        .saturating_add(4096);
    let console = Console {
        state,
        api: api.clone(),
    };
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route(
            "/organizations",
            get(session::organizations).post(session::switch_organization),
        )
        .route("/assets/{file}", get(assets::serve))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::detail))
        .route("/tasks/{id}/summary", get(tasks::summary))
        .route("/tasks/{id}/events", get(tasks::events))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/workflows", get(workflows::list))
        .route("/workflows/{id}", get(workflows::detail))
        .route("/workflows/{id}/graph", get(workflows::graph_fragment))
        .route("/workflows/{id}/events", get(workflows::events))
        .route("/workflows/{id}/approve", post(workflows::approve))
        .route("/workflows/{id}/reject", post(workflows::reject))
        .route("/workflows/{id}/retry/{step}", post(workflows::retry))
        .route(
            "/plugins",
            get(plugins::list)
                .post(plugins::upload)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/plugins/{name}", get(plugins::detail))
        .route(
            "/plugins/{name}/versions/{version}/activate",
            post(plugins::activate),
        )
        .route("/plugins/{name}/rollback", post(plugins::rollback))
        .route("/plugins/{name}/disable", post(plugins::disable))
        .route("/plugins/{name}/enable", post(plugins::enable))
        .route("/plugin-approvals/{id}/approve", post(plugins::approve))
        .route("/plugin-approvals/{id}/reject", post(plugins::reject))
        .route("/agents", get(agents::list).post(agents::create))
        .route("/agents/{id}", get(agents::detail).post(agents::update))
        .route("/agents/{id}/{action}", post(agents::act))
        .route(
            "/integrations",
            get(integrations::list).post(integrations::create),
        )
        .route(
            "/integrations/{id}",
            get(integrations::detail).post(integrations::update),
        )
        .route("/integrations/{id}/{action}", post(integrations::act))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/{id}/revoke", post(api_keys::revoke))
        .route("/members", get(members::list))
        .route("/members/invite", post(members::invite))
        .route("/members/roles", post(members::create_role))
        .route("/members/{id}/role", post(members::set_role))
        .route("/members/{id}/remove", post(members::remove))
        .route("/performance", get(analytics::performance))
        .route("/performance.csv", get(analytics::performance))
        .route("/costs", get(analytics::costs))
        .route("/costs.csv", get(analytics::costs))
        .route("/costs/budgets", post(budgets::set))
        .route(
            "/benchmarks",
            get(benchmarks::list).post(benchmarks::create),
        )
        .route("/benchmarks/{id}", get(benchmarks::detail))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .fallback(not_found)
        .with_state(console)
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "The page failed.")
        }))
        .layer(axum::middleware::from_fn_with_state(https, headers))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        );
    Router::new().nest("/console", pages).fallback_service(api)
}

/// The console's headers: its own Content-Security-Policy (the API's
/// forbids everything), no caching of pages, the usual hardening.
async fn headers(State(https): State<bool>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    if https {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            crate::api::security_headers::STRICT_TRANSPORT_SECURITY,
        );
    }
    resp
}

async fn not_found() -> Response {
    html::error_page(StatusCode::NOT_FOUND, "No such page.")
}

/// A 303 to `to` (after a form, or to the login page).
pub(crate) fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// The request's facts the API needs to see as the browser's own: its
/// address (rate limits and the audit log) and its user agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    remote: Option<ConnectInfo<SocketAddr>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Origin {
    /// What of `parts` is passed on to the API.
    pub(crate) fn of(
        extensions: &http::Extensions,
        headers: &HeaderMap,
        state: &AppState,
    ) -> Origin {
        let mut names = vec![header::USER_AGENT.as_str().to_string()];
        if state.config.trust_proxy_headers {
            names.push(state.config.client_ip_header.clone());
        }
        let headers = names
            .iter()
            .filter_map(|n| {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                let value = headers.get(&name)?.clone();
                Some((name, value))
            })
            .collect();
        Origin {
            remote: extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
            headers,
        }
    }
}

/// An API call the console made that did not succeed: its status and the
/// API's own message, shown to the user as they are.
#[derive(Debug, Clone)]
pub(crate) struct Failed {
    /// The API's status.
    pub(crate) status: StatusCode,
    /// The API's message (`error.message`), or a description.
    pub(crate) message: String,
    /// Field messages, when the API named fields.
    pub(crate) details: Vec<String>,
}

impl Failed {
    fn from_reply(status: StatusCode, body: &Value) -> Failed {
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the API answered {status}"));
        let details = body["error"]["details"]
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .flat_map(|(field, msgs)| {
                        msgs.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(move |m| format!("{field}: {m}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Failed {
            status,
            message,
            details,
        }
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        html::failed_page(&self)
    }
}

impl Console {
    /// Send `method path` with `body` (JSON) to the API as `token`'s
    /// holder, passing on `origin`; the raw response.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        origin: &Origin,
    ) -> Response {
        let body = body.map(|b| ("application/json".to_string(), Body::from(b.to_string())));
        self.send_body(method, path, token, body, origin).await
    }

    /// [`Console::send`] with a body of any (content type, bytes).
    async fn send_body(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(String, Body)>,
        origin: &Origin,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &origin.headers {
            builder = builder.header(name, value);
        }
        let request = match body {
            Some((content_type, body)) => builder
                .header(header::CONTENT_TYPE, content_type)
                .body(body),
            None => builder.body(Body::empty()),
        };
        let mut request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, path, "console built a bad API request");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        if let Some(remote) = origin.remote {
            request.extensions_mut().insert(remote);
        }
        match self.api.clone().oneshot(request).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// [`Console::send`], the answer's JSON on success, else [`Failed`].
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        origin: &Origin,
    ) -> Result<Value, Failed> {
        read_answer(self.send(method, path, token, body, origin).await).await
    }

    /// A `POST` of a `content_type` body (a multipart upload) as the
    /// session's holder.
    pub(crate) async fn post_raw(
        &self,
        session: &Session,
        path: &str,
        content_type: String,
        body: Vec<u8>,
    ) -> Result<Value, Failed> {
        let resp = self
            .send_body(
                Method::POST,
                path,
                Some(session.token()),
                Some((content_type, Body::from(body))),
                session.origin(),
            )
            .await;
        read_answer(resp).await
    }

    /// A read as the session's holder.
    pub(crate) async fn get(&self, session: &Session, path: &str) -> Result<Value, Failed> {
        self.call(
            Method::GET,
            path,
            Some(session.token()),
            None,
            session.origin(),
        )
        .await
    }

    /// A write as the session's holder.
    pub(crate) async fn post(
        &self,
        session: &Session,
        path: &str,
        body: &Value,
    ) -> Result<Value, Failed> {
        self.write(session, Method::POST, path, Some(body)).await
    }

    /// A write of any method as the session's holder (`body` JSON, or
    /// none).
    pub(crate) async fn write(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failed> {
        self.call(method, path, Some(session.token()), body, session.origin())
            .await
    }

    /// A console form's write: the form's CSRF token checked, then
    /// `method path` with `body` sent as the session's holder.
    pub(crate) async fn submit(
        &self,
        session: &Session,
        form: &HashMap<String, String>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Sent {
        if let Err(refused) = session.check_csrf(form) {
            return Sent::Stop(refused.into_response());
        }
        match self.write(session, method, path, body).await {
            Ok(answer) => Sent::Done(answer),
            Err(failed) => Sent::Refused(failed),
        }
    }

    /// [`Console::submit`], then a 303 to `back` when the API agrees, the
    /// API's own words when it does not.
    pub(crate) async fn form_write(
        &self,
        session: &Session,
        form: &HashMap<String, String>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        back: &str,
    ) -> Response {
        match self.submit(session, form, method, path, body).await {
            Sent::Done(_) => redirect(back),
            Sent::Refused(failed) => failed.into_response(),
            Sent::Stop(resp) => resp,
        }
    }

    /// An event stream of the API passed through as it comes (the
    /// browser's `EventSource` cannot send a bearer token itself).
    pub(crate) async fn stream(&self, session: &Session, path: &str, last: &HeaderMap) -> Response {
        let mut origin = session.origin().clone();
        let last_event_id = HeaderName::from_static("last-event-id");
        if let Some(value) = last.get(&last_event_id) {
            origin.headers.push((last_event_id, value.clone()));
        }
        self.send(Method::GET, path, Some(session.token()), None, &origin)
            .await
    }
}

/// The API's answer: its JSON on success, else [`Failed`].
async fn read_answer(resp: Response) -> Result<Value, Failed> {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_API_BODY)
        .await
        .map_err(|e| Failed {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the API's answer could not be read: {e}"),
            details: Vec::new(),
        })?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if status.is_success() {
        Ok(value)
    } else {
        Err(Failed::from_reply(status, &value))
    }
}

/// Percent-encode one path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A path parameter, as every page takes its id.
pub(crate) type Id = Path<String>;

/// A form's field `key`, trimmed; `None` when absent or blank.
pub(crate) fn given<'a>(form: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    form.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A form's number field as JSON: the number when it reads as one, else
/// the text as typed (so the API names the problem); `None` when blank.
pub(crate) fn number(form: &HashMap<String, String>, key: &str) -> Option<Value> {
    let v = given(form, key)?;
    Some(if let Ok(i) = v.parse::<i64>() {
        Value::from(i)
    } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Value::from(f)
    } else {
        Value::from(v)
    })
}

/// The JSON object of the form's non-blank text fields `keys` (the API
/// reads a missing field as "unchanged" or "the default").
pub(crate) fn texts(
    form: &HashMap<String, String>,
    keys: &[&str],
) -> serde_json::Map<String, Value> {
    keys.iter()
        .filter_map(|k| given(form, k).map(|v| ((*k).to_string(), Value::from(v))))
        .collect()
}

/// What a console form's write came to.
#[derive(Debug)]
pub(crate) enum Sent {
    /// The API agreed: its answer.
    Done(Value),
    /// The API refused: its reason, for the form's page.
    Refused(Failed),
    /// Not sent (the form's CSRF token was wrong): the answer to give.
    Stop(Response),
}

/// A form the API refused, sent back to its page: what was typed (filled
/// in again) and the API's reason (shown above it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Draft<'a> {
    form: Option<&'a HashMap<String, String>>,
    /// Why the API refused it.
    pub(crate) failed: Option<&'a Failed>,
}

impl<'a> Draft<'a> {
    /// No form sent back: fields show the current values.
    pub(crate) fn none() -> Draft<'a> {
        Draft::default()
    }

    /// `form`, refused for `failed`.
    pub(crate) fn sent(form: &'a HashMap<String, String>, failed: &'a Failed) -> Draft<'a> {
        Draft {
            form: Some(form),
            failed: Some(failed),
        }
    }

    /// The API's refusal, to show above the form (empty when none); its
    /// status becomes the page's. Shown whether or not the form is (a
    /// refused viewer sees why).
    pub(crate) fn refusal(&self, code: &mut StatusCode) -> String {
        match self.failed {
            Some(failed) => {
                *code = failed.status;
                html::failed_inline(failed)
            }
            None => String::new(),
        }
    }

    /// What field `key` shows: as typed when sent back, else `current`
    /// (blank for null).
    pub(crate) fn value(&self, key: &str, current: &Value) -> String {
        match self.form {
            Some(form) => form.get(key).cloned().unwrap_or_default(),
            None if current.is_null() => String::new(),
            None => html::text(current),
        }
    }
}
