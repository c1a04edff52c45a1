//! [`Runtime`]: the engine, the linker with the host functions, the compile
//! cache and the outbound HTTP client, shared by every plugin and call.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::condition::ConditionPre;
use crate::bindings::provider::{Provider, ProviderPre};
use crate::bindings::router::RouterPre;
use crate::cache::CompileCache;
use crate::call::{CallExtras, Failure, WireSize, run};
use crate::engine::{EpochTicker, build_engine};
use crate::error::{LoadError, PluginError, RuntimeError};
use crate::limits::{KindLimits, Limits, Profile};
use crate::outbound::{OutboundClient, OutboundConfig};
use crate::plugin::{self, KindPre, Plugin, PluginInfo, PluginInner, PluginKind};
use crate::sandbox::CallState;

/// How the runtime is set up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Directory for compiled components; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (concurrent calls); sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Hard ceiling on one instance's linear memory, whatever the limits say.
    pub max_memory_bytes: u64,
    /// WebAssembly stack per call, in bytes (deep recursion stops here).
    pub max_wasm_stack: usize,
    /// Epoch tick: the resolution of CPU-time limits.
    pub epoch_tick: Duration,
    /// Limits for platform plugins.
    pub platform: KindLimits,
    /// Limits for tenant-uploaded plugins.
    pub tenant: KindLimits,
    /// Outbound HTTP timeouts and caps.
    pub outbound: OutboundConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: 256 * 1024 * 1024,
            max_wasm_stack: 512 * 1024,
            epoch_tick: Duration::from_millis(1),
            platform: KindLimits::platform(),
            tenant: KindLimits::tenant(),
            outbound: OutboundConfig::default(),
        }
    }
}

/// The plugin runtime. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    linker: Linker<CallState>,
    cache: Arc<CompileCache>,
    pub(crate) http: OutboundClient,
    pub(crate) config: RuntimeConfig,
    cache_hits: AtomicU64,
    pub(crate) ticker: EpochTicker,
}

impl Runtime {
    /// Creates the engine, links the host functions and starts the epoch
    /// ticker (stopped when the last clone is dropped).
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = build_engine(&config)?;
        let mut linker = Linker::<CallState>::new(&engine);
        let link = |e: wasmtime::Error| RuntimeError::Linker(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
        Provider::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(link)?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::CacheDir {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let cache = Arc::new(CompileCache::new(&engine, config.cache_dir.clone()));
        let http = OutboundClient::new(config.outbound.clone())?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                http,
                config,
                cache_hits: AtomicU64::new(0),
                ticker,
            }),
        })
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The configured limits for a kind of plugin under a profile.
    pub fn limits(&self, kind: PluginKind, profile: Profile) -> &Limits {
        match profile {
            Profile::Platform => self.inner.config.platform.for_kind(kind),
            Profile::Tenant => self.inner.config.tenant.for_kind(kind),
        }
    }

    /// How many loads found their compiled code in the on-disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.inner.cache_hits.load(Ordering::Relaxed)
    }

    /// Validates, compiles (or reads from the cache) and pre-instantiates a
    /// component, then calls its `info()` once under the kind's platform
    /// limits. Compilation runs on a blocking thread.
    pub async fn load(&self, wasm: &[u8]) -> Result<Plugin, LoadError> {
        plugin::check_header(wasm)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        let (engine, cache, bytes, sha) = (
            self.inner.engine.clone(),
            self.inner.cache.clone(),
            wasm.to_vec(),
            sha256.clone(),
        );
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || cache.load(&engine, &bytes, &sha))
                .await
                .map_err(|e| LoadError::Compile(format!("compiler thread failed: {e}")))??;
        if from_cache {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        let engine = &self.inner.engine;
        let kind = plugin::detect_kind(engine, &component)?;
        plugin::check_imports(engine, &component, kind)?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            kind,
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(link_err)?;
        let pre = match kind {
            PluginKind::Provider => KindPre::Provider(ProviderPre::new(pre).map_err(link_err)?),
            PluginKind::Router => KindPre::Router(RouterPre::new(pre).map_err(link_err)?),
            PluginKind::Condition => KindPre::Condition(ConditionPre::new(pre).map_err(link_err)?),
        };
        // A provisional plugin to run `info()` on; the real one carries it.
        let mut inner = PluginInner {
            kind,
            info: PluginInfo::Router(crate::types::RouterInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
            }),
            name: Arc::from("(loading)"),
            version: Arc::from(""),
            sha256,
            pre,
            loaded_from_cache: from_cache,
            size: wasm.len(),
        };
        let provisional = Plugin {
            inner: Arc::new(inner),
        };
        let info = self
            .call_info(&provisional)
            .await
            .map_err(LoadError::Info)?;
        inner = Arc::into_inner(provisional.inner).ok_or_else(|| {
            // The provisional plugin is never shared beyond `call_info`.
            LoadError::Info(PluginError::Host("plugin still in use after info()".into()))
        })?;
        inner.name = Arc::from(info.name());
        inner.version = Arc::from(info.version());
        inner.info = info;
        let plugin = Plugin {
            inner: Arc::new(inner),
        };
        tracing::info!(
            plugin = plugin.name(),
            version = plugin.version(),
            kind = %kind,
            sha256 = plugin.sha256_prefix(),
            from_cache,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// Calls `info()` in a fresh instance.
    async fn call_info(&self, plugin: &Plugin) -> Result<PluginInfo, PluginError> {
        let limits = self.limits(plugin.kind(), Profile::Platform).clone();
        let inner = &self.inner;
        let mut prepared = inner.prepare(plugin, &limits, CallExtras::pure());
        let store = &mut prepared.store;
        let work = async {
            match &plugin.inner.pre {
                KindPre::Provider(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_completion().call_info(&mut *store).await;
                    info.map(PluginInfo::Provider).map_err(Failure::Call)
                }
                KindPre::Router(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_routing().call_info(&mut *store).await;
                    info.map(PluginInfo::Router).map_err(Failure::Call)
                }
                KindPre::Condition(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_evaluation().call_info(&mut *store).await;
                    info.map(PluginInfo::Condition).map_err(Failure::Call)
                }
            }
        };
        let outcome = run(&prepared.polls, plugin, &limits, work).await;
        inner.finish(prepared, &limits, outcome).result
    }
}

impl WireSize for PluginInfo {
    fn wire_size(&self) -> usize {
        match self {
            PluginInfo::Provider(i) => i.wire_size(),
            PluginInfo::Router(i) => i.wire_size(),
            PluginInfo::Condition(i) => i.wire_size(),
        }
    }
}
