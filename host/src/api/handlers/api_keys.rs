//! `POST/GET /api/api-keys`, `DELETE /api/api-keys/{id}`: keys for machine
//! clients, shown once, scoped to the organization and a role.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::check_text;
use crate::api::pagination::{self, PageQuery};
use crate::audit;
use crate::auth::{Principal, Role, api_keys, roles};
use crate::orchestrator::signals::Signal;
use crate::state::AppState;
use crate::store::{self, api_keys::ApiKeyRow, new_id, now_ms, parse_rfc3339, to_rfc3339};

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Label (1–100 chars).
    #[schema(max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Role the key carries: a built-in organization role or one of the
    /// organization's roles, at most what the caller holds (default: the
    /// caller's organization role); `admin` for a platform admin's key. The
    /// key never acts above what its creator holds now.
    #[serde(default)]
    pub role: Option<String>,
    /// RFC 3339 time after which the key is refused (default: no expiry).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// A key as listed (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// First characters, for recognition.
    pub prefix: String,
    /// Creator.
    pub user_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_used_at: Option<String>,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked: `revoked` (by an org_admin) or `creator_removed`.
    pub revoked_reason: Option<String>,
    /// RFC 3339 expiry, if any.
    pub expires_at: Option<String>,
}

impl From<&ApiKeyRow> for ApiKeyView {
    fn from(r: &ApiKeyRow) -> Self {
        ApiKeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role.clone(),
            prefix: r.prefix.clone(),
            user_id: r.user_id.clone(),
            created_at: to_rfc3339(r.created_at),
            last_used_at: r.last_used_at.map(to_rfc3339),
            revoked_at: r.revoked_at.map(to_rfc3339),
            revoked_reason: r.revoked_reason.clone(),
            expires_at: r.expires_at.map(to_rfc3339),
        }
    }
}

/// A freshly created key: the only time `key` is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key metadata.
    #[serde(flatten)]
    pub meta: ApiKeyView,
    /// The key, for `Authorization: Bearer vel_…`. Store it now; it cannot be shown again.
    pub key: String,
}

/// The organization's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Items in the whole list.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
    /// Newest first.
    pub items: Vec<ApiKeyView>,
}

/// Create a key (org_admin).
#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let mut errors = FieldErrors::new();
    check_text(&mut errors, "name", &req.name, 100);
    let role = req
        .role
        .or_else(|| p.holding.role.clone())
        .unwrap_or_else(|| Role::OrgAdmin.as_str().to_string());
    let mut tx = state.db.tenant(&p.org_id).await?;
    match roles::resolve(&mut tx, &p.org_id, &role).await? {
        // A platform admin's key may act as one (while they remain one).
        None if role == Role::Admin.as_str() && p.is_platform_admin() => {}
        Some(carried) if p.holding.permissions.covers(carried) => {}
        None if role == Role::Admin.as_str() => {
            errors.add("role", "cannot exceed the caller's own role");
        }
        Some(_) => errors.add("role", "cannot exceed the caller's own role"),
        None => errors.add(
            "role",
            "must be a built-in organization role or one of the organization's roles",
        ),
    }
    let now = now_ms();
    let expires_at = match req.expires_at.as_deref().map(parse_rfc3339) {
        None => None,
        Some(Some(at)) if at > now => Some(at),
        Some(_) => {
            errors.add("expires_at", "must be an RFC 3339 time in the future");
            None
        }
    };
    errors.finish()?;
    let (key, digest) = api_keys::generate();
    let row = ApiKeyRow {
        id: new_id(),
        org_id: p.org_id.clone(),
        user_id: p.user_id.clone(),
        name: req.name.trim().to_string(),
        role,
        prefix: api_keys::display_prefix(&key),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        expires_at,
        revoked_reason: None,
    };
    store::api_keys::insert(&mut tx, &row, &digest).await?;
    audit::record(
        &mut tx,
        &p,
        &client,
        "api_key_created",
        json!({ "api_key_id": row.id, "name": row.name, "role": row.role, "prefix": row.prefix,
                "expires_at": row.expires_at.map(to_rfc3339) }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            meta: (&row).into(),
            key,
        }),
    ))
}

/// List the organization's keys (org_admin).
#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys", params(PageQuery),
    responses((status = 200, body = ApiKeyList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let rows = store::api_keys::list(&mut tx, &p.org_id).await?;
    tx.commit().await?;
    let page = pagination::page(rows, &query)?;
    Ok(Json(ApiKeyList {
        items: page.items.iter().map(Into::into).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Revoke a key (org_admin); it stops working at once on every instance.
#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.tenant(&p.org_id).await?;
    if !store::api_keys::revoke(&mut tx, &p.org_id, &id).await? {
        return Err(ApiError::not_found("API key"));
    }
    audit::record(
        &mut tx,
        &p,
        &client,
        "api_key_revoked",
        json!({ "api_key_id": id, "reason": store::api_keys::reason::REVOKED }),
    )
    .await?;
    state
        .signals
        .commit_with(tx, Signal::KeyRevoked(id.clone()))
        .await?;
    state.verified.forget_key(&id);
    Ok(StatusCode::NO_CONTENT)
}
