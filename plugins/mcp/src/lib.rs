//! `mcp`: a Model Context Protocol client over the Streamable HTTP
//! transport, as a `tool-server` plugin.
//!
//! Every call opens its own session (instances keep no state): `initialize`
//! (asking for protocol version 2025-11-25, accepting 2025-06-18 and
//! 2025-03-26), `notifications/initialized`, then `tools/list` (every page)
//! or `tools/call` (with a progress token: the server's
//! `notifications/progress` go to the host's `progress` import), and a
//! DELETE that ends the session. A server that runs tool calls as tasks
//! (MCP 2025-11-25: `capabilities.tasks.requests.tools.call`) gets a
//! tool whose `execution.taskSupport` is `required` or `optional` called
//! as a task: `tools/call` with `task`, then `tasks/get` every
//! `pollInterval` (its `statusMessage`s reported as progress) until the
//! task ends, then `tasks/result`; a cancelled call cancels the task
//! (`tasks/cancel`). A task that asks for input (`input_required`: an
//! elicitation, which this client does not offer) is cancelled and fails. Requests are JSON-RPC 2.0 POSTs accepting
//! `application/json` and `text/event-stream`; the session id
//! (`Mcp-Session-Id`) and the negotiated `MCP-Protocol-Version` go with
//! every request after `initialize`.
//!
//! Settings: `base-url` (the server's MCP endpoint, e.g.
//! `https://tasks.example.com/mcp`; required) and `timeout-ms` (connect,
//! first byte and between bytes). The host adds the credential
//! (`Authorization: Bearer …`) to requests to that endpoint's origin; the
//! plugin never sees it. An answer larger than [`MAX_ANSWER`] bytes is
//! refused.
//!
//! The HTTP client, the SSE parser and the HTTP error mapping are the
//! provider SDK's (`plugins/guest-http`), compiled in from its source: that
//! crate carries the `provider` world's bindings, which a `tool-server`
//! component must not.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod protocol;

// The provider SDK's transport, from its source (see the crate docs).
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../guest-http/src/errors.rs"]
mod errors;
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../guest-http/src/http.rs"]
mod http;
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../guest-http/src/sse.rs"]
mod sse;

/// The provider SDK's error type, which its transport returns; mapped to
/// [`ToolError`] at once.
mod completion {
    #[derive(Debug, Clone)]
    pub enum ProviderError {
        RateLimited(Option<u32>),
        Unavailable(String),
        Timeout,
        InvalidRequest(String),
        Auth(String),
        ContentFiltered(String),
        Other(String),
    }
}

wit_bindgen::generate!({
    path: "../../wit",
    world: "tool-server",
});

use std::time::Duration;

use completion::ProviderError;
use exports::vel::plugins::tools::{
    CredentialHeader, Guest, Tool, ToolError, ToolResult, ToolServerInfo,
};
use serde_json::{Value, json};
use vel::plugins::{config, log, progress};

/// Largest answer (JSON body or event stream) read from the server, in bytes.
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// Most `tools/list` pages read.
const MAX_PAGES: usize = 50;
/// How long a task's result is kept for us, asked of the server (ms).
const TASK_TTL_MS: u64 = 10 * 60 * 1000;
/// Poll interval when the server suggests none (ms).
const DEFAULT_POLL_MS: u64 = 500;
/// Bounds of the server's suggested poll interval (ms).
const MIN_POLL_MS: u64 = 50;
const MAX_POLL_MS: u64 = 5_000;

/// The component's export.
struct Mcp;

impl Guest for Mcp {
    fn info() -> ToolServerInfo {
        ToolServerInfo {
            name: "mcp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Model Context Protocol client (Streamable HTTP): lists and calls an MCP server's tools".into(),
            credential: Some(CredentialHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }),
            base_url_setting: Some("base-url".into()),
        }
    }

    fn list_tools() -> Result<Vec<Tool>, ToolError> {
        let mut session = Session::open(Settings::read()?)?;
        let listed = session.list_tools();
        session.close();
        listed
    }

    fn call_tool(name: String, arguments: String) -> Result<ToolResult, ToolError> {
        let arguments: Value = serde_json::from_str(&arguments)
            .map_err(|e| ToolError::InvalidArguments(format!("not JSON: {e}")))?;
        if !arguments.is_object() {
            return Err(ToolError::InvalidArguments("must be a JSON object".into()));
        }
        let mut session = Session::open(Settings::read()?)?;
        let answer = session.call_tool(&name, arguments);
        session.close();
        protocol::tool_result(&answer?)
    }
}

export!(Mcp);

/// The plugin's settings.
struct Settings {
    url: String,
    timeout: Option<Duration>,
}

impl Settings {
    fn read() -> Result<Settings, ToolError> {
        let url = config::get("base-url")
            .map(|u| u.trim().to_string())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| {
                ToolError::Other(
                    "setting base-url: the MCP endpoint's http(s) URL is required".into(),
                )
            })?;
        let timeout = match config::get("timeout-ms") {
            Some(ms) => Some(Duration::from_millis(ms.trim().parse::<u64>().map_err(
                |_| ToolError::Other(format!("setting timeout-ms: {ms:?} is not a whole number")),
            )?)),
            None => None,
        };
        Ok(Settings { url, timeout })
    }
}

/// One MCP session over Streamable HTTP.
struct Session {
    settings: Settings,
    /// `Mcp-Session-Id`, when the server gave one.
    id: Option<String>,
    /// The negotiated protocol version, once initialized.
    version: Option<String>,
    /// Whether the server runs `tools/call` as a task when asked.
    tool_tasks: bool,
    next_id: u64,
}

impl Session {
    /// Initializes a session: `initialize`, then `notifications/initialized`.
    fn open(settings: Settings) -> Result<Session, ToolError> {
        let mut session = Session {
            settings,
            id: None,
            version: None,
            tool_tasks: false,
            next_id: 1,
        };
        let result = session.request("initialize", protocol::initialize_params())?;
        session.version = Some(protocol::negotiate(&result)?);
        session.tool_tasks = protocol::serves_tool_tasks(&result);
        session.notify("notifications/initialized")?;
        Ok(session)
    }

    /// Every page of `tools/list`.
    fn list_tools(&mut self) -> Result<Vec<Tool>, ToolError> {
        let mut tools = Vec::new();
        self.tool_pages(|page| {
            let (listed, next) = protocol::tools_page(page)?;
            tools.extend(listed);
            Ok(next)
        })?;
        Ok(tools)
    }

    /// Reads `tools/list` page by page: `each` returns the next cursor
    /// (`None` stops).
    fn tool_pages(
        &mut self,
        mut each: impl FnMut(&Value) -> Result<Option<String>, ToolError>,
    ) -> Result<(), ToolError> {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            match each(&self.request("tools/list", params)?)? {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        Err(ToolError::Protocol(format!(
            "tools/list has more than {MAX_PAGES} pages"
        )))
    }

    /// Whether tool `name` is to be called as a task: the server runs tool
    /// calls as tasks and the tool takes them.
    fn as_task(&mut self, name: &str) -> Result<bool, ToolError> {
        if !self.tool_tasks {
            return Ok(false);
        }
        let mut support = None;
        self.tool_pages(|page| {
            support = protocol::task_support(page, name);
            if support.is_some() {
                return Ok(None);
            }
            Ok(page
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string))
        })?;
        Ok(matches!(
            support,
            Some(protocol::TaskSupport::Required | protocol::TaskSupport::Optional)
        ))
    }

    /// Calls tool `name`, as a task when it is to be one; the result is
    /// the `tools/call` result either way.
    fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, ToolError> {
        let mut params = json!({
            "name": name,
            "arguments": arguments,
            "_meta": { "progressToken": protocol::PROGRESS_TOKEN },
        });
        if !self.as_task(name)? {
            return self.request("tools/call", params);
        }
        params["task"] = json!({ "ttl": TASK_TTL_MS });
        let mut task = protocol::task_state(&self.request("tools/call", params)?)?;
        let mut reported = 0.0;
        let mut said: Option<String> = None;
        loop {
            if task.message.is_some() && task.message != said {
                said.clone_from(&task.message);
                reported += 1.0;
                if !progress::report(reported, None, said.as_deref()) {
                    self.cancel_task(&task.id);
                    return Err(ToolError::Other("the call was cancelled".into()));
                }
            }
            match task.status {
                protocol::TaskStatus::Working => {}
                protocol::TaskStatus::Completed | protocol::TaskStatus::Failed => break,
                protocol::TaskStatus::Cancelled => {
                    return Err(ToolError::Other(
                        "the server cancelled the tool's task".into(),
                    ));
                }
                protocol::TaskStatus::InputRequired => {
                    self.cancel_task(&task.id);
                    return Err(ToolError::Other(
                        "the tool asked for input (an elicitation), which vel does not give; its task was cancelled"
                            .into(),
                    ));
                }
            }
            let poll = task
                .poll_ms
                .unwrap_or(DEFAULT_POLL_MS)
                .clamp(MIN_POLL_MS, MAX_POLL_MS);
            std::thread::sleep(Duration::from_millis(poll));
            let id = task.id.clone();
            task = protocol::task_state(&self.request("tasks/get", json!({ "taskId": id }))?)?;
            if task.id != id {
                return Err(ToolError::Protocol(
                    "tasks/get answered for another task".into(),
                ));
            }
        }
        self.request("tasks/result", json!({ "taskId": task.id }))
    }

    /// Asks the server to cancel task `id` (best effort).
    fn cancel_task(&mut self, id: &str) {
        let _ = self.request("tasks/cancel", json!({ "taskId": id }));
    }

    /// The headers of every request: content negotiation, then the session
    /// id and the protocol version once known.
    fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(id) = &self.id {
            headers.push(("mcp-session-id", id));
        }
        if let Some(version) = &self.version {
            headers.push(("mcp-protocol-version", version));
        }
        headers
    }

    fn post(&self, body: &[u8]) -> Result<http::Response, ToolError> {
        http::post(&http::Post {
            url: &self.settings.url,
            headers: self.headers(),
            body,
            timeout: self.settings.timeout,
        })
        .map_err(transport_error)
    }

    /// Sends a notification; the server answers 202 with no body.
    fn notify(&mut self, method: &str) -> Result<(), ToolError> {
        let body = protocol::notification(method);
        self.post(body.as_bytes())?
            .error_for_status()
            .map_err(transport_error)?;
        Ok(())
    }

    /// Sends request `method` and waits for its answer, in a JSON body or
    /// on the event stream the server opens for it (where its progress
    /// notifications come first).
    fn request(&mut self, method: &str, params: Value) -> Result<Value, ToolError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = protocol::request(id, method, params);
        let response = self.post(body.as_bytes())?;
        if self.id.is_none()
            && let Some(session) = response.header("mcp-session-id")
        {
            if session.is_empty() || !session.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(ToolError::Protocol(
                    "the server's Mcp-Session-Id is not visible ASCII".into(),
                ));
            }
            self.id = Some(session);
        }
        let mut response = response.error_for_status().map_err(transport_error)?;
        let content_type = response
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            return read_stream(&mut response, method, id);
        }
        if content_type.starts_with("application/json") {
            let body = response.read_to_end(MAX_ANSWER).map_err(transport_error)?;
            let text = String::from_utf8_lossy(&body);
            for message in protocol::messages(&text)? {
                if let Some(answer) = answered(message, method, id)? {
                    return answer;
                }
            }
            return Err(ToolError::Protocol(format!(
                "the server's answer to {method} has no result for it"
            )));
        }
        Err(ToolError::Protocol(format!(
            "the server answered {method} with content type {:?}, not JSON or an event stream",
            protocol::clean(&content_type)
        )))
    }

    /// Ends the session (best effort: a server may not support it).
    fn close(self) {
        if self.id.is_none() {
            return;
        }
        let _ = http::delete(&http::Post {
            url: &self.settings.url,
            headers: self.headers(),
            body: b"",
            timeout: self.settings.timeout,
        });
    }
}

/// Reads the event stream the server answers request `id` on, up to the
/// answer: progress notifications go to the host as they come.
fn read_stream(response: &mut http::Response, method: &str, id: u64) -> Result<Value, ToolError> {
    let mut parser = sse::Parser::new();
    let mut read = 0usize;
    loop {
        let chunk = response.next_chunk().map_err(transport_error)?;
        let events = match &chunk {
            Some(bytes) => {
                read += bytes.len();
                if read > MAX_ANSWER {
                    return Err(too_large(method));
                }
                parser.feed(bytes)
            }
            None => parser.finish().into_iter().collect(),
        };
        for event in events {
            if !(event.event.is_empty() || event.event == "message") || event.data.trim().is_empty()
            {
                continue;
            }
            for message in protocol::messages(&event.data)? {
                if let Some(answer) = answered(message, method, id)? {
                    return answer;
                }
            }
        }
        if chunk.is_none() {
            return Err(ToolError::Protocol(format!(
                "the server ended its event stream without answering {method}"
            )));
        }
    }
}

/// What one server message means to request `id`: its answer, or nothing
/// yet (a progress report is handed to the host; a cancelled call stops).
fn answered(
    message: protocol::Message,
    method: &str,
    id: u64,
) -> Result<Option<Result<Value, ToolError>>, ToolError> {
    match message {
        protocol::Message::Answer {
            id: theirs,
            outcome,
        } if protocol::is_ours(&theirs, id) => {
            Ok(Some(outcome.map_err(|(code, text)| {
                protocol::rpc_error(method, code, text)
            })))
        }
        protocol::Message::Answer { .. } => Ok(None),
        protocol::Message::Notification {
            method: note,
            params,
        } => {
            if note == "notifications/progress"
                && let Some((done, total, text)) = protocol::progress(&params)
                && !progress::report(done, total, text.as_deref())
            {
                return Err(ToolError::Other("the call was cancelled".into()));
            }
            Ok(None)
        }
        protocol::Message::Request { method: theirs } => {
            log::log(
                log::Level::Debug,
                &format!("ignored the server's {theirs} request (not a capability of this client)"),
            );
            Ok(None)
        }
    }
}

fn too_large(method: &str) -> ToolError {
    ToolError::Other(format!(
        "the server's answer to {method} is larger than {MAX_ANSWER} bytes"
    ))
}

/// A transport failure (the provider SDK's mapping) as a tool error.
fn transport_error(error: ProviderError) -> ToolError {
    match error {
        ProviderError::RateLimited(after) => ToolError::RateLimited(after),
        // The SDK reports a between-bytes timeout while reading a body as
        // a failed read; for a tool server that is its timeout.
        ProviderError::Unavailable(m) if m.contains("timeout") => ToolError::Timeout,
        ProviderError::Unavailable(m) => ToolError::Unavailable(m),
        ProviderError::Timeout => ToolError::Timeout,
        ProviderError::Auth(m) => ToolError::Auth(m),
        ProviderError::InvalidRequest(m)
        | ProviderError::ContentFiltered(m)
        | ProviderError::Other(m) => ToolError::Other(m),
    }
}
