//! Calling a tool server: `list-tools` and `call-tool(name, arguments)`,
//! with settings, an outbound allowlist and a host-held secret exactly as
//! a provider has them, and progress reports sent to the caller.

use std::sync::Arc;

use crate::bindings::tool_server::ToolServerPre;
use crate::call::{CallExtras, CallResult, Failure, WireSize, check_input, run, wrong_kind};
use crate::error::PluginError;
use crate::outbound::OutboundHooks;
use crate::plugin::{KindPre, PluginInfo};
use crate::provider::{Reach, Secret, outbound_policy};
use crate::sandbox::CallState;
use crate::sandbox::ProgressSink;
use crate::types::{Tool, ToolError, ToolResult};
use crate::{Limits, Plugin, PluginKind, Runtime};

/// Everything besides the tool's name and arguments that one tool-server
/// call needs.
#[derive(Debug, Default)]
pub struct ToolServerCall {
    /// The integration's settings, served by the `config` import.
    pub settings: Vec<(String, String)>,
    /// The integration's secret, added by the host as the header the
    /// plugin's `info().credential` names, to the base URL's origin only.
    pub secret: Option<Secret>,
    /// Hosts (`host` or `host:port`) the plugin may call.
    pub allowed_hosts: Vec<String>,
    /// Also allow the host of the setting named by `info().base-url-setting`.
    pub allow_base_url_host: bool,
    /// Where progress reports go. Dropping the receiver tells the plugin
    /// to stop (`report` returns false).
    pub progress: Option<ProgressSink>,
}

impl Runtime {
    /// Lists a tool server's tools, in a fresh instance under `limits`.
    pub async fn list_tools(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        call: ToolServerCall,
    ) -> CallResult<Result<Vec<Tool>, ToolError>> {
        let (pre, extras) = match setup(plugin, limits, call, 0, self) {
            Ok(ready) => ready,
            Err(refused) => return CallResult::refused(refused),
        };
        let calls = &self.inner.calls;
        let mut prepared = match calls.prepare(plugin, limits, extras) {
            Ok(prepared) => prepared,
            Err(busy) => return CallResult::refused(busy),
        };
        let store = &mut prepared.store;
        let work = async {
            let server = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Failure::Instantiate)?;
            server
                .vel_plugins_tools()
                .call_list_tools(&mut *store)
                .await
                .map_err(Failure::Call)
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }

    /// Calls tool `name` with `arguments` (JSON text of an object) on a tool
    /// server, in a fresh instance under `limits`. Dropping the returned
    /// future drops the instance and any connection it had open.
    pub async fn call_tool(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        call: ToolServerCall,
        name: &str,
        arguments: &str,
    ) -> CallResult<Result<ToolResult, ToolError>> {
        let input = name.len() + arguments.len();
        let (pre, extras) = match setup(plugin, limits, call, input, self) {
            Ok(ready) => ready,
            Err(refused) => return CallResult::refused(refused),
        };
        let calls = &self.inner.calls;
        let mut prepared = match calls.prepare(plugin, limits, extras) {
            Ok(prepared) => prepared,
            Err(busy) => return CallResult::refused(busy),
        };
        let store = &mut prepared.store;
        // `json` is a WIT alias of `string`: the bindings take it owned.
        let arguments = arguments.to_string();
        let work = async {
            let server = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Failure::Instantiate)?;
            server
                .vel_plugins_tools()
                .call_call_tool(&mut *store, name, &arguments)
                .await
                .map_err(Failure::Call)
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }
}

/// The checks before a tool-server call (its kind, its input's size, where
/// it may reach) and the extras its store gets.
fn setup<'p>(
    plugin: &'p Plugin,
    limits: &Limits,
    call: ToolServerCall,
    input_bytes: usize,
    runtime: &Runtime,
) -> Result<(&'p ToolServerPre<CallState>, CallExtras), PluginError> {
    let KindPre::Tool(pre) = &plugin.inner.pre else {
        return Err(wrong_kind(plugin, PluginKind::Tool));
    };
    let PluginInfo::Tool(info) = plugin.info() else {
        return Err(PluginError::Host(
            "tool server without tool-server info".into(),
        ));
    };
    check_input(limits, input_bytes + call.settings.wire_size())?;
    let reach = Reach {
        settings: &call.settings,
        secret: call.secret.as_ref(),
        allowed_hosts: &call.allowed_hosts,
        allow_base_url_host: call.allow_base_url_host,
    };
    let credential = info
        .credential
        .as_ref()
        .map(|c| (c.name.as_str(), c.prefix.as_str()));
    let policy = outbound_policy(reach, credential, info.base_url_setting.as_deref())?;
    Ok((
        pre,
        CallExtras {
            hooks: OutboundHooks::new(runtime.inner.http.clone(), Arc::new(policy)),
            settings: Arc::new(call.settings),
            deltas: None,
            progress: call.progress,
        },
    ))
}
