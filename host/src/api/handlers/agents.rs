//! Agents: CRUD scoped to the caller's organization; `PUT` keeps a config
//! history; `DELETE` is soft.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

pub use crate::agents::AgentConfig;
use crate::agents::check_references;
use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::check_text;
use crate::api::pagination;
use crate::audit;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::{self, to_rfc3339};

/// What an agent specialises in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentType {
    /// Coordinates multi-step work.
    McpOrchestrator,
    /// Writes code.
    CodeGenerator,
    /// Researches with web-grounded models.
    Researcher,
}

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Created, not yet in use.
    Pending,
    /// In use.
    Active,
    /// Switched off.
    Inactive,
    /// Misconfigured or failing.
    Error,
}

impl AgentType {
    fn as_str(self) -> &'static str {
        match self {
            AgentType::McpOrchestrator => "mcp_orchestrator",
            AgentType::CodeGenerator => "code_generator",
            AgentType::Researcher => "researcher",
        }
    }
}

impl AgentStatus {
    fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Inactive => "inactive",
            AgentStatus::Error => "error",
        }
    }
}

/// A new agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Name (1–100 chars).
    #[schema(max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Specialisation.
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    /// Initial status (default `active`).
    #[serde(default)]
    pub status: Option<AgentStatus>,
    /// Configuration.
    pub config: AgentConfig,
}

/// Changes to an agent; `config` replaces the whole configuration and adds a history version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New type.
    #[serde(default, rename = "type")]
    pub agent_type: Option<AgentType>,
    /// New status.
    #[serde(default)]
    pub status: Option<AgentStatus>,
    /// New configuration.
    #[serde(default)]
    pub config: Option<AgentConfig>,
}

/// An agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// Status.
    pub status: String,
    /// Current configuration.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Current configuration version (history length).
    pub config_version: i64,
    /// Creator.
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The last dry run's result (`POST /api/agents/{id}/test`), or null
    /// when the agent was never tested.
    #[schema(value_type = Option<Object>)]
    pub last_test: Option<Box<RawValue>>,
}

impl From<&store::agents::Agent> for AgentView {
    fn from(a: &store::agents::Agent) -> Self {
        AgentView {
            id: a.id.clone(),
            name: a.name.clone(),
            agent_type: a.agent_type.clone(),
            status: a.status.clone(),
            config: serde_json::from_str(&a.config).unwrap_or(serde_json::Value::Null),
            config_version: a.config_version,
            created_by: a.created_by.clone(),
            created_at: to_rfc3339(a.created_at),
            updated_at: to_rfc3339(a.updated_at),
            // Passed on as stored, so its amounts keep their exact decimals.
            last_test: a
                .last_test_result
                .as_ref()
                .and_then(|r| RawValue::from_string(r.clone()).ok()),
        }
    }
}

/// A page of agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// Agents, newest first.
    pub items: Vec<AgentView>,
    /// All matching agents.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Query of `GET /api/agents`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<String>)]
    pub agent_type: Option<AgentType>,
    /// Only this status.
    #[param(value_type = Option<String>)]
    pub status: Option<AgentStatus>,
}

/// One configuration version.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigVersionView {
    /// Version, from 1.
    pub version: i64,
    /// The configuration.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Who made it.
    pub changed_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// An agent's configuration history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigHistory {
    /// Versions, newest first.
    pub items: Vec<ConfigVersionView>,
}

fn config_json(config: &AgentConfig) -> Result<String, ApiError> {
    serde_json::to_string(config).map_err(ApiError::internal)
}

/// Create an agent (agent_manager or above).
#[utoipa::path(post, path = "/api/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = AgentView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let mut errors = FieldErrors::new();
    check_text(&mut errors, "name", &req.name, 100);
    req.config.check(&mut errors);
    errors.finish()?;
    let config = config_json(&req.config)?;
    let mut tx = state.db.tenant(&p.org_id).await?;
    check_references(&mut tx, &p.org_id, &req.config).await?;
    let agent = store::agents::insert(
        &mut tx,
        store::agents::NewAgent {
            org_id: &p.org_id,
            created_by: &p.user_id,
            name: req.name.trim(),
            agent_type: req.agent_type.as_str(),
            status: req.status.unwrap_or(AgentStatus::Active).as_str(),
            config: &config,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "agent_created",
        json!({ "agent_id": agent.id, "name": agent.name, "type": agent.agent_type }),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json((&agent).into())))
}

/// List the organization's agents.
#[utoipa::path(get, path = "/api/agents", tag = "agents", params(AgentQuery),
    responses((status = 200, body = AgentList), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AgentQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let filter = store::agents::AgentFilter {
        agent_type: q.agent_type.map(|t| t.as_str().to_string()),
        status: q.status.map(|s| s.as_str().to_string()),
    };
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = store::agents::page(&mut tx, &p.org_id, &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(AgentList {
        items: rows.iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

/// One agent.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = AgentView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let agent = store::agents::get(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    tx.commit().await?;
    Ok(Json((&agent).into()))
}

/// Update an agent; a changed config becomes a new history version.
#[utoipa::path(put, path = "/api/agents/{id}", tag = "agents", request_body = UpdateAgent,
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = AgentView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateAgent>,
) -> Result<Json<AgentView>, ApiError> {
    let mut errors = FieldErrors::new();
    if let Some(name) = &req.name {
        check_text(&mut errors, "name", name, 100);
    }
    if let Some(config) = &req.config {
        config.check(&mut errors);
    }
    errors.finish()?;
    let mut tx = state.db.tenant(&p.org_id).await?;
    let mut agent = store::agents::get(&mut tx, &p.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    let mut changed = Vec::new();
    if let Some(name) = req.name {
        agent.name = name.trim().to_string();
        changed.push("name");
    }
    if let Some(t) = req.agent_type {
        agent.agent_type = t.as_str().to_string();
        changed.push("type");
    }
    if let Some(s) = req.status {
        agent.status = s.as_str().to_string();
        changed.push("status");
    }
    let mut config_changed = false;
    if let Some(config) = &req.config {
        check_references(&mut tx, &p.org_id, config).await?;
        let new_config = config_json(config)?;
        config_changed = new_config != agent.config;
        agent.config = new_config;
        changed.push("config");
    }
    store::agents::update(&mut tx, &mut agent, config_changed, &p.user_id).await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "agent_updated",
        json!({ "agent_id": agent.id, "fields": changed, "config_version": agent.config_version }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json((&agent).into()))
}

/// Soft-delete an agent.
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.tenant(&p.org_id).await?;
    if !store::agents::soft_delete(&mut tx, &p.org_id, &id).await? {
        return Err(ApiError::not_found("agent"));
    }
    audit::record(
        &mut tx,
        &p,
        &client,
        "agent_deleted",
        json!({ "agent_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An agent's configuration history.
#[utoipa::path(get, path = "/api/agents/{id}/history", tag = "agents", params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = ConfigHistory), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConfigHistory>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    if store::agents::get(&mut tx, &p.org_id, &id).await?.is_none() {
        return Err(ApiError::not_found("agent"));
    }
    let rows = store::agents::history(&mut tx, &p.org_id, &id).await?;
    tx.commit().await?;
    Ok(Json(ConfigHistory {
        items: rows
            .into_iter()
            .map(|r| ConfigVersionView {
                version: r.version,
                config: serde_json::from_str(&r.config).unwrap_or(serde_json::Value::Null),
                changed_by: r.changed_by,
                created_at: to_rfc3339(r.created_at),
            })
            .collect(),
    }))
}
