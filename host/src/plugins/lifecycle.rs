//! A plugin's life in the registry: publish a version (checked before
//! anything is stored, compiled within the compile slots, stored once per
//! sha256, optionally made active), activate, roll back, disable, enable,
//! delete a version, and approve a tenant provider's outbound hosts. Every
//! change is audited in its own transaction and goes live on this instance
//! before the function returns, on the others by the signal sent with the
//! commit.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use vel_runtime::{LoadError, PluginKind, StageRequest};

use super::manifest::{self, Manifest, ManifestError};
use super::registry::{Owner, sha256_hex};
use crate::audit;
use crate::audit::ClientInfo;
use crate::auth::{Forbidden, Permission, Principal};
use crate::config::RegistryConfig;
use crate::orchestrator::dispatch::DEFAULT_ROUTER;
use crate::orchestrator::signals::Signal;
use crate::state::AppState;
use crate::store::plugins::{PLATFORM, PluginRow, PluginStatus, VersionRow};
use crate::store::{self, Tx, new_id, now_ms};
use crate::validation::{FieldErrors, Invalid, check_destination};

/// Who acts: the caller and where the request came from (for the audit).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The caller.
    pub who: &'a Principal,
    /// Their address and user agent.
    pub client: &'a ClientInfo,
}

/// Which plugin a name means when the organization and the platform both
/// have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The platform's.
    Platform,
    /// The caller's organization's.
    Organization,
}

/// The parts of an upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The component (`.wasm`) bytes.
    pub component: Vec<u8>,
    /// The manifest (`vel-plugin.toml` text).
    pub manifest: String,
    /// Base64 (or hex) ed25519 signature of the component bytes.
    pub signature: Option<String>,
}

/// A stored version and its plugin.
#[derive(Debug, Clone)]
pub struct Published {
    /// The plugin, as it is after the upload.
    pub plugin: PluginRow,
    /// The new version.
    pub version: VersionRow,
}

/// Why a plugin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The caller may not manage this plugin.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No such plugin (`plugin`) or version (`plugin version`) for the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The manifest is malformed, asks for limits above the maxima, or does
    /// not match the component.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A field names a destination that may not be reached.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The signature is malformed or verifies against no trusted key.
    #[error("{0}")]
    BadSignature(&'static str),
    /// Trusted keys are configured and an unsigned upload asked to be activated.
    #[error("trusted signing keys are configured: only a signed component can be activated")]
    UnsignedUpload,
    /// An organization's plugin may not take a platform plugin's name.
    #[error("`{0}` is the name of a platform plugin; choose another name")]
    NameTaken(String),
    /// The plugin exists with another kind.
    #[error("`{name}` is a {stored} plugin, not a {uploaded}")]
    KindMismatch {
        /// Plugin name.
        name: String,
        /// Its kind.
        stored: PluginKind,
        /// The upload's kind.
        uploaded: PluginKind,
    },
    /// The version exists (versions are immutable).
    #[error("{0}")]
    VersionExists(String),
    /// The organization's stored components would exceed its quota.
    #[error(
        "the organization's plugins would take {total} bytes, more than its quota of {quota} bytes \
         ({used} bytes stored, {adding} in this upload); delete versions it no longer needs"
    )]
    QuotaExceeded {
        /// Bytes stored already.
        used: u64,
        /// Bytes of this upload.
        adding: u64,
        /// Their sum.
        total: u64,
        /// The quota.
        quota: u64,
    },
    /// The component could not be inspected, compiled or asked for its
    /// `info()`; `wait` is how long it waited for a compile slot.
    #[error("{error}")]
    Load {
        /// What went wrong.
        error: LoadError,
        /// The compile-slot wait.
        wait: Duration,
    },
    /// The component is larger than its plugin class (or the default
    /// upload limit) allows.
    #[error("the component is {size} bytes, more than the {max} bytes {class} accepts")]
    ComponentTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
        /// Whose limit: "the default upload limit" or "class NAME".
        class: String,
    },
    /// The version's outbound hosts await a platform admin.
    #[error("a platform admin has not approved this version's outbound hosts yet")]
    HostsNotApproved,
    /// A platform admin rejected the version's outbound hosts: it can never
    /// be approved or activated.
    #[error("a platform admin rejected this version's outbound hosts{}; upload a new version", reason_suffix(.0))]
    VersionRejected(Option<String>),
    /// The version's outbound hosts were approved already: too late to reject.
    #[error("this version's outbound hosts were approved already")]
    AlreadyApproved,
    /// Trusted keys are configured and the version is unsigned.
    #[error("trusted signing keys are configured: only a signed component can be activated")]
    SignatureRequired,
    /// Nothing to roll back to.
    #[error("{0}")]
    NoPreviousVersion(String),
    /// The platform's default router cannot be disabled.
    #[error("the platform's default router is every routing fallback and cannot be disabled")]
    DefaultRouter,
    /// The active version cannot be deleted.
    #[error("{name} {version} is the active version; activate another first")]
    VersionActive {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
    },
    /// A built-in version ships with the server.
    #[error("a built-in version ships with the server and cannot be deleted")]
    BuiltinVersion,
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// The active set could not be reloaded on this instance.
    #[error("could not reload the active plugins: {0}")]
    Reload(String),
}

/// Publish a version of `upload` for `owner` (the caller is authorized to
/// publish for it): checked (manifest, destinations, signature, names,
/// quota, limits, then the component's world, imports and code size
/// without compiling it, then its compilation and `info()`) before anything
/// is stored; the same bytes are stored once. With `activate`, the version
/// becomes the active one, unless it is an organization's provider whose
/// outbound hosts await a platform admin's approval: that one is stored,
/// not activated.
pub async fn publish(
    state: &AppState,
    actor: Actor<'_>,
    owner: Owner,
    upload: Upload,
    activate: bool,
) -> Result<Published, LifecycleError> {
    let registry = &state.config.registry;
    let manifest = Manifest::parse(&upload.manifest)?;
    let mut errors = FieldErrors::new();
    for entry in &manifest.outbound.hosts {
        check_destination(
            &mut errors,
            "outbound.hosts",
            manifest::host_of(entry),
            &state.config.outbound_allow_private,
        );
    }
    errors.finish()?;
    let kind = manifest.plugin_kind()?;
    let signed = verify_signature(registry, &upload)?;
    if activate && !registry.trusted_keys.is_empty() && !signed {
        return Err(LifecycleError::UnsignedUpload);
    }
    let sha256 = sha256_hex(&upload.component);

    // Cheap checks against what is stored, before compiling.
    let mut tx = state.db.tenant_read(&actor.who.org_id).await?;
    let scope = owner.org_id().unwrap_or(PLATFORM).to_string();
    let existing = store::plugins::find(&mut tx, &scope, &manifest.name).await?;
    if let Owner::Organization(_) = owner
        && store::plugins::find(&mut tx, PLATFORM, &manifest.name)
            .await?
            .is_some()
    {
        return Err(LifecycleError::NameTaken(manifest.name.clone()));
    }
    if let Some(row) = &existing {
        if row.kind != kind {
            return Err(LifecycleError::KindMismatch {
                name: row.name.clone(),
                stored: row.kind,
                uploaded: kind,
            });
        }
        if let Some(v) = store::plugins::version(&mut tx, &row.id, &manifest.version).await? {
            let what = if v.sha256 == sha256 {
                "was already uploaded"
            } else {
                "already exists with other bytes; versions are immutable, upload a new version"
            };
            return Err(LifecycleError::VersionExists(format!(
                "{} {} {what}",
                manifest.name, manifest.version
            )));
        }
    }
    if let Some(org) = owner.org_id() {
        check_quota(&mut tx, org, upload.component.len(), registry).await?;
    }
    tx.rollback().await?;
    let runtime = state.plugins.runtime();
    let class = manifest.class.as_deref();
    let load = |error| LifecycleError::Load {
        error,
        wait: Duration::ZERO,
    };
    let maxima = runtime
        .class_limits(class, kind, owner.profile())
        .map_err(load)?
        .clone();
    let (max_size, whose) = match runtime.class(class).map_err(load)? {
        Some(c) => (
            c.max_component_bytes,
            format!("class `{}`", class.unwrap_or_default()),
        ),
        None => (
            u64::try_from(registry.max_upload_bytes).unwrap_or(u64::MAX),
            "the default upload limit".to_string(),
        ),
    };
    let size = u64::try_from(upload.component.len()).unwrap_or(u64::MAX);
    if size > max_size {
        return Err(LifecycleError::ComponentTooLarge {
            size,
            max: max_size,
            class: whose,
        });
    }
    let limits = manifest.effective_limits(&maxima)?;
    let needs_approval = matches!(owner, Owner::Organization(_))
        && matches!(kind, PluginKind::Provider | PluginKind::Tool)
        && !manifest.outbound.hosts.is_empty();
    // Asked to activate a version that must wait for approval: it is
    // stored, not activated; the answer says it awaits approval.
    let activate = activate && !needs_approval;

    // Inspected (world, imports, code size) before compiling; compiled in
    // memory within the compile slots; written to the compile cache only
    // once the version is stored, so a refused upload leaves nothing behind.
    let wait = registry.compile_wait;
    let staged = state
        .plugins
        .runtime()
        .stage(
            &upload.component,
            StageRequest {
                kind,
                tenant: owner.org_id(),
                wait,
                class: manifest.class.as_deref(),
            },
        )
        .await
        .map_err(|error| LifecycleError::Load { error, wait })?;
    let plugin = staged.plugin();
    manifest.check_against(plugin)?;

    let now = now_ms();
    let mut tx = match owner.org_id() {
        // An organization's uploads store one at a time (on PostgreSQL too),
        // so two of them cannot both fit a quota that has room for one.
        Some(org) => {
            let mut tx = state
                .db
                .tenant_serialised(org, &format!("plugin-storage:{org}"))
                .await?;
            check_quota(&mut tx, org, upload.component.len(), registry).await?;
            tx
        }
        None => begin(state, actor.who).await?,
    };
    let mut row = match store::plugins::find(&mut tx, &scope, &manifest.name).await? {
        Some(row) => row,
        None => {
            let row = PluginRow {
                id: new_id(),
                org_id: owner.org_id().map(str::to_string),
                scope: scope.clone(),
                name: manifest.name.clone(),
                kind,
                status: PluginStatus::Active,
                active_version: None,
                previous_version: None,
                builtin: false,
                created_at: now,
                updated_at: now,
            };
            store::plugins::insert_plugin(&mut tx, &row).await?;
            row
        }
    };
    store::plugins::insert_blob(&mut tx, &sha256, &upload.component, now).await?;
    let version = VersionRow {
        id: new_id(),
        plugin_id: row.id.clone(),
        org_id: row.org_id.clone(),
        version: manifest.version.clone(),
        sha256: sha256.clone(),
        size_bytes: i64::try_from(upload.component.len()).unwrap_or(i64::MAX),
        description: manifest.description.clone(),
        manifest: upload.manifest.clone(),
        info: serde_json::to_string(plugin.info()).unwrap_or_default(),
        outbound_hosts: serde_json::to_string(&manifest.outbound.hosts).unwrap_or_default(),
        limits: serde_json::to_string(&limits).unwrap_or_default(),
        config_schema: manifest.config_schema_json().map(|v| v.to_string()),
        signed: i64::from(signed),
        hosts_approved_by: (!needs_approval).then(|| PLATFORM.to_string()),
        hosts_approved_at: (!needs_approval).then_some(now),
        uploaded_by: Some(actor.who.user_id.clone()),
        uploaded_at: now,
        rejected_by: None,
        rejected_at: None,
        rejection_reason: None,
    };
    store::plugins::insert_version(&mut tx, &version)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                LifecycleError::VersionExists(format!(
                    "{} {} was uploaded concurrently",
                    manifest.name, manifest.version
                ))
            } else {
                e.into()
            }
        })?;
    audit::record(
        &mut tx,
        actor.who,
        actor.client,
        "plugin_uploaded",
        json!({ "plugin": row.name, "version": version.version, "scope": scope_label(row.org_id.as_deref()),
                "sha256": sha256, "size_bytes": version.size_bytes, "signed": signed,
                "outbound_hosts": manifest.outbound.hosts, "awaiting_approval": needs_approval }),
    )
    .await?;
    if activate {
        switch_to(&mut row, &version.version, now);
        store::plugins::update_plugin(&mut tx, &row).await?;
        audit::record(
            &mut tx,
            actor.who,
            actor.client,
            "plugin_activated",
            json!({ "plugin": row.name, "version": version.version, "previous_version": row.previous_version }),
        )
        .await?;
        crate::webhooks::events::plugin_activated(
            &mut tx,
            row.org_id.as_deref(),
            &row.name,
            &version.version,
            row.previous_version.as_deref(),
            false,
        )
        .await?;
        state
            .signals
            .notify(&mut tx, &Signal::PluginsChanged)
            .await?;
    }
    tx.commit().await?;
    // Stored: its compiled code may enter the cache now, and this instance
    // keeps it so that going live does not load it again.
    state.plugins.registry().keep(staged.commit().await);
    if activate {
        make_live(state).await?;
    }
    tracing::info!(plugin = %row.name, version = %version.version, scope = %scope, activated = activate, "plugin uploaded");
    Ok(Published {
        plugin: row,
        version,
    })
}

/// Make `version` of plugin `name` the one calls use, on every instance.
/// Calls already running finish on the version they started with.
pub async fn activate(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
    version: &str,
) -> Result<PluginRow, LifecycleError> {
    switch_version(state, actor, name, scope, Switch::To(version)).await
}

/// Go back to the previously active version (a second rollback returns).
pub async fn rollback(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
) -> Result<PluginRow, LifecycleError> {
    switch_version(state, actor, name, scope, Switch::Back).await
}

/// Which version [`switch_version`] makes active.
#[derive(Debug, Clone, Copy)]
enum Switch<'a> {
    /// This one (an activation; already active changes nothing).
    To(&'a str),
    /// The previously active one (a rollback).
    Back,
}

/// Resolve the plugin, check the caller may manage it and the version may
/// go live, make the version active, audit the change and make it live.
async fn switch_version(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
    switch: Switch<'_>,
) -> Result<PluginRow, LifecycleError> {
    let mut tx = begin(state, actor.who).await?;
    let mut row = resolve(&mut tx, actor.who, name, scope).await?;
    may_manage(actor.who, &row)?;
    let to = match switch {
        Switch::To(version) => version.to_string(),
        Switch::Back => row.previous_version.clone().ok_or_else(|| {
            LifecycleError::NoPreviousVersion(format!("`{name}` has no previously active version"))
        })?,
    };
    let v = store::plugins::version(&mut tx, &row.id, &to)
        .await?
        .ok_or_else(|| match switch {
            Switch::To(_) => LifecycleError::NotFound("plugin version"),
            Switch::Back => {
                LifecycleError::NoPreviousVersion("the previous version was deleted".into())
            }
        })?;
    check_activatable(&state.config.registry, &v)?;
    if let Switch::To(version) = switch
        && row.active_version.as_deref() == Some(version)
    {
        tx.commit().await?;
        return Ok(row);
    }
    let from = row.active_version.clone();
    switch_to(&mut row, &to, now_ms());
    store::plugins::update_plugin(&mut tx, &row).await?;
    let scope = scope_label(row.org_id.as_deref());
    let (action, details) = match switch {
        Switch::To(_) => (
            "plugin_activated",
            json!({ "plugin": row.name, "scope": scope, "version": to, "previous_version": from }),
        ),
        Switch::Back => (
            "plugin_rolled_back",
            json!({ "plugin": row.name, "scope": scope, "from_version": from, "to_version": to }),
        ),
    };
    audit::record(&mut tx, actor.who, actor.client, action, details).await?;
    let rollback = matches!(switch, Switch::Back);
    crate::webhooks::events::plugin_activated(
        &mut tx,
        row.org_id.as_deref(),
        &row.name,
        &to,
        from.as_deref(),
        rollback,
    )
    .await?;
    commit_live(state, tx).await?;
    Ok(row)
}

/// Stop every use of the plugin (integrations and policies naming it fall
/// back or report it missing) until it is enabled again.
pub async fn disable(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
) -> Result<PluginRow, LifecycleError> {
    set_status(state, actor, name, scope, PluginStatus::Disabled).await
}

/// Use the plugin again.
pub async fn enable(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
) -> Result<PluginRow, LifecycleError> {
    set_status(state, actor, name, scope, PluginStatus::Active).await
}

async fn set_status(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
    status: PluginStatus,
) -> Result<PluginRow, LifecycleError> {
    let mut tx = begin(state, actor.who).await?;
    let mut row = resolve(&mut tx, actor.who, name, scope).await?;
    may_manage(actor.who, &row)?;
    if status == PluginStatus::Disabled && row.org_id.is_none() && row.name == DEFAULT_ROUTER {
        return Err(LifecycleError::DefaultRouter);
    }
    if row.status == status {
        tx.commit().await?;
        return Ok(row);
    }
    row.status = status;
    row.updated_at = now_ms();
    store::plugins::update_plugin(&mut tx, &row).await?;
    let action = match status {
        PluginStatus::Active => "plugin_enabled",
        PluginStatus::Disabled => "plugin_disabled",
    };
    audit::record(
        &mut tx,
        actor.who,
        actor.client,
        action,
        json!({ "plugin": row.name, "scope": scope_label(row.org_id.as_deref()) }),
    )
    .await?;
    commit_live(state, tx).await?;
    Ok(row)
}

/// Delete a version that is not active (its bytes go when no version
/// refers to them; the plugin goes with its last version).
pub async fn delete_version(
    state: &AppState,
    actor: Actor<'_>,
    name: &str,
    scope: Option<Scope>,
    version: &str,
) -> Result<(), LifecycleError> {
    let mut tx = begin(state, actor.who).await?;
    let mut row = resolve(&mut tx, actor.who, name, scope).await?;
    may_manage(actor.who, &row)?;
    let v = store::plugins::version(&mut tx, &row.id, version)
        .await?
        .ok_or(LifecycleError::NotFound("plugin version"))?;
    if row.active_version.as_deref() == Some(version) {
        return Err(LifecycleError::VersionActive {
            name: name.to_string(),
            version: version.to_string(),
        });
    }
    if v.uploaded_by.is_none() && row.builtin {
        return Err(LifecycleError::BuiltinVersion);
    }
    store::plugins::delete_version(&mut tx, &v.id).await?;
    state
        .plugins
        .stats()
        .forget(row.org_id.as_deref(), &row.name, version);
    if row.previous_version.as_deref() == Some(version) {
        row.previous_version = None;
        row.updated_at = now_ms();
        store::plugins::update_plugin(&mut tx, &row).await?;
    }
    if store::plugins::versions(&mut tx, &row.id).await?.is_empty() {
        store::plugins::delete_plugin(&mut tx, &row.id).await?;
    }
    audit::record(
        &mut tx,
        actor.who,
        actor.client,
        "plugin_version_deleted",
        json!({ "plugin": row.name, "scope": scope_label(row.org_id.as_deref()), "version": version,
                "sha256": v.sha256 }),
    )
    .await?;
    tx.commit().await?;
    // Whether another version (perhaps another tenant's, which row-level
    // security hides from this transaction) still uses the bytes is a
    // cross-tenant question: asked by the platform, after the deletion.
    let mut platform = state.db.platform().await?;
    store::plugins::delete_blob_if_unused(&mut platform, &v.sha256).await?;
    platform.commit().await?;
    Ok(())
}

/// Approve a tenant provider version's outbound hosts (the caller is a
/// platform admin); the organization may then activate it. Approving an
/// approved version changes nothing.
pub async fn approve(
    state: &AppState,
    actor: Actor<'_>,
    version_id: &str,
) -> Result<(PluginRow, VersionRow), LifecycleError> {
    let mut tx = state.db.platform().await?;
    let (row, mut v) = version_and_plugin(&mut tx, version_id).await?;
    if v.rejected_by.is_some() {
        return Err(LifecycleError::VersionRejected(v.rejection_reason));
    }
    if v.hosts_approved_by.is_none() {
        let now = now_ms();
        let user_id = &actor.who.user_id;
        store::plugins::approve_hosts(&mut tx, &v.id, user_id, now).await?;
        v.hosts_approved_by = Some(user_id.clone());
        v.hosts_approved_at = Some(now);
        audit_decision(&mut tx, actor, &row, &v, "plugin_hosts_approved", None).await?;
    }
    tx.commit().await?;
    Ok((row, v))
}

/// Reject a tenant provider version's outbound hosts (the caller is a
/// platform admin), with an optional reason: the version leaves the
/// approval queue and can never be approved or activated; the platform's
/// and the organization's audit logs record it. Rejecting a rejected
/// version changes nothing; an approved one cannot be rejected.
pub async fn reject(
    state: &AppState,
    actor: Actor<'_>,
    version_id: &str,
    reason: Option<String>,
) -> Result<(PluginRow, VersionRow), LifecycleError> {
    let mut tx = state.db.platform().await?;
    let (row, mut v) = version_and_plugin(&mut tx, version_id).await?;
    if v.rejected_by.is_none() {
        if v.hosts_approved_by.is_some() {
            return Err(LifecycleError::AlreadyApproved);
        }
        let now = now_ms();
        let user_id = &actor.who.user_id;
        store::plugins::reject_hosts(&mut tx, &v.id, user_id, reason.as_deref(), now).await?;
        v.rejected_by = Some(user_id.clone());
        v.rejected_at = Some(now);
        v.rejection_reason = reason;
        let reason = json!(v.rejection_reason);
        audit_decision(
            &mut tx,
            actor,
            &row,
            &v,
            "plugin_version_rejected",
            Some(reason),
        )
        .await?;
    }
    tx.commit().await?;
    Ok((row, v))
}

/// Version `version_id` and its plugin, for a platform admin's decision
/// on it.
async fn version_and_plugin(
    tx: &mut Tx,
    version_id: &str,
) -> Result<(PluginRow, VersionRow), LifecycleError> {
    let v = store::plugins::version_by_id(tx, version_id)
        .await?
        .ok_or(LifecycleError::NotFound("plugin version"))?;
    let row = store::plugins::plugin_by_id(tx, &v.plugin_id)
        .await?
        .ok_or(LifecycleError::NotFound("plugin version"))?;
    Ok((row, v))
}

/// Audit a platform admin's decision on a tenant's version `v` of `row`
/// (with the rejection's `reason`, if any) in the platform's log and, so
/// the tenant sees it, in the organization's.
async fn audit_decision(
    tx: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    row: &PluginRow,
    v: &VersionRow,
    action: &str,
    reason: Option<Value>,
) -> Result<(), sqlx::Error> {
    let mut payload = json!({ "plugin": row.name, "version": v.version, "organization_id": row.org_id,
                              "outbound_hosts": serde_json::from_str::<Value>(&v.outbound_hosts).unwrap_or(Value::Null) });
    if let Some(reason) = reason {
        payload["reason"] = reason;
    }
    audit::record(tx, actor.who, actor.client, action, payload.clone()).await?;
    if let Some(org) = &row.org_id {
        audit::record_for(
            tx,
            Some(org),
            Some(&actor.who.user_id),
            actor.client,
            action,
            payload,
        )
        .await?;
    }
    Ok(())
}

/// `: REASON` when there is one (the rejection error's tail).
fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

/// The plugin `name` as `who` sees it: the organization's own, else the
/// platform's (`Scope::Platform` skips the former, `Scope::Organization`
/// the latter).
pub async fn resolve(
    tx: &mut Tx,
    who: &Principal,
    name: &str,
    scope: Option<Scope>,
) -> Result<PluginRow, LifecycleError> {
    if scope != Some(Scope::Platform)
        && let Some(row) = store::plugins::find(tx, &who.org_id, name).await?
    {
        return Ok(row);
    }
    if scope == Some(Scope::Organization) {
        return Err(LifecycleError::NotFound("plugin"));
    }
    store::plugins::find(tx, PLATFORM, name)
        .await?
        .ok_or(LifecycleError::NotFound("plugin"))
}

/// `platform` for a platform plugin, `organization` for a tenant's.
pub fn scope_label(org_id: Option<&str>) -> &'static str {
    match org_id {
        None => "platform",
        Some(_) => "organization",
    }
}

/// Whether the upload carries a signature that verifies against a trusted
/// key; a signature that does not verify is refused.
fn verify_signature(registry: &RegistryConfig, upload: &Upload) -> Result<bool, LifecycleError> {
    let Some(text) = &upload.signature else {
        return Ok(false);
    };
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .ok_or(LifecycleError::BadSignature(
            "the signature must be 64 bytes in base64 or hex",
        ))?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    let verified = registry.trusted_keys.iter().any(|key| {
        ed25519_dalek::VerifyingKey::from_bytes(key)
            .is_ok_and(|k| k.verify_strict(&upload.component, &signature).is_ok())
    });
    if verified {
        Ok(true)
    } else {
        Err(LifecycleError::BadSignature(
            "the signature does not verify against any trusted key",
        ))
    }
}

/// Refuse an organization's upload of `size` bytes that would take its
/// stored components beyond its quota.
async fn check_quota(
    tx: &mut Tx,
    org_id: &str,
    size: usize,
    registry: &RegistryConfig,
) -> Result<(), LifecycleError> {
    let used = store::plugins::org_component_bytes(tx, org_id).await?;
    let used = u64::try_from(used).unwrap_or(0);
    let adding = u64::try_from(size).unwrap_or(u64::MAX);
    if used.saturating_add(adding) > registry.org_quota_bytes {
        return Err(LifecycleError::QuotaExceeded {
            used,
            adding,
            total: used.saturating_add(adding),
            quota: registry.org_quota_bytes,
        });
    }
    Ok(())
}

/// Refuse a version that may not go live: unapproved hosts, or unsigned
/// while trusted keys are configured.
fn check_activatable(registry: &RegistryConfig, v: &VersionRow) -> Result<(), LifecycleError> {
    if v.rejected_by.is_some() {
        return Err(LifecycleError::VersionRejected(v.rejection_reason.clone()));
    }
    if v.hosts_approved_by.is_none() {
        return Err(LifecycleError::HostsNotApproved);
    }
    if !registry.trusted_keys.is_empty() && v.signed == 0 && v.uploaded_by.is_some() {
        return Err(LifecycleError::SignatureRequired);
    }
    Ok(())
}

/// Make `version` active, remembering the one it replaces.
fn switch_to(row: &mut PluginRow, version: &str, now: i64) {
    row.previous_version = row.active_version.replace(version.to_string());
    row.updated_at = now;
}

/// A transaction for plugin changes: platform admins may change platform
/// rows; everyone else works inside their organization.
async fn begin(state: &AppState, who: &Principal) -> Result<Tx, LifecycleError> {
    Ok(if who.is_platform_admin() {
        state.db.platform().await?
    } else {
        state.db.tenant(&who.org_id).await?
    })
}

/// Platform plugins are the platform admins'; an organization's are its
/// org_admins'.
fn may_manage(who: &Principal, row: &PluginRow) -> Result<(), LifecycleError> {
    let allowed = match &row.org_id {
        None => who.require_platform_admin(),
        Some(_) => who.require(Permission::ManagePlugins),
    };
    Ok(allowed?)
}

/// Commit a change of the active set and make it live: on this instance
/// before returning, on the others by the signal sent with the commit.
async fn commit_live(state: &AppState, mut tx: Tx) -> Result<(), LifecycleError> {
    state
        .signals
        .notify(&mut tx, &Signal::PluginsChanged)
        .await?;
    tx.commit().await?;
    make_live(state).await
}

/// Reload the active set on this instance now.
async fn make_live(state: &AppState) -> Result<(), LifecycleError> {
    match state.plugins.registry().refresh(&state.db).await {
        Ok(changed) => {
            if changed {
                state.dispatcher.forget_all_catalogs();
            }
            Ok(())
        }
        Err(e) => Err(LifecycleError::Reload(e.to_string())),
    }
}
