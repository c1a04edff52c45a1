//! The sandboxed component runtime for vel plugins.
//!
//! One [`Runtime`] per process owns the wasmtime engine (component model,
//! pooling allocator, fuel, epoch interruption), the host functions, the
//! on-disk compile cache, the compile slots and a pooled outbound HTTP
//! client. [`Runtime::load`] turns component bytes into a [`Plugin`] (kind
//! detected from its exports and imports checked before compiling, `info()`
//! read once); [`Runtime::stage`] does the same for an upload under the
//! code limits, writing nothing to the cache until [`Staged::commit`].
//! Each call — [`Runtime::route`], [`Runtime::evaluate`],
//! [`Runtime::complete`], [`Runtime::list_tools`], [`Runtime::call_tool`] — runs in a fresh instance under [`Limits`] and
//! returns a [`CallResult`]: the guest's answer or a typed [`PluginError`],
//! plus [`CallStats`].

pub mod bindings;
mod cache;
mod call;
mod class;
mod condition;
pub mod destination;
mod embedding;
mod engine;
mod error;
mod host_memory;
mod inspect;
mod legacy;
mod limits;
mod outbound;
mod plugin;
mod provider;
mod router;
mod runtime;
mod sandbox;
mod shares;
mod slots;
mod tool;
pub mod types;

pub use call::{CallResult, CallStats, WireSize};
pub use class::{DEFAULT_CORE_INSTANCES, PluginClass};
pub use destination::AllowPrivate;
pub use error::{BusyShare, Limit, LoadError, PluginError, RuntimeError};
pub use host_memory::{Accounted, installed as host_memory_accounted};
pub use inspect::{CodeLimits, Inspection};
pub use limits::{KindLimits, Limits, Profile};
pub use outbound::{OutboundConfig, describe_host_entry, host_allows};
pub use plugin::{Contract, Plugin, PluginInfo, PluginKind};
pub use provider::{ProviderCall, Secret};
pub use runtime::{CompileConfig, Runtime, RuntimeConfig, StageRequest, Staged};
pub use sandbox::{Delta, DeltaSink, ProgressSink, ToolProgress};
pub use shares::{Share, ShareConfig};
pub use slots::{CompileSlot, CompileSlots, SlotsBusy};
pub use tool::ToolServerCall;
