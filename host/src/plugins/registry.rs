//! The live registry: which version of which plugin each organization's
//! calls use right now.
//!
//! The database (`store::plugins`) is the truth; this is the instance's
//! in-memory view of it, an immutable [`Snapshot`] swapped whole on every
//! change. A call looks its plugin up once and keeps the [`Deployed`] it
//! got, so a call that started on a version finishes on it while new calls
//! see the new one. Changes arrive by signal (in-process, or PostgreSQL
//! `NOTIFY` from other instances) and by a periodic reconciliation that
//! heals a missed signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use vel_runtime::{Limits, LoadError, Plugin, PluginInfo, Profile, Runtime, Share};

use super::builtin::BuiltinPlugins;
use super::manifest::{Capabilities, Manifest};
use super::stats::StatsKey;
use crate::orchestrator::cost::PriceList;
use crate::orchestrator::signals::{Signal, Signals};
use crate::store::{self, Db, is_unique_violation, new_id, now_ms, plugins::PLATFORM};

/// Whose plugin it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Usable by every organization.
    Platform,
    /// Usable by this organization only.
    Organization(String),
}

impl Owner {
    /// Whose share of the instance pool its calls count against.
    pub fn share(&self) -> Share {
        match self {
            Owner::Platform => Share::Platform,
            Owner::Organization(id) => Share::Organization(id.as_str().into()),
        }
    }

    /// The trust profile its calls run under.
    pub fn profile(&self) -> Profile {
        match self {
            Owner::Platform => Profile::Platform,
            Owner::Organization(_) => Profile::Tenant,
        }
    }

    /// The organization, for tenant plugins.
    pub fn org_id(&self) -> Option<&str> {
        match self {
            Owner::Platform => None,
            Owner::Organization(id) => Some(id),
        }
    }
}

/// A plugin version as calls use it: the compiled component and the terms
/// it runs under.
#[derive(Debug)]
pub struct Deployed {
    /// The loaded component.
    pub plugin: Plugin,
    /// Platform or organization.
    pub owner: Owner,
    /// The limits every call runs under (the manifest's, within the maxima).
    pub limits: Limits,
    /// Approved outbound hosts (providers).
    pub outbound_hosts: Vec<String>,
    /// Where its calls are counted.
    pub stats_key: StatsKey,
    /// A provider's declared prices in nano-dollars (empty for other kinds).
    pub prices: PriceList,
    /// What its manifest says the upstream does (providers).
    pub capabilities: Capabilities,
}

impl Deployed {
    /// A deployment of `plugin`; its calls count against `owner`'s share
    /// of the instance pool.
    pub fn new(
        plugin: Plugin,
        owner: Owner,
        mut limits: Limits,
        outbound_hosts: Vec<String>,
        capabilities: Capabilities,
    ) -> Self {
        limits.share = owner.share();
        let stats_key = StatsKey {
            org_id: owner.org_id().map(str::to_string),
            name: plugin.name().to_string(),
            version: plugin.version().to_string(),
            kind: plugin.kind(),
        };
        let prices = match plugin.info() {
            PluginInfo::Provider(info) => PriceList::declared(&info.models),
            _ => PriceList::default(),
        };
        Deployed {
            plugin,
            owner,
            limits,
            outbound_hosts,
            stats_key,
            prices,
            capabilities,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// The version's number.
    pub fn version(&self) -> &str {
        self.plugin.version()
    }

    /// `name@version`, as attempts and plans record it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.plugin.name(), self.plugin.version())
    }
}

/// Every active plugin at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    platform: HashMap<String, Arc<Deployed>>,
    tenants: HashMap<String, HashMap<String, Arc<Deployed>>>,
}

impl Snapshot {
    fn get(&self, owner: &Owner, name: &str) -> Option<&Arc<Deployed>> {
        match owner {
            Owner::Platform => self.platform.get(name),
            Owner::Organization(org) => self.tenants.get(org).and_then(|m| m.get(name)),
        }
    }

    fn insert(&mut self, deployed: Arc<Deployed>) {
        let name = deployed.name().to_string();
        match &deployed.owner {
            Owner::Platform => {
                self.platform.insert(name, deployed);
            }
            Owner::Organization(org) => {
                self.tenants
                    .entry(org.clone())
                    .or_default()
                    .insert(name, deployed);
            }
        }
    }

    fn len(&self) -> usize {
        self.platform.len() + self.tenants.values().map(HashMap::len).sum::<usize>()
    }
}

/// Why the registry could not read or load.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error("plugin registry storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// A component failed to load.
    #[error("plugin component {sha256}: {source}")]
    Load {
        /// Its digest.
        sha256: String,
        /// Why.
        #[source]
        source: LoadError,
    },
}

/// The instance's view of the registry; shared.
pub struct Registry {
    runtime: Runtime,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Compiled components by sha256, so a version is compiled once.
    loaded: Mutex<HashMap<String, Plugin>>,
    /// Stored components that could not be loaded (compile or `info()`
    /// failed), by sha256, with the reason: skipped until the process
    /// restarts rather than tried again on every refresh.
    failed: Mutex<HashMap<String, String>>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Bumped by every change of the snapshot.
    generation: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("live", &self.live_count())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry holding the built-ins as the platform's plugins, until
    /// [`Registry::sync_builtins`] and [`Registry::refresh`] read the
    /// database.
    pub fn new(runtime: Runtime, builtins: &BuiltinPlugins) -> Registry {
        let mut snapshot = Snapshot::default();
        let mut loaded = HashMap::new();
        for plugin in builtins.iter() {
            loaded.insert(plugin.sha256().to_string(), plugin.clone());
            let limits = runtime.limits(plugin.kind(), Profile::Platform).clone();
            snapshot.insert(Arc::new(Deployed::new(
                plugin.clone(),
                Owner::Platform,
                limits,
                builtin_hosts(plugin.name()),
                builtin_capabilities(plugin.name()),
            )));
        }
        Registry {
            runtime,
            snapshot: RwLock::new(Arc::new(snapshot)),
            loaded: Mutex::new(loaded),
            failed: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The plugin `name` as `org_id` sees it: its own, else the platform's.
    pub fn lookup(&self, org_id: &str, name: &str) -> Option<Arc<Deployed>> {
        let snapshot = self.current();
        snapshot
            .tenants
            .get(org_id)
            .and_then(|m| m.get(name))
            .or_else(|| snapshot.platform.get(name))
            .cloned()
    }

    /// The live version of exactly this owner's plugin `name`.
    pub fn live(&self, owner: &Owner, name: &str) -> Option<Arc<Deployed>> {
        self.current().get(owner, name).cloned()
    }

    /// The platform's plugin `name` (the default router, health probes).
    pub fn lookup_platform(&self, name: &str) -> Option<Arc<Deployed>> {
        self.current().platform.get(name).cloned()
    }

    /// How many plugin versions are live.
    pub fn live_count(&self) -> usize {
        self.current().len()
    }

    /// Changes so far (each swap of the live set bumps it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Load (compile, or read from the compile cache) a component, reusing
    /// one already loaded with the same bytes.
    /// `class` is the plugin class its manifest names (its `info()` runs
    /// under that class's limits).
    pub async fn load_bytes(&self, bytes: &[u8], class: Option<&str>) -> Result<Plugin, LoadError> {
        let sha256 = sha256_hex(bytes);
        if let Some(plugin) = self.loaded_plugin(&sha256) {
            return Ok(plugin);
        }
        let plugin = self.runtime.load_in(bytes, class).await?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256, plugin.clone());
        Ok(plugin)
    }

    /// Keep a component compiled elsewhere (an accepted upload), so
    /// activating it on this instance does not load it again. Refused
    /// uploads are never kept: their compiled code is dropped with them.
    pub fn keep(&self, plugin: Plugin) {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.sha256().to_string(), plugin);
    }

    /// Why the stored component `sha256` could not be loaded, if it failed.
    pub fn load_failure(&self, sha256: &str) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned()
    }

    fn loaded_plugin(&self, sha256: &str) -> Option<Plugin> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned()
    }

    /// Make sure every built-in is in the database as a platform plugin
    /// (stored once; a rebuilt built-in with the same version replaces its
    /// component; a new built-in version becomes active unless an admin
    /// chose another version).
    pub async fn sync_builtins(
        &self,
        db: &Db,
        builtins: &BuiltinPlugins,
    ) -> Result<(), RegistryError> {
        for plugin in builtins.iter() {
            // Two instances starting together may race to insert: the
            // loser sees the winner's rows on its second try.
            let limits = self.runtime.limits(plugin.kind(), Profile::Platform);
            match sync_builtin(db, plugin, limits).await {
                Err(RegistryError::Storage(e)) if is_unique_violation(&e) => {
                    sync_builtin(db, plugin, limits).await?
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Read the active set from the database and swap it in. Returns
    /// whether anything changed.
    pub async fn refresh(&self, db: &Db) -> Result<bool, RegistryError> {
        let _one = self.refreshing.lock().await;
        let rows = {
            let mut tx = db.platform_read().await?;
            let rows = store::plugins::active_set(&mut tx).await?;
            tx.commit().await?;
            rows
        };
        let old = self.current();
        let mut next = Snapshot::default();
        let mut to_load = Vec::new();
        for row in rows {
            let owner = match &row.org_id {
                None => Owner::Platform,
                Some(org) => Owner::Organization(org.clone()),
            };
            let hosts: Vec<String> = serde_json::from_str(&row.outbound_hosts).unwrap_or_default();
            // Checked when stored; one that no longer parses declares nothing.
            let manifest = Manifest::parse(&row.manifest).ok();
            let capabilities = manifest
                .as_ref()
                .map(|m| m.capabilities)
                .unwrap_or_default();
            let class = manifest.and_then(|m| m.class);
            if row.hosts_approved_by.is_none() {
                // Not yet approved: cannot be live.
                continue;
            }
            let Ok(mut limits) = serde_json::from_str::<Limits>(&row.limits) else {
                tracing::warn!(plugin = %row.name, version = %row.version, "unreadable stored limits; plugin left out");
                continue;
            };
            limits.share = owner.share();
            if let Some(same) = old.get(&owner, &row.name).filter(|d| {
                d.plugin.sha256() == row.sha256
                    && d.limits == limits
                    && d.outbound_hosts == hosts
                    && d.capabilities == capabilities
            }) {
                next.insert(same.clone());
                continue;
            }
            if self.load_failure(&row.sha256).is_some() {
                continue;
            }
            to_load.push((row, owner, limits, hosts, capabilities, class));
        }
        // Loads run together: one slow plugin (its `info()` is bounded by
        // the runtime) delays the refresh by its own time, not by the sum.
        let loads = to_load.into_iter().map(
            |(row, owner, limits, hosts, capabilities, class)| async move {
                let loaded = self.load_stored(db, &row.sha256, class.as_deref()).await;
                (row, owner, limits, hosts, capabilities, loaded)
            },
        );
        for (row, owner, limits, hosts, capabilities, loaded) in
            futures::future::join_all(loads).await
        {
            match loaded {
                Ok(plugin) => next.insert(Arc::new(Deployed::new(
                    plugin,
                    owner,
                    limits,
                    hosts,
                    capabilities,
                ))),
                Err(e @ RegistryError::Load { .. }) => {
                    tracing::error!(
                        alert = "plugin_load_failed",
                        plugin = %row.name, version = %row.version, org_id = ?row.org_id,
                        error = %e,
                        "plugin version cannot be loaded: marked failed and left out"
                    );
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(row.sha256, e.to_string());
                }
                Err(e) => {
                    tracing::warn!(plugin = %row.name, version = %row.version, error = %e, "plugin version cannot be loaded now; left out");
                }
            }
        }
        let changed = !same_set(&old, &next);
        if changed {
            let live: std::collections::HashSet<String> = next
                .platform
                .values()
                .chain(next.tenants.values().flat_map(HashMap::values))
                .map(|d| d.plugin.sha256().to_string())
                .collect();
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
            self.generation.fetch_add(1, Ordering::AcqRel);
            // Keep compiled code for live versions only; others reload from
            // the database (and the on-disk compile cache) when activated.
            self.loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|sha, _| live.contains(sha));
        }
        Ok(changed)
    }

    async fn load_stored(
        &self,
        db: &Db,
        sha256: &str,
        class: Option<&str>,
    ) -> Result<Plugin, RegistryError> {
        if let Some(plugin) = self.loaded_plugin(sha256) {
            return Ok(plugin);
        }
        let bytes = {
            let mut tx = db.platform_read().await?;
            let bytes = store::plugins::blob(&mut tx, sha256).await?;
            tx.commit().await?;
            bytes
        };
        let bytes = bytes.ok_or_else(|| RegistryError::Load {
            sha256: sha256.to_string(),
            source: LoadError::NotWasm,
        })?;
        self.load_bytes(&bytes, class)
            .await
            .map_err(|source| RegistryError::Load {
                sha256: sha256.to_string(),
                source,
            })
    }

    /// Keep the live set current: refresh on every `PluginsChanged` signal
    /// (this instance's or another's) and every `reconcile` anyway; after
    /// each change, call `changed`.
    pub fn follow(
        self: &Arc<Self>,
        db: Db,
        signals: &Signals,
        reconcile: Duration,
        changed: impl Fn() + Send + Sync + 'static,
    ) {
        let mut rx = signals.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reconcile);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    signal = rx.recv() => match signal {
                        Ok(Signal::PluginsChanged) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {}
                }
                match this.refresh(&db).await {
                    Ok(true) => {
                        tracing::info!(live = this.live_count(), "plugin registry changed");
                        changed();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "plugin registry refresh failed"),
                }
            }
        });
    }
}

/// Whether two snapshots hold the same deployments.
fn same_set(a: &Snapshot, b: &Snapshot) -> bool {
    let same_map = |x: &HashMap<String, Arc<Deployed>>, y: &HashMap<String, Arc<Deployed>>| {
        x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k).is_some_and(|w| Arc::ptr_eq(v, w)))
    };
    same_map(&a.platform, &b.platform)
        && a.tenants.len() == b.tenants.len()
        && a.tenants
            .iter()
            .all(|(org, m)| b.tenants.get(org).is_some_and(|n| same_map(m, n)))
}

/// Hex sha256 of `bytes` (what the runtime reports as a plugin's digest).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The outbound hosts a built-in's manifest declares.
fn builtin_hosts(name: &str) -> Vec<String> {
    vel_plugin_artifacts::builtin(name)
        .and_then(|b| Manifest::parse(b.manifest).ok())
        .map(|m| m.outbound.hosts)
        .unwrap_or_default()
}

/// The capabilities a built-in's manifest declares.
fn builtin_capabilities(name: &str) -> Capabilities {
    vel_plugin_artifacts::builtin(name)
        .and_then(|b| Manifest::parse(b.manifest).ok())
        .map(|m| m.capabilities)
        .unwrap_or_default()
}

/// Bring one built-in's rows up to date.
async fn sync_builtin(db: &Db, plugin: &Plugin, limits: &Limits) -> Result<(), RegistryError> {
    let Some(builtin) = vel_plugin_artifacts::builtin(plugin.name()) else {
        return Ok(());
    };
    let now = now_ms();
    let mut tx = db.platform().await?;
    let existing = store::plugins::find(&mut tx, PLATFORM, plugin.name()).await?;
    let limits = serde_json::to_string(limits).unwrap_or_default();
    let mut row = match existing {
        Some(row) => row,
        None => {
            let row = store::plugins::PluginRow {
                id: new_id(),
                org_id: None,
                scope: PLATFORM.into(),
                name: plugin.name().into(),
                kind: plugin.kind(),
                status: store::plugins::PluginStatus::Active,
                active_version: None,
                previous_version: None,
                builtin: true,
                created_at: now,
                updated_at: now,
            };
            store::plugins::insert_plugin(&mut tx, &row).await?;
            row
        }
    };
    let version = store::plugins::version(&mut tx, &row.id, plugin.version()).await?;
    let stored = store::plugins::VersionRow {
        id: version.as_ref().map_or_else(new_id, |v| v.id.clone()),
        plugin_id: row.id.clone(),
        org_id: None,
        version: plugin.version().into(),
        sha256: plugin.sha256().into(),
        size_bytes: i64::try_from(builtin.bytes.len()).unwrap_or(i64::MAX),
        description: Manifest::parse(builtin.manifest)
            .map(|m| m.description)
            .unwrap_or_default(),
        manifest: builtin.manifest.into(),
        info: serde_json::to_string(plugin.info()).unwrap_or_default(),
        outbound_hosts: serde_json::to_string(&builtin_hosts(plugin.name())).unwrap_or_default(),
        limits,
        config_schema: None,
        signed: 0,
        hosts_approved_by: Some(PLATFORM.into()),
        hosts_approved_at: Some(now),
        uploaded_by: None,
        uploaded_at: now,
        rejected_by: None,
        rejected_at: None,
        rejection_reason: None,
    };
    match version {
        Some(v) if v.sha256 == stored.sha256 && v.manifest == stored.manifest => {}
        Some(v) => {
            // A rebuilt component, or the same one with an edited manifest
            // (its capabilities, say).
            store::plugins::insert_blob(&mut tx, &stored.sha256, builtin.bytes, now).await?;
            store::plugins::replace_builtin_component(&mut tx, &stored).await?;
            if v.sha256 != stored.sha256 {
                store::plugins::delete_blob_if_unused(&mut tx, &v.sha256).await?;
            }
        }
        None => {
            store::plugins::insert_blob(&mut tx, &stored.sha256, builtin.bytes, now).await?;
            store::plugins::insert_version(&mut tx, &stored).await?;
            // A new built-in version goes live unless an admin picked a
            // version of their own (an upload is never `builtin`).
            let admin_choice = match &row.active_version {
                Some(active) => store::plugins::version(&mut tx, &row.id, active)
                    .await?
                    .is_some_and(|v| v.uploaded_by.is_some()),
                None => false,
            };
            if !admin_choice {
                row.previous_version = row.active_version.take();
                row.active_version = Some(stored.version.clone());
                row.updated_at = now;
                store::plugins::update_plugin(&mut tx, &row).await?;
                // A system event: no user activated it.
                crate::audit::record_for(
                    &mut tx,
                    None,
                    None,
                    &crate::audit::ClientInfo::default(),
                    "plugin_activated",
                    serde_json::json!({
                        "plugin": row.name,
                        "version": stored.version,
                        "previous_version": row.previous_version,
                        "builtin": true,
                    }),
                )
                .await?;
                // A platform plugin's version went live: every
                // organization is told.
                crate::webhooks::events::plugin_activated(
                    &mut tx,
                    None,
                    &row.name,
                    &stored.version,
                    row.previous_version.as_deref(),
                    false,
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
