//! [`Runtime`]: the engine, the linker with the host functions, the compile
//! cache and the outbound HTTP client, shared by every plugin and call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::bindings::condition::ConditionPre;
use crate::bindings::embedder::{Embedder, EmbedderPre};
use crate::bindings::provider::{Provider, ProviderPre};
use crate::bindings::router::RouterPre;
use crate::bindings::tool_server::ToolServerPre;
use crate::cache::{self, CompileCache};
use crate::call::{CallExtras, Calls, Failure, WireSize, run};
use crate::class::{DEFAULT_CORE_INSTANCES, PluginClass};
use crate::engine::{EngineSizes, EpochTicker, build_engine};
use crate::error::{LoadError, PluginError, RuntimeError};
use crate::inspect::{self, CodeLimits, Inspection, InstanceLimit};
use crate::legacy;
use crate::limits::{KindLimits, Limits, Profile};
use crate::outbound::{OutboundClient, OutboundConfig};
use crate::plugin::{Contract, KindPre, Plugin, PluginInfo, PluginInner, PluginKind};
use crate::sandbox::CallState;
use crate::slots::{CompileSlot, CompileSlots};
use crate::types::EmbeddingModel;

/// How the runtime is set up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Directory for compiled components; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (concurrent calls); sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// How the instances are divided between organizations and the
    /// platform.
    pub shares: crate::ShareConfig,
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
    /// How compilation is bounded.
    pub compile: CompileConfig,
    /// Longest a plugin's `info()` may take when it is loaded, in wall-clock
    /// and in CPU time (the kind's platform limits apply otherwise): loading
    /// runs on start-up and activation paths, which must not wait long.
    #[serde(with = "crate::limits::millis", default = "default_info_time")]
    pub info_time: Duration,
    /// Plugin classes by name, with limits of their own (e.g. `python`:
    /// [`PluginClass::python`]). A plugin is in one when its manifest names
    /// it; the rest keep the limits above. None by default.
    #[serde(default)]
    pub classes: BTreeMap<String, PluginClass>,
}

fn default_info_time() -> Duration {
    Duration::from_secs(2)
}

/// Bounds on compiling components: Cranelift uses every core and memory
/// that grows with the code it translates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompileConfig {
    /// Compilations that may run at once (at least one).
    pub slots: usize,
    /// Longest wait for one compilation; a longer one is abandoned.
    pub timeout: Duration,
    /// How much code an upload may ask the compiler to translate.
    pub code: CodeLimits,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            slots: 2,
            timeout: Duration::from_secs(60),
            code: CodeLimits::default(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 1000,
            shares: crate::ShareConfig::for_pool(1000),
            max_memory_bytes: 256 * 1024 * 1024,
            max_wasm_stack: 512 * 1024,
            epoch_tick: Duration::from_millis(1),
            platform: KindLimits::platform(),
            tenant: KindLimits::tenant(),
            outbound: OutboundConfig::default(),
            compile: CompileConfig::default(),
            info_time: default_info_time(),
            classes: BTreeMap::new(),
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
    slots: CompileSlots,
    pub(crate) calls: Calls,
}

impl Runtime {
    /// Creates the engine, links the host functions and starts the epoch
    /// ticker (stopped when the last clone is dropped).
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if !crate::host_memory::installed() {
            tracing::warn!(
                "host memory is not charged to plugin calls: this binary's global allocator \
                 is not vel_runtime::Accounted, so only linear memory is limited"
            );
        }
        let engine = build_engine(&EngineSizes {
            max_instances: config.max_instances,
            max_memory_bytes: config.max_memory_bytes,
            max_wasm_stack: config.max_wasm_stack,
            max_core_instances: config
                .classes
                .values()
                .map(|c| c.max_core_instances)
                .fold(DEFAULT_CORE_INSTANCES, u32::max),
        })?;
        let mut linker = Linker::<CallState>::new(&engine);
        let link = |e: wasmtime::Error| RuntimeError::Linker(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
        Provider::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(link)?;
        // The tool-server world's own import (its `log` and `config` are
        // the provider world's, linked above).
        crate::bindings::tool_server::vel::plugins::progress::add_to_linker::<
            CallState,
            HasSelf<CallState>,
        >(&mut linker, |state| state)
        .map_err(link)?;
        // The frozen 0.1.0 imports, for components built against it.
        crate::bindings::v0_1::provider::Provider::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )
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
        let slots = CompileSlots::new(config.compile.slots);
        let shares = Arc::new(crate::shares::Shares::new(
            config.max_instances,
            config.shares,
        ));
        let calls = Calls {
            engine: engine.clone(),
            ticker,
            shares,
            max_memory_bytes: config.max_memory_bytes,
            max_wasm_stack: config.max_wasm_stack,
            epoch_tick: config.epoch_tick,
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                http,
                config,
                cache_hits: AtomicU64::new(0),
                slots,
                calls,
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

    /// The configured class called `name`; `None` for plugins in no class.
    pub fn class(&self, name: Option<&str>) -> Result<Option<&PluginClass>, LoadError> {
        let Some(name) = name else { return Ok(None) };
        match self.inner.config.classes.get(name) {
            Some(class) => Ok(Some(class)),
            None => Err(LoadError::UnknownClass {
                class: name.to_string(),
                offered: if self.inner.config.classes.is_empty() {
                    "no plugin class".to_string()
                } else {
                    let names: Vec<&str> = self
                        .inner
                        .config
                        .classes
                        .keys()
                        .map(String::as_str)
                        .collect();
                    format!("the classes {}", names.join(", "))
                },
            }),
        }
    }

    /// The limits for a kind under a profile in a class (`None`: the
    /// default limits of [`Runtime::limits`]).
    pub fn class_limits(
        &self,
        class: Option<&str>,
        kind: PluginKind,
        profile: Profile,
    ) -> Result<&Limits, LoadError> {
        Ok(match self.class(class)? {
            Some(c) => c.limits(kind, profile),
            None => self.limits(kind, profile),
        })
    }

    /// How many loads found their compiled code in the on-disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.inner.cache_hits.load(Ordering::Relaxed)
    }

    /// The compile slots every compilation of this runtime takes one of.
    pub fn compile_slots(&self) -> &CompileSlots {
        &self.inner.slots
    }

    /// Reads a component without compiling it (milliseconds): that it is a
    /// well-formed component, that its code is within the configured
    /// [`CodeLimits`], that it exports exactly one vel world with that
    /// world's functions, and that it imports only what that world may.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection, LoadError> {
        self.inspect_in(wasm, None)
    }

    /// [`Runtime::inspect`] for a component of plugin class `class`: that
    /// class's code limits and core instances instead of the defaults.
    pub fn inspect_in(&self, wasm: &[u8], class: Option<&str>) -> Result<Inspection, LoadError> {
        let (code, max) = match self.class(class)? {
            Some(c) => (&c.code, c.max_core_instances),
            None => (&self.inner.config.compile.code, DEFAULT_CORE_INSTANCES),
        };
        inspect::inspect(wasm, Some(code), Some(InstanceLimit { max, class }))
    }

    /// Loads a component the host has already accepted (a built-in, a
    /// stored version): checks its world and imports without compiling,
    /// then reads its compiled code from the cache, or compiles it (on a
    /// blocking thread, in a compile slot, waiting for one as long as it
    /// takes, within the compile timeout) and writes it to the cache; then
    /// pre-instantiates it and calls its `info()` once under the kind's
    /// platform limits. The code limits are not applied: they decide what
    /// is accepted, not what was.
    pub async fn load(&self, wasm: &[u8]) -> Result<Plugin, LoadError> {
        self.load_in(wasm, None).await
    }

    /// [`Runtime::load`] for a plugin of class `class`: its `info()` runs
    /// under the class's platform limits.
    pub async fn load_in(&self, wasm: &[u8], class: Option<&str>) -> Result<Plugin, LoadError> {
        let class = self.class(class)?;
        let inspection = inspect::inspect(wasm, None, None)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(component) = self.cached(&sha256).await? {
            return self
                .instantiate(
                    component,
                    (inspection.kind, inspection.contract, inspection.embeddings),
                    sha256,
                    wasm.len(),
                    true,
                    class,
                )
                .await;
        }
        let slot = self.inner.slots.acquire().await;
        let compiled = Arc::new(self.compile(wasm, slot).await?);
        let component = self.store_compiled(&sha256, compiled).await?;
        self.instantiate(
            component,
            (inspection.kind, inspection.contract, inspection.embeddings),
            sha256,
            wasm.len(),
            false,
            class,
        )
        .await
    }

    /// Loads a component that is not accepted yet (an upload): inspects it
    /// ([`Runtime::inspect`], code limits included) and refuses it unless
    /// it implements `request.kind`, then compiles it in memory in a
    /// compile slot taken within `request.wait` (on behalf of
    /// `request.tenant`), pre-instantiates it and calls its `info()`.
    /// Nothing is written: [`Staged::commit`] writes the compiled code to
    /// the cache once the caller has stored the version; dropping the
    /// [`Staged`] leaves no trace.
    ///
    /// A compilation that outlasts the compile timeout is abandoned with
    /// [`LoadError::CompileTimeout`]. Cranelift cannot be interrupted, so
    /// it runs to its end on its blocking thread and keeps its slot (and
    /// its tenant's) until then: the number of compilations running never
    /// exceeds the slots.
    pub async fn stage(&self, wasm: &[u8], request: StageRequest<'_>) -> Result<Staged, LoadError> {
        let inspection = self.inspect_in(wasm, request.class)?;
        let class = self.class(request.class)?;
        if inspection.kind != request.kind {
            return Err(LoadError::KindMismatch {
                expected: request.kind,
                actual: inspection.kind,
            });
        }
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(component) = self.cached(&sha256).await? {
            let plugin = self
                .instantiate(
                    component,
                    (inspection.kind, inspection.contract, inspection.embeddings),
                    sha256,
                    wasm.len(),
                    true,
                    class,
                )
                .await?;
            return Ok(Staged {
                plugin,
                compiled: None,
                runtime: self.clone(),
            });
        }
        let slot = self
            .inner
            .slots
            .acquire_within(request.tenant, request.wait)
            .await
            .map_err(LoadError::Busy)?;
        let compiled = Arc::new(self.compile(wasm, slot).await?);
        let component = cache::from_memory(&self.inner.engine, &compiled)?;
        let plugin = self
            .instantiate(
                component,
                (inspection.kind, inspection.contract, inspection.embeddings),
                sha256,
                wasm.len(),
                false,
                class,
            )
            .await?;
        Ok(Staged {
            plugin,
            compiled: Some(compiled),
            runtime: self.clone(),
        })
    }

    /// The cached compiled component for `sha256`, read on a blocking thread.
    async fn cached(&self, sha256: &str) -> Result<Option<Component>, LoadError> {
        let (engine, cache, sha) = (
            self.inner.engine.clone(),
            self.inner.cache.clone(),
            sha256.to_string(),
        );
        let component = tokio::task::spawn_blocking(move || cache.lookup(&engine, &sha))
            .await
            .map_err(|e| LoadError::Compile(format!("cache reader thread failed: {e}")))?;
        if component.is_some() {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(component)
    }

    /// Compiles `wasm` on a blocking thread that owns `slot` until the
    /// compilation ends, waiting at most the compile timeout for it.
    async fn compile(&self, wasm: &[u8], slot: CompileSlot) -> Result<Vec<u8>, LoadError> {
        let (engine, bytes) = (self.inner.engine.clone(), wasm.to_vec());
        let timeout = self.inner.config.compile.timeout;
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            cache::compile(&engine, &bytes)
        });
        match tokio::time::timeout(timeout, job).await {
            Ok(Ok(compiled)) => compiled,
            Ok(Err(e)) => Err(LoadError::Compile(format!("compiler thread failed: {e}"))),
            Err(_) => {
                let limit_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(
                    limit_ms,
                    size = wasm.len(),
                    "plugin compilation abandoned after the compile timeout; it keeps its slot until it ends"
                );
                Err(LoadError::CompileTimeout { limit_ms })
            }
        }
    }

    /// Writes compiled code to the cache and maps it from there, or loads
    /// it from memory when there is no cache (or writing failed).
    async fn store_compiled(
        &self,
        sha256: &str,
        compiled: Arc<Vec<u8>>,
    ) -> Result<Component, LoadError> {
        let (engine, cache, sha) = (
            self.inner.engine.clone(),
            self.inner.cache.clone(),
            sha256.to_string(),
        );
        tokio::task::spawn_blocking(move || match cache.store(&engine, &sha, &compiled) {
            Some(component) => Ok(component),
            None => cache::from_memory(&engine, &compiled),
        })
        .await
        .map_err(|e| LoadError::Compile(format!("cache writer thread failed: {e}")))?
    }

    /// The typed pre-instantiated component of `kind`, built against
    /// `contract` (a 0.1.0 component gets the 0.1.0 bindings, which the
    /// adapter in [`crate::legacy`] serves).
    fn pre(
        &self,
        component: &Component,
        kind: PluginKind,
        contract: Contract,
        embeddings: bool,
    ) -> Result<(KindPre, Option<EmbedderPre<CallState>>), LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link {
            kind,
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(link_err)?;
        use crate::bindings::v0_1;
        let embedder = if embeddings {
            Some(EmbedderPre::new(pre.clone()).map_err(link_err)?)
        } else {
            None
        };
        let kind_pre = match (kind, contract) {
            (PluginKind::Provider, Contract::V0_2) => {
                KindPre::Provider(ProviderPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Router, Contract::V0_2) => {
                KindPre::Router(RouterPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Condition, Contract::V0_2) => {
                KindPre::Condition(ConditionPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Tool, Contract::V0_2) => {
                KindPre::Tool(ToolServerPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Tool, Contract::V0_1) => {
                return Err(link_err(wasmtime::Error::msg(
                    "the tool-server world exists only in vel:plugins@0.2.0",
                )));
            }
            (PluginKind::Provider, Contract::V0_1) => {
                KindPre::ProviderV0_1(v0_1::provider::ProviderPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Router, Contract::V0_1) => {
                KindPre::RouterV0_1(v0_1::router::RouterPre::new(pre).map_err(link_err)?)
            }
            (PluginKind::Condition, Contract::V0_1) => {
                KindPre::ConditionV0_1(v0_1::condition::ConditionPre::new(pre).map_err(link_err)?)
            }
        };
        Ok((kind_pre, embedder))
    }

    /// Pre-instantiates a compiled component and calls its `info()` once
    /// (see [`Self::call_info`]'s limits).
    async fn instantiate(
        &self,
        component: Component,
        (kind, contract, embeddings): (PluginKind, Contract, bool),
        sha256: String,
        size: usize,
        from_cache: bool,
        class: Option<&PluginClass>,
    ) -> Result<Plugin, LoadError> {
        let (pre, embedder) = self.pre(&component, kind, contract, embeddings)?;
        // A provisional plugin to run `info()` on; the real one carries it.
        let mut inner = PluginInner {
            kind,
            contract,
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
            size,
            running: AtomicU64::new(0),
            embedder,
            embedding_models: Vec::new(),
        };
        let provisional = Plugin {
            inner: Arc::new(inner),
        };
        let (info, embedding_models) = self
            .call_info(&provisional, class)
            .await
            .map_err(LoadError::Info)?;
        inner = Arc::into_inner(provisional.inner).ok_or_else(|| {
            // The provisional plugin is never shared beyond `call_info`.
            LoadError::Info(PluginError::Host("plugin still in use after info()".into()))
        })?;
        inner.name = Arc::from(info.name());
        inner.version = Arc::from(info.version());
        inner.info = info;
        inner.embedding_models = embedding_models;
        let plugin = Plugin {
            inner: Arc::new(inner),
        };
        tracing::info!(
            plugin = plugin.name(),
            version = plugin.version(),
            kind = %kind,
            contract = contract.as_str(),
            sha256 = plugin.sha256_prefix(),
            from_cache,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// Calls `info()` in a fresh instance, under the kind's platform limits
    /// (its class's, when it is in one) shortened to
    /// [`RuntimeConfig::info_time`].
    async fn call_info(
        &self,
        plugin: &Plugin,
        class: Option<&PluginClass>,
    ) -> Result<(PluginInfo, Vec<EmbeddingModel>), PluginError> {
        let mut limits = match class {
            Some(c) => c.limits(plugin.kind(), Profile::Platform),
            None => self.limits(plugin.kind(), Profile::Platform),
        }
        .clone();
        let most = self.inner.config.info_time;
        limits.wall_time = limits.wall_time.min(most);
        limits.cpu_time = limits.cpu_time.min(most);
        let calls = &self.inner.calls;
        let mut prepared = calls.prepare(plugin, &limits, CallExtras::pure())?;
        let store = &mut prepared.store;
        let work = async {
            let info = match &plugin.inner.pre {
                KindPre::Provider(pre) if plugin.inner.embedder.is_some() => {
                    // One instance answers both `info()` and `models()`.
                    let instance = pre
                        .instance_pre()
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let provider =
                        Provider::new(&mut *store, &instance).map_err(Failure::Instantiate)?;
                    let info = provider
                        .vel_plugins_completion()
                        .call_info(&mut *store)
                        .await
                        .map_err(Failure::Call)?;
                    let embedder =
                        Embedder::new(&mut *store, &instance).map_err(Failure::Instantiate)?;
                    let models = embedder
                        .vel_plugins_embeddings()
                        .call_models(&mut *store)
                        .await
                        .map_err(Failure::Call)?;
                    return Ok((PluginInfo::Provider(info), models));
                }
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
                KindPre::Tool(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_tools().call_info(&mut *store).await;
                    info.map(PluginInfo::Tool).map_err(Failure::Call)
                }
                KindPre::ProviderV0_1(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_completion().call_info(&mut *store).await;
                    info.map(|i| PluginInfo::Provider(legacy::provider_info(i)))
                        .map_err(Failure::Call)
                }
                KindPre::RouterV0_1(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_routing().call_info(&mut *store).await;
                    info.map(|i| PluginInfo::Router(legacy::router_info(i)))
                        .map_err(Failure::Call)
                }
                KindPre::ConditionV0_1(pre) => {
                    let i = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let info = i.vel_plugins_evaluation().call_info(&mut *store).await;
                    info.map(|i| PluginInfo::Condition(legacy::condition_info(i)))
                        .map_err(Failure::Call)
                }
            };
            info.map(|info| (info, Vec::new()))
        };
        let outcome = run(&prepared.watch, plugin, &limits, work).await;
        calls.finish(prepared, &limits, outcome).result
    }
}

impl WireSize for PluginInfo {
    fn wire_size(&self) -> usize {
        match self {
            PluginInfo::Provider(i) => i.wire_size(),
            PluginInfo::Router(i) => i.wire_size(),
            PluginInfo::Condition(i) => i.wire_size(),
            PluginInfo::Tool(i) => i.wire_size(),
        }
    }
}

/// What [`Runtime::stage`] needs to know about an upload.
#[derive(Debug, Clone, Copy)]
pub struct StageRequest<'a> {
    /// The world the component must implement (e.g. its manifest's kind).
    pub kind: PluginKind,
    /// Whose compilation it is: a tenant compiles one component at a time;
    /// `None` for the platform.
    pub tenant: Option<&'a str>,
    /// Longest wait for a compile slot before [`LoadError::Busy`].
    pub wait: Duration,
    /// The plugin class it is uploaded in (its manifest's `class`), whose
    /// code and instance limits apply; `None` for the defaults.
    pub class: Option<&'a str>,
}

/// A component loaded by [`Runtime::stage`] whose compiled code is not in
/// the compile cache yet.
pub struct Staged {
    plugin: Plugin,
    /// The compiled code, when it was compiled rather than read from the cache.
    compiled: Option<Arc<Vec<u8>>>,
    runtime: Runtime,
}

impl Staged {
    /// The loaded plugin (kind, `info()`, ready to call).
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Writes the compiled code to the compile cache, for a component whose
    /// version is now stored, and returns the plugin with its code mapped
    /// from that file (or still in memory when it could not be written).
    pub async fn commit(self) -> Plugin {
        let Some(compiled) = self.compiled else {
            return self.plugin;
        };
        let runtime = &self.runtime;
        let (engine, cache, sha) = (
            runtime.inner.engine.clone(),
            runtime.inner.cache.clone(),
            self.plugin.sha256().to_string(),
        );
        let written = tokio::task::spawn_blocking(move || cache.store(&engine, &sha, &compiled))
            .await
            .ok()
            .flatten();
        let Some(component) = written else {
            return self.plugin;
        };
        let old = &self.plugin.inner;
        match runtime.pre(&component, old.kind, old.contract, old.embedder.is_some()) {
            Ok((pre, embedder)) => Plugin {
                inner: Arc::new(PluginInner {
                    kind: old.kind,
                    contract: old.contract,
                    info: old.info.clone(),
                    name: old.name.clone(),
                    version: old.version.clone(),
                    sha256: old.sha256.clone(),
                    pre,
                    loaded_from_cache: false,
                    size: old.size,
                    running: AtomicU64::new(0),
                    embedder,
                    embedding_models: old.embedding_models.clone(),
                }),
            },
            Err(e) => {
                tracing::warn!(sha256 = old.sha256, error = %e, "cannot link the compile-cache entry just written; keeping the code in memory");
                self.plugin
            }
        }
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("plugin", &self.plugin)
            .field("compiled", &self.compiled.is_some())
            .finish_non_exhaustive()
    }
}
