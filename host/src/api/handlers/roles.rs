//! Permissions and roles: the permissions there are, the organization's
//! roles (built-in and its own), and assigning a member's role
//! (`PUT /api/users/{id}/roles`, as the seed names it, beside the
//! membership route).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::organizations::{MemberView, manage};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ClientInfo};
use crate::auth::roles::{self, RoleRequest, RoleView};
use crate::auth::{Permission, Principal};
use crate::state::AppState;

/// The permissions and the built-in roles' sets.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionCatalog {
    /// Every permission.
    pub permissions: Vec<Permission>,
    /// The built-in roles with their permissions.
    pub roles: Vec<RoleView>,
}

/// Roles of an organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    /// Built-in roles first, then the organization's own by name.
    pub items: Vec<RoleView>,
}

/// The role a user gets in an organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    /// A built-in organization role or one of the organization's roles;
    /// at most what the caller holds.
    pub role: String,
    /// The organization (default: the caller's; another one needs the
    /// platform admin role).
    #[serde(default)]
    pub org_id: Option<String>,
}

/// Every permission, and the permission sets of the built-in roles.
#[utoipa::path(get, path = "/api/permissions", tag = "roles",
    responses((status = 200, body = PermissionCatalog), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn catalog(_p: Principal) -> Json<PermissionCatalog> {
    Json(PermissionCatalog {
        permissions: Permission::ALL.to_vec(),
        roles: roles::built_in(),
    })
}

/// The organization's roles: the four built-in ones and its own.
#[utoipa::path(get, path = "/api/organizations/{id}/roles", tag = "roles",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = RoleList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RoleList>, ApiError> {
    let mut tx = manage(&state, &p, &id).await?;
    let items = roles::list(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(RoleList { items }))
}

/// Define a custom role from permissions the caller holds.
#[utoipa::path(post, path = "/api/organizations/{id}/roles", tag = "roles", request_body = RoleRequest,
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 201, body = RoleView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<(StatusCode, Json<RoleView>), ApiError> {
    let tx = manage(&state, &p, &id).await?;
    let role = roles::create(tx, &p, &client, &id, req).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// Change a custom role's description and permissions; members holding
/// it act with the new set at once.
#[utoipa::path(put, path = "/api/organizations/{id}/roles/{name}", tag = "roles", request_body = RoleRequest,
    params(("id" = String, Path, description = "Organization id"), ("name" = String, Path, description = "Role name")),
    responses((status = 200, body = RoleView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<Json<RoleView>, ApiError> {
    let tx = manage(&state, &p, &id).await?;
    let role = roles::update(&state, tx, &p, &client, (&id, &name), req).await?;
    Ok(Json(role))
}

/// Delete a custom role no member, key or pending invitation carries.
#[utoipa::path(delete, path = "/api/organizations/{id}/roles/{name}", tag = "roles",
    params(("id" = String, Path, description = "Organization id"), ("name" = String, Path, description = "Role name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tx = manage(&state, &p, &id).await?;
    roles::delete(tx, &p, &client, &id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Assign a user's role in the caller's organization (or, for platform
/// admins, the one named): the same change as
/// `PUT /api/organizations/{id}/members/{user_id}`.
#[utoipa::path(put, path = "/api/users/{id}/roles", tag = "roles", request_body = AssignRole,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assign(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(req): ApiJson<AssignRole>,
) -> Result<Json<MemberView>, ApiError> {
    let org_id = req.org_id.unwrap_or_else(|| p.org_id.clone());
    let tx = manage(&state, &p, &org_id).await?;
    let member = roles::assign(&state, tx, &p, &client, (&org_id, &user_id), &req.role).await?;
    Ok(Json(member.into()))
}
