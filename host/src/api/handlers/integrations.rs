//! Integrations: an organization's provider credentials and settings. The
//! key is write-only: stored encrypted, shown as a fingerprint.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use vel_runtime::AllowPrivate;
use vel_runtime::types::Tool;

use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::{check_destination, check_text, is_slug};
use crate::api::pagination::{self, PageQuery};
use crate::audit;
use crate::auth::Principal;
use crate::orchestrator::tools::ToolCallError;
use crate::secrets::fingerprint;
use crate::state::AppState;
use crate::store::{self, integrations::Integration, new_id, now_ms, to_rfc3339};

/// Provider kinds vel knows defaults for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI (GPT-4o, GPT-4o-mini).
    Openai,
    /// Groq (OpenAI-compatible API).
    Groq,
    /// Perplexity (Sonar).
    Perplexity,
    /// Anthropic (Messages API).
    Anthropic,
    /// Any OpenAI-compatible endpoint (`base_url` required).
    OpenaiCompatible,
    /// The offline mock provider (no key needed).
    Mock,
    /// A provider plugin of the organization's or the platform's own, for
    /// any API: `plugin` and `base_url` required, `api_key` optional (the
    /// plugin's `info()` names the header the host adds it as).
    Custom,
    /// An MCP server (Streamable HTTP): `base_url` is its MCP endpoint
    /// (e.g. `https://tools.example.com/mcp`), `api_key` optional (sent as
    /// `Authorization: Bearer`); timeout 120 s unless set. A tool server,
    /// not a model provider: its tools are listed at
    /// `/api/integrations/{id}/tools` and called by tasks.
    Mcp,
    /// Task Master's MCP server: an `mcp` integration with the seed's
    /// settings — `base_url` and `api_key` required, timeout 120 s, at
    /// most 5 concurrent calls.
    Taskmaster,
}

impl ProviderKind {
    fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Groq => "groq",
            ProviderKind::Perplexity => "perplexity",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Mock => "mock",
            ProviderKind::Custom => "custom",
            ProviderKind::Mcp => "mcp",
            ProviderKind::Taskmaster => "taskmaster",
        }
    }

    /// The built-in provider plugin that speaks this provider's API; none
    /// for `custom`, which names its own.
    fn default_plugin(self) -> Option<&'static str> {
        Some(match self {
            ProviderKind::Openai | ProviderKind::Groq | ProviderKind::OpenaiCompatible => {
                "openai-compatible"
            }
            ProviderKind::Perplexity => "perplexity",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
            ProviderKind::Mcp | ProviderKind::Taskmaster => "mcp",
            ProviderKind::Custom => return None,
        })
    }

    /// Whether an integration of this kind may go without an API key.
    fn key_optional(self) -> bool {
        matches!(
            self,
            ProviderKind::Mock | ProviderKind::Custom | ProviderKind::Mcp
        )
    }

    /// The timeout used when none is given, in milliseconds: tool servers
    /// get Task Master's 120 s (tools may work for minutes).
    fn default_timeout_ms(self) -> i64 {
        match self {
            ProviderKind::Mcp | ProviderKind::Taskmaster => 120_000,
            _ => 60_000,
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
            ProviderKind::Perplexity => Some("https://api.perplexity.ai"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::OpenaiCompatible
            | ProviderKind::Mock
            | ProviderKind::Custom
            | ProviderKind::Mcp
            | ProviderKind::Taskmaster => None,
        }
    }
}

/// A new integration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    /// Unique name in the organization (1–100 chars).
    pub name: String,
    /// Provider kind.
    pub provider: ProviderKind,
    /// Provider plugin to use (default: the built-in one for the provider;
    /// required for `custom`).
    #[serde(default)]
    pub plugin: Option<String>,
    /// API base URL (http or https; defaults per provider).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Default model.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Per-call timeout, 1,000–600,000 ms (default 60,000; 120,000 for
    /// `mcp` and `taskmaster`).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// The provider API key; stored encrypted, never returned. Required except for `mock`.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// Changes to an integration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegration {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// New base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// New default model.
    #[serde(default)]
    pub default_model: Option<String>,
    /// New timeout.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// Replacement key (rotation).
    #[serde(default)]
    pub api_key: Option<String>,
    /// `active` or `disabled`.
    #[serde(default)]
    pub status: Option<IntegrationStatus>,
}

/// Whether an integration may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    /// In use.
    Active,
    /// Not used for routing.
    Disabled,
}

/// An integration as the API shows it: never the key, only its fingerprint.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Provider kind.
    pub provider: String,
    /// Provider plugin.
    pub plugin: String,
    /// Base URL.
    pub base_url: Option<String>,
    /// Default model.
    pub default_model: Option<String>,
    /// Timeout.
    pub timeout_ms: i64,
    /// Whether a key is stored.
    pub has_api_key: bool,
    /// `sha256:…` fingerprint of the key.
    pub key_fingerprint: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// RFC 3339 of the last test.
    pub last_test_at: Option<String>,
    /// Outcome of the last test.
    #[schema(value_type = Option<Object>)]
    pub last_test_result: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&Integration> for IntegrationView {
    fn from(i: &Integration) -> Self {
        IntegrationView {
            id: i.id.clone(),
            name: i.name.clone(),
            provider: i.provider.clone(),
            plugin: i.plugin.clone(),
            base_url: i.base_url.clone(),
            default_model: i.default_model.clone(),
            timeout_ms: i.timeout_ms,
            has_api_key: i.key_ciphertext.is_some(),
            key_fingerprint: i.key_fingerprint.clone(),
            status: i.status.clone(),
            last_test_at: i.last_test_at.map(to_rfc3339),
            last_test_result: i
                .last_test_result
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            created_at: to_rfc3339(i.created_at),
            updated_at: to_rfc3339(i.updated_at),
        }
    }
}

/// The organization's integrations.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    /// Items in the whole list.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
    /// By name.
    pub items: Vec<IntegrationView>,
}

/// The base URL's shape, then its host against the outbound destination
/// rules (the connector checks the resolved addresses of names again on
/// every connection).
fn check_url(errors: &mut FieldErrors, url: &str, allow: &AllowPrivate) {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !url.chars().any(char::is_whitespace);
    let host = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_string));
    match host {
        Some(host) if ok => check_destination(errors, "base_url", &host, allow),
        _ => errors.add(
            "base_url",
            "must be an http or https URL of at most 2048 characters",
        ),
    }
}

fn check_key(errors: &mut FieldErrors, key: &str) {
    errors.check(
        !key.trim().is_empty() && key.len() <= 1024 && !key.chars().any(char::is_control),
        "api_key",
        "must be 1 to 1024 printable characters",
    );
}

/// Create an integration (org_admin).
#[utoipa::path(post, path = "/api/integrations", tag = "integrations", request_body = CreateIntegration,
    responses((status = 201, body = IntegrationView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateIntegration>,
) -> Result<(StatusCode, Json<IntegrationView>), ApiError> {
    let mut errors = FieldErrors::new();
    check_text(&mut errors, "name", &req.name, 100);
    let plugin = req
        .plugin
        .clone()
        .or_else(|| req.provider.default_plugin().map(str::to_string));
    match &plugin {
        Some(plugin) => errors.check(
            is_slug(plugin),
            "plugin",
            "must be a lower-case plugin name",
        ),
        None => errors.add(
            "plugin",
            "is required for provider `custom`: the name of your provider plugin",
        ),
    }
    let plugin = plugin.unwrap_or_default();
    let base_url = req
        .base_url
        .clone()
        .or_else(|| req.provider.default_base_url().map(str::to_string));
    match &base_url {
        Some(url) => check_url(&mut errors, url, &state.config.outbound_allow_private),
        None => errors.check(
            req.provider == ProviderKind::Mock,
            "base_url",
            "is required for this provider",
        ),
    }
    if let Some(model) = &req.default_model {
        check_text(&mut errors, "default_model", model, 128);
    }
    let timeout_ms = req
        .timeout_ms
        .unwrap_or_else(|| req.provider.default_timeout_ms());
    errors.check(
        (1_000..=600_000).contains(&timeout_ms),
        "timeout_ms",
        "must be between 1000 and 600000",
    );
    match &req.api_key {
        Some(key) => check_key(&mut errors, key),
        None => errors.check(
            req.provider.key_optional(),
            "api_key",
            "is required for this provider",
        ),
    }
    errors.finish()?;

    let now = now_ms();
    let id = new_id();
    let (key_ciphertext, key_fingerprint) = match &req.api_key {
        Some(key) => (Some(state.keys.encrypt(key, &id)?), Some(fingerprint(key))),
        None => (None, None),
    };
    let integration = Integration {
        id,
        org_id: p.org_id.clone(),
        name: req.name.trim().to_string(),
        provider: req.provider.as_str().to_string(),
        plugin,
        base_url,
        default_model: req.default_model,
        timeout_ms,
        key_ciphertext,
        key_fingerprint,
        status: "active".into(),
        last_test_at: None,
        last_test_result: None,
        created_by: Some(p.user_id.clone()),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.tenant(&p.org_id).await?;
    store::integrations::insert(&mut tx, &integration)
        .await
        .map_err(|e| {
            ApiError::unique_or(
                e,
                ApiError::conflict("an integration with this name exists"),
            )
        })?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "integration_created",
        json!({ "integration_id": integration.id, "name": integration.name, "provider": integration.provider,
                "key_fingerprint": integration.key_fingerprint }),
    )
    .await?;
    state.commit_catalog_change(tx, &p.org_id).await?;
    Ok((StatusCode::CREATED, Json((&integration).into())))
}

/// List the organization's integrations.
#[utoipa::path(get, path = "/api/integrations", tag = "integrations", params(PageQuery),
    responses((status = 200, body = IntegrationList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<IntegrationList>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let rows = store::integrations::list(&mut tx, &p.org_id).await?;
    tx.commit().await?;
    let page = pagination::page(rows, &query)?;
    Ok(Json(IntegrationList {
        items: page.items.iter().map(Into::into).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// One integration.
#[utoipa::path(get, path = "/api/integrations/{id}", tag = "integrations",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    let row = load(&state, &p.org_id, &id).await?;
    Ok(Json((&row).into()))
}

/// Read one of the organization's integrations in a read-only
/// transaction (on SQLite it does not wait for the write lock); 404 when
/// there is none.
pub async fn load(state: &AppState, org_id: &str, id: &str) -> Result<Integration, ApiError> {
    let mut tx = state.db.tenant_read(org_id).await?;
    let row = store::integrations::get(&mut tx, org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    tx.commit().await?;
    Ok(row)
}

/// Update an integration (org_admin); a new `api_key` rotates the stored key.
#[utoipa::path(put, path = "/api/integrations/{id}", tag = "integrations", request_body = UpdateIntegration,
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateIntegration>,
) -> Result<Json<IntegrationView>, ApiError> {
    let mut errors = FieldErrors::new();
    if let Some(name) = &req.name {
        check_text(&mut errors, "name", name, 100);
    }
    if let Some(plugin) = &req.plugin {
        errors.check(
            is_slug(plugin),
            "plugin",
            "must be a lower-case plugin name",
        );
    }
    if let Some(url) = &req.base_url {
        check_url(&mut errors, url, &state.config.outbound_allow_private);
    }
    if let Some(model) = &req.default_model {
        check_text(&mut errors, "default_model", model, 128);
    }
    if let Some(t) = req.timeout_ms {
        errors.check(
            (1_000..=600_000).contains(&t),
            "timeout_ms",
            "must be between 1000 and 600000",
        );
    }
    if let Some(key) = &req.api_key {
        check_key(&mut errors, key);
    }
    errors.finish()?;
    let mut tx = state.db.tenant(&p.org_id).await?;
    let mut row = store::integrations::get(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    let mut changed = Vec::new();
    if let Some(v) = req.name {
        row.name = v.trim().to_string();
        changed.push("name");
    }
    if let Some(v) = req.plugin {
        row.plugin = v;
        changed.push("plugin");
    }
    if let Some(v) = req.base_url {
        row.base_url = Some(v);
        changed.push("base_url");
    }
    if let Some(v) = req.default_model {
        row.default_model = Some(v);
        changed.push("default_model");
    }
    if let Some(v) = req.timeout_ms {
        row.timeout_ms = v;
        changed.push("timeout_ms");
    }
    if let Some(v) = req.status {
        row.status = match v {
            IntegrationStatus::Active => "active",
            IntegrationStatus::Disabled => "disabled",
        }
        .into();
        changed.push("status");
    }
    if let Some(key) = req.api_key {
        row.key_ciphertext = Some(state.keys.encrypt(&key, &row.id)?);
        row.key_fingerprint = Some(fingerprint(&key));
        changed.push("api_key");
    }
    store::integrations::update(&mut tx, &mut row)
        .await
        .map_err(|e| {
            ApiError::unique_or(
                e,
                ApiError::conflict("an integration with this name exists"),
            )
        })?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "integration_updated",
        json!({ "integration_id": row.id, "fields": changed, "key_fingerprint": row.key_fingerprint }),
    )
    .await?;
    state.commit_catalog_change(tx, &p.org_id).await?;
    Ok(Json((&row).into()))
}

/// Delete an integration (org_admin).
#[utoipa::path(delete, path = "/api/integrations/{id}", tag = "integrations",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.tenant(&p.org_id).await?;
    if !store::integrations::delete(&mut tx, &p.org_id, &id).await? {
        return Err(ApiError::not_found("integration"));
    }
    audit::record(
        &mut tx,
        &p,
        &client,
        "integration_deleted",
        json!({ "integration_id": id }),
    )
    .await?;
    state.commit_catalog_change(tx, &p.org_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tool a tool-server integration offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolView {
    /// Its name, as tasks call it.
    pub name: String,
    /// A display name, when the server gives one.
    pub title: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// JSON Schema of its structured result, when the server gives one.
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<serde_json::Value>,
    /// Hints about its behaviour (read-only, destructive…), as the server
    /// gives them.
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<serde_json::Value>,
}

impl From<Tool> for ToolView {
    fn from(t: Tool) -> Self {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
        ToolView {
            input_schema: parse(&t.input_schema).unwrap_or_else(|| json!({ "type": "object" })),
            output_schema: t.output_schema.as_deref().and_then(parse),
            annotations: t.annotations.as_deref().and_then(parse),
            name: t.name,
            title: t.title,
            description: t.description,
        }
    }
}

/// The tools of a tool-server integration.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    /// The integration's name (what a task's `tool.integration` names).
    pub integration: String,
    /// The server's tools, in its order.
    pub items: Vec<ToolView>,
}

/// The API error of a failed tool-server call: the caller's mistake (not
/// a tool server, disabled) is 400 or 409, a missing plugin 503, the
/// server's failure 502 (504 when it did not answer in time).
pub fn tool_call_error(e: ToolCallError) -> ApiError {
    match e.kind {
        "not_a_tool_server" => ApiError::bad_request(e.kind, e.message),
        "integration_disabled" => ApiError::conflict_code(e.kind, e.message),
        "integration_not_found" => ApiError::not_found("integration"),
        "plugin_unavailable" | "busy" | "storage" => ApiError::unavailable(e.message),
        "timeout" => ApiError::gateway_timeout(e.message),
        kind => ApiError::bad_gateway(kind, e.message),
    }
}

/// List a tool-server integration's tools (`mcp`, `taskmaster`): its
/// server is asked, through the integration's plugin, within its timeout.
#[utoipa::path(get, path = "/api/integrations/{id}/tools", tag = "integrations",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 200, body = ToolList),
              (status = 400, description = "Not a tool-server integration", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "The integration is disabled", body = ErrorBody),
              (status = 502, description = "The tool server failed; `code` says how", body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 504, description = "The tool server did not answer in time", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tools(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ToolList>, ApiError> {
    let row = load(&state, &p.org_id, &id).await?;
    // No transaction is held while the server is asked.
    let servers = state.dispatcher.tools();
    let server = servers.serving(&p.org_id, row).map_err(tool_call_error)?;
    let tools = servers.list(&server).await.map_err(tool_call_error)?;
    Ok(Json(ToolList {
        integration: server.integration.name,
        items: tools.into_iter().map(Into::into).collect(),
    }))
}
