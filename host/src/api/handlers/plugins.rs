//! The plugin registry's API: upload (validated before anything is
//! stored), list, show, activate, roll back, disable, enable, delete a
//! version, approve a tenant provider's outbound hosts, and per-version
//! statistics. Every change is audited and goes live on every instance
//! (this one before the response, the others on the signal sent with the
//! commit).

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody, is_read_timeout};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::auth::Principal;
use crate::config::RegistryConfig;
use crate::plugins::lifecycle::{self, Actor, Scope, Upload, scope_label};
use crate::plugins::registry::Owner;
use crate::plugins::stats::VersionStats;
use crate::state::AppState;
use crate::store::plugins::{PluginRow, VersionRow};
use crate::store::{self, to_rfc3339};

/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest signature part accepted (base64 or hex of 64 bytes, with slack).
const MAX_SIGNATURE_BYTES: usize = 1024;
/// Room in an upload's body for the multipart boundaries and part headers.
const FORM_OVERHEAD_BYTES: usize = 16 * 1024;

/// The largest body `POST /api/plugins` reads: a component of the largest
/// accepted size, a manifest, a signature and the form's own framing.
pub fn upload_body_limit(registry: &RegistryConfig) -> usize {
    max_component_bytes(registry)
        .saturating_add(MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + FORM_OVERHEAD_BYTES)
}

/// The largest component any upload may carry: the default limit or a
/// configured class's larger one. Each upload is held to its own class's
/// limit once its manifest is read.
fn max_component_bytes(registry: &RegistryConfig) -> usize {
    registry
        .classes
        .values()
        .map(|c| usize::try_from(c.max_component_bytes).unwrap_or(usize::MAX))
        .fold(registry.max_upload_bytes, usize::max)
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
            kind: row.kind.to_string(),
            scope: scope_label(row.org_id.as_deref()).into(),
            organization_id: row.org_id.clone(),
            status: row.status.to_string(),
            active_version: row.active_version.clone(),
            previous_version: row.previous_version.clone(),
            builtin: row.builtin,
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
    /// `approved`, `pending` (awaiting a platform admin) or `rejected`
    /// (can never be approved or activated).
    pub approval: String,
    /// Why a platform admin rejected it, when they said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
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
            kind: plugin.kind.to_string(),
            scope: scope_label(plugin.org_id.as_deref()).into(),
            organization_id: plugin.org_id.clone(),
            sha256: v.sha256.clone(),
            size_bytes: v.size_bytes,
            description: v.description.clone(),
            outbound_hosts: serde_json::from_str(&v.outbound_hosts).unwrap_or_default(),
            hosts_approved: v.hosts_approved_by.is_some(),
            approval: if v.rejected_by.is_some() {
                "rejected"
            } else if v.hosts_approved_by.is_some() {
                "approved"
            } else {
                "pending"
            }
            .into(),
            rejection_reason: v.rejection_reason.clone(),
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
    /// Activate the version at once (an organization's provider whose
    /// outbound hosts await a platform admin's approval is stored without
    /// being activated: `hosts_approved` and `active` are false in the
    /// answer; activate it once approved).
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

/// The registry's scope of a query's.
fn scope(param: Option<ScopeParam>) -> Option<Scope> {
    param.map(|p| match p {
        ScopeParam::Platform => Scope::Platform,
        ScopeParam::Organization => Scope::Organization,
    })
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
    }
    let multipart = multipart.map_err(|e| ApiError::bad_request("invalid_form", e.body_text()))?;
    let upload = read_form(multipart, &state.config.registry).await?;
    let owner = if platform {
        Owner::Platform
    } else {
        Owner::Organization(p.org_id.clone())
    };
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let published = lifecycle::publish(&state, actor, owner, upload, options.activate).await?;
    Ok((
        StatusCode::CREATED,
        Json(VersionView::new(&published.plugin, &published.version)),
    ))
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
    let row = lifecycle::resolve(&mut tx, &p, &name, scope(q.scope)).await?;
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let row = lifecycle::activate(&state, actor, &name, scope(q.scope), &version).await?;
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let row = lifecycle::rollback(&state, actor, &name, scope(q.scope)).await?;
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let row = lifecycle::disable(&state, actor, &name, scope(q.scope)).await?;
    Ok(Json(PluginView::new(&state, &row)))
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let row = lifecycle::enable(&state, actor, &name, scope(q.scope)).await?;
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    lifecycle::delete_version(&state, actor, &name, scope(q.scope), &version).await?;
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
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let (row, v) = lifecycle::approve(&state, actor, &id).await?;
    Ok(Json(VersionView::new(&row, &v)))
}

/// A platform admin's rejection of a version.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Why (at most 2000 characters), shown to the organization.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Longest rejection reason, in characters.
const MAX_REASON: usize = 2000;

/// Reject a tenant provider version whose outbound hosts await approval
/// (platform admins): it leaves the queue and can never be approved or
/// activated (409 `version_rejected`); 409 `already_approved` for an
/// approved one. Rejecting it again changes nothing.
#[utoipa::path(post, path = "/api/plugin-approvals/{id}/reject", tag = "plugins",
    params(("id" = String, Path, description = "Version id")),
    request_body = Rejection,
    responses((status = 200, body = VersionView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<Rejection>,
) -> Result<Json<VersionView>, ApiError> {
    p.require_platform_admin()?;
    let reason = req
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(crate::validation::Invalid::field(
            "reason",
            format!("must be at most {MAX_REASON} characters"),
        )
        .into());
    }
    let actor = Actor {
        who: &p,
        client: &client,
    };
    let (row, v) = lifecycle::reject(&state, actor, &id, reason).await?;
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
    let row = lifecycle::resolve(&mut tx, &p, &name, scope(q.scope)).await?;
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

/// Read the multipart form, refusing unknown parts and oversized ones as
/// they stream in, and the whole body beyond [`upload_body_limit`] (the
/// route's body limit).
async fn read_form(
    mut multipart: Multipart,
    registry: &RegistryConfig,
) -> Result<Upload, ApiError> {
    let max_component = max_component_bytes(registry);
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
    Ok(Upload {
        component: component
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("the form has no `component` part".into()))?,
        manifest: manifest.ok_or_else(|| bad("the form has no `manifest` part".into()))?,
        signature,
    })
}
