//! Workflow templates: create one (or its next version) from a definition,
//! a workflow or another template; read and list those the caller may see
//! (the organization's, the caller's private ones, every public one);
//! change one's visibility or delete it; start a workflow from one. See [`crate::workflows::catalog`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::workflows::WorkflowView;
use crate::api::pagination;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::to_rfc3339;
use crate::store::workflow_templates::{
    self as store, Template, TemplateFilter, TemplateVersion, Viewer, Visibility,
};
use crate::validation::Invalid;
use crate::workflows::catalog::{self, Source, TemplateError, TemplateRequest};

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> ApiError {
        match e {
            TemplateError::Invalid(e) => e.into(),
            TemplateError::Forbidden(e) => e.into(),
            TemplateError::NotFound(what) => ApiError::not_found(what),
            TemplateError::Conflict(m) => ApiError::conflict(m),
            TemplateError::ReadOnly(m) => ApiError::forbidden(m),
            TemplateError::Workflow(e) => e.into(),
            TemplateError::Storage(e) => e.into(),
        }
    }
}

/// A new template, or the next version of the organization's template of
/// that name. Exactly one of `definition`, `from_workflow`, `from_template`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// Unique in the organization (default: the source's name, or the
    /// definition's `name`); an existing name gets its next version.
    pub name: Option<String>,
    /// What it is for (at most 2000 characters).
    pub description: Option<String>,
    /// A workflow definition whose strings may use `{{vars.name}}`.
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// Id of a workflow of the organization whose definition to save.
    pub from_workflow: Option<String>,
    /// Id of a template the caller may see (a public one included) to copy.
    pub from_template: Option<String>,
    /// The version of `from_template` to copy (default: its latest).
    pub from_version: Option<i64>,
    /// Variable name → `{"type": string|number|integer|boolean|object|array,
    /// "default"?, "description"?}` (default: the copied template's, else none).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// `private` (default: its creator only), `organization` or `public`
    /// (every organization, read-only; org_admin or platform admin only).
    pub visibility: Option<String>,
}

/// A template at one version.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    /// Id (the same for every version).
    pub id: String,
    /// Name.
    pub name: String,
    /// The version shown.
    pub version: i64,
    /// The newest version.
    pub latest_version: i64,
    /// What it is for.
    pub description: String,
    /// `private`, `organization` or `public`.
    pub visibility: String,
    /// `platform` (built-in), `organization` (the caller's) or `other` (another organization's public template).
    pub owner: String,
    /// Whether it ships with the server.
    pub builtin: bool,
    /// Whether the caller may add versions to it (its organization's, and not another member's private one).
    pub editable: bool,
    /// Declared variables.
    #[schema(value_type = Object)]
    pub variables: Value,
    /// The definition with its `{{vars.…}}` (not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// What this version was made from: `{"workflow_id"}`, `{"template_id", "version"}` or `{"builtin": true}`.
    #[schema(value_type = Option<Object>)]
    pub source: Option<Value>,
    /// Who wrote this version (only for the caller's organization).
    pub created_by: Option<String>,
    /// RFC 3339 of the first version.
    pub created_at: String,
    /// RFC 3339 of this version.
    pub version_created_at: String,
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn view(p: &Principal, t: &Template, v: &TemplateVersion, with_definition: bool) -> TemplateView {
    let mine = t.org_id.as_deref() == Some(p.org_id.as_str());
    TemplateView {
        id: t.id.clone(),
        name: t.name.clone(),
        version: v.version,
        latest_version: t.latest_version,
        description: v.description.clone(),
        visibility: t.visibility.as_str().to_string(),
        owner: match (&t.org_id, mine) {
            (None, _) => "platform",
            (Some(_), true) => "organization",
            (Some(_), false) => "other",
        }
        .to_string(),
        builtin: t.builtin != 0,
        editable: mine
            && (t.visibility != Visibility::Private
                || t.owner_id.as_deref() == Some(p.user_id.as_str())),
        variables: json_of(&v.variables),
        definition: with_definition.then(|| json_of(&v.definition)),
        source: v.source.as_deref().map(json_of),
        created_by: if mine { v.created_by.clone() } else { None },
        created_at: to_rfc3339(t.created_at),
        version_created_at: to_rfc3339(v.created_at),
    }
}

fn viewer(p: &Principal) -> Viewer<'_> {
    Viewer {
        org_id: &p.org_id,
        user_id: &p.user_id,
    }
}

/// Create a template (task_executor or above; `public` takes org_admin or
/// a platform admin), or the next immutable version of the organization's
/// template of that name. 201 with the version written; 422 naming every
/// bad field, undeclared `{{vars.…}}` reference or bad definition path, and
/// nothing stored; 404 for a `from_workflow` or `from_template` the caller
/// cannot see.
#[utoipa::path(post, path = "/api/workflow-templates", tag = "workflow-templates", request_body = CreateTemplate,
    responses((status = 201, body = TemplateView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let source = match (req.definition, req.from_workflow, req.from_template) {
        (Some(d), None, None) => Source::Definition(d),
        (None, Some(w), None) => Source::Workflow(w),
        (None, None, Some(t)) => Source::Template(t, req.from_version),
        _ => {
            return Err(Invalid::field(
                "definition",
                "give exactly one of definition, from_workflow, from_template",
            )
            .into());
        }
    };
    let (t, v) = catalog::create(
        &state,
        &p,
        &client,
        TemplateRequest {
            name: req.name,
            description: req.description,
            source,
            variables: req.variables,
            visibility: req.visibility,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&p, &t, &v, true))))
}

/// A change to a template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    /// `private` (its creator only), `organization` or `public` (every
    /// organization, read-only; org_admin only).
    pub visibility: String,
}

/// Change who may see one of the organization's templates (task_executor
/// or above; org_admin when it is or becomes public), audited. Its
/// versions are unchanged. 200 with the template at its latest version;
/// 403 for another organization's public template or a built-in; 404 for
/// one the caller cannot see; 422 for an unknown visibility.
#[utoipa::path(patch, path = "/api/workflow-templates/{id}", tag = "workflow-templates",
    params(("id" = String, Path, description = "Template id")),
    request_body = UpdateTemplate,
    responses((status = 200, body = TemplateView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateTemplate>,
) -> Result<Json<TemplateView>, ApiError> {
    catalog::set_visibility(&state, &p, &client, &id, &req.visibility).await?;
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let found = catalog::read_version(&mut tx, viewer(&p), &id, None).await;
    tx.commit().await?;
    let (t, v) = found?;
    Ok(Json(view(&p, &t, &v, true)))
}

/// Delete one of the organization's templates with every version
/// (task_executor or above; org_admin for a public one), audited.
/// Workflows started from it keep running on their own copy of the
/// definition and keep its id. 204; 403 for another organization's public
/// template or a built-in; 404 for one the caller cannot see.
#[utoipa::path(delete, path = "/api/workflow-templates/{id}", tag = "workflow-templates",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    catalog::delete(&state, &p, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/workflow-templates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Only `private`, `organization` or `public` templates.
    pub visibility: Option<String>,
    /// Only this name.
    pub name: Option<String>,
}

/// A page of templates.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// Templates at their latest version, built-ins first, then by name.
    pub items: Vec<TemplateView>,
    /// All matching.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Templates the caller may see: the organization's (private ones to
/// their creator only) and every public one, the platform's built-ins
/// first.
#[utoipa::path(get, path = "/api/workflow-templates", tag = "workflow-templates", params(TemplateQuery),
    responses((status = 200, body = TemplateList), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<TemplateQuery>,
) -> Result<Json<TemplateList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let visibility = match q.visibility.as_deref() {
        None => None,
        Some(v) => Some(Visibility::parse(v).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "`visibility` must be private, organization or public",
            )
        })?),
    };
    let filter = TemplateFilter {
        visibility,
        name: q.name,
    };
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = store::page(&mut tx, viewer(&p), &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(TemplateList {
        items: rows.iter().map(|(t, v)| view(&p, t, v, false)).collect(),
        total,
        limit,
        offset,
    }))
}

/// Query of `GET /api/workflow-templates/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// The version (default: the latest).
    pub version: Option<i64>,
}

/// One template the caller may see, at its latest version or `?version=N`,
/// with its definition. 404 for another organization's non-public
/// template or another member's private one.
#[utoipa::path(get, path = "/api/workflow-templates/{id}", tag = "workflow-templates",
    params(("id" = String, Path, description = "Template id"), VersionQuery),
    responses((status = 200, body = TemplateView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<TemplateView>, ApiError> {
    if q.version.is_some_and(|v| v < 1) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`version` must be 1 or more",
        ));
    }
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let found = catalog::read_version(&mut tx, viewer(&p), &id, q.version).await;
    tx.commit().await?;
    let (t, v) = found?;
    Ok(Json(view(&p, &t, &v, true)))
}

/// One version in a template's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSummary {
    /// 1-based.
    pub version: i64,
    /// Its description.
    pub description: String,
    /// The visibility it set.
    pub visibility: String,
    /// Declared variables.
    #[schema(value_type = Object)]
    pub variables: Value,
    /// What it was made from.
    #[schema(value_type = Option<Object>)]
    pub source: Option<Value>,
    /// Who wrote it (only for the caller's organization).
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A template's versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Oldest first.
    pub items: Vec<VersionSummary>,
}

/// Every version of a template the caller may see, oldest first.
#[utoipa::path(get, path = "/api/workflow-templates/{id}/versions", tag = "workflow-templates",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VersionList>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let Some(t) = store::get(&mut tx, viewer(&p), &id).await? else {
        return Err(ApiError::not_found("workflow template"));
    };
    let all = store::versions(&mut tx, &t.id).await?;
    tx.commit().await?;
    let mine = t.org_id.as_deref() == Some(p.org_id.as_str());
    Ok(Json(VersionList {
        items: all
            .into_iter()
            .map(|v| VersionSummary {
                version: v.version,
                description: v.description,
                visibility: v.visibility.as_str().to_string(),
                variables: json_of(&v.variables),
                source: v.source.as_deref().map(json_of),
                created_by: if mine { v.created_by } else { None },
                created_at: to_rfc3339(v.created_at),
            })
            .collect(),
    }))
}

/// Start a workflow from a template.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartFromTemplate {
    /// The template version (default: the latest).
    pub version: Option<i64>,
    /// Variable name → value; declared variables left out take their defaults.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// The workflow's input, a JSON object (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

/// Start a workflow from a template the caller may see (task_executor or
/// above): its variables substituted, then the ordinary checks and start.
/// 201 with the workflow, which records `template_id` and
/// `template_version`; 422 naming each missing, undeclared or ill-typed
/// variable (`variables.topic`) or bad definition path, and nothing stored;
/// 404 for a template or version the caller cannot see.
#[utoipa::path(post, path = "/api/workflows/from-template/{template_id}", tag = "workflow-templates",
    params(("template_id" = String, Path, description = "Template id")),
    request_body = StartFromTemplate,
    responses((status = 201, body = WorkflowView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(template_id): ApiPath<String>,
    ApiJson(req): ApiJson<StartFromTemplate>,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    if req.version.is_some_and(|v| v < 1) {
        return Err(Invalid::field("version", "must be 1 or more").into());
    }
    let input = req.input.unwrap_or_else(|| json!({}));
    let wf = catalog::start(
        &state,
        &p,
        &client,
        &template_id,
        req.version,
        req.variables.as_ref(),
        input,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(WorkflowView::from(&wf))))
}
