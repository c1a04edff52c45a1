//! The gateway's errors, in OpenAI's shape and with OpenAI's statuses.
//!
//! Every error under `/v1` — the handlers', and those answered before a
//! handler runs (credentials, permissions, rate limits, unknown routes,
//! bodies that do not parse) — is made as vel's one error ([`ApiError`] or
//! a [`GatewayError`]) and rewritten on its way out by [`openai_errors`]
//! into `{"error": {"message", "type", "param", "code"}}`: `type` follows
//! the status (400 `invalid_request_error`, 401 `authentication_error`,
//! 403 `permission_error`, 404 `not_found_error`, 429 `rate_limit_error`,
//! 502 `upstream_error`, …), `param` names the bad field where one is
//! known, `code` is vel's code, and the message carries the per-field or
//! per-attempt details. A well-formed body with an invalid field is a 400
//! here (a 422 under `/api`). The SDKs choose their exception by the
//! status: `BadRequestError`, `AuthenticationError`,
//! `PermissionDeniedError`, `NotFoundError`, `RateLimitError`, …
//!
//! A dispatch that ends with every provider throttling answers 429 with
//! `Retry-After` (the soonest time one said it may serve again).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::TASK_ID;
use crate::api::error::{ApiError, ErrorDetail, error_response};
use crate::orchestrator::dispatch::{DispatchError, DispatchKind};

/// OpenAI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiError,
}

/// What went wrong, as OpenAI says it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    /// For people: what went wrong, with each bad field or failed attempt.
    pub message: String,
    /// The class of error, from the status: `invalid_request_error` (400),
    /// `authentication_error` (401), `insufficient_quota` (402),
    /// `permission_error` (403), `not_found_error` (404),
    /// `rate_limit_error` (429), `server_error` (500), `upstream_error`
    /// (502), `service_unavailable_error` (503), `timeout_error` (504).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault (`messages[0].role`, `model`), when one is.
    pub param: Option<String>,
    /// vel's stable code: `validation_failed`, `model_not_found`,
    /// `rate_limited`, `all_attempts_failed`, …
    pub code: Option<String>,
}

impl OpenAiError {
    /// `detail`, answered with `status`, in OpenAI's shape.
    fn new(status: StatusCode, detail: ErrorDetail) -> OpenAiError {
        let param = detail
            .details
            .keys()
            .find(|field| field.as_str() != "body")
            .cloned();
        let message = if detail.details.is_empty() {
            detail.message
        } else {
            let fields: Vec<String> = detail
                .details
                .iter()
                .map(|(field, messages)| format!("{field}: {}", messages.join("; ")))
                .collect();
            format!("{} ({})", detail.message, fields.join("; "))
        };
        OpenAiError {
            message,
            kind: error_type(status),
            param,
            code: Some(detail.code),
        }
    }
}

/// OpenAI's error type for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        502 => "upstream_error",
        503 => "service_unavailable_error",
        504 => "timeout_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The status an error has under `/v1`: an invalid field is a 400, as
/// OpenAI answers it; every other status is kept.
pub fn openai_status(status: StatusCode) -> StatusCode {
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

/// Whether `path` is the gateway's.
fn is_gateway(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Rewrite every error answered under `/v1` in OpenAI's shape (see the
/// module's documentation); its headers (`Retry-After`, `x-vel-task-id`,
/// the rate-limit headers) are kept. Other paths pass untouched.
pub async fn openai_errors(req: Request, next: Next) -> Response {
    let gateway = is_gateway(req.uri().path());
    let resp = next.run(req).await;
    if !gateway {
        return resp;
    }
    let Some(detail) = resp.extensions().get::<ErrorDetail>().cloned() else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    parts.status = openai_status(parts.status);
    let body = OpenAiErrorBody {
        error: OpenAiError::new(parts.status, detail),
    };
    let bytes = match serde_json::to_vec(&body) {
        Ok(bytes) => bytes,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// A failure of the gateway: any [`ApiError`], or one with a status and
/// code of its own (dispatch failures, unknown models).
#[derive(Debug)]
pub enum GatewayError {
    /// The usual API errors.
    Api(ApiError),
    /// A status and code `ApiError` has no constructor for.
    Other {
        /// HTTP status.
        status: StatusCode,
        /// Error code (the dispatch error's kind, `model_not_found`).
        code: String,
        /// For people.
        message: String,
        /// Per-field messages (the field becomes OpenAI's `param`).
        details: BTreeMap<String, Vec<String>>,
        /// `x-vel-task-id` when the request was recorded.
        task_id: Option<String>,
        /// `Retry-After` (a throttled dispatch).
        retry_after: Option<Duration>,
    },
}

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> Self {
        GatewayError::Api(e)
    }
}

impl From<crate::auth::Forbidden> for GatewayError {
    fn from(e: crate::auth::Forbidden) -> Self {
        GatewayError::Api(e.into())
    }
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        GatewayError::Api(e.into())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        match self {
            GatewayError::Api(e) => e.into_response(),
            GatewayError::Other {
                status,
                code,
                message,
                details,
                task_id,
                retry_after,
            } => {
                // Whole seconds, rounded up: never before the provider said.
                let retry_after = retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
                let detail = ErrorDetail {
                    code,
                    message,
                    details,
                };
                let mut resp = error_response(status, detail, retry_after);
                if let Some(id) = task_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                    resp.headers_mut().insert(TASK_ID, id);
                }
                resp
            }
        }
    }
}

/// 404 for a model no active integration offers (`model_not_found`, `param`
/// `model`).
pub(super) fn model_not_found(model: &str) -> GatewayError {
    let mut details = BTreeMap::new();
    details.insert(
        "model".to_string(),
        vec!["not offered by any active integration; GET /v1/models lists them".to_string()],
    );
    GatewayError::Other {
        status: StatusCode::NOT_FOUND,
        code: "model_not_found".into(),
        message: format!("the model `{model}` does not exist"),
        details,
        task_id: None,
        retry_after: None,
    }
}

/// The HTTP status a dispatch failure is answered with.
pub(super) fn dispatch_status(kind: DispatchKind) -> StatusCode {
    match kind {
        DispatchKind::NoCandidate | DispatchKind::Storage => StatusCode::SERVICE_UNAVAILABLE,
        DispatchKind::PluginBusy | DispatchKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        DispatchKind::BudgetExceeded => StatusCode::PAYMENT_REQUIRED,
        DispatchKind::InvalidRequest | DispatchKind::ContentFiltered => StatusCode::BAD_REQUEST,
        DispatchKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        DispatchKind::RouterFailed
        | DispatchKind::AllAttemptsFailed
        | DispatchKind::StreamInterrupted
        | DispatchKind::ToolRoundsExceeded
        | DispatchKind::ToolServerFailed => StatusCode::BAD_GATEWAY,
    }
}

/// The message of a dispatch failure: its own, then each attempt.
fn dispatch_message(e: &DispatchError) -> String {
    if e.attempts.is_empty() {
        return e.message.clone();
    }
    let attempts: Vec<String> = e
        .attempts
        .iter()
        .map(|a| {
            format!(
                "{}/{}: {}{}",
                a.provider,
                a.model,
                a.error_kind.as_deref().unwrap_or(a.outcome.as_str()),
                a.error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!("{} (attempts: {})", e.message, attempts.join("; "))
}

/// The error answer of a dispatch failure: its kind as the code, each
/// attempt in the message, `Retry-After` when it was throttled.
pub(super) fn dispatch_error(e: &DispatchError, task_id: Option<String>) -> GatewayError {
    GatewayError::Other {
        status: dispatch_status(e.kind),
        code: e.kind.as_str().to_string(),
        message: dispatch_message(e),
        details: BTreeMap::new(),
        task_id,
        retry_after: match e.kind {
            // Throttled with no time given: come back after a second.
            DispatchKind::RateLimited | DispatchKind::PluginBusy => {
                Some(e.retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        },
    }
}

/// The last event of a stream that fails after it started (OpenAI sends
/// `data: {"error": {…}}`), in the same shape as an error answer.
pub(super) fn stream_error_event(e: &DispatchError) -> serde_json::Value {
    let status = dispatch_status(e.kind);
    let error = OpenAiError {
        message: dispatch_message(e),
        kind: error_type(status),
        param: None,
        code: Some(e.kind.as_str().to_string()),
    };
    serde_json::json!({ "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_kinds_have_one_name() {
        for kind in [
            DispatchKind::NoCandidate,
            DispatchKind::RouterFailed,
            DispatchKind::AllAttemptsFailed,
            DispatchKind::PluginBusy,
            DispatchKind::DeadlineExceeded,
            DispatchKind::Storage,
            DispatchKind::InvalidRequest,
            DispatchKind::ContentFiltered,
            DispatchKind::StreamInterrupted,
            DispatchKind::BudgetExceeded,
            DispatchKind::RateLimited,
            DispatchKind::ToolRoundsExceeded,
            DispatchKind::ToolServerFailed,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(
            DispatchKind::terminal("content_filtered"),
            DispatchKind::ContentFiltered
        );
        assert_eq!(
            DispatchKind::terminal("invalid_request"),
            DispatchKind::InvalidRequest
        );
    }

    #[test]
    fn dispatch_kinds_map_to_statuses() {
        for (kind, status) in [
            (DispatchKind::NoCandidate, StatusCode::SERVICE_UNAVAILABLE),
            (DispatchKind::AllAttemptsFailed, StatusCode::BAD_GATEWAY),
            (DispatchKind::InvalidRequest, StatusCode::BAD_REQUEST),
            (DispatchKind::PluginBusy, StatusCode::TOO_MANY_REQUESTS),
            (DispatchKind::RateLimited, StatusCode::TOO_MANY_REQUESTS),
            (DispatchKind::ContentFiltered, StatusCode::BAD_REQUEST),
            (DispatchKind::BudgetExceeded, StatusCode::PAYMENT_REQUIRED),
            (DispatchKind::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
        ] {
            assert_eq!(dispatch_status(kind), status, "{kind}");
        }
    }

    #[test]
    fn errors_take_openais_types_and_name_their_field() {
        assert_eq!(
            openai_status(StatusCode::UNPROCESSABLE_ENTITY),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(openai_status(StatusCode::NOT_FOUND), StatusCode::NOT_FOUND);
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "server_error"),
            (502, "upstream_error"),
            (503, "service_unavailable_error"),
            (504, "timeout_error"),
        ] {
            assert_eq!(
                error_type(StatusCode::from_u16(status).unwrap()),
                kind,
                "{status}"
            );
        }
        let mut details = BTreeMap::new();
        details.insert("n".to_string(), vec!["only n = 1 is supported".to_string()]);
        let e = OpenAiError::new(
            StatusCode::BAD_REQUEST,
            ErrorDetail {
                code: "validation_failed".into(),
                message: "invalid fields: n".into(),
                details,
            },
        );
        assert_eq!(e.param.as_deref(), Some("n"));
        assert_eq!(e.message, "invalid fields: n (n: only n = 1 is supported)");
        assert!(is_gateway("/v1/models/mock/echo") && is_gateway("/v1"));
        assert!(!is_gateway("/v10") && !is_gateway("/api/v1"));
    }
}
