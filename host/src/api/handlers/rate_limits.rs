//! Rate limits: the caller's current windows, and setting the limits of an
//! organization, a user or an API key (every limit left out is lifted).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::organizations::manage;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ClientInfo};
use crate::auth::Principal;
use crate::limits::{Limits, Scope, Usage, service};
use crate::state::AppState;

/// The caller's limits and their current windows.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitUsage {
    /// One entry per limit that applies to the caller (the organization's,
    /// the user's or the operator's default, the API key's).
    pub items: Vec<Usage>,
}

/// The limits that apply to the caller and how much of each window is used.
#[utoipa::path(get, path = "/api/rate-limits", tag = "rate-limits",
    responses((status = 200, body = RateLimitUsage), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<RateLimitUsage>, ApiError> {
    let items = state.limits.usage(&p).await?;
    Ok(Json(RateLimitUsage { items }))
}

/// Set the organization's own limits (all its members and keys together).
#[utoipa::path(put, path = "/api/organizations/{id}/rate-limits", tag = "rate-limits", request_body = Limits,
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = Limits), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_for_organization(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(limits): ApiJson<Limits>,
) -> Result<Json<Limits>, ApiError> {
    let tx = manage(&state, &p, &id).await?;
    let subject = (id.as_str(), Scope::Organization, id.as_str());
    let set = service::set(&state.limits, tx, (&p, &client), subject, limits).await?;
    Ok(Json(set))
}

/// Set a member's limits in the caller's organization (their tokens and
/// keys together; replaces the operator's default for them).
#[utoipa::path(put, path = "/api/users/{id}/rate-limits", tag = "rate-limits", request_body = Limits,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = Limits), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_for_user(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(limits): ApiJson<Limits>,
) -> Result<Json<Limits>, ApiError> {
    let tx = manage(&state, &p, &p.org_id).await?;
    let subject = (p.org_id.as_str(), Scope::User, user_id.as_str());
    let set = service::set(&state.limits, tx, (&p, &client), subject, limits).await?;
    Ok(Json(set))
}

/// Set an API key's limits.
#[utoipa::path(put, path = "/api/api-keys/{id}/rate-limits", tag = "rate-limits", request_body = Limits,
    params(("id" = String, Path, description = "API key id")),
    responses((status = 200, body = Limits), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_for_api_key(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(limits): ApiJson<Limits>,
) -> Result<Json<Limits>, ApiError> {
    let tx = manage(&state, &p, &p.org_id).await?;
    let subject = (p.org_id.as_str(), Scope::ApiKey, key_id.as_str());
    let set = service::set(&state.limits, tx, (&p, &client), subject, limits).await?;
    Ok(Json(set))
}
