//! The HTTP API: routes, the one error shape, extractors, and the OpenAPI
//! document generated from the handlers' annotations.

pub mod access;
pub mod body_limit;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod head_limit;
pub mod openapi;
pub mod pagination;
pub mod security_headers;
pub mod sse;
pub mod unread_body;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use self::error::ApiError;
use self::handlers::{
    agents, alerts, analytics, api_keys, audit_logs, auth, batches, benchmarks, budgets,
    connectivity, gateway, integrations, invitations, metrics, organizations, plugins, rate_limits,
    roles, tasks, users, workflow_templates, workflows,
};
use crate::state::AppState;

/// Every documented route, with the OpenAPI document they produce;
/// `upload_limit` is the largest body a plugin upload may send.
fn documented(upload_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(users::me, users::update_me))
        .routes(routes!(users::confirm_email))
        .routes(routes!(users::create, users::list))
        .routes(routes!(organizations::create, organizations::list))
        .routes(routes!(organizations::get))
        .routes(routes!(
            organizations::list_members,
            organizations::add_member
        ))
        .routes(routes!(
            organizations::set_role,
            organizations::remove_member
        ))
        .routes(routes!(organizations::set_routing_policy))
        .routes(routes!(roles::catalog))
        .routes(routes!(roles::list, roles::create))
        .routes(routes!(roles::update, roles::delete))
        .routes(routes!(roles::assign))
        .routes(routes!(rate_limits::usage))
        .routes(routes!(rate_limits::set_for_organization))
        .routes(routes!(rate_limits::set_for_user))
        .routes(routes!(rate_limits::set_for_api_key))
        .routes(routes!(
            organizations::get_stream_failover,
            organizations::set_stream_failover
        ))
        .routes(routes!(agents::create, agents::list))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(agents::history))
        .routes(routes!(handlers::agent_test::test))
        .routes(routes!(integrations::create, integrations::list))
        .routes(routes!(
            integrations::get,
            integrations::update,
            integrations::delete
        ))
        .routes(routes!(connectivity::test))
        .routes(routes!(integrations::tools))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(invitations::create, invitations::list))
        .routes(routes!(invitations::accept))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(audit_logs::list))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::stream))
        .routes(routes!(analytics::usage))
        .routes(routes!(analytics::latency))
        .routes(routes!(analytics::costs))
        .routes(routes!(budgets::list))
        .routes(routes!(budgets::get, budgets::set, budgets::delete))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(
            handlers::webhooks::create,
            handlers::webhooks::list
        ))
        .routes(routes!(
            handlers::webhooks::get,
            handlers::webhooks::update,
            handlers::webhooks::delete
        ))
        .routes(routes!(handlers::webhooks::test))
        .routes(routes!(handlers::webhooks::rotate_secret))
        .routes(routes!(handlers::webhooks::deliveries))
        .routes(routes!(batches::create, batches::list))
        .routes(routes!(batches::get))
        .routes(routes!(batches::cancel))
        .routes(routes!(batches::results))
        .routes(routes!(benchmarks::create, benchmarks::list))
        .routes(routes!(benchmarks::get))
        .routes(routes!(benchmarks::rate))
        .routes(routes!(workflows::create, workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::state))
        .routes(routes!(workflows::graph_of))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::approve))
        .routes(routes!(workflows::reject))
        .routes(routes!(workflows::retry_from_step))
        .routes(routes!(workflows::stream))
        .routes(routes!(
            workflow_templates::create,
            workflow_templates::list
        ))
        .routes(routes!(
            workflow_templates::get,
            workflow_templates::update,
            workflow_templates::delete
        ))
        .routes(routes!(workflow_templates::versions))
        .routes(routes!(workflow_templates::start))
        .routes(routes!(gateway::chat_completions))
        .routes(routes!(gateway::embeddings::embeddings))
        .routes(routes!(gateway::models::models))
        .routes(routes!(gateway::models::model))
        // Uploads stream their parts under per-part caps, and the whole body
        // under its own limit instead of the global one (components are up
        // to VEL_PLUGIN_MAX_UPLOAD_BYTES).
        .routes(routes!(plugins::upload, plugins::list).layer(DefaultBodyLimit::max(upload_limit)))
        .routes(routes!(plugins::get))
        .routes(routes!(plugins::activate))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::disable))
        .routes(routes!(plugins::enable))
        .routes(routes!(plugins::delete_version))
        .routes(routes!(plugins::stats))
        .routes(routes!(plugins::approvals))
        .routes(routes!(plugins::approve))
        .routes(routes!(plugins::reject))
        .routes(routes!(metrics::metrics))
        .routes(routes!(crate::health::health))
        .routes(routes!(openapi::document))
}

/// The OpenAPI document of every documented route, as the handlers'
/// annotations give it (before [`openapi::complete`]).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented(0).split_for_parts().1
}

/// Build the application: the API (routes, limits, error fallbacks,
/// tracing) with the web console beside it under `/console`.
pub fn router(state: AppState) -> Router {
    crate::console::with_console(state.clone(), api_router(state))
}

/// The API alone: routes, limits, error fallbacks, tracing.
fn api_router(state: AppState) -> Router {
    let upload_limit = plugins::upload_body_limit(&state.config.registry);
    let limits = body_limit::BodyLimits {
        default: state.config.max_body_bytes,
        upload: upload_limit,
        batch: state.config.tasks.batch_max_bytes,
    };
    let hop = state.plugins.hop().map(Arc::<str>::from);
    let guard = axum::middleware::from_fn_with_state(state.clone(), access::guard);
    let security = security_headers::SecurityHeaders::new(&state.config.operations);
    let cors = security_headers::cors(&state.config.operations.cors_allowed_origins);
    let (router, doc) = documented(upload_limit).with_state(state).split_for_parts();
    router
        .route_layer(guard)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(openapi::complete(doc))))
        .layer(DefaultBodyLimit::max(limits.default))
        // A declared body over its route's limit: 413 before it is read.
        .layer(limits)
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn(unread_body::close_if_body_unread))
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        .layer(axum::middleware::from_fn_with_state(hop, refuse_loops))
        // A head over vel's limits: a JSON 431 before anything else.
        .layer(head_limit::HeadLimits)
        // Every error under `/v1`, wherever it was made, in OpenAI's shape.
        .layer(axum::middleware::from_fn(gateway::openai_errors))
        // Preflights answered (or not) before anything else; every
        // response, errors included, carries the security headers.
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn_with_state(
            security,
            security_headers::apply,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
}

/// The NUL character has no place in a URL either (PostgreSQL's text
/// cannot hold it, and no id or filter contains it): 400 before routing,
/// on both databases alike. The body's rule is in [`extract::ApiJson`].
async fn refuse_nul_in_url(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri();
    let has_nul = |text: &str| text.contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request(
            "invalid_url",
            "the URL must not contain the NUL character (%00)",
        )
        .into_response();
    }
    next.run(req).await
}

/// A request whose `Via` names this instance was sent by one of its own
/// provider plugins (an integration whose base URL points back at vel):
/// 508 at once, so the loop ends at its first turn.
async fn refuse_loops(
    axum::extract::State(hop): axum::extract::State<Option<Arc<str>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(hop) = &hop
        && req
            .headers()
            .get_all(http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|entry| entry.split_whitespace().nth(1) == Some(&**hop))
    {
        return ApiError::loop_detected().into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
