//! `GET/PUT /api/users/me`, `POST /api/users`, `GET /api/users`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiQuery, ClientInfo};
use crate::api::handlers::auth::{TokenResponse, check_password_attempts, token_response};
use crate::api::pagination;
use crate::audit;
use crate::auth::email_change::{self, EmailChangeError};
use crate::auth::password::{check_strength, is_valid_email};
use crate::auth::{Credential, Principal, Role, roles, verified};
use crate::state::AppState;
use crate::store::{self, new_id, now_ms, to_rfc3339, users::User};

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// `admin` for platform admins.
    pub platform_role: Option<String>,
    /// Organization of the current context, when known.
    pub org_id: Option<String>,
    /// Roles in that context (`admin`, then the organization role).
    pub roles: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl UserView {
    /// View of `user` acting in `org_id` with `roles`.
    pub fn new(user: &User, org_id: &str, roles: &[String]) -> UserView {
        UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            platform_role: user.platform_role.clone(),
            org_id: Some(org_id.to_string()),
            roles: roles.to_vec(),
            created_at: to_rfc3339(user.created_at),
            updated_at: to_rfc3339(user.updated_at),
        }
    }

    fn bare(user: &User) -> UserView {
        UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            platform_role: user.platform_role.clone(),
            org_id: None,
            roles: Vec::new(),
            created_at: to_rfc3339(user.created_at),
            updated_at: to_rfc3339(user.updated_at),
        }
    }
}

/// Changes to one's own profile. Changing email or password needs `current_password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    /// New email: applied once confirmed with the token sent to it.
    #[serde(default)]
    pub email: Option<String>,
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New password (12–72 chars, lower, upper, digit).
    #[serde(default)]
    pub password: Option<String>,
    /// Current password, required to change email or password.
    #[serde(default)]
    pub current_password: Option<String>,
}

/// The updated profile; after a password change, a fresh session for the
/// caller (every earlier token of the user, the caller's included, has ended).
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedMe {
    /// The profile.
    #[serde(flatten)]
    pub user: UserView,
    /// A new access token, present when the password changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<TokenResponse>,
    /// `pending` when a new email was asked for (the answer is then 202):
    /// it takes effect once confirmed with the token sent to it
    /// (`POST /api/users/me/email/confirm`); `email` is still the old one.
    /// The answer is the same whether the new address is free or taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_change: Option<EmailChangeState>,
    /// With `email_change`: when its token expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Where a requested change of email stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmailChangeState {
    /// Awaiting confirmation with the token sent to the new address.
    Pending,
}

/// The token that confirms a change of email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEmail {
    /// The one-time token sent to the new address.
    pub token: String,
}

/// A new user, created as a member of an organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email (≤ 160 chars, unique).
    pub email: String,
    /// Password (12–72 chars, lower, upper, digit).
    pub password: String,
    /// Display name (≤ 100 chars).
    #[serde(default)]
    pub name: Option<String>,
    /// Role in the organization (default `viewer`): a built-in
    /// organization role or one of the organization's roles.
    #[serde(default)]
    pub role: Option<String>,
    /// Organization (default: the caller's; another one needs platform admin).
    #[serde(default)]
    pub org_id: Option<String>,
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// Users on this page.
    pub items: Vec<UserView>,
    /// All matching users.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub(crate) async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    let hasher = state.passwords.clone();
    tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Whether `password` matches the stored hash `phc` (off the async workers:
/// a check costs an Argon2 run).
pub(crate) async fn verify_password(
    state: &AppState,
    password: String,
    phc: String,
) -> Result<bool, ApiError> {
    let hasher = state.passwords.clone();
    tokio::task::spawn_blocking(move || hasher.verify(&password, &phc))
        .await
        .map_err(ApiError::internal)
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/users/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, p: Principal) -> Result<Json<UserView>, ApiError> {
    let mut conn = state.db.platform_pool().acquire().await?;
    let user = store::users::find_by_id(&mut conn, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView::new(
        &user,
        &p.org_id,
        &p.holding.role_names(),
    )))
}

/// Update the caller's name or password, or ask for a new email. Email and
/// password change only with an access token and the current password
/// (attempts counted as logins); a password change ends every session of
/// the user on every instance and answers with a fresh one. A new email
/// is not applied at once: the answer is 202 with `email_change: pending`,
/// whether or not the address has an account, and a one-time token goes to
/// the address through the operator's hook (`VEL_NOTIFY_URL`; without it,
/// 422 `email_change_unavailable`).
#[utoipa::path(put, path = "/api/users/me", tag = "users", request_body = UpdateMe,
    responses((status = 200, body = UpdatedMe), (status = 202, body = UpdatedMe, description = "A change of email awaits its confirmation"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_me(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<UpdateMe>,
) -> Result<(StatusCode, Json<UpdatedMe>), ApiError> {
    let mut errors = FieldErrors::new();
    if let Some(email) = &req.email {
        errors.check(
            is_valid_email(email.trim()),
            "email",
            "must be a valid email of at most 160 characters",
        );
    }
    if let Some(name) = &req.name {
        errors.check(
            name.chars().count() <= 100,
            "name",
            "must be at most 100 characters",
        );
    }
    if let Some(pw) = &req.password
        && let Err(msg) = check_strength(pw)
    {
        errors.add("password", &msg);
    }
    let sensitive = req.email.is_some() || req.password.is_some();
    if sensitive && matches!(p.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::forbidden(
            "email and password change only with an access token (log in), not an API key",
        ));
    }
    errors.check(
        !sensitive || req.current_password.is_some(),
        "current_password",
        "is required to change email or password",
    );
    errors.finish()?;
    if req.email.is_some() {
        email_change::ensure_deliverable(&state.notifier)?;
    }

    let mut conn = state.db.platform_pool().acquire().await?;
    let mut user = store::users::find_by_id(&mut conn, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    drop(conn);
    if let Some(current) = req.current_password {
        check_password_attempts(&state, client.ip.as_deref(), &user.email).await?;
        if !verify_password(&state, current, user.password_hash.clone()).await? {
            return Err(ApiError::invalid_field("current_password", "is incorrect"));
        }
    }
    let mut changed = Vec::new();
    if let Some(name) = req.name {
        user.name = Some(name.trim().to_string()).filter(|n| !n.is_empty());
        changed.push("name");
    }
    let password_changed = req.password.is_some();
    if let Some(pw) = req.password {
        user.password_hash = hash_password(&state, pw).await?;
        changed.push("password");
    }
    // The account belongs to no tenant: platform work (the audit entry
    // still goes to the caller's organization).
    let mut tx = state.db.platform().await?;
    if !changed.is_empty() {
        store::users::update(&mut tx, &user).await?;
        user.updated_at = now_ms();
    }
    let pending = match &req.email {
        Some(email) => {
            Some(email_change::request(&mut tx, &user.id, &normalize_email(email), now_ms()).await?)
        }
        None => None,
    };
    audit::record(
        &mut tx,
        &p,
        &client,
        "user_updated",
        json!({ "fields": changed, "sessions_ended": password_changed,
                "email_change_requested": pending.is_some() }),
    )
    .await?;
    let session = if password_changed {
        user.session_epoch = store::users::end_sessions(&mut tx, &user.id).await?;
        let session = token_response(&state, &user, p.org_id.clone(), p.holding.role_names())?;
        verified::commit_user_change(&state, tx, &user.id).await?;
        Some(session)
    } else {
        tx.commit().await?;
        None
    };
    let (status, email_change, expires_at) = match pending {
        Some(pending) => {
            let expires_at = to_rfc3339(pending.expires_at);
            pending.deliver(&state.notifier);
            (
                StatusCode::ACCEPTED,
                Some(EmailChangeState::Pending),
                Some(expires_at),
            )
        }
        None => (StatusCode::OK, None, None),
    };
    Ok((
        status,
        Json(UpdatedMe {
            user: UserView::new(&user, &p.org_id, &p.holding.role_names()),
            session,
            email_change,
            expires_at,
        }),
    ))
}

/// Confirm a change of the caller's email with the one-time token sent to
/// the new address. An unknown, used or expired token, and one whose
/// address has an account by now, all get the same 422 `invalid_token`.
#[utoipa::path(post, path = "/api/users/me/email/confirm", tag = "users", request_body = ConfirmEmail,
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn confirm_email(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<ConfirmEmail>,
) -> Result<Json<UserView>, ApiError> {
    if matches!(p.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::forbidden(
            "email and password change only with an access token (log in), not an API key",
        ));
    }
    let invalid = || ApiError::from(EmailChangeError::InvalidToken);
    let mut tx = state.db.platform().await?;
    let confirmed = email_change::confirm(&mut tx, &p.user_id, &req.token, now_ms())
        .await
        .map_err(|e| ApiError::unique_or(e, invalid()))?;
    if confirmed.is_none() {
        // The token is used up all the same.
        tx.commit().await?;
        return Err(invalid());
    }
    audit::record(
        &mut tx,
        &p,
        &client,
        "user_updated",
        json!({ "fields": ["email"], "sessions_ended": false }),
    )
    .await?;
    let user = store::users::find_by_id(&mut tx, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    tx.commit().await?;
    Ok(Json(UserView::new(
        &user,
        &p.org_id,
        &p.holding.role_names(),
    )))
}

/// Create an account as a member of an organization (platform admins;
/// an organization's admin invites people instead).
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let org_id = req.org_id.clone().unwrap_or_else(|| p.org_id.clone());
    let cross_tenant = org_id != p.org_id;
    if cross_tenant && !p.is_platform_admin() {
        return Err(ApiError::not_found("organization"));
    }
    // Accounts are global: an organization's admin invites people (who
    // choose their own password), so no organization can claim an email
    // another will need, or learn whether it has an account.
    p.require_platform_admin().map_err(|_| {
        ApiError::forbidden(
            "creating accounts needs the admin role; invite the person instead \
             (POST /api/organizations/{id}/invitations)",
        )
    })?;
    let mut errors = FieldErrors::new();
    errors.check(
        is_valid_email(req.email.trim()),
        "email",
        "must be a valid email of at most 160 characters",
    );
    if let Err(msg) = check_strength(&req.password) {
        errors.add("password", &msg);
    }
    if let Some(name) = &req.name {
        errors.check(
            name.chars().count() <= 100,
            "name",
            "must be at most 100 characters",
        );
    }
    errors.finish()?;
    let role = req
        .role
        .unwrap_or_else(|| Role::Viewer.as_str().to_string());

    let now = now_ms();
    let user = User {
        id: new_id(),
        email: normalize_email(&req.email),
        name: req
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        password_hash: hash_password(&state, req.password).await?,
        platform_role: None,
        session_epoch: 0,
        created_at: now,
        updated_at: now,
    };
    // Accounts belong to no tenant: creating one is platform work.
    let mut tx = state.db.platform().await?;
    if store::organizations::get(&mut tx, &org_id).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    roles::grantable(&mut tx, &p, &org_id, "role", &role).await?;
    if store::users::find_by_email(&mut tx, &user.email)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("email is already taken"));
    }
    store::users::insert(&mut tx, &user).await?;
    store::organizations::add_member(&mut tx, &org_id, &user.id, &role).await?;
    audit::record_for(
        &mut tx,
        Some(&org_id),
        Some(&p.user_id),
        &client,
        "user_created",
        json!({ "user_id": user.id, "email": user.email, "role": role }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(UserView::new(&user, &org_id, &[role])),
    ))
}

/// List users: members of the caller's organization (org_admin), or every user (admin).
#[utoipa::path(get, path = "/api/users", tag = "users", params(UserQuery),
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<UserList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let (rows, total) = if p.is_platform_admin() {
        let mut tx = state.db.platform_read().await?;
        let page = store::users::page(&mut tx, None, limit, offset).await?;
        tx.commit().await?;
        page
    } else {
        let mut tx = state.db.tenant_read(&p.org_id).await?;
        let page = store::users::page(&mut tx, Some(&p.org_id), limit, offset).await?;
        tx.commit().await?;
        page
    };
    Ok(Json(UserList {
        items: rows.iter().map(UserView::bare).collect(),
        total,
        limit,
        offset,
    }))
}
