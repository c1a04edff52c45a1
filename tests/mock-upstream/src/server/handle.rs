//! One request: route it, check credentials, parse it, pick its fault, answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use super::state::State;
use crate::Fault;
use crate::stats::RequestGuard;
use crate::wire::body::{End, MockBody, event_stream, json, json_cut};
use crate::wire::error::{self, ErrorShape};
use crate::wire::request::{Completion, Provider};
use crate::wire::{self, embeddings, mcp, models};

/// Request bodies above this are refused with 413.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What a method and path lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Completion(Provider),
    Embeddings,
    Mcp(mcp::Mode),
    Models,
    AdminStats,
    NotFound,
    MethodNotAllowed,
}

impl Route {
    fn of(method: &Method, path: &str) -> Self {
        if let Some(mode) = mcp::Mode::of(path) {
            return if *method == Method::POST || *method == Method::DELETE {
                Route::Mcp(mode)
            } else {
                Route::MethodNotAllowed
            };
        }
        let (route, wanted) = match path {
            "/v1/chat/completions" => (Route::Completion(Provider::OpenAi), Method::POST),
            "/openai/v1/chat/completions" => (Route::Completion(Provider::Groq), Method::POST),
            "/chat/completions" => (Route::Completion(Provider::Perplexity), Method::POST),
            "/v1/messages" => (Route::Completion(Provider::Anthropic), Method::POST),
            "/v1/embeddings" | "/openai/v1/embeddings" => (Route::Embeddings, Method::POST),
            "/v1/models" | "/openai/v1/models" | "/models" => (Route::Models, Method::GET),
            "/__mock/stats" => (Route::AdminStats, Method::GET),
            _ => return Route::NotFound,
        };
        if *method == wanted {
            route
        } else {
            Route::MethodNotAllowed
        }
    }

    /// Anthropic's shape on its own path or when the client speaks Anthropic.
    fn error_shape(self, headers: &HeaderMap) -> ErrorShape {
        match self {
            Route::Completion(provider) => provider.error_shape(),
            _ if headers.contains_key("anthropic-version") => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }
}

/// The decision for a request once its body is read.
enum Prepared {
    Reject(StatusCode, String),
    Mcp(mcp::Mode),
    Models,
    Completion(Box<Completion>, Fault),
    Embeddings(embeddings::Embeddings, Fault),
}

/// Serves one HTTP request.
pub(crate) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let route = Route::of(request.method(), request.uri().path());
    if route == Route::AdminStats {
        let stats = serde_json::to_vec(&state.counters.snapshot()).unwrap_or_default();
        return Ok(json(StatusCode::OK, Bytes::from(stats), None));
    }
    let guard = RequestGuard::begin(state.counters.clone());
    let (parts, body) = request.into_parts();
    let span =
        tracing::debug_span!("mock_request", method = %parts.method, path = parts.uri.path());
    Ok(respond(state, route, parts, body, guard)
        .instrument(span)
        .await)
}

/// Reads the body, decides, records, answers.
async fn respond(
    state: Arc<State>,
    route: Route,
    parts: Parts,
    body: Incoming,
    guard: RequestGuard,
) -> Response<MockBody> {
    let shape = route.error_shape(&parts.headers);
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            state.record(&parts, &Bytes::new(), None);
            let (status, message) = if e.downcast_ref::<LengthLimitError>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                (StatusCode::BAD_REQUEST, "request body could not be read")
            };
            return error::with_message(shape, status, message, guard);
        }
    };
    let prepared = prepare(&state, route, &parts, &bytes);
    let fault = match &prepared {
        Prepared::Completion(_, fault) | Prepared::Embeddings(_, fault) => Some(fault.clone()),
        _ => None,
    };
    state.record(&parts, &bytes, fault);
    match prepared {
        Prepared::Reject(status, message) => error::with_message(shape, status, &message, guard),
        Prepared::Models => json(StatusCode::OK, models::render(shape), Some(guard)),
        Prepared::Mcp(mode) => mcp::answer(mode, &parts.method, &bytes, guard),
        Prepared::Completion(completion, fault) => answer(&state, *completion, fault, guard).await,
        Prepared::Embeddings(e, fault) => embed(&state, &e, fault, guard).await,
    }
}

fn prepare(state: &State, route: Route, parts: &Parts, body: &Bytes) -> Prepared {
    let provider = match route {
        Route::Completion(provider) => provider,
        Route::Mcp(mode) => {
            return match check_credentials(state, ErrorShape::OpenAi, &parts.headers) {
                Err(reject) => reject,
                Ok(()) => Prepared::Mcp(mode),
            };
        }
        Route::Embeddings => {
            if let Err(reject) = check_credentials(state, ErrorShape::OpenAi, &parts.headers) {
                return reject;
            }
            return match embeddings::parse(body) {
                Err(message) => Prepared::Reject(StatusCode::BAD_REQUEST, message),
                Ok(e) => {
                    let seq = state.next_completion_seq();
                    let fault = state.script().next(seq, &e.model);
                    Prepared::Embeddings(e, fault)
                }
            };
        }
        Route::Models => {
            return match check_credentials(state, route.error_shape(&parts.headers), &parts.headers)
            {
                Err(reject) => reject,
                Ok(()) => Prepared::Models,
            };
        }
        Route::NotFound => {
            return Prepared::Reject(
                StatusCode::NOT_FOUND,
                format!("unknown path {}", parts.uri.path()),
            );
        }
        Route::MethodNotAllowed | Route::AdminStats => {
            return Prepared::Reject(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} not allowed on {}",
                    parts.method,
                    parts.uri.path()
                ),
            );
        }
    };
    if let Err(reject) = check_credentials(state, provider.error_shape(), &parts.headers) {
        return reject;
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seq = state.next_completion_seq();
    match wire::parse(provider, body, seq, created) {
        Err(message) => Prepared::Reject(StatusCode::BAD_REQUEST, message),
        Ok(completion) => {
            let fault = state.script().next(seq, &completion.model);
            Prepared::Completion(Box::new(completion), fault)
        }
    }
}

/// OpenAI-style APIs want `Authorization: Bearer KEY`; Anthropic wants
/// `x-api-key: KEY` and always an `anthropic-version` header.
fn check_credentials(
    state: &State,
    shape: ErrorShape,
    headers: &HeaderMap,
) -> Result<(), Prepared> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if shape == ErrorShape::Anthropic && header("anthropic-version").is_none() {
        return Err(Prepared::Reject(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required".into(),
        ));
    }
    let Some(key) = state.api_key() else {
        return Ok(());
    };
    let given = match shape {
        ErrorShape::OpenAi => header("authorization").and_then(|v| v.strip_prefix("Bearer ")),
        ErrorShape::Anthropic => header("x-api-key"),
    };
    match given {
        Some(given) if given == key => Ok(()),
        Some(_) => Err(Prepared::Reject(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.".into(),
        )),
        None => Err(Prepared::Reject(
            StatusCode::UNAUTHORIZED,
            "No API key provided.".into(),
        )),
    }
}

/// Applies the fixed latency and the fault, then answers.
async fn answer(
    state: &State,
    c: Completion,
    fault: Fault,
    guard: RequestGuard,
) -> Response<MockBody> {
    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let shape = c.provider.error_shape();
    match fault {
        Fault::Ok => ok(&c, guard, End::Finish, None),
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            ok(&c, guard, End::Finish, None)
        }
        Fault::Status(status) => error::status(shape, status, None, guard),
        Fault::RateLimited { retry_after_secs } => {
            error::status(shape, 429, Some(retry_after_secs), guard)
        }
        Fault::Hang => hang(guard).await,
        Fault::CutStream { after_chunks } if c.stream => {
            ok(&c, guard, End::Cut, Some(after_chunks))
        }
        Fault::CutStream { .. } => json_cut(wire::render_plain(&c), guard),
        Fault::ErrorMidStream { after_chunks } if c.stream => {
            let (mut frames, preamble) = wire::render_stream(&c);
            frames.truncate(preamble + after_chunks.min(c.answer.chunk_count()));
            frames.push(wire::stream_error(&c));
            event_stream(frames, End::Finish, guard)
        }
        Fault::ErrorMidStream { .. } => error::status(shape, 500, None, guard),
        Fault::StallStream { after_chunks } if c.stream => {
            ok(&c, guard, End::Stall, Some(after_chunks))
        }
        Fault::StallStream { .. } => hang(guard).await,
    }
}

/// Applies the fixed latency and the fault to an embeddings request, then
/// answers (stream faults answer normally: there is no stream).
async fn embed(
    state: &State,
    e: &embeddings::Embeddings,
    fault: Fault,
    guard: RequestGuard,
) -> Response<MockBody> {
    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::Status(status) => return error::status(ErrorShape::OpenAi, status, None, guard),
        Fault::RateLimited { retry_after_secs } => {
            return error::status(ErrorShape::OpenAi, 429, Some(retry_after_secs), guard);
        }
        Fault::Hang => return hang(guard).await,
        _ => {}
    }
    json(StatusCode::OK, embeddings::render(e), Some(guard))
}

/// Holds the request open until the client goes away (which drops this future).
async fn hang(guard: RequestGuard) -> Response<MockBody> {
    let _held_until_dropped = guard;
    std::future::pending().await
}

/// The normal answer; streams end with `end` after `after_chunks` deltas when given.
fn ok(
    c: &Completion,
    guard: RequestGuard,
    end: End,
    after_chunks: Option<usize>,
) -> Response<MockBody> {
    if !c.stream {
        return json(StatusCode::OK, wire::render_plain(c), Some(guard));
    }
    let (mut frames, preamble) = wire::render_stream(c);
    if let Some(after) = after_chunks {
        frames.truncate(preamble + after.min(c.answer.chunk_count()));
    }
    event_stream(frames, end, guard)
}
