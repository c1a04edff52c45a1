//! The one error shape every endpoint answers with:
//! `{"error":{"code":"…","message":"…","details":{…}}}` — but for the
//! OpenAI-compatible gateway under `/v1`, which answers the same errors in
//! OpenAI's shape (see `handlers::gateway::error`): every error response
//! keeps its [`ErrorDetail`] as a response extension for that.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::validation::FieldErrors;
use crate::validation::Invalid;

/// An error answered to the client, with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: BTreeMap<String, Vec<String>>,
    retry_after: Option<u64>,
}

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Per-field messages (field path → messages); empty when not about fields.
    pub details: BTreeMap<String, Vec<String>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: BTreeMap::new(),
            retry_after: None,
        }
    }

    /// 400: malformed request (bad JSON, bad query string).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such resource in the caller's organization.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 405: the path exists but not with this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    /// 409: conflicts with existing state (duplicate name or email, …).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 409 with a specific code (`version_exists`, `hosts_not_approved`, …).
    pub fn conflict_code(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// `conflict` when `e` is a unique-constraint violation (a name or
    /// version already taken), else the usual mapping of a database error.
    pub fn unique_or(e: sqlx::Error, conflict: ApiError) -> ApiError {
        if crate::store::is_unique_violation(&e) {
            conflict
        } else {
            e.into()
        }
    }

    /// 408: the request body stopped arriving (see [`is_read_timeout`]).
    pub fn request_timeout() -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
    }

    /// 413 with a message naming what was too large.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 413 with a specific code (`plugin_quota_exceeded`, …).
    pub fn too_large_code(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// 413: body larger than the configured limit.
    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// 431: the request's head has too many header fields or bytes
    /// (see `super::head_limit`).
    pub fn headers_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            message,
        )
    }

    /// 414: the request target is longer than the server parses (hyper
    /// refuses it before any handler runs; see
    /// `crate::server::automatic_errors`).
    pub fn uri_too_long(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", message)
    }

    /// 415: body is not JSON.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )
    }

    /// 422 with a specific code: well-formed input the server will not
    /// process (`compile_limit_exceeded`, `compile_timeout`, …).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 422 naming one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        let mut details = BTreeMap::new();
        details.insert(field.to_string(), vec![message.into()]);
        ApiError::validation(details)
    }

    /// 422 with per-field messages.
    pub fn validation(details: BTreeMap<String, Vec<String>>) -> ApiError {
        let fields: Vec<&str> = details.keys().map(String::as_str).collect();
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("invalid fields: {}", fields.join(", ")),
        );
        e.details = details;
        e
    }

    /// 429 with `Retry-After` seconds.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 500: logged in full here, answered without internals.
    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// 508: the request came back to this server through one of its own
    /// provider plugins.
    pub fn loop_detected() -> ApiError {
        ApiError::new(
            StatusCode::LOOP_DETECTED,
            "loop_detected",
            "this request came back to vel through a provider plugin (an integration's base URL \
             points at this server): refused to end the loop",
        )
    }

    /// 502: an upstream the request went to (a tool server) failed; `code`
    /// says how.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// 504: an upstream the request went to did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// 503: a dependency (database, plugin runtime) is unavailable.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body answered for this error; for answers written outside axum
    /// (`crate::server::automatic_errors`), which take the status from
    /// [`ApiError::status`] first.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        error_response(status, self.into_body().error, retry_after)
    }
}

/// The response of an error: `status`, the body of `detail`, the detail
/// itself kept as a response extension (for the gateway's OpenAI-shaped
/// errors), and `Retry-After` when given.
pub fn error_response(
    status: StatusCode,
    detail: ErrorDetail,
    retry_after_secs: Option<u64>,
) -> Response {
    let mut resp = (
        status,
        Json(ErrorBody {
            error: detail.clone(),
        }),
    )
        .into_response();
    resp.extensions_mut().insert(detail);
    if let Some(secs) = retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        if crate::store::is_unique_violation(&e) {
            return ApiError::conflict("a resource with the same unique value already exists");
        }
        if matches!(e, sqlx::Error::PoolTimedOut) || crate::store::is_busy(&e) {
            return ApiError::unavailable("database is busy; try again");
        }
        ApiError::internal(e)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        ApiError::validation(e.0)
    }
}

impl From<crate::agents::ConfigError> for ApiError {
    fn from(e: crate::agents::ConfigError) -> ApiError {
        match e {
            crate::agents::ConfigError::Invalid(e) => e.into(),
            crate::agents::ConfigError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::orchestrator::submit::SubmitError> for ApiError {
    fn from(e: crate::orchestrator::submit::SubmitError) -> ApiError {
        use crate::orchestrator::submit::SubmitError;
        match e {
            SubmitError::Invalid(e) => e.into(),
            SubmitError::IdempotencyConflict => ApiError::conflict(e.to_string()),
            SubmitError::TooManyUnfinished { .. } | SubmitError::OrganizationBusy { .. } => {
                ApiError::too_many_requests(e.to_string(), 1)
            }
            SubmitError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::workflows::service::WorkflowError> for ApiError {
    fn from(e: crate::workflows::service::WorkflowError) -> ApiError {
        use crate::workflows::service::WorkflowError;
        match e {
            WorkflowError::Invalid(e) => e.into(),
            WorkflowError::Forbidden(e) => e.into(),
            WorkflowError::NotFound => ApiError::not_found("workflow"),
            WorkflowError::Conflict(m) => ApiError::conflict(m),
            WorkflowError::TooManyUnfinished { .. } | WorkflowError::OrganizationBusy { .. } => {
                ApiError::too_many_requests(e.to_string(), 1)
            }
            WorkflowError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::analytics::service::AnalyticsError> for ApiError {
    fn from(e: crate::analytics::service::AnalyticsError) -> ApiError {
        use crate::analytics::service::AnalyticsError;
        match e {
            AnalyticsError::Invalid { field, message } => {
                ApiError::bad_request("invalid_query", format!("`{field}` {message}"))
            }
            AnalyticsError::Sketch(e) => ApiError::internal(e),
            AnalyticsError::Db(e) => e.into(),
        }
    }
}

impl From<crate::budgets::service::BudgetError> for ApiError {
    fn from(e: crate::budgets::service::BudgetError) -> ApiError {
        use crate::budgets::service::BudgetError;
        match e {
            BudgetError::Invalid(e) => e.into(),
            BudgetError::Forbidden(e) => e.into(),
            BudgetError::NotFound(what) => ApiError::not_found(what),
            BudgetError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Unauthenticated(reason) => ApiError::unauthorized(reason),
            crate::auth::AuthError::Store(e) => e.into(),
        }
    }
}

impl From<crate::auth::email_change::EmailChangeError> for ApiError {
    fn from(e: crate::auth::email_change::EmailChangeError) -> ApiError {
        use crate::auth::email_change::EmailChangeError as E;
        match e {
            E::NotConfigured => ApiError::unprocessable("email_change_unavailable", e.to_string()),
            E::InvalidToken => ApiError::unprocessable("invalid_token", e.to_string()),
            E::Storage(e) => e.into(),
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(e: crate::limits::LimitError) -> ApiError {
        use crate::limits::LimitError;
        match e {
            LimitError::Exceeded(over) => {
                let secs = u64::try_from(crate::limits::seconds_until(over.resets_at)).unwrap_or(1);
                ApiError::too_many_requests(format!("{over}; the window resets in {secs} s"), secs)
            }
            LimitError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::limits::service::SetError> for ApiError {
    fn from(e: crate::limits::service::SetError) -> ApiError {
        use crate::limits::service::SetError;
        match e {
            SetError::Invalid(e) => e.into(),
            SetError::NotFound(what) => ApiError::not_found(what),
            SetError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::auth::roles::RoleError> for ApiError {
    fn from(e: crate::auth::roles::RoleError) -> ApiError {
        use crate::auth::roles::RoleError;
        match e {
            RoleError::Invalid(e) => e.into(),
            RoleError::Forbidden(e) => e.into(),
            RoleError::NotFound(what) => ApiError::not_found(what),
            RoleError::Conflict(message) => ApiError::conflict(message),
            RoleError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::auth::Forbidden> for ApiError {
    fn from(e: crate::auth::Forbidden) -> ApiError {
        ApiError::forbidden(e.to_string())
    }
}

impl From<crate::plugins::lifecycle::LifecycleError> for ApiError {
    fn from(e: crate::plugins::lifecycle::LifecycleError) -> ApiError {
        use crate::plugins::lifecycle::LifecycleError as E;
        use vel_runtime::{LoadError, SlotsBusy};
        let message = e.to_string();
        match e {
            E::Forbidden(e) => e.into(),
            E::NotFound(what) => ApiError::not_found(what),
            E::Manifest(e) => ApiError::bad_request(e.code(), message),
            E::Invalid(e) => e.into(),
            E::BadSignature(_) => ApiError::bad_request("invalid_signature", message),
            E::UnsignedUpload => ApiError::bad_request("signature_required", message),
            E::NameTaken(_) => ApiError::conflict_code("name_taken", message),
            E::KindMismatch { .. } => ApiError::conflict_code("kind_mismatch", message),
            E::VersionExists(_) => ApiError::conflict_code("version_exists", message),
            E::QuotaExceeded { .. } => ApiError::too_large_code("plugin_quota_exceeded", message),
            E::ComponentTooLarge { .. } => ApiError::too_large(message),
            E::Load { error, wait } => match error {
                LoadError::UnknownClass { .. } => ApiError::bad_request("unknown_class", message),
                LoadError::NotWasm | LoadError::CoreModule => {
                    ApiError::bad_request("not_a_component", message)
                }
                LoadError::KindMismatch { expected, actual } => ApiError::bad_request(
                    "wrong_world",
                    format!(
                        "the manifest declares a {expected} but the component implements the vel:plugins/{actual} world"
                    ),
                ),
                LoadError::UnknownWorld { .. }
                | LoadError::AmbiguousWorld { .. }
                | LoadError::WrongExports { .. } => ApiError::bad_request("wrong_world", message),
                LoadError::ForbiddenImport { .. } => {
                    ApiError::bad_request("forbidden_import", message)
                }
                LoadError::Info(_) => ApiError::bad_request("info_failed", message),
                LoadError::CodeTooLarge { .. }
                | LoadError::FunctionTooLarge { .. }
                | LoadError::TooManyCoreInstances { .. } => {
                    ApiError::unprocessable("compile_limit_exceeded", message)
                }
                LoadError::CompileTimeout { .. } => {
                    ApiError::unprocessable("compile_timeout", message)
                }
                LoadError::Busy(which) => {
                    let scope = match which {
                        SlotsBusy::Tenant => {
                            "this organization's previous upload is still compiling"
                        }
                        SlotsBusy::Global => "every compile slot is busy",
                    };
                    ApiError::too_many_requests(format!("{scope}; try again later"), wait.as_secs())
                }
                _ => ApiError::bad_request("invalid_component", message),
            },
            E::HostsNotApproved => ApiError::conflict_code("hosts_not_approved", message),
            E::VersionRejected(_) => ApiError::conflict_code("version_rejected", message),
            E::AlreadyApproved => ApiError::conflict_code("already_approved", message),
            E::SignatureRequired => ApiError::conflict_code("signature_required", message),
            E::NoPreviousVersion(_) => ApiError::conflict_code("no_previous_version", message),
            E::DefaultRouter => ApiError::conflict_code("default_router", message),
            E::VersionActive { .. } => ApiError::conflict_code("version_active", message),
            E::BuiltinVersion => ApiError::conflict_code("builtin_version", message),
            E::Storage(e) => e.into(),
            E::Reload(_) => ApiError::internal(message),
        }
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(e: crate::secrets::SecretError) -> ApiError {
        ApiError::internal(e)
    }
}

/// Whether `error`, or an error it wraps, is a socket read that timed out:
/// the connection gave up waiting for the rest of a request body (the
/// server's body-read deadline), so the answer is a 408.
pub fn is_read_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = error.source();
    }
    false
}
