//! What the mock remembers about each request, so tests can assert on what
//! the client actually sent (credentials injected, body shape, model).

use http::{HeaderMap, Method};

use crate::Fault;

/// One request as received. Recorded for every non-admin request while
/// recording is on (the default; see [`crate::MockUpstream::set_recording`]).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// All request headers as sent.
    pub headers: HeaderMap,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<serde_json::Value>,
    /// The behaviour applied; `None` when the request was not a valid
    /// completion request (models list, bad JSON, missing credentials, unknown path).
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// The body's `model` field.
    pub fn model(&self) -> Option<&str> {
        self.body.as_ref()?.get("model")?.as_str()
    }

    /// The body's `stream` flag (false when absent).
    pub fn is_stream(&self) -> bool {
        self.body
            .as_ref()
            .and_then(|b| b.get("stream"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}
