//! A hostile Model Context Protocol server (Streamable HTTP), for the
//! containment tests of vel's `mcp` plugin: `POST /mcp/{mode}` answers
//! `initialize` and `notifications/initialized` properly (but in mode
//! `invalid`), then every other request as its mode says:
//! - `huge`: a JSON answer of [`HUGE_BYTES`] bytes;
//! - `endless`: an event stream of progress notifications that never ends
//!   (and never answers);
//! - `invalid`: even `initialize` gets a message that is not JSON-RPC;
//! - `stall`: an event stream that sends nothing and stays open;
//! - `rpc-error`: a JSON-RPC error (`-32603`, "the tool broke").
//!
//! `DELETE /mcp/{mode}` (ending the session) answers 204.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::body::{End, MockBody, event_stream, json as json_response};
use crate::stats::RequestGuard;

/// Size of the `huge` answer: above the plugin's 4 MiB cap.
pub(crate) const HUGE_BYTES: usize = 6 * 1024 * 1024;

/// What a hostile MCP endpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Huge,
    Endless,
    Invalid,
    Stall,
    RpcError,
}

impl Mode {
    /// The mode of path `/mcp/{mode}`.
    pub(crate) fn of(path: &str) -> Option<Mode> {
        Some(match path.strip_prefix("/mcp/")? {
            "huge" => Mode::Huge,
            "endless" => Mode::Endless,
            "invalid" => Mode::Invalid,
            "stall" => Mode::Stall,
            "rpc-error" => Mode::RpcError,
            _ => return None,
        })
    }
}

/// Answers one request to a hostile endpoint.
pub(crate) fn answer(
    mode: Mode,
    method: &Method,
    body: &Bytes,
    guard: RequestGuard,
) -> Response<MockBody> {
    if method == Method::DELETE {
        return empty(StatusCode::NO_CONTENT, guard);
    }
    let message: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = message.get("id").cloned();
    let rpc = message.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = id else {
        // A notification (`notifications/initialized`): accepted, no body.
        return empty(StatusCode::ACCEPTED, guard);
    };
    if mode == Mode::Invalid {
        let broken = json!({ "jsonrpc": "1.0", "answer": 42 }).to_string();
        return json_response(StatusCode::OK, Bytes::from(broken), Some(guard));
    }
    if rpc == "initialize" {
        let result = json!({
            "jsonrpc": "2.0", "id": id,
            "result": {
                "protocolVersion": "2025-06-18",
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "hostile", "version": "0.0.0" },
            },
        });
        let mut response =
            json_response(StatusCode::OK, Bytes::from(result.to_string()), Some(guard));
        response.headers_mut().insert(
            "mcp-session-id",
            HeaderValue::from_static("hostile-session"),
        );
        return response;
    }
    match mode {
        Mode::Huge => {
            let text = "x".repeat(HUGE_BYTES);
            let result = json!({
                "jsonrpc": "2.0", "id": id,
                "result": { "content": [{ "type": "text", "text": text }], "tools": [] },
            });
            json_response(StatusCode::OK, Bytes::from(result.to_string()), Some(guard))
        }
        Mode::Endless => {
            let note = json!({
                "jsonrpc": "2.0", "method": "notifications/progress",
                "params": { "progressToken": "vel-tool-call", "progress": 1, "message": "still going" },
            });
            let frame = Bytes::from(format!("event: message\ndata: {note}\n\n"));
            event_stream(vec![frame], End::Repeat, guard)
        }
        Mode::Stall => event_stream(Vec::new(), End::Stall, guard),
        Mode::RpcError => {
            let error = json!({
                "jsonrpc": "2.0", "id": id,
                "error": { "code": -32603, "message": "the tool broke" },
            });
            json_response(StatusCode::OK, Bytes::from(error.to_string()), Some(guard))
        }
        // Answered before `initialize` above.
        Mode::Invalid => empty(StatusCode::INTERNAL_SERVER_ERROR, guard),
    }
}

fn empty(status: StatusCode, guard: RequestGuard) -> Response<MockBody> {
    let mut response = Response::new(MockBody::new(Vec::new(), End::Finish, Some(guard)));
    *response.status_mut() = status;
    response
}
