//! Organizations (create: platform admin) and their members and roles
//! (org_admin of that organization, or platform admin).

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
use crate::auth::{Principal, Role, roles, verified};
use crate::orchestrator::dispatch::StreamFailover;
use crate::state::AppState;
use crate::store::{self, Tx, to_rfc3339};

/// An organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationView {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<store::organizations::Organization> for OrganizationView {
    fn from(o: store::organizations::Organization) -> Self {
        OrganizationView {
            id: o.id,
            name: o.name,
            created_at: to_rfc3339(o.created_at),
        }
    }
}

/// A new organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    /// Unique name (≤ 100 chars).
    pub name: String,
}

/// Organizations visible to the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationList {
    /// Items in the whole list.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
    /// The organizations.
    pub items: Vec<OrganizationView>,
}

/// A member and their role.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// User id.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role in the organization.
    pub role: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<store::organizations::Member> for MemberView {
    fn from(m: store::organizations::Member) -> Self {
        MemberView {
            user_id: m.user_id,
            email: m.email,
            name: m.name,
            role: m.role,
            created_at: to_rfc3339(m.created_at),
        }
    }
}

/// The members of an organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// Members by email.
    pub items: Vec<MemberView>,
}

/// Add an existing user (by id or email) with a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The user's id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Or the user's email.
    #[serde(default)]
    pub email: Option<String>,
    /// A built-in organization role or one of the organization's roles.
    pub role: String,
}

/// A new role for a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// A built-in organization role (`org_admin`, `agent_manager`,
    /// `task_executor`, `viewer`) or one of the organization's roles; at
    /// most what the caller holds.
    pub role: String,
}

/// Open a transaction for managing `org_id`: the caller's own organization
/// (the route's access rule checked what they may do there); another one
/// needs platform admin (a deliberate cross-tenant operation); anyone else
/// gets 404.
pub(crate) async fn manage(state: &AppState, p: &Principal, org_id: &str) -> Result<Tx, ApiError> {
    let mut tx = if org_id == p.org_id {
        state.db.tenant(org_id).await?
    } else if p.is_platform_admin() {
        state.db.platform().await?
    } else {
        return Err(ApiError::not_found("organization"));
    };
    if store::organizations::get(&mut tx, org_id).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    Ok(tx)
}

/// Create an organization; the creating admin becomes its org_admin.
#[utoipa::path(post, path = "/api/organizations", tag = "organizations", request_body = CreateOrganization,
    responses((status = 201, body = OrganizationView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateOrganization>,
) -> Result<(StatusCode, Json<OrganizationView>), ApiError> {
    p.require_platform_admin()?;
    let mut errors = FieldErrors::new();
    check_text(&mut errors, "name", &req.name, 100);
    errors.finish()?;
    let name = req.name.trim();
    let mut tx = state.db.platform().await?;
    if store::organizations::find_by_name(&mut tx, name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("an organization with this name exists"));
    }
    let org = store::organizations::insert(&mut tx, name).await?;
    store::organizations::add_member(&mut tx, &org.id, &p.user_id, Role::OrgAdmin.as_str()).await?;
    audit::record_for(
        &mut tx,
        Some(&org.id),
        Some(&p.user_id),
        &client,
        "organization_created",
        json!({ "org_id": org.id, "name": org.name }),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(org.into())))
}

/// Organizations the caller belongs to (all of them for platform admins).
#[utoipa::path(get, path = "/api/organizations", tag = "organizations", params(PageQuery),
    responses((status = 200, body = OrganizationList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<OrganizationList>, ApiError> {
    let mut tx = state.db.platform_read().await?;
    let member = if p.is_platform_admin() {
        None
    } else {
        Some(p.user_id.as_str())
    };
    let orgs = store::organizations::list(&mut tx, member).await?;
    tx.commit().await?;
    let page = pagination::page(orgs, &query)?;
    Ok(Json(OrganizationList {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// One organization: the caller's own, or any for platform admins.
#[utoipa::path(get, path = "/api/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = OrganizationView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrganizationView>, ApiError> {
    let mut tx = if id == p.org_id {
        state.db.tenant_read(&id).await?
    } else if p.is_platform_admin() {
        state.db.platform_read().await?
    } else {
        return Err(ApiError::not_found("organization"));
    };
    let org = store::organizations::get(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    tx.commit().await?;
    Ok(Json(org.into()))
}

/// Members of an organization and their roles.
#[utoipa::path(get, path = "/api/organizations/{id}/members", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = MemberList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_members(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MemberList>, ApiError> {
    let mut tx = manage(&state, &p, &id).await?;
    let members = store::organizations::list_members(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(MemberList {
        items: members.into_iter().map(Into::into).collect(),
    }))
}

/// Add an existing account to the organization (platform admins; an
/// organization's admin invites people instead).
#[utoipa::path(post, path = "/api/organizations/{id}/members", tag = "organizations", request_body = AddMember,
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 201, body = MemberView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn add_member(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let mut errors = FieldErrors::new();
    errors.check(
        req.user_id.is_some() != req.email.is_some(),
        "user_id",
        "give exactly one of user_id and email",
    );
    errors.finish()?;
    manage(&state, &p, &id).await?.rollback().await?;
    // Accounts are global: binding one without its holder's consent is
    // an operator's act, and platform work (the account may be no member
    // of the organization yet). An organization's admin invites instead.
    p.require_platform_admin().map_err(|_| {
        ApiError::forbidden(
            "adding an existing account directly needs the admin role; invite the person \
             instead (POST /api/organizations/{id}/invitations) and they accept",
        )
    })?;
    let mut tx = state.db.platform().await?;
    roles::grantable(&mut tx, &p, &id, "role", &req.role).await?;
    let user = match (&req.user_id, &req.email) {
        (Some(uid), _) => store::users::find_by_id(&mut tx, uid).await?,
        (_, Some(email)) => {
            store::users::find_by_email(&mut tx, &super::users::normalize_email(email)).await?
        }
        _ => None,
    }
    .ok_or_else(|| ApiError::not_found("user"))?;
    if store::organizations::get_member(&mut tx, &id, &user.id)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("the user is already a member"));
    }
    store::organizations::add_member(&mut tx, &id, &user.id, &req.role).await?;
    audit::record_for(
        &mut tx,
        Some(&id),
        Some(&p.user_id),
        &client,
        "member_added",
        json!({ "user_id": user.id, "role": req.role }),
    )
    .await?;
    let member = store::organizations::get_member(&mut tx, &id, &user.id)
        .await?
        .ok_or_else(|| ApiError::internal("membership vanished inside its transaction"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(member.into())))
}

/// Change a member's role (the last org_admin cannot be demoted).
#[utoipa::path(put, path = "/api/organizations/{id}/members/{user_id}", tag = "organizations", request_body = SetRole,
    params(("id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_role(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRole>,
) -> Result<Json<MemberView>, ApiError> {
    let tx = manage(&state, &p, &id).await?;
    let member = roles::assign(&state, tx, &p, &client, (&id, &user_id), &req.role).await?;
    Ok(Json(member.into()))
}

/// Remove a member (not the last org_admin).
#[utoipa::path(delete, path = "/api/organizations/{id}/members/{user_id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = manage(&state, &p, &id).await?;
    let current = store::organizations::get_member(&mut tx, &id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if current.role == Role::OrgAdmin.as_str()
        && store::organizations::count_admins(&mut tx, &id).await? <= 1
    {
        return Err(ApiError::conflict(
            "the organization's last org_admin cannot be removed",
        ));
    }
    store::organizations::remove_member(&mut tx, &id, &user_id).await?;
    let reason = store::api_keys::reason::CREATOR_REMOVED;
    let revoked = store::api_keys::revoke_of_creator(&mut tx, &id, &user_id, reason).await?;
    audit::record_for(
        &mut tx,
        Some(&id),
        Some(&p.user_id),
        &client,
        "member_removed",
        json!({ "user_id": user_id, "revoked_api_key_ids": revoked }),
    )
    .await?;
    for key_id in &revoked {
        audit::record_for(
            &mut tx,
            Some(&id),
            Some(&p.user_id),
            &client,
            "api_key_revoked",
            json!({ "api_key_id": key_id, "reason": reason, "user_id": user_id }),
        )
        .await?;
    }
    verified::commit_user_change(&state, tx, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organization's routing policy.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingPolicy {
    /// A live router plugin the organization may use (its own or the
    /// platform's); `null` goes back to the platform default.
    pub router: Option<String>,
}

/// Set the router the organization's tasks use when their agent names
/// none (org_admin of that organization, or platform admin). Live at once
/// on every instance.
#[utoipa::path(put, path = "/api/organizations/{id}/routing-policy", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")), request_body = RoutingPolicy,
    responses((status = 200, body = RoutingPolicy), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_routing_policy(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RoutingPolicy>,
) -> Result<Json<RoutingPolicy>, ApiError> {
    if id != p.org_id && !p.is_platform_admin() {
        return Err(ApiError::not_found("organization"));
    }
    if let Some(router) = &req.router {
        match state.plugins.lookup(&id, router) {
            Some(d) if d.plugin.kind() == vel_runtime::PluginKind::Router => {}
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "router",
                    format!("`{router}` is not a router plugin"),
                ));
            }
            None => {
                return Err(ApiError::invalid_field(
                    "router",
                    format!("no live router plugin called `{router}` for this organization"),
                ));
            }
        }
    }
    let mut tx = if id == p.org_id {
        state.db.tenant(&id).await?
    } else {
        state.db.platform().await?
    };
    if !store::organizations::set_routing_policy(&mut tx, &id, req.router.as_deref()).await? {
        return Err(ApiError::not_found("organization"));
    }
    audit::record_for(
        &mut tx,
        Some(&id),
        Some(&p.user_id),
        &client,
        "routing_policy_set",
        json!({ "router": req.router }),
    )
    .await?;
    state.commit_catalog_change(tx, &id).await?;
    Ok(Json(req))
}

/// The organization's default stream failover mode, as set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamFailoverSetting {
    /// `fail` or `continue`; `null` goes back to the built-in default
    /// (`fail`).
    pub mode: Option<StreamFailover>,
}

/// The organization's stream failover setting and the mode its streams use.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamFailoverView {
    /// What the organization set (`null`: nothing, the built-in default
    /// applies).
    pub mode: Option<StreamFailover>,
    /// The mode a stream of this organization uses when its request has
    /// no `X-Vel-Stream-Failover` header.
    pub effective: StreamFailover,
}

impl StreamFailoverView {
    fn of(mode: Option<StreamFailover>) -> Self {
        StreamFailoverView {
            mode,
            effective: StreamFailover::resolve(None, mode),
        }
    }
}

/// The organization's stream failover default (any member of that
/// organization, or a platform admin): what a stream does when its
/// provider fails after sending text, for requests (gateway streams and
/// task streams) without an `X-Vel-Stream-Failover` header.
#[utoipa::path(get, path = "/api/organizations/{id}/stream-failover", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = StreamFailoverView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_stream_failover(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StreamFailoverView>, ApiError> {
    let mut tx = if id == p.org_id {
        state.db.tenant_read(&id).await?
    } else if p.is_platform_admin() {
        state.db.platform_read().await?
    } else {
        return Err(ApiError::not_found("organization"));
    };
    if store::organizations::get(&mut tx, &id).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    let settings = store::organizations::dispatch_settings(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(StreamFailoverView::of(settings.stream_failover)))
}

/// Set the organization's stream failover default (org_admin of that
/// organization, or platform admin). When a streamed answer's provider
/// fails after some text reached the client, the mode is the request's
/// `X-Vel-Stream-Failover` header when it has one, else this setting,
/// else `fail`: `fail` ends the stream with an error event (a task: a
/// terminal `failed` status with the text sent as `partial_output`);
/// `continue` asks the next attempt to continue the text sent (as an
/// assistant prefill where the provider plugin declares
/// `assistant_prefill`, else as context with an instruction to continue
/// without repeating) and streams only the continuation. Applies to
/// `/v1/chat/completions` streams and task streams; live at once on every
/// instance; audited as `stream_failover_set`.
#[utoipa::path(put, path = "/api/organizations/{id}/stream-failover", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")), request_body = StreamFailoverSetting,
    responses((status = 200, body = StreamFailoverView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_stream_failover(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<StreamFailoverSetting>,
) -> Result<Json<StreamFailoverView>, ApiError> {
    let mut tx = manage(&state, &p, &id).await?;
    if !store::organizations::set_stream_failover(&mut tx, &id, req.mode).await? {
        return Err(ApiError::not_found("organization"));
    }
    audit::record_for(
        &mut tx,
        Some(&id),
        Some(&p.user_id),
        &client,
        "stream_failover_set",
        json!({ "mode": req.mode }),
    )
    .await?;
    state.commit_catalog_change(tx, &id).await?;
    Ok(Json(StreamFailoverView::of(req.mode)))
}
