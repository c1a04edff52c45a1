//! The Model Context Protocol's messages, without the transport: JSON-RPC
//! 2.0 requests and notifications, reading the server's messages, version
//! negotiation, and the `tools/list` and `tools/call` results in the
//! contract's types.

use serde_json::{Value, json};

use crate::exports::vel::plugins::tools::{Tool, ToolError, ToolResult};

/// Protocol versions this client speaks (Streamable HTTP exists since
/// 2025-03-26; tasks since 2025-11-25); the first is the one it asks for,
/// the others it accepts when the server answers with them.
pub const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The progress token of every `tools/call` (one call per session).
pub const PROGRESS_TOKEN: &str = "vel-tool-call";

/// Longest server text (an error message) kept, in characters.
const MAX_TEXT: usize = 500;

/// A JSON-RPC request's body.
pub fn request(id: u64, method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
}

/// A JSON-RPC notification's body.
pub fn notification(method: &str) -> String {
    json!({ "jsonrpc": "2.0", "method": method }).to_string()
}

/// The `initialize` request's parameters: the version asked for, no client
/// capabilities (no sampling, roots or elicitation), the client's name.
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": VERSIONS[0],
        "capabilities": {},
        "clientInfo": { "name": "vel", "version": env!("CARGO_PKG_VERSION") },
    })
}

/// The version the server chose in its `initialize` result, if this client
/// speaks it.
pub fn negotiate(result: &Value) -> Result<String, ToolError> {
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ToolError::Protocol("the initialize result has no protocolVersion".into())
        })?;
    if VERSIONS.contains(&version) {
        Ok(version.to_string())
    } else {
        Err(ToolError::Protocol(format!(
            "the server speaks MCP protocol version {}, vel speaks {}",
            clean(version),
            VERSIONS.join(", ")
        )))
    }
}

/// One message the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The answer to request `id`: its result, or the error's code and message.
    Answer {
        /// The request's id, as the server wrote it.
        id: Value,
        /// The result, or the error.
        outcome: Result<Value, (i64, String)>,
    },
    /// A notification (no id).
    Notification {
        /// Its method, e.g. `notifications/progress`.
        method: String,
        /// Its parameters (`null` when absent).
        params: Value,
    },
    /// A request of the server's own (sampling, roots…), which this client
    /// did not offer.
    Request {
        /// Its method.
        method: String,
    },
}

/// The messages in one JSON body or SSE event's data: one message or a
/// batch of them.
pub fn messages(text: &str) -> Result<Vec<Message>, ToolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ToolError::Protocol(format!("the server sent a message that is not JSON: {e}"))
    })?;
    match value {
        Value::Array(batch) => batch.iter().map(message).collect(),
        single => Ok(vec![message(&single)?]),
    }
}

fn message(value: &Value) -> Result<Message, ToolError> {
    let bad = |why: &str| {
        ToolError::Protocol(format!(
            "the server sent an invalid JSON-RPC message: {why}"
        ))
    };
    let object = value.as_object().ok_or_else(|| bad("not an object"))?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("`jsonrpc` is not \"2.0\""));
    }
    let id = object.get("id").filter(|id| !id.is_null());
    if let Some(method) = object.get("method") {
        let method = method
            .as_str()
            .ok_or_else(|| bad("`method` is not a string"))?;
        return Ok(match id {
            Some(_) => Message::Request {
                method: clean(method),
            },
            None => Message::Notification {
                method: method.to_string(),
                params: object.get("params").cloned().unwrap_or(Value::Null),
            },
        });
    }
    let id = id.ok_or_else(|| bad("an answer without an id"))?.clone();
    let outcome = match (object.get("result"), object.get("error")) {
        (Some(result), None) => Ok(result.clone()),
        (None, Some(error)) => {
            let code = error
                .get("code")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("an error without an integer code"))?;
            let text = error.get("message").and_then(Value::as_str).unwrap_or("");
            Err((code, clean(text)))
        }
        _ => return Err(bad("an answer needs exactly one of `result` and `error`")),
    };
    Ok(Message::Answer { id, outcome })
}

/// Whether `id` (as the server wrote it) is request `ours`.
pub fn is_ours(id: &Value, ours: u64) -> bool {
    id.as_u64() == Some(ours) || id.as_str() == Some(ours.to_string().as_str())
}

/// A progress notification for [`PROGRESS_TOKEN`]: progress, total, message.
pub fn progress(params: &Value) -> Option<(f64, Option<f64>, Option<String>)> {
    let token = params.get("progressToken")?;
    if token.as_str() != Some(PROGRESS_TOKEN) {
        return None;
    }
    let progress = params.get("progress")?.as_f64()?;
    let total = params.get("total").and_then(Value::as_f64);
    let message = params.get("message").and_then(Value::as_str).map(clean);
    Some((progress, total, message))
}

/// The error of a JSON-RPC error answer to `method`.
pub fn rpc_error(method: &str, code: i64, message: String) -> ToolError {
    let lower = message.to_ascii_lowercase();
    match code {
        -32602
            if method == "tools/call"
                && (lower.contains("not found") || lower.contains("unknown tool")) =>
        {
            ToolError::UnknownTool(message)
        }
        -32602 if method == "tools/call" => ToolError::InvalidArguments(message),
        _ => ToolError::Server((code, format!("{method}: {message}"))),
    }
}

/// One page of a `tools/list` result: its tools and the next cursor.
pub fn tools_page(result: &Value) -> Result<(Vec<Tool>, Option<String>), ToolError> {
    let bad = |why: String| ToolError::Protocol(format!("invalid tools/list result: {why}"));
    let list = result
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `tools` list".into()))?;
    let mut tools = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("tool {i} has no name")))?;
        let text = |key: &str| tool.get(key).and_then(Value::as_str).map(str::to_string);
        let object = |key: &str| {
            tool.get(key)
                .filter(|v| v.is_object())
                .map(Value::to_string)
        };
        tools.push(Tool {
            name: name.to_string(),
            title: text("title"),
            description: text("description"),
            input_schema: object("inputSchema").unwrap_or_else(|| r#"{"type":"object"}"#.into()),
            output_schema: object("outputSchema"),
            annotations: object("annotations"),
        });
    }
    let next = result
        .get("nextCursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok((tools, next))
}

/// How a tool may be called: its `execution.taskSupport` (MCP
/// 2025-11-25); absent means forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSupport {
    /// Only as a plain call.
    Forbidden,
    /// Either way.
    Optional,
    /// Only as a task.
    Required,
}

/// Whether the server runs `tools/call` as a task when asked (its
/// `initialize` result's `capabilities.tasks.requests.tools.call`).
pub fn serves_tool_tasks(initialized: &Value) -> bool {
    initialized
        .pointer("/capabilities/tasks/requests/tools/call")
        .is_some()
}

/// Tool `name`'s task support, if this `tools/list` page lists it.
pub fn task_support(page: &Value, name: &str) -> Option<TaskSupport> {
    let tool = page
        .get("tools")?
        .as_array()?
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?;
    Some(
        match tool
            .pointer("/execution/taskSupport")
            .and_then(Value::as_str)
        {
            Some("required") => TaskSupport::Required,
            Some("optional") => TaskSupport::Optional,
            _ => TaskSupport::Forbidden,
        },
    )
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Still running.
    Working,
    /// Waiting for input from the client (an elicitation).
    InputRequired,
    /// Done: `tasks/result` has its result.
    Completed,
    /// Done: `tasks/result` has its error.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// A task as `tools/call` (`{"task": {…}}`) or `tasks/get` (the task
/// itself) describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// `taskId`.
    pub id: String,
    /// `status`.
    pub status: TaskStatus,
    /// `statusMessage`, cleaned.
    pub message: Option<String>,
    /// `pollInterval` in milliseconds, when the server suggests one.
    pub poll_ms: Option<u64>,
}

/// Reads a task from a `tools/call` or `tasks/get` result.
pub fn task_state(result: &Value) -> Result<TaskState, ToolError> {
    let bad = |why: &str| ToolError::Protocol(format!("invalid task: {why}"));
    let task = result.get("task").unwrap_or(result);
    let id = task
        .get("taskId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad("no taskId"))?;
    let status = match task.get("status").and_then(Value::as_str) {
        Some("working") => TaskStatus::Working,
        Some("input_required") => TaskStatus::InputRequired,
        Some("completed") => TaskStatus::Completed,
        Some("failed") => TaskStatus::Failed,
        Some("cancelled") => TaskStatus::Cancelled,
        Some(other) => return Err(bad(&format!("unknown status {:?}", clean(other)))),
        None => return Err(bad("no status")),
    };
    Ok(TaskState {
        id: id.to_string(),
        status,
        message: task.get("statusMessage").and_then(Value::as_str).map(clean),
        poll_ms: task.get("pollInterval").and_then(Value::as_u64),
    })
}

/// A `tools/call` result in the contract's types.
pub fn tool_result(result: &Value) -> Result<ToolResult, ToolError> {
    let content = match result.get("content") {
        Some(Value::Array(blocks)) => Value::Array(blocks.clone()),
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(_) => {
            return Err(ToolError::Protocol(
                "invalid tools/call result: `content` is not a list".into(),
            ));
        }
    };
    Ok(ToolResult {
        content: content.to_string(),
        structured_content: result
            .get("structuredContent")
            .filter(|v| !v.is_null())
            .map(Value::to_string),
        is_error: result
            .get("isError")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// A server's text made safe to show: control characters out, at most
/// [`MAX_TEXT`] characters.
pub fn clean(text: &str) -> String {
    let joined = text
        .split(char::is_control)
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(MAX_TEXT) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_are_negotiated() {
        assert_eq!(
            negotiate(&json!({"protocolVersion": "2025-03-26"})).unwrap(),
            "2025-03-26"
        );
        assert!(matches!(
            negotiate(&json!({"protocolVersion": "2024-11-05"})),
            Err(ToolError::Protocol(m)) if m.contains("2024-11-05")
        ));
        assert!(matches!(negotiate(&json!({})), Err(ToolError::Protocol(_))));
    }

    #[test]
    fn messages_are_read_one_or_batched() {
        let m = messages(r#"{"jsonrpc":"2.0","id":2,"result":{"ok":true}}"#).unwrap();
        assert!(matches!(&m[0], Message::Answer { id, outcome: Ok(_) } if is_ours(id, 2)));
        let m = messages(
            r#"[{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"vel-tool-call","progress":1,"total":4}},
                {"jsonrpc":"2.0","id":"3","error":{"code":-32602,"message":"Tool x not found"}},
                {"jsonrpc":"2.0","id":9,"method":"roots/list"}]"#,
        )
        .unwrap();
        let Message::Notification { params, .. } = &m[0] else {
            panic!("{m:?}")
        };
        assert_eq!(progress(params), Some((1.0, Some(4.0), None)));
        let Message::Answer {
            id,
            outcome: Err((code, text)),
        } = &m[1]
        else {
            panic!("{m:?}")
        };
        assert!(is_ours(id, 3));
        assert!(matches!(
            rpc_error("tools/call", *code, text.clone()),
            ToolError::UnknownTool(_)
        ));
        assert_eq!(
            m[2],
            Message::Request {
                method: "roots/list".into()
            }
        );
    }

    #[test]
    fn broken_messages_are_protocol_errors() {
        for text in [
            "not json",
            "42",
            r#"{"id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#,
        ] {
            assert!(
                matches!(messages(text), Err(ToolError::Protocol(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn tasks_are_read() {
        let init =
            json!({ "capabilities": { "tasks": { "requests": { "tools": { "call": {} } } } } });
        assert!(serves_tool_tasks(&init));
        assert!(!serves_tool_tasks(
            &json!({ "capabilities": { "tasks": {} } })
        ));
        let page = json!({ "tools": [
            { "name": "a", "execution": { "taskSupport": "required" } },
            { "name": "b", "execution": { "taskSupport": "optional" } },
            { "name": "c" }] });
        assert_eq!(task_support(&page, "a"), Some(TaskSupport::Required));
        assert_eq!(task_support(&page, "b"), Some(TaskSupport::Optional));
        assert_eq!(task_support(&page, "c"), Some(TaskSupport::Forbidden));
        assert_eq!(task_support(&page, "d"), None);
        let created = json!({ "task": { "taskId": "t1", "status": "working",
                                        "statusMessage": "Gathering\nsources", "pollInterval": 250 } });
        assert_eq!(
            task_state(&created).unwrap(),
            TaskState {
                id: "t1".into(),
                status: TaskStatus::Working,
                message: Some("Gathering sources".into()),
                poll_ms: Some(250),
            }
        );
        let got = json!({ "taskId": "t1", "status": "completed" });
        assert_eq!(task_state(&got).unwrap().status, TaskStatus::Completed);
        assert!(task_state(&json!({ "taskId": "t1", "status": "odd" })).is_err());
        assert!(task_state(&json!({ "status": "working" })).is_err());
    }

    #[test]
    fn tools_and_results_convert() {
        let (tools, next) = tools_page(&json!({
            "tools": [{"name": "echo", "description": "Echoes", "inputSchema": {"type": "object"}},
                      {"name": "bare"}],
            "nextCursor": "p2"
        }))
        .unwrap();
        assert_eq!(tools[0].name, "echo");
        assert_eq!(tools[1].input_schema, r#"{"type":"object"}"#);
        assert_eq!(next.as_deref(), Some("p2"));
        assert!(tools_page(&json!({"tools": [{"title": "nameless"}]})).is_err());
        let r = tool_result(&json!({"content": [{"type": "text", "text": "hi"}], "isError": true}))
            .unwrap();
        assert!(r.is_error);
        assert!(r.content.contains("hi"));
        assert!(tool_result(&json!({"content": "text"})).is_err());
    }

    #[test]
    fn server_text_is_cleaned_and_bounded() {
        assert_eq!(clean("a\nb\x1b[31m"), "a b [31m");
        assert_eq!(clean(&"x".repeat(600)).chars().count(), MAX_TEXT + 1);
    }
}
