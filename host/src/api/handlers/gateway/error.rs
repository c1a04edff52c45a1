//! The gateway's errors: vel's one error shape, with OpenAI-like statuses
//! for dispatch failures and an `x-vel-task-id` header when the request
//! was recorded.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::TASK_ID;
use crate::api::error::{ApiError, ErrorBody, ErrorDetail};
use crate::orchestrator::dispatch::{DispatchError, DispatchKind};

/// A failure of the gateway: any [`ApiError`], or one with a status and
/// code of its own (dispatch failures, unknown models), in the same shape.
#[derive(Debug)]
pub enum GatewayError {
    /// The usual API errors.
    Api(ApiError),
    /// A status and code `ApiError` has no constructor for.
    Other {
        /// HTTP status.
        status: StatusCode,
        /// Error code (the dispatch error's kind).
        code: String,
        /// For people.
        message: String,
        /// Per-field (or per-attempt) messages.
        details: BTreeMap<String, Vec<String>>,
        /// `x-vel-task-id` when the request was recorded.
        task_id: Option<String>,
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
            } => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code,
                        message,
                        details,
                    },
                };
                let mut resp = (status, Json(body)).into_response();
                if let Some(id) = task_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                    resp.headers_mut().insert(TASK_ID, id);
                }
                resp
            }
        }
    }
}

/// The HTTP status a dispatch failure is answered with.
pub(super) fn dispatch_status(kind: DispatchKind) -> StatusCode {
    match kind {
        DispatchKind::NoCandidate | DispatchKind::Storage => StatusCode::SERVICE_UNAVAILABLE,
        DispatchKind::PluginBusy => StatusCode::TOO_MANY_REQUESTS,
        DispatchKind::BudgetExceeded => StatusCode::PAYMENT_REQUIRED,
        DispatchKind::InvalidRequest | DispatchKind::ContentFiltered => StatusCode::BAD_REQUEST,
        DispatchKind::RouterFailed
        | DispatchKind::AllAttemptsFailed
        | DispatchKind::DeadlineExceeded
        | DispatchKind::StreamInterrupted => StatusCode::BAD_GATEWAY,
    }
}

/// The error body of a dispatch failure: its kind as the code, each attempt in `details`.
pub(super) fn dispatch_error(e: &DispatchError, task_id: Option<String>) -> GatewayError {
    let mut details = BTreeMap::new();
    if !e.attempts.is_empty() {
        details.insert(
            "attempts".to_string(),
            e.attempts
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
                .collect(),
        );
    }
    GatewayError::Other {
        status: dispatch_status(e.kind),
        code: e.kind.as_str().to_string(),
        message: e.message.clone(),
        details,
        task_id,
    }
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
        assert_eq!(
            dispatch_status(DispatchKind::NoCandidate),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            dispatch_status(DispatchKind::AllAttemptsFailed),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            dispatch_status(DispatchKind::InvalidRequest),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            dispatch_status(DispatchKind::PluginBusy),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            dispatch_status(DispatchKind::ContentFiltered),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            dispatch_status(DispatchKind::BudgetExceeded),
            StatusCode::PAYMENT_REQUIRED
        );
    }
}
