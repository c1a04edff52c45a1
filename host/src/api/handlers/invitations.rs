//! Invitations: how an organization's admin brings a person in. The admin
//! invites an email with a role and gets a one-time token (delivering it is
//! the operator's business); whoever holds the token accepts it with the
//! account's password, or chooses one for a new account. Accounts are
//! global, so no organization can bind another's user, or learn whether an
//! email has an account: the answer to an invitation is the same either way.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody, FieldErrors};
use crate::api::extract::{ApiJson, ApiPath, ClientInfo};
use crate::api::handlers::auth::check_password_attempts;
use crate::api::handlers::organizations::manage;
use crate::api::handlers::users::{hash_password, normalize_email, verify_password};
use crate::audit;
use crate::auth::password::{check_strength, is_valid_email};
use crate::auth::{Principal, api_keys, roles, verified};
use crate::secrets::sha256_hex;
use crate::state::AppState;
use crate::store::invitations::Invitation;
use crate::store::users::User;
use crate::store::{self, new_id, now_ms, to_rfc3339};

/// How long an invitation can be accepted.
const INVITATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Every invitation token starts with this.
const TOKEN_PREFIX: &str = "vel_inv_";

/// Whom to invite, with which role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// The invitee's email.
    pub email: String,
    /// The role they get: a built-in organization role or one of the
    /// organization's roles, at most what the inviter holds.
    pub role: String,
}

/// An invitation, without its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    /// Id.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: after this it cannot be accepted.
    pub expires_at: String,
}

impl From<&Invitation> for InvitationView {
    fn from(i: &Invitation) -> Self {
        InvitationView {
            id: i.id.clone(),
            org_id: i.org_id.clone(),
            email: i.email.clone(),
            role: i.role.clone(),
            created_at: to_rfc3339(i.created_at),
            expires_at: to_rfc3339(i.expires_at),
        }
    }
}

/// A new invitation and its one-time token, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    /// The invitation.
    #[serde(flatten)]
    pub invitation: InvitationView,
    /// Give it to the invitee; they accept with `POST /api/invitations/accept`.
    pub token: String,
}

/// Open invitations of an organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    /// Newest first.
    pub items: Vec<InvitationView>,
}

/// Accepting an invitation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The invitation's token.
    pub token: String,
    /// The password of the invited email's account; for an email without
    /// an account, the new account's password.
    pub password: String,
    /// A new account's display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// The membership an accepted invitation made.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The organization joined.
    pub org_id: String,
    /// The account (created now if the email had none).
    pub user_id: String,
    /// Its email.
    pub email: String,
    /// The role in the organization.
    pub role: String,
}

/// Invite an email into an organization (its org_admin, or a platform
/// admin). The answer is the same whether the email has an account.
#[utoipa::path(post, path = "/api/organizations/{id}/invitations", tag = "organizations",
    request_body = CreateInvitation, params(("id" = String, Path, description = "Organization id")),
    responses((status = 201, body = CreatedInvitation), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(org_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateInvitation>,
) -> Result<(StatusCode, Json<CreatedInvitation>), ApiError> {
    let email = normalize_email(&req.email);
    let mut errors = FieldErrors::new();
    errors.check(
        is_valid_email(&email),
        "email",
        "must be a valid email of at most 160 characters",
    );
    errors.finish()?;
    let mut tx = manage(&state, &p, &org_id).await?;
    roles::grantable(&mut tx, &p, &org_id, "role", &req.role).await?;
    let (token, token_hash) = api_keys::secret_token(TOKEN_PREFIX);
    let now = now_ms();
    let invitation = Invitation {
        id: new_id(),
        org_id: org_id.clone(),
        email,
        role: req.role,
        invited_by: Some(p.user_id.clone()),
        created_at: now,
        expires_at: now + INVITATION_TTL_MS,
        accepted_at: None,
        accepted_by: None,
    };
    store::invitations::insert(&mut tx, &invitation, &token_hash).await?;
    audit::record_for(
        &mut tx,
        Some(&org_id),
        Some(&p.user_id),
        &client,
        "invitation_created",
        json!({ "invitation_id": invitation.id, "email": invitation.email, "role": invitation.role }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation: InvitationView::from(&invitation),
            token,
        }),
    ))
}

/// An organization's open invitations (its org_admin, or a platform admin).
#[utoipa::path(get, path = "/api/organizations/{id}/invitations", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = InvitationList), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(org_id): ApiPath<String>,
) -> Result<Json<InvitationList>, ApiError> {
    let mut tx = manage(&state, &p, &org_id).await?;
    let open = store::invitations::open(&mut tx, &org_id, now_ms()).await?;
    tx.commit().await?;
    Ok(Json(InvitationList {
        items: open.iter().map(InvitationView::from).collect(),
    }))
}

/// Accept an invitation with its token: with the password of the invited
/// email's account, or, when the email has none, creating the account with
/// this password. Password attempts are limited as logins are.
#[utoipa::path(post, path = "/api/invitations/accept", tag = "organizations",
    request_body = AcceptInvitation,
    responses((status = 200, body = Accepted), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<AcceptInvitation>,
) -> Result<Json<Accepted>, ApiError> {
    let gone = || ApiError::not_found("invitation");
    if !req.token.starts_with(TOKEN_PREFIX) || req.token.len() > 128 {
        return Err(gone());
    }
    if req.password.is_empty() || req.password.len() > 1024 {
        return Err(ApiError::invalid_field(
            "password",
            "must be 1 to 1024 bytes",
        ));
    }
    let now = now_ms();
    let invitation = {
        // Whose invitation it is is not known before it is found.
        let mut tx = state.db.platform_read().await?;
        let found =
            store::invitations::find_open_by_token(&mut tx, &sha256_hex(&req.token), now).await?;
        tx.commit().await?;
        found.ok_or_else(gone)?
    };
    check_password_attempts(&state, client.ip.as_deref(), &invitation.email).await?;
    let existing = {
        let mut conn = state.db.platform_pool().acquire().await?;
        store::users::find_by_email(&mut conn, &invitation.email).await?
    };
    let user = match existing {
        Some(user) => {
            if !verify_password(&state, req.password, user.password_hash.clone()).await? {
                return Err(ApiError::unauthorized(
                    "the password is not the invited account's",
                ));
            }
            (user, false)
        }
        None => {
            check_strength(&req.password).map_err(|m| ApiError::invalid_field("password", m))?;
            let name = req
                .name
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty());
            if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
                return Err(ApiError::invalid_field(
                    "name",
                    "must be at most 100 characters",
                ));
            }
            let user = User {
                id: new_id(),
                email: invitation.email.clone(),
                name,
                password_hash: hash_password(&state, req.password).await?,
                platform_role: None,
                session_epoch: 0,
                created_at: now,
                updated_at: now,
            };
            (user, true)
        }
    };
    let (user, created) = user;
    let mut tx = state.db.platform().await?;
    if created {
        store::users::insert(&mut tx, &user).await.map_err(|e| {
            ApiError::unique_or(
                e,
                ApiError::conflict("the account was just created; accept again"),
            )
        })?;
    }
    // Dropping the transaction on a lost race undoes the account too.
    if !store::invitations::accept(&mut tx, &invitation.id, &user.id, now_ms()).await? {
        return Err(gone());
    }
    let member = store::organizations::get_member(&mut tx, &invitation.org_id, &user.id).await?;
    if member.is_none() {
        store::organizations::add_member(&mut tx, &invitation.org_id, &user.id, &invitation.role)
            .await?;
    }
    audit::record_for(
        &mut tx,
        Some(&invitation.org_id),
        Some(&user.id),
        &client,
        "invitation_accepted",
        json!({ "invitation_id": invitation.id, "user_id": user.id, "role": invitation.role,
                "account_created": created }),
    )
    .await?;
    verified::commit_user_change(&state, tx, &user.id).await?;
    let role = match member {
        Some(m) => m.role,
        None => invitation.role,
    };
    Ok(Json(Accepted {
        org_id: invitation.org_id,
        user_id: user.id,
        email: user.email,
        role,
    }))
}
