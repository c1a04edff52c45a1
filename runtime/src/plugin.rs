//! A loaded plugin: its kind (which world it implements), its `info()`,
//! its sha256, and the pre-instantiated component every call starts from.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

use crate::bindings::condition::ConditionPre;
use crate::bindings::embedder::EmbedderPre;
use crate::bindings::provider::ProviderPre;
use crate::bindings::router::RouterPre;
use crate::bindings::tool_server::ToolServerPre;
use crate::bindings::v0_1;
use crate::sandbox::CallState;
use crate::types::{ConditionInfo, EmbeddingModel, ProviderInfo, RouterInfo, ToolServerInfo};

/// Which of the four worlds a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// `world provider`: exports `vel:plugins/completion`.
    Provider,
    /// `world router`: exports `vel:plugins/routing`.
    Router,
    /// `world condition`: exports `vel:plugins/evaluation`.
    Condition,
    /// `world tool-server`: exports `vel:plugins/tools` (new in 0.2.0).
    Tool,
}

impl PluginKind {
    /// Every kind.
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Provider,
        PluginKind::Router,
        PluginKind::Condition,
        PluginKind::Tool,
    ];

    /// The kind's name, as in manifests: `provider`, `router`, `condition`,
    /// `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Provider => "provider",
            PluginKind::Router => "router",
            PluginKind::Condition => "condition",
            PluginKind::Tool => "tool",
        }
    }

    /// The interface a component of this kind exports under the current
    /// contract (0.2.0).
    pub fn export(self) -> &'static str {
        self.export_for(Contract::CURRENT)
    }

    /// The interface a component of this kind exports under `contract`
    /// (0.1.0 has no tool-server world: its name there matches nothing).
    pub fn export_for(self, contract: Contract) -> &'static str {
        match (self, contract) {
            (PluginKind::Provider, Contract::V0_2) => "vel:plugins/completion@0.2.0",
            (PluginKind::Router, Contract::V0_2) => "vel:plugins/routing@0.2.0",
            (PluginKind::Condition, Contract::V0_2) => "vel:plugins/evaluation@0.2.0",
            (PluginKind::Provider, Contract::V0_1) => "vel:plugins/completion@0.1.0",
            (PluginKind::Router, Contract::V0_1) => "vel:plugins/routing@0.1.0",
            (PluginKind::Condition, Contract::V0_1) => "vel:plugins/evaluation@0.1.0",
            (PluginKind::Tool, Contract::V0_2) => "vel:plugins/tools@0.2.0",
            (PluginKind::Tool, Contract::V0_1) => "vel:plugins/tools@0.1.0",
        }
    }

    /// The interface a 0.2.0 provider may export beside `completion` to
    /// serve embeddings.
    pub const EMBEDDINGS: &'static str = "vel:plugins/embeddings@0.2.0";

    /// The functions of the exported interface, with their parameter counts.
    pub(crate) fn functions(self) -> &'static [(&'static str, usize)] {
        match self {
            PluginKind::Provider => &[("info", 0), ("complete", 1), ("complete-stream", 1)],
            PluginKind::Router => &[("info", 0), ("route", 2)],
            PluginKind::Condition => &[("info", 0), ("evaluate", 1)],
            PluginKind::Tool => &[("info", 0), ("list-tools", 0), ("call-tool", 2)],
        }
    }

    /// Interfaces (without version) a plugin of this kind may import.
    pub(crate) fn allows_import(self, interface: &str) -> bool {
        ALWAYS_ALLOWED.contains(&interface)
            || (self == PluginKind::Provider && PROVIDER_ONLY.contains(&interface))
            || (self == PluginKind::Tool && TOOL_ONLY.contains(&interface))
    }
}

/// The version of the WIT contract (`vel:plugins@…`) a component was
/// built against. The host serves every version listed here; older ones
/// through an adapter (see `crate::legacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Contract {
    /// `vel:plugins@0.1.0`, frozen in `wit/v0.1.0/`: no tool calling, no
    /// structured output.
    #[serde(rename = "0.1.0")]
    V0_1,
    /// `vel:plugins@0.2.0`, `wit/vel-plugins.wit`: the current contract.
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl Contract {
    /// The contract new plugins are built against.
    pub const CURRENT: Contract = Contract::V0_2;
    /// Every contract the host serves, newest first.
    pub const ALL: [Contract; 2] = [Contract::V0_2, Contract::V0_1];

    /// The version, e.g. `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PluginKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "provider" => Ok(PluginKind::Provider),
            "router" => Ok(PluginKind::Router),
            "condition" => Ok(PluginKind::Condition),
            "tool" => Ok(PluginKind::Tool),
            other => Err(format!(
                "unknown plugin kind `{other}` (expected provider, router, condition or tool)"
            )),
        }
    }
}

/// Imports every kind may use: logging, plus the WASI basics Rust's standard
/// library links (all served with nothing granted: no files, no env).
const ALWAYS_ALLOWED: &[&str] = &[
    "vel:plugins/types",
    "vel:plugins/log",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Imports only providers may use: settings, the delta sink, outbound HTTP.
const PROVIDER_ONLY: &[&str] = &[
    "vel:plugins/config",
    "vel:plugins/stream",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// Imports only tool servers may use: settings, progress reports,
/// outbound HTTP.
const TOOL_ONLY: &[&str] = &[
    "vel:plugins/config",
    "vel:plugins/progress",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// What a plugin says about itself (its `info()` export).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginInfo {
    /// A provider's info.
    Provider(ProviderInfo),
    /// A router's info.
    Router(RouterInfo),
    /// A condition's info.
    Condition(ConditionInfo),
    /// A tool server's info.
    Tool(ToolServerInfo),
}

impl PluginInfo {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        match self {
            PluginInfo::Provider(i) => &i.name,
            PluginInfo::Router(i) => &i.name,
            PluginInfo::Condition(i) => &i.name,
            PluginInfo::Tool(i) => &i.name,
        }
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        match self {
            PluginInfo::Provider(i) => &i.version,
            PluginInfo::Router(i) => &i.version,
            PluginInfo::Condition(i) => &i.version,
            PluginInfo::Tool(i) => &i.version,
        }
    }

    /// The plugin's one-line description.
    pub fn description(&self) -> &str {
        match self {
            PluginInfo::Provider(i) => &i.description,
            PluginInfo::Router(i) => &i.description,
            PluginInfo::Condition(i) => &i.description,
            PluginInfo::Tool(i) => &i.description,
        }
    }
}

/// The typed pre-instantiated component of one kind and contract.
pub(crate) enum KindPre {
    Provider(ProviderPre<CallState>),
    Router(RouterPre<CallState>),
    Condition(ConditionPre<CallState>),
    Tool(ToolServerPre<CallState>),
    ProviderV0_1(v0_1::provider::ProviderPre<CallState>),
    RouterV0_1(v0_1::router::RouterPre<CallState>),
    ConditionV0_1(v0_1::condition::ConditionPre<CallState>),
}

/// A loaded plugin version. Cheap to clone (an `Arc`); a call holds a clone
/// for its whole duration, so a call that started on an old version
/// finishes on it even after the registry swapped in a new one.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub(crate) kind: PluginKind,
    pub(crate) contract: Contract,
    pub(crate) info: PluginInfo,
    pub(crate) name: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) sha256: String,
    pub(crate) pre: KindPre,
    pub(crate) loaded_from_cache: bool,
    pub(crate) size: usize,
    /// Calls of this plugin running now (see [`crate::Limits::max_concurrency`]).
    pub(crate) running: AtomicU64,
    /// A 0.2.0 provider's `embeddings` export, when it has one.
    pub(crate) embedder: Option<EmbedderPre<CallState>>,
    /// What its `embeddings.models()` returned at load time.
    pub(crate) embedding_models: Vec<EmbeddingModel>,
}

impl Plugin {
    /// Which world it implements.
    pub fn kind(&self) -> PluginKind {
        self.inner.kind
    }

    /// The WIT contract version it was built against.
    pub fn contract(&self) -> Contract {
        self.inner.contract
    }

    /// What its `info()` returned at load time (a 0.1.0 provider's
    /// features as the adapter serves them: tools and JSON modes off).
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Its name, from `info()`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its version, from `info()`.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// Hex sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// The embedding models it serves (a provider built against the
    /// `embedding-provider` world); empty when it serves none.
    pub fn embedding_models(&self) -> &[EmbeddingModel] {
        &self.inner.embedding_models
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.inner.loaded_from_cache
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    pub(crate) fn sha256_prefix(&self) -> &str {
        self.inner.sha256.get(..12).unwrap_or(&self.inner.sha256)
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("kind", &self.inner.kind)
            .field("contract", &self.inner.contract)
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("sha256", &self.inner.sha256)
            .finish_non_exhaustive()
    }
}
