//! Error bodies in each provider's shape.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::body::{MockBody, json as json_response};
use crate::stats::RequestGuard;

/// Which provider's error body to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}` (OpenAI, Groq, Perplexity).
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

/// An error response with the provider's usual type and message for `status`.
pub(crate) fn status(
    shape: ErrorShape,
    status: u16,
    retry_after_secs: Option<u64>,
    guard: RequestGuard,
) -> Response<MockBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = default_message(shape, code);
    let mut response = with_message(shape, code, message, guard);
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// An error response with a specific message.
pub(crate) fn with_message(
    shape: ErrorShape,
    status: StatusCode,
    message: &str,
    guard: RequestGuard,
) -> Response<MockBody> {
    let body = match shape {
        ErrorShape::OpenAi => {
            let (kind, code) = openai_kind(status);
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        ErrorShape::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_kind(status), "message": message},
        }),
    };
    json_response(status, Bytes::from(body.to_string()), Some(guard))
}

fn openai_kind(status: StatusCode) -> (&'static str, Option<&'static str>) {
    match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", Some("permission_denied")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        503 => ("server_error", Some("service_unavailable")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

fn anthropic_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn default_message(shape: ErrorShape, status: StatusCode) -> &'static str {
    match (shape, status.as_u16()) {
        (_, 401) => "Incorrect API key provided.",
        (_, 403) => "You are not allowed to use this resource.",
        (_, 404) => "The requested resource does not exist.",
        (_, 429) => "Rate limit reached for requests. Please try again later.",
        (ErrorShape::Anthropic, 529) => "Overloaded",
        (_, 503) => "The server is overloaded or not ready yet.",
        (_, 500..=599) => "The server had an error while processing your request.",
        _ => "The request was rejected.",
    }
}
