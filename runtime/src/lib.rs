//! The sandboxed component runtime for vel plugins.
//!
//! One [`Runtime`] per process owns the wasmtime engine (component model,
//! pooling allocator, fuel, epoch interruption), the host functions, the
//! on-disk compile cache and a pooled outbound HTTP client. [`Runtime::load`]
//! turns component bytes into a [`Plugin`] (kind detected from its exports,
//! imports checked, `info()` read once). Each call — [`Runtime::route`],
//! [`Runtime::evaluate`], [`Runtime::complete`] — runs in a fresh instance
//! under [`Limits`] and returns a [`CallResult`]: the guest's answer or a
//! typed [`PluginError`], plus [`CallStats`].

pub mod bindings;
mod cache;
mod call;
mod condition;
pub mod destination;
mod engine;
mod error;
mod limits;
mod outbound;
mod plugin;
mod provider;
mod router;
mod runtime;
mod sandbox;
pub mod types;

pub use call::{CallResult, CallStats, WireSize};
pub use destination::AllowPrivate;
pub use error::{Limit, LoadError, PluginError, RuntimeError};
pub use limits::{KindLimits, Limits, Profile};
pub use outbound::OutboundConfig;
pub use plugin::{Plugin, PluginInfo, PluginKind};
pub use provider::{ProviderCall, Secret};
pub use runtime::{Runtime, RuntimeConfig};
pub use sandbox::DeltaSink;
