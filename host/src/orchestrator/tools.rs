//! Tool servers: an organization's `mcp` and `taskmaster` integrations,
//! each served by a tool-server plugin (the built-in `mcp`). Listing and
//! calling their tools runs in the sandbox like any provider call: the
//! integration's settings, its base URL's host allowed, its key added by
//! the host; at most [`MAX_CONCURRENT_CALLS`] calls of one integration at
//! once (more wait their turn), each within the integration's timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;
use vel_runtime::types::{Tool, ToolError, ToolResult};
use vel_runtime::{CallResult, Limit, PluginError, PluginKind, ProgressSink, ToolServerCall};

use super::catalog::{self, CallSetupError};
use crate::plugins::Plugins;
use crate::plugins::registry::Deployed;
use crate::plugins::stats::error_kind;
use crate::secrets::MasterKey;
use crate::store::{self, Db, integrations::Integration};

/// Integration kinds that are tool servers.
pub const TOOL_SERVER_KINDS: [&str; 2] = ["mcp", "taskmaster"];

/// Calls of one tool-server integration that may run at once (Task
/// Master's `max_concurrent`), on every instance together; more wait for
/// one to end.
pub const MAX_CONCURRENT_CALLS: usize = 5;

/// Whether integration kind `provider` is a tool server.
pub fn is_tool_server(provider: &str) -> bool {
    TOOL_SERVER_KINDS.contains(&provider)
}

/// Why a tool server could not list or call tools.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ToolCallError {
    /// Machine-readable kind: `integration_not_found`,
    /// `not_a_tool_server`, `integration_disabled`, `plugin_unavailable`,
    /// the call-setup kinds (`invalid_base_url`, `credential_unreadable`,
    /// `host_not_approved`), the server's (`tool_error`, `unknown_tool`,
    /// `invalid_arguments`, `auth`, `rate_limited`, `unavailable`,
    /// `timeout`, `protocol`, `server_error`, `other`), or the sandbox's
    /// (`limit_exceeded`, `trap`, `busy`…).
    pub kind: &'static str,
    /// For people; never carries the key.
    pub message: String,
}

impl ToolCallError {
    fn new(kind: &'static str, message: impl Into<String>) -> ToolCallError {
        ToolCallError {
            kind,
            message: message.into(),
        }
    }

    /// Whether the caller named something that is not a usable tool
    /// server (as opposed to the server or the plugin failing).
    pub fn is_setup(&self) -> bool {
        matches!(
            self.kind,
            "integration_not_found"
                | "not_a_tool_server"
                | "integration_disabled"
                | "plugin_unavailable"
                | "invalid_base_url"
                | "credential_unreadable"
                | "host_not_approved"
        )
    }
}

impl From<CallSetupError> for ToolCallError {
    fn from(e: CallSetupError) -> Self {
        ToolCallError::new(e.kind(), e.to_string())
    }
}

/// A tool-server integration and the plugin version serving it.
#[derive(Debug, Clone)]
pub struct ToolServer {
    /// The stored integration (its key still sealed).
    pub integration: Integration,
    /// The tool-server plugin version serving it.
    pub deployed: Arc<Deployed>,
}

/// What a tool call returned, as the API and a task's result show it.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The content blocks (a JSON array).
    pub content: Value,
    /// The structured result, when the tool gives one.
    pub structured_content: Option<Value>,
}

impl ToolOutput {
    /// The text of the content's `text` blocks, one per line.
    pub fn text(&self) -> String {
        blocks_text(&self.content)
    }
}

/// The text of the `text` blocks of MCP content, one per line.
fn blocks_text(content: &Value) -> String {
    content
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A call's turn: held until the call ends.
struct Turn {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _slot: Option<store::cluster_slots::ClusterSlot>,
}

/// The organization's tool servers, and the gates that bound concurrent
/// calls of each.
#[derive(Debug, Clone)]
pub struct ToolServers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    plugins: Plugins,
    keys: Arc<MasterKey>,
    /// One gate of [`MAX_CONCURRENT_CALLS`] permits per integration id.
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ToolServers {
    /// Tool servers read from `db`, served by `plugins`, keys opened with `keys`.
    pub fn new(db: Db, plugins: Plugins, keys: Arc<MasterKey>) -> ToolServers {
        ToolServers {
            inner: Arc::new(Inner {
                db,
                plugins,
                keys,
                gates: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The organization's tool-server integration called `name`.
    pub async fn by_name(&self, org_id: &str, name: &str) -> Result<ToolServer, ToolCallError> {
        let mut tx = self.inner.db.tenant_read(org_id).await.map_err(storage)?;
        let rows = store::integrations::list(&mut tx, org_id)
            .await
            .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        let integration = rows.into_iter().find(|i| i.name == name).ok_or_else(|| {
            ToolCallError::new(
                "integration_not_found",
                format!("no integration is called `{name}`"),
            )
        })?;
        self.serving(org_id, integration)
    }

    /// `integration` with the plugin serving it, if it is an active tool
    /// server whose plugin is live and a tool server.
    pub fn serving(
        &self,
        org_id: &str,
        integration: Integration,
    ) -> Result<ToolServer, ToolCallError> {
        if !is_tool_server(&integration.provider) {
            return Err(ToolCallError::new(
                "not_a_tool_server",
                format!(
                    "integration `{}` is a {} integration, not a tool server (mcp or taskmaster)",
                    integration.name, integration.provider
                ),
            ));
        }
        if integration.status != "active" {
            return Err(ToolCallError::new(
                "integration_disabled",
                format!("integration `{}` is disabled", integration.name),
            ));
        }
        let deployed = self
            .inner
            .plugins
            .lookup(org_id, &integration.plugin)
            .filter(|d| d.plugin.kind() == PluginKind::Tool)
            .ok_or_else(|| {
                ToolCallError::new(
                    "plugin_unavailable",
                    format!(
                        "plugin `{}` of integration `{}` is not a live tool-server plugin",
                        integration.plugin, integration.name
                    ),
                )
            })?;
        Ok(ToolServer {
            integration,
            deployed,
        })
    }

    /// The server's tools.
    pub async fn list(&self, server: &ToolServer) -> Result<Vec<Tool>, ToolCallError> {
        let (call, limits, key) = self.prepare(server, None)?;
        let _turn = self.turn(&server.integration.id).await?;
        let span = tracing::info_span!("tool_list", integration = %server.integration.name, plugin = %server.deployed.label());
        let result = self
            .inner
            .plugins
            .runtime()
            .list_tools(&server.deployed.plugin, &limits, call)
            .instrument(span)
            .await;
        self.finish(server, result, key.as_deref())
    }

    /// Calls tool `name` with `arguments` (a JSON object), sending the
    /// server's progress reports to `progress`. A result the tool itself
    /// marks as an error (`isError`) is a `tool_error` carrying its text.
    pub async fn call(
        &self,
        server: &ToolServer,
        name: &str,
        arguments: &Value,
        progress: Option<ProgressSink>,
    ) -> Result<ToolOutput, ToolCallError> {
        let (call, limits, key) = self.prepare(server, progress)?;
        let _turn = self.turn(&server.integration.id).await?;
        let span = tracing::info_span!("tool_call", integration = %server.integration.name, plugin = %server.deployed.label(), tool = %name);
        let result = self
            .inner
            .plugins
            .runtime()
            .call_tool(
                &server.deployed.plugin,
                &limits,
                call,
                name,
                &arguments.to_string(),
            )
            .instrument(span)
            .await;
        let result: ToolResult = self.finish(server, result, key.as_deref())?;
        let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
        let content = parse(&result.content).unwrap_or(Value::Array(Vec::new()));
        if result.is_error {
            let text = blocks_text(&content);
            let text = if text.is_empty() {
                "(no message)".to_string()
            } else {
                text
            };
            return Err(ToolCallError::new(
                "tool_error",
                catalog::scrub_secret(
                    key.as_deref(),
                    &format!("tool `{name}` reported an error: {text}"),
                ),
            ));
        }
        Ok(ToolOutput {
            content,
            structured_content: result.structured_content.as_deref().and_then(parse),
        })
    }

    /// The call's settings, limits (the integration's timeout plus a
    /// margin bounds the wall clock) and key.
    fn prepare(
        &self,
        server: &ToolServer,
        progress: Option<ProgressSink>,
    ) -> Result<(ToolServerCall, vel_runtime::Limits, Option<String>), ToolCallError> {
        let setup = catalog::call_setup(&server.integration, &server.deployed, &self.inner.keys)?;
        let limits = catalog::provider_limits(&server.deployed, &server.integration);
        let key = setup.key.clone();
        let call = ToolServerCall {
            settings: setup.settings,
            secret: setup.key.map(vel_runtime::Secret::new),
            allowed_hosts: setup.allowed_hosts,
            allow_base_url_host: false,
            progress,
        };
        Ok((call, limits, key))
    }

    /// A turn among the integration's [`MAX_CONCURRENT_CALLS`]: a permit
    /// of this instance's gate, then (PostgreSQL) a slot shared with every
    /// other instance.
    async fn turn(&self, integration_id: &str) -> Result<Turn, ToolCallError> {
        let permit = self.local_turn(integration_id).await;
        let slot = store::cluster_slots::take(
            &self.inner.db,
            &format!("vel-tool-server:{integration_id}"),
            MAX_CONCURRENT_CALLS as i32,
        )
        .await
        .map_err(storage)?;
        Ok(Turn {
            _permit: permit,
            _slot: slot,
        })
    }

    /// A permit among this instance's [`MAX_CONCURRENT_CALLS`] for the
    /// integration.
    async fn local_turn(&self, integration_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self
                .inner
                .gates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            gates
                .entry(integration_id.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)))
                .clone()
        };
        gate.acquire_owned().await.ok()
    }

    /// Records the call's statistics and turns its outcome into ours.
    fn finish<T>(
        &self,
        server: &ToolServer,
        result: CallResult<Result<T, ToolError>>,
        key: Option<&str>,
    ) -> Result<T, ToolCallError> {
        let guest = match &result.result {
            Ok(Err(e)) => Some(tool_error_kind(e)),
            _ => None,
        };
        self.inner
            .plugins
            .stats()
            .record(&server.deployed.stats_key, &result, guest);
        let scrub = |text: &str| catalog::scrub_secret(key, text);
        match result.result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ToolCallError::new(
                tool_error_kind(&e),
                scrub(&tool_error_message(&server.integration, &e)),
            )),
            Err(PluginError::LimitExceeded {
                limit: Limit::WallTime,
                ..
            }) => Err(ToolCallError::new(
                "timeout",
                format!(
                    "{}: the call took longer than the integration's timeout of {} ms",
                    server.integration.name, server.integration.timeout_ms
                ),
            )),
            Err(e) => Err(ToolCallError::new(
                error_kind(&e),
                scrub(&format!(
                    "the tool-server plugin {} failed: {e}",
                    server.deployed.label()
                )),
            )),
        }
    }
}

/// A storage failure as a tool-call error.
fn storage(e: sqlx::Error) -> ToolCallError {
    ToolCallError::new("storage", format!("could not read the integrations: {e}"))
}

/// The kind of a tool server's typed error.
pub fn tool_error_kind(e: &ToolError) -> &'static str {
    match e {
        ToolError::UnknownTool(_) => "unknown_tool",
        ToolError::InvalidArguments(_) => "invalid_arguments",
        ToolError::Auth(_) => "auth",
        ToolError::RateLimited(_) => "rate_limited",
        ToolError::Unavailable(_) => "unavailable",
        ToolError::Timeout => "timeout",
        ToolError::Protocol(_) => "protocol",
        ToolError::Server(_) => "server_error",
        ToolError::Other(_) => "other",
    }
}

/// A tool server's typed error, for people.
fn tool_error_message(server: &Integration, e: &ToolError) -> String {
    let integration = &server.name;
    match e {
        ToolError::UnknownTool(m) => format!("{integration}: unknown tool: {m}"),
        ToolError::InvalidArguments(m) => format!("{integration}: invalid arguments: {m}"),
        ToolError::Auth(m) => format!("{integration} refused the credential: {m}"),
        ToolError::RateLimited(Some(ms)) => {
            format!("{integration} is throttling calls; retry after {ms} ms")
        }
        ToolError::RateLimited(None) => format!("{integration} is throttling calls"),
        ToolError::Unavailable(m) => format!("{integration} is unavailable: {m}"),
        ToolError::Timeout => format!(
            "{integration} did not answer within the integration's timeout of {} ms",
            server.timeout_ms
        ),
        ToolError::Protocol(m) => format!("{integration} broke the protocol: {m}"),
        ToolError::Server((code, m)) => format!("{integration} answered error {code}: {m}"),
        ToolError::Other(m) => format!("{integration}: {m}"),
    }
}
