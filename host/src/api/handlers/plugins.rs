//! The plugin registry's API: upload (validated before anything is
//! stored), list, show, activate, roll back, disable, enable, delete a
//! version, approve a tenant provider's outbound hosts, and per-version
//! statistics. Every change is audited and goes live on every instance
//! (this one before the response, the others on the signal sent with the
//! commit).

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use vel_runtime::{LoadError, PluginKind, SlotsBusy, StageRequest};

use crate::api::error::{ApiError, ErrorBody, FieldErrors, is_read_timeout};
use crate::api::extract::{ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::check_destination;
use crate::audit;
use crate::auth::{Principal, Role};
use crate::config::RegistryConfig;
use crate::orchestrator::dispatch::DEFAULT_ROUTER;
use crate::orchestrator::signals::Signal;
use crate::plugins::manifest::{self, Manifest};
use crate::plugins::registry::{Owner, sha256_hex};
use crate::plugins::stats::VersionStats;
use crate::state::AppState;
use crate::store::plugins::{PLATFORM, PluginRow, VersionRow};
use crate::store::{self, Tx, new_id, now_ms, to_rfc3339};

/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest signature part accepted (base64 or hex of 64 bytes, with slack).
const MAX_SIGNATURE_BYTES: usize = 1024;
/// Room in an upload's body for the multipart boundaries and part headers.
const FORM_OVERHEAD_BYTES: usize = 16 * 1024;

/// The largest body `POST /api/plugins` reads: a component of the largest
/// accepted size, a manifest, a signature and the form's own framing.
pub fn upload_body_limit(registry: &RegistryConfig) -> usize {
    registry
        .max_upload_bytes
        .saturating_add(MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + FORM_OVERHEAD_BYTES)
}

/// A plugin as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// Name, unique within its scope.
    pub name: String,
    /// `provider`, `router` or `condition`.
    pub kind: String,
    /// `platform` (every organization may use it) or `organization`.
    pub scope: String,
    /// The owning organization, for organization plugins.
    pub organization_id: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// The version calls use.
    pub active_version: Option<String>,
    /// The version a rollback returns to.
    pub previous_version: Option<String>,
    /// Ships with the server.
    pub builtin: bool,
    /// The version this instance is serving now (equal to
    /// `active_version` once the change has reached it; absent while
    /// disabled).
    pub live_version: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Every version (on `GET /api/plugins/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionView>>,
}

impl PluginView {
    fn new(state: &AppState, row: &PluginRow) -> PluginView {
        let owner = match &row.org_id {
            None => Owner::Platform,
            Some(org) => Owner::Organization(org.clone()),
        };
        PluginView {
            live_version: state
                .plugins
                .registry()
                .live(&owner, &row.name)
                .map(|d| d.version().to_string()),
            name: row.name.clone(),
            kind: row.kind.clone(),
            scope: scope_label(row.org_id.as_deref()).into(),
            organization_id: row.org_id.clone(),
            status: row.status.clone(),
            active_version: row.active_version.clone(),
            previous_version: row.previous_version.clone(),
            builtin: row.builtin != 0,
            created_at: to_rfc3339(row.created_at),
            updated_at: to_rfc3339(row.updated_at),
            versions: None,
        }
    }
}

/// One uploaded version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// Version id (used by approvals).
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Semantic version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// `platform` or `organization`.
    pub scope: String,
    /// Owning organization.
    pub organization_id: Option<String>,
    /// Of the component bytes.
    pub sha256: String,
    /// Component size.
    pub size_bytes: i64,
    /// From the manifest.
    pub description: String,
    /// Hosts a provider may connect to.
    pub outbound_hosts: Vec<String>,
    /// False while a tenant provider's hosts await a platform admin.
    pub hosts_approved: bool,
    /// The limits its calls run under.
    #[schema(value_type = Object)]
    pub limits: Value,
    /// JSON schema of its settings.
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<Value>,
    /// Its signature verified against a trusted key.
    pub signed: bool,
    /// Uploader (absent for built-ins).
    pub uploaded_by: Option<String>,
    /// RFC 3339.
    pub uploaded_at: String,
    /// Whether calls use it now.
    pub active: bool,
    /// Why this instance could not load it (its compilation or `info()`
    /// failed when the registry loaded it), in `GET /api/plugins/{name}`;
    /// absent when it loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

impl VersionView {
    fn new(plugin: &PluginRow, v: &VersionRow) -> VersionView {
        VersionView {
            id: v.id.clone(),
            plugin: plugin.name.clone(),
            version: v.version.clone(),
            kind: plugin.kind.clone(),
            scope: scope_label(plugin.org_id.as_deref()).into(),
            organization_id: plugin.org_id.clone(),
            sha256: v.sha256.clone(),
            size_bytes: v.size_bytes,
            description: v.description.clone(),
            outbound_hosts: serde_json::from_str(&v.outbound_hosts).unwrap_or_default(),
            hosts_approved: v.hosts_approved_by.is_some(),
            limits: serde_json::from_str(&v.limits).unwrap_or(Value::Null),
            config_schema: v
                .config_schema
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            signed: v.signed != 0,
            uploaded_by: v.uploaded_by.clone(),
            uploaded_at: to_rfc3339(v.uploaded_at),
            active: plugin.active_version.as_deref() == Some(v.version.as_str()),
            load_error: None,
        }
    }
}

/// The plugins the caller can see.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// The platform's and the caller's organization's, by name.
    pub items: Vec<PluginView>,
}

/// Versions awaiting approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    /// Oldest first.
    pub items: Vec<VersionView>,
}

/// A plugin's call statistics on this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginStatsView {
    /// Plugin name.
    pub name: String,
    /// `platform` or `organization`.
    pub scope: String,
    /// Per version.
    pub versions: Vec<VersionStats>,
}

/// The multipart form of an upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The component (`.wasm`), at most `VEL_PLUGIN_MAX_UPLOAD_BYTES`.
    #[schema(value_type = String, format = Binary)]
    component: Vec<u8>,
    /// The manifest (`vel-plugin.toml` text).
    manifest: String,
    /// Base64 (or hex) ed25519 signature of the component bytes.
    signature: Option<String>,
}

/// Options of an upload.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadOptions {
    /// Activate the version at once.
    #[serde(default)]
    pub activate: bool,
    /// `platform` (platform admins; their default) or `organization`.
    #[serde(default)]
    #[param(inline)]
    pub scope: Option<ScopeParam>,
}

/// Which plugin a name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeParam {
    /// The platform's.
    Platform,
    /// The caller's organization's.
    Organization,
}

/// Scope selection on a plugin route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// `platform` to mean the platform's plugin even when the organization
    /// has one of the same name.
    #[serde(default)]
    #[param(inline)]
    pub scope: Option<ScopeParam>,
}

fn scope_label(org_id: Option<&str>) -> &'static str {
    match org_id {
        None => "platform",
        Some(_) => "organization",
    }
}

/// Upload a plugin version: validated (size, manifest, signature, names,
/// the organization's storage quota, limits, hosts, then the component's
/// world, imports and code size without compiling it, then its compilation
/// within the compile slots and timeout and its `info()`) before anything
/// is stored; the same bytes are stored once.
#[utoipa::path(post, path = "/api/plugins", tag = "plugins", params(UploadOptions),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = VersionView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiQuery(options): ApiQuery<UploadOptions>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    let platform = match options.scope {
        Some(ScopeParam::Platform) => true,
        Some(ScopeParam::Organization) => false,
        None => p.is_platform_admin(),
    };
    if platform {
        p.require_platform_admin()?;
    } else {
        p.require(Role::OrgAdmin)?;
    }
    let multipart = multipart.map_err(|e| ApiError::bad_request("invalid_form", e.body_text()))?;
    let form = read_form(multipart, &state.config.registry).await?;
    let manifest = Manifest::parse(&form.manifest)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
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
    let kind = manifest
        .plugin_kind()
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let owner = if platform {
        Owner::Platform
    } else {
        Owner::Organization(p.org_id.clone())
    };
    let signed = verify_signature(&state, &form)?;
    if options.activate && !state.config.registry.trusted_keys.is_empty() && !signed {
        return Err(ApiError::bad_request(
            "signature_required",
            "trusted signing keys are configured: only a signed component can be activated",
        ));
    }
    let sha256 = sha256_hex(&form.component);
    let registry = &state.config.registry;

    // Cheap checks against what is stored, before compiling.
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let scope = owner.org_id().unwrap_or(PLATFORM).to_string();
    let existing = store::plugins::find(&mut tx, &scope, &manifest.name).await?;
    if let Owner::Organization(_) = owner
        && store::plugins::find(&mut tx, PLATFORM, &manifest.name)
            .await?
            .is_some()
    {
        return Err(ApiError::conflict_code(
            "name_taken",
            format!(
                "`{}` is the name of a platform plugin; choose another name",
                manifest.name
            ),
        ));
    }
    if let Some(row) = &existing {
        if row.kind != manifest.kind {
            return Err(ApiError::conflict_code(
                "kind_mismatch",
                format!(
                    "`{}` is a {} plugin, not a {}",
                    row.name, row.kind, manifest.kind
                ),
            ));
        }
        if let Some(v) = store::plugins::version(&mut tx, &row.id, &manifest.version).await? {
            let what = if v.sha256 == sha256 {
                "was already uploaded"
            } else {
                "already exists with other bytes; versions are immutable, upload a new version"
            };
            return Err(ApiError::conflict_code(
                "version_exists",
                format!("{} {} {what}", manifest.name, manifest.version),
            ));
        }
    }
    if let Some(org) = owner.org_id() {
        check_quota(&mut tx, org, form.component.len(), registry).await?;
    }
    tx.rollback().await?;
    let maxima = state
        .plugins
        .runtime()
        .limits(kind, owner.profile())
        .clone();
    let limits = manifest
        .effective_limits(&maxima)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let needs_approval = matches!(owner, Owner::Organization(_))
        && kind == PluginKind::Provider
        && !manifest.outbound.hosts.is_empty();
    if options.activate && needs_approval {
        return Err(ApiError::conflict_code(
            "hosts_not_approved",
            "an organization's provider can be activated only after a platform admin approves its outbound hosts; upload without activating",
        ));
    }

    // Inspected (world, imports, code size) before compiling; compiled in
    // memory within the compile slots; written to the compile cache only
    // once the version is stored, so a refused upload leaves nothing behind.
    let wait = Duration::from_millis(registry.compile_wait_ms);
    let staged = state
        .plugins
        .runtime()
        .stage(
            &form.component,
            StageRequest {
                kind,
                tenant: owner.org_id(),
                wait,
            },
        )
        .await
        .map_err(|e| load_error(e, wait))?;
    let plugin = staged.plugin();
    manifest
        .check_against(plugin)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;

    let now = now_ms();
    let mut tx = match owner.org_id() {
        // An organization's uploads store one at a time (on PostgreSQL too),
        // so two of them cannot both fit a quota that has room for one.
        Some(org) => {
            let mut tx = state
                .db
                .tenant_serialised(org, &format!("plugin-storage:{org}"))
                .await?;
            check_quota(&mut tx, org, form.component.len(), registry).await?;
            tx
        }
        None => begin(&state, &p).await?,
    };
    let mut row = match store::plugins::find(&mut tx, &scope, &manifest.name).await? {
        Some(row) => row,
        None => {
            let row = PluginRow {
                id: new_id(),
                org_id: owner.org_id().map(str::to_string),
                scope: scope.clone(),
                name: manifest.name.clone(),
                kind: manifest.kind.clone(),
                status: "active".into(),
                active_version: None,
                previous_version: None,
                builtin: 0,
                created_at: now,
                updated_at: now,
            };
            store::plugins::insert_plugin(&mut tx, &row).await?;
            row
        }
    };
    store::plugins::insert_blob(&mut tx, &sha256, &form.component, now).await?;
    let version = VersionRow {
        id: new_id(),
        plugin_id: row.id.clone(),
        org_id: row.org_id.clone(),
        version: manifest.version.clone(),
        sha256: sha256.clone(),
        size_bytes: i64::try_from(form.component.len()).unwrap_or(i64::MAX),
        description: manifest.description.clone(),
        manifest: form.manifest.clone(),
        info: serde_json::to_string(plugin.info()).unwrap_or_default(),
        outbound_hosts: serde_json::to_string(&manifest.outbound.hosts).unwrap_or_default(),
        limits: serde_json::to_string(&limits).unwrap_or_default(),
        config_schema: manifest.config_schema_json().map(|v| v.to_string()),
        signed: i64::from(signed),
        hosts_approved_by: (!needs_approval).then(|| PLATFORM.to_string()),
        hosts_approved_at: (!needs_approval).then_some(now),
        uploaded_by: Some(p.user_id.clone()),
        uploaded_at: now,
    };
    store::plugins::insert_version(&mut tx, &version)
        .await
        .map_err(|e| {
            let taken = format!(
                "{} {} was uploaded concurrently",
                manifest.name, manifest.version
            );
            ApiError::unique_or(e, ApiError::conflict_code("version_exists", taken))
        })?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "plugin_uploaded",
        json!({ "plugin": row.name, "version": version.version, "scope": scope_label(row.org_id.as_deref()),
                "sha256": sha256, "size_bytes": version.size_bytes, "signed": signed,
                "outbound_hosts": manifest.outbound.hosts, "awaiting_approval": needs_approval }),
    )
    .await?;
    if options.activate {
        switch_to(&mut row, &version.version, now);
        store::plugins::update_plugin(&mut tx, &row).await?;
        audit::record(
            &mut tx,
            &p,
            &client,
            "plugin_activated",
            json!({ "plugin": row.name, "version": version.version, "previous_version": row.previous_version }),
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
    if options.activate {
        make_live(&state).await?;
    }
    tracing::info!(plugin = %row.name, version = %version.version, scope = %scope, activated = options.activate, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(VersionView::new(&row, &version))))
}

/// The platform's plugins and the caller's organization's own.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, body = PluginList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<PluginList>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let rows = store::plugins::list_visible(&mut tx, &p.org_id).await?;
    tx.commit().await?;
    Ok(Json(PluginList {
        items: rows.iter().map(|r| PluginView::new(&state, r)).collect(),
    }))
}

/// One plugin with its versions.
#[utoipa::path(get, path = "/api/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ScopeQuery),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginView>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let row = resolve(&mut tx, &p, &name, q.scope).await?;
    let versions = store::plugins::versions(&mut tx, &row.id).await?;
    tx.commit().await?;
    let mut view = PluginView::new(&state, &row);
    let registry = state.plugins.registry();
    view.versions = Some(
        versions
            .iter()
            .map(|v| VersionView {
                load_error: registry.load_failure(&v.sha256),
                ..VersionView::new(&row, v)
            })
            .collect(),
    );
    Ok(Json(view))
}

/// Make a version the one calls use, on every instance, without restart.
/// Calls already running finish on the version they started with.
#[utoipa::path(post, path = "/api/plugins/{name}/versions/{version}/activate", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ("version" = String, Path, description = "Version"), ScopeQuery),
    responses((status = 200, body = PluginView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn activate(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginView>, ApiError> {
    let mut tx = begin(&state, &p).await?;
    let mut row = resolve(&mut tx, &p, &name, q.scope).await?;
    may_manage(&p, &row)?;
    let v = store::plugins::version(&mut tx, &row.id, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin version"))?;
    check_activatable(&state, &v)?;
    if row.active_version.as_deref() == Some(version.as_str()) {
        tx.commit().await?;
        return Ok(Json(PluginView::new(&state, &row)));
    }
    switch_to(&mut row, &version, now_ms());
    store::plugins::update_plugin(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "plugin_activated",
        json!({ "plugin": row.name, "scope": scope_label(row.org_id.as_deref()), "version": version,
                "previous_version": row.previous_version }),
    )
    .await?;
    commit_live(&state, tx).await?;
    Ok(Json(PluginView::new(&state, &row)))
}

/// Go back to the previously active version (a second rollback returns).
#[utoipa::path(post, path = "/api/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ScopeQuery),
    responses((status = 200, body = PluginView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginView>, ApiError> {
    let mut tx = begin(&state, &p).await?;
    let mut row = resolve(&mut tx, &p, &name, q.scope).await?;
    may_manage(&p, &row)?;
    let Some(previous) = row.previous_version.clone() else {
        return Err(ApiError::conflict_code(
            "no_previous_version",
            format!("`{name}` has no previously active version"),
        ));
    };
    let v = store::plugins::version(&mut tx, &row.id, &previous)
        .await?
        .ok_or_else(|| {
            ApiError::conflict_code("no_previous_version", "the previous version was deleted")
        })?;
    check_activatable(&state, &v)?;
    let from = row.active_version.clone();
    switch_to(&mut row, &previous, now_ms());
    store::plugins::update_plugin(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "plugin_rolled_back",
        json!({ "plugin": row.name, "scope": scope_label(row.org_id.as_deref()), "from_version": from,
                "to_version": previous }),
    )
    .await?;
    commit_live(&state, tx).await?;
    Ok(Json(PluginView::new(&state, &row)))
}

/// Stop every use of the plugin (integrations and policies naming it fall
/// back or report it missing) until it is enabled again.
#[utoipa::path(post, path = "/api/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ScopeQuery),
    responses((status = 200, body = PluginView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginView>, ApiError> {
    set_status(state, p, client, name, q.scope, "disabled").await
}

/// Use the plugin again.
#[utoipa::path(post, path = "/api/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ScopeQuery),
    responses((status = 200, body = PluginView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginView>, ApiError> {
    set_status(state, p, client, name, q.scope, "active").await
}

async fn set_status(
    state: AppState,
    p: Principal,
    client: ClientInfo,
    name: String,
    scope: Option<ScopeParam>,
    status: &str,
) -> Result<Json<PluginView>, ApiError> {
    let mut tx = begin(&state, &p).await?;
    let mut row = resolve(&mut tx, &p, &name, scope).await?;
    may_manage(&p, &row)?;
    if status == "disabled" && row.org_id.is_none() && row.name == DEFAULT_ROUTER {
        return Err(ApiError::conflict_code(
            "default_router",
            "the platform's default router is every routing fallback and cannot be disabled",
        ));
    }
    if row.status == status {
        tx.commit().await?;
        return Ok(Json(PluginView::new(&state, &row)));
    }
    row.status = status.to_string();
    row.updated_at = now_ms();
    store::plugins::update_plugin(&mut tx, &row).await?;
    let action = if status == "active" {
        "plugin_enabled"
    } else {
        "plugin_disabled"
    };
    audit::record(
        &mut tx,
        &p,
        &client,
        action,
        json!({ "plugin": row.name, "scope": scope_label(row.org_id.as_deref()) }),
    )
    .await?;
    commit_live(&state, tx).await?;
    Ok(Json(PluginView::new(&state, &row)))
}

/// Delete a version that is not active (its bytes go when no version
/// refers to them; the plugin goes with its last version).
#[utoipa::path(delete, path = "/api/plugins/{name}/versions/{version}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ("version" = String, Path, description = "Version"), ScopeQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_version(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<StatusCode, ApiError> {
    let mut tx = begin(&state, &p).await?;
    let mut row = resolve(&mut tx, &p, &name, q.scope).await?;
    may_manage(&p, &row)?;
    let v = store::plugins::version(&mut tx, &row.id, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin version"))?;
    if row.active_version.as_deref() == Some(version.as_str()) {
        return Err(ApiError::conflict_code(
            "version_active",
            format!("{name} {version} is the active version; activate another first"),
        ));
    }
    if v.uploaded_by.is_none() && row.builtin != 0 {
        return Err(ApiError::conflict_code(
            "builtin_version",
            "a built-in version ships with the server and cannot be deleted",
        ));
    }
    store::plugins::delete_version(&mut tx, &v.id).await?;
    state
        .plugins
        .stats()
        .forget(row.org_id.as_deref(), &row.name, &version);
    if row.previous_version.as_deref() == Some(version.as_str()) {
        row.previous_version = None;
        row.updated_at = now_ms();
        store::plugins::update_plugin(&mut tx, &row).await?;
    }
    if store::plugins::versions(&mut tx, &row.id).await?.is_empty() {
        store::plugins::delete_plugin(&mut tx, &row.id).await?;
    }
    audit::record(
        &mut tx,
        &p,
        &client,
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
    Ok(StatusCode::NO_CONTENT)
}

/// Tenant provider versions whose outbound hosts await approval (platform admins).
#[utoipa::path(get, path = "/api/plugin-approvals", tag = "plugins",
    responses((status = 200, body = ApprovalList), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn approvals(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<ApprovalList>, ApiError> {
    p.require_platform_admin()?;
    let mut tx = state.db.platform_read().await?;
    let pending = store::plugins::pending_approvals(&mut tx).await?;
    let mut data = Vec::with_capacity(pending.len());
    for v in &pending {
        if let Some(row) = store::plugins::plugin_by_id(&mut tx, &v.plugin_id).await? {
            data.push(VersionView::new(&row, v));
        }
    }
    tx.commit().await?;
    Ok(Json(ApprovalList { items: data }))
}

/// Approve a tenant provider version's outbound hosts (platform admins);
/// the organization may then activate it.
#[utoipa::path(post, path = "/api/plugin-approvals/{id}/approve", tag = "plugins",
    params(("id" = String, Path, description = "Version id")),
    responses((status = 200, body = VersionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VersionView>, ApiError> {
    p.require_platform_admin()?;
    let mut tx = state.db.platform().await?;
    let mut v = store::plugins::version_by_id(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin version"))?;
    let row = store::plugins::plugin_by_id(&mut tx, &v.plugin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin version"))?;
    if v.hosts_approved_by.is_none() {
        let now = now_ms();
        store::plugins::approve_hosts(&mut tx, &v.id, &p.user_id, now).await?;
        v.hosts_approved_by = Some(p.user_id.clone());
        v.hosts_approved_at = Some(now);
        let payload = json!({ "plugin": row.name, "version": v.version, "organization_id": row.org_id,
                              "outbound_hosts": serde_json::from_str::<Value>(&v.outbound_hosts).unwrap_or(Value::Null) });
        audit::record(
            &mut tx,
            &p,
            &client,
            "plugin_hosts_approved",
            payload.clone(),
        )
        .await?;
        if let Some(org) = &row.org_id {
            // The tenant sees the approval in its own log too.
            audit::record_for(
                &mut tx,
                Some(org),
                Some(&p.user_id),
                &client,
                "plugin_hosts_approved",
                payload,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Json(VersionView::new(&row, &v)))
}

/// Calls, errors by kind, limit hits and p50/p95 duration per version, as
/// measured by this instance since it started.
#[utoipa::path(get, path = "/api/plugins/{name}/stats", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), ScopeQuery),
    responses((status = 200, body = PluginStatsView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<PluginStatsView>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let row = resolve(&mut tx, &p, &name, q.scope).await?;
    tx.commit().await?;
    let versions = state
        .plugins
        .stats()
        .snapshot(row.org_id.as_deref(), &row.name);
    Ok(Json(PluginStatsView {
        name: row.name.clone(),
        scope: scope_label(row.org_id.as_deref()).into(),
        versions,
    }))
}

/// The parts of an upload.
struct Form {
    component: Vec<u8>,
    manifest: String,
    signature: Option<String>,
}

/// Read the multipart form, refusing unknown parts and oversized ones as
/// they stream in, and the whole body beyond [`upload_body_limit`] (the
/// route's body limit).
async fn read_form(mut multipart: Multipart, registry: &RegistryConfig) -> Result<Form, ApiError> {
    let max_component = registry.max_upload_bytes;
    let bad = |m: String| ApiError::bad_request("invalid_form", m);
    let form_error = |what: String, e: MultipartError| {
        if is_read_timeout(&e) {
            ApiError::request_timeout()
        } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the upload is larger than {} bytes",
                upload_body_limit(registry)
            ))
        } else {
            bad(format!("{what}: {e}"))
        }
    };
    let mut component = None;
    let mut manifest = None;
    let mut signature = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| form_error("cannot read the multipart form".into(), e))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let cap = match name.as_str() {
            "component" => max_component,
            "manifest" => MAX_MANIFEST_BYTES,
            "signature" => MAX_SIGNATURE_BYTES,
            other => {
                return Err(bad(format!(
                    "unknown form part {other:?}; expected component, manifest and optionally signature"
                )));
            }
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| form_error(format!("cannot read form part `{name}`"), e))?
        {
            if bytes.len() + chunk.len() > cap {
                return Err(ApiError::too_large(format!(
                    "form part `{name}` is larger than {cap} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "component" => component = Some(bytes),
            "manifest" => {
                manifest = Some(
                    String::from_utf8(bytes)
                        .map_err(|_| bad("the manifest is not UTF-8 text".into()))?,
                );
            }
            _ => {
                signature = Some(
                    String::from_utf8(bytes)
                        .map_err(|_| bad("the signature must be base64 or hex text".into()))?
                        .trim()
                        .to_string(),
                );
            }
        }
    }
    Ok(Form {
        component: component
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("the form has no `component` part".into()))?,
        manifest: manifest.ok_or_else(|| bad("the form has no `manifest` part".into()))?,
        signature,
    })
}

/// Whether the upload carries a signature that verifies against a trusted
/// key; a signature that does not verify is refused.
fn verify_signature(state: &AppState, form: &Form) -> Result<bool, ApiError> {
    let Some(text) = &form.signature else {
        return Ok(false);
    };
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_signature",
                "the signature must be 64 bytes in base64 or hex",
            )
        })?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    let verified = state.config.registry.trusted_keys.iter().any(|key| {
        ed25519_dalek::VerifyingKey::from_bytes(key)
            .is_ok_and(|k| k.verify_strict(&form.component, &signature).is_ok())
    });
    if verified {
        Ok(true)
    } else {
        Err(ApiError::bad_request(
            "invalid_signature",
            "the signature does not verify against any trusted key",
        ))
    }
}

/// A load failure as the uploader should read it; `wait` is how long it
/// waited for a compile slot.
fn load_error(e: LoadError, wait: Duration) -> ApiError {
    let message = e.to_string();
    match e {
        LoadError::NotWasm | LoadError::CoreModule => {
            ApiError::bad_request("not_a_component", message)
        }
        LoadError::KindMismatch { expected, actual } => ApiError::bad_request(
            "wrong_world",
            format!(
                "the manifest declares a {expected} but the component implements the vel:plugins/{actual} world"
            ),
        ),
        LoadError::UnknownWorld { .. }
        | LoadError::AmbiguousWorld { .. }
        | LoadError::WrongExports { .. } => ApiError::bad_request("wrong_world", message),
        LoadError::ForbiddenImport { .. } => ApiError::bad_request("forbidden_import", message),
        LoadError::Info(_) => ApiError::bad_request("info_failed", message),
        LoadError::CodeTooLarge { .. } | LoadError::FunctionTooLarge { .. } => {
            ApiError::unprocessable("compile_limit_exceeded", message)
        }
        LoadError::CompileTimeout { .. } => ApiError::unprocessable("compile_timeout", message),
        LoadError::Busy(which) => {
            let scope = match which {
                SlotsBusy::Tenant => "this organization's previous upload is still compiling",
                SlotsBusy::Global => "every compile slot is busy",
            };
            ApiError::too_many_requests(format!("{scope}; try again later"), wait.as_secs())
        }
        _ => ApiError::bad_request("invalid_component", message),
    }
}

/// Refuse an organization's upload of `size` bytes that would take its
/// stored components beyond its quota.
async fn check_quota(
    tx: &mut Tx,
    org_id: &str,
    size: usize,
    registry: &RegistryConfig,
) -> Result<(), ApiError> {
    let used = store::plugins::org_component_bytes(tx, org_id).await?;
    let used = u64::try_from(used).unwrap_or(0);
    let adding = u64::try_from(size).unwrap_or(u64::MAX);
    if used.saturating_add(adding) > registry.org_quota_bytes {
        return Err(ApiError::too_large_code(
            "plugin_quota_exceeded",
            format!(
                "the organization's plugins would take {} bytes, more than its quota of {} bytes \
                 ({used} bytes stored, {adding} in this upload); delete versions it no longer needs",
                used.saturating_add(adding),
                registry.org_quota_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuse a version that may not go live: unapproved hosts, or unsigned
/// while trusted keys are configured.
fn check_activatable(state: &AppState, v: &VersionRow) -> Result<(), ApiError> {
    if v.hosts_approved_by.is_none() {
        return Err(ApiError::conflict_code(
            "hosts_not_approved",
            "a platform admin has not approved this version's outbound hosts yet",
        ));
    }
    if !state.config.registry.trusted_keys.is_empty() && v.signed == 0 && v.uploaded_by.is_some() {
        return Err(ApiError::conflict_code(
            "signature_required",
            "trusted signing keys are configured: only a signed component can be activated",
        ));
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
async fn begin(state: &AppState, p: &Principal) -> Result<Tx, ApiError> {
    Ok(if p.is_platform_admin() {
        state.db.platform().await?
    } else {
        state.db.tenant(&p.org_id).await?
    })
}

/// The plugin `name` as the caller sees it: the organization's own, else
/// the platform's (`scope=platform` skips the former).
async fn resolve(
    tx: &mut Tx,
    p: &Principal,
    name: &str,
    scope: Option<ScopeParam>,
) -> Result<PluginRow, ApiError> {
    if scope != Some(ScopeParam::Platform)
        && let Some(row) = store::plugins::find(tx, &p.org_id, name).await?
    {
        return Ok(row);
    }
    if scope == Some(ScopeParam::Organization) {
        return Err(ApiError::not_found("plugin"));
    }
    store::plugins::find(tx, PLATFORM, name)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin"))
}

/// Platform plugins are the platform admins'; an organization's are its
/// org_admins'.
fn may_manage(p: &Principal, row: &PluginRow) -> Result<(), ApiError> {
    match &row.org_id {
        None => p.require_platform_admin(),
        Some(_) => p.require(Role::OrgAdmin),
    }
}

/// Commit a change of the active set and make it live: on this instance
/// before the response, on the others by the signal sent with the commit.
async fn commit_live(state: &AppState, mut tx: Tx) -> Result<(), ApiError> {
    state
        .signals
        .notify(&mut tx, &Signal::PluginsChanged)
        .await?;
    tx.commit().await?;
    make_live(state).await
}

/// Reload the active set on this instance now.
async fn make_live(state: &AppState) -> Result<(), ApiError> {
    match state.plugins.registry().refresh(&state.db).await {
        Ok(changed) => {
            if changed {
                state.dispatcher.forget_all_catalogs();
            }
            Ok(())
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}
