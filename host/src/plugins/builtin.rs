//! The built-in plugin set: every component `vel-plugin-artifacts` compiled
//! from this repository, loaded once at start-up and kept in memory by name.
//!
//! It answers one question — "which loaded plugin is called `name`?" — and
//! the database-backed registry (`plugins::registry`) sits in front of it:
//! tenant and platform uploads first, built-ins as the fallback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vel_plugin_artifacts::Builtin;
use vel_runtime::{LoadError, Plugin, PluginKind, Runtime};

/// Why the built-in set could not be loaded. Start-up stops on it: a server
/// without its built-in providers and routers cannot do its job.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    /// A component failed to load (compile, link or `info()`).
    #[error("built-in plugin `{name}` failed to load: {source}")]
    Load {
        /// The manifest name.
        name: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// A component says it is something other than its manifest says.
    #[error("built-in plugin `{name}`: {reason}")]
    Mismatch {
        /// The manifest name.
        name: String,
        /// What differs.
        reason: String,
    },
}

/// The loaded built-in plugins, by name.
#[derive(Debug, Clone, Default)]
pub struct BuiltinPlugins {
    by_name: BTreeMap<String, Plugin>,
    /// How long loading took.
    load_time: Duration,
}

impl BuiltinPlugins {
    /// Loads every built-in from [`vel_plugin_artifacts::BUILTINS`]
    /// concurrently (each compile runs on a blocking thread; with a warm
    /// compile cache a load is a file read and one `info()` call).
    pub async fn load(runtime: &Runtime) -> Result<BuiltinPlugins, BuiltinError> {
        BuiltinPlugins::load_from(runtime, vel_plugin_artifacts::BUILTINS).await
    }

    /// Loads the given components (the built-ins, or a subset in tests).
    pub async fn load_from(
        runtime: &Runtime,
        builtins: &[Builtin],
    ) -> Result<BuiltinPlugins, BuiltinError> {
        let started = Instant::now();
        let loads = builtins.iter().map(|b| async move {
            let plugin = runtime
                .load(b.bytes)
                .await
                .map_err(|source| BuiltinError::Load {
                    name: b.name.to_string(),
                    source,
                })?;
            check_manifest(b, &plugin)?;
            Ok::<_, BuiltinError>(plugin)
        });
        let mut by_name = BTreeMap::new();
        for plugin in futures::future::try_join_all(loads).await? {
            by_name.insert(plugin.name().to_string(), plugin);
        }
        let load_time = started.elapsed();
        let from_cache = by_name.values().filter(|p| p.loaded_from_cache()).count();
        tracing::info!(
            plugins = by_name.len(),
            from_cache,
            load_ms = u64::try_from(load_time.as_millis()).unwrap_or(u64::MAX),
            "built-in plugins loaded"
        );
        Ok(BuiltinPlugins { by_name, load_time })
    }

    /// The built-in plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.by_name.get(name)
    }

    /// Every loaded built-in, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Plugin> {
        self.by_name.values()
    }

    /// How many are loaded.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when none is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many of them came from the compile cache.
    pub fn from_cache(&self) -> usize {
        self.by_name
            .values()
            .filter(|p| p.loaded_from_cache())
            .count()
    }

    /// How long loading them took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}

/// The component must be what its manifest says: same name and kind.
fn check_manifest(b: &Builtin, plugin: &Plugin) -> Result<(), BuiltinError> {
    let mismatch = |reason: String| BuiltinError::Mismatch {
        name: b.name.to_string(),
        reason,
    };
    if plugin.name() != b.name {
        return Err(mismatch(format!(
            "its info() says it is called `{}`",
            plugin.name()
        )));
    }
    let kind: PluginKind = b.kind.parse().map_err(mismatch)?;
    if plugin.kind() != kind {
        return Err(mismatch(format!(
            "the manifest says {kind} but the component is a {}",
            plugin.kind()
        )));
    }
    Ok(())
}
