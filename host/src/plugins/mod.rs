//! Where the server meets the plugin runtime (`vel-runtime`): the one
//! [`Runtime`] of the process, the set of plugins it has loaded, and the
//! calls the API makes through them (the health check's routing probe, an
//! integration's connectivity test).

pub mod builtin;
pub mod lifecycle;
pub mod manifest;
pub mod probe;
pub mod provider_error;
pub mod registry;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use vel_runtime::{CodeLimits, CompileConfig, OutboundConfig, Runtime, RuntimeConfig, ShareConfig};

use self::builtin::{BuiltinError, BuiltinPlugins};
use self::registry::{Deployed, Registry};
use self::stats::PluginStats;
use crate::config::Config;

/// Why the plugin side of the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    /// The runtime (engine, cache directory, HTTP client) could not start.
    #[error("plugin runtime: {0}")]
    Runtime(#[from] vel_runtime::RuntimeError),
    /// A built-in plugin could not be loaded.
    #[error(transparent)]
    Builtin(#[from] BuiltinError),
}

/// The runtime, the built-ins and the live registry; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    runtime: Runtime,
    builtins: Arc<BuiltinPlugins>,
    registry: Arc<Registry>,
    stats: PluginStats,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("builtins", &self.builtins)
            .finish_non_exhaustive()
    }
}

impl Plugins {
    /// Starts the runtime with the compile cache in `config.plugin_cache_dir`
    /// the operator's outbound exceptions and the configured compile bounds,
    /// and loads every built-in plugin.
    pub async fn start(config: &Config) -> Result<Plugins, PluginsError> {
        let registry = &config.registry;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(config.plugin_cache_dir.clone()),
            outbound: OutboundConfig {
                allow_private: config.outbound_allow_private.clone(),
                hop: Some(hop_name()),
                ..OutboundConfig::default()
            },
            compile: CompileConfig {
                slots: registry.compile_slots,
                timeout: registry.compile_timeout,
                code: CodeLimits {
                    max_code_bytes: registry.max_code_bytes,
                    max_function_bytes: registry.max_function_bytes,
                },
            },
            info_time: registry.info_timeout,
            classes: registry.classes.clone(),
            shares: ShareConfig {
                platform_reserve: registry.platform_reserve,
                per_organization: registry.org_share,
            },
            ..RuntimeConfig::default()
        })?;
        let builtins = BuiltinPlugins::load(&runtime).await?;
        let registry = Arc::new(Registry::new(runtime.clone(), &builtins));
        Ok(Plugins {
            runtime,
            builtins: Arc::new(builtins),
            registry,
            stats: PluginStats::default(),
        })
    }

    /// This instance's name in the `Via` header of every plugin request;
    /// a request arriving with it came back through a provider.
    pub fn hop(&self) -> Option<&str> {
        self.runtime.config().outbound.hop.as_deref()
    }

    /// The process's plugin runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The built-in plugins.
    pub fn builtins(&self) -> &BuiltinPlugins {
        &self.builtins
    }

    /// Call counts and timings per plugin version.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// The live registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The plugin called `name` as `org_id` sees it: the organization's
    /// own, else the platform's (built-ins included), at its active version.
    pub fn lookup(&self, org_id: &str, name: &str) -> Option<Arc<Deployed>> {
        self.registry.lookup(org_id, name)
    }

    /// The platform's plugin called `name`.
    pub fn lookup_platform(&self, name: &str) -> Option<Arc<Deployed>> {
        self.registry.lookup_platform(name)
    }
}

/// The router the health check asks to plan; a built-in.
pub const HEALTH_ROUTER: &str = "default-router";

/// Health of the plugin runtime: the built-in set is loaded and a cheap
/// call — [`HEALTH_ROUTER`] planning a one-candidate task — answers with a
/// plan within `timeout`. Returns a detail line, or why it failed.
pub async fn health_check(plugins: &Plugins, timeout: Duration) -> Result<Option<String>, String> {
    if plugins.builtins.is_empty() {
        return Err("no built-in plugin is loaded".into());
    }
    let router = plugins
        .lookup_platform(HEALTH_ROUTER)
        .ok_or_else(|| format!("router `{HEALTH_ROUTER}` is not live"))?;
    let mut limits = router.limits.clone();
    limits.wall_time = limits.wall_time.min(timeout);
    let plan = probe::route_one_candidate(&plugins.runtime, &router.plugin, &limits).await?;
    Ok(Some(format!(
        "{} built-in plugins loaded ({} from the compile cache); {HEALTH_ROUTER} planned {}",
        plugins.builtins.len(),
        plugins.builtins.from_cache(),
        plan
    )))
}

/// A name for this instance's plugin requests, unique per process.
fn hop_name() -> String {
    format!("vel-{}", crate::store::new_id())
}
