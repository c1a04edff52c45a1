//! `POST /api/auth/login`, `/refresh`, `/logout`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ClientInfo};
use crate::api::handlers::users::UserView;
use crate::audit;
use crate::auth::{Credential, Principal, Role};
use crate::orchestrator::signals::Signal;
use crate::state::AppState;
use crate::store::{self, now_ms, to_rfc3339};

/// Credentials for a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Account email.
    #[schema(min_length = 1, max_length = 160)]
    pub email: String,
    /// Account password.
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// Organization to act in; defaults to the user's first membership.
    #[serde(default)]
    pub org_id: Option<String>,
}

/// An issued access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT, for `Authorization: Bearer …`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// Organization the token acts in.
    pub org_id: String,
    /// Roles it carries (`admin` for a platform admin, then the
    /// organization role, built-in or custom).
    pub roles: Vec<String>,
    /// The user.
    pub user: UserView,
}

/// The sliding window password attempts are counted over.
const WINDOW_MS: i64 = 60_000;

/// How many times the per-address limit one email may be tried from every
/// address together: guessing spread over many addresses stays bounded,
/// while a flood from one address does not lock the owner out of theirs.
const EMAIL_LIMIT_FACTOR: i64 = 10;

/// Count a password attempt (a login, or a password check before changing
/// credentials) against the client's address, the (email, address) pair
/// and the email; 429 with `Retry-After` when any is over its limit.
pub(crate) async fn check_password_attempts(
    state: &AppState,
    ip: Option<&str>,
    email: &str,
) -> Result<(), ApiError> {
    let now = now_ms();
    let limit = i64::from(state.config.login_attempts_per_minute);
    let pool = state.db.platform_pool();
    let ip = ip.unwrap_or("unknown");
    let buckets = [
        (format!("login:ip:{ip}"), limit),
        (format!("login:pair:{email}|{ip}"), limit),
        (
            format!("login:email:{email}"),
            limit.saturating_mul(EMAIL_LIMIT_FACTOR),
        ),
    ];
    let mut oldest_over = None::<i64>;
    for (bucket, max) in &buckets {
        let window = store::rate_limits::hit(pool, bucket, now, WINDOW_MS).await?;
        if window.hits > *max {
            oldest_over = Some(oldest_over.map_or(window.oldest, |o| o.min(window.oldest)));
        }
    }
    if let Some(oldest) = oldest_over {
        let retry_ms = (oldest + WINDOW_MS - now).max(1);
        let retry_secs = u64::try_from((retry_ms + 999) / 1000).unwrap_or(60);
        return Err(ApiError::too_many_requests(
            format!("too many password attempts; at most {limit} per minute"),
            retry_secs,
        ));
    }
    // Now and then drop old rows so the tables stay small.
    if rand::random::<u8>() == 0 {
        let _ = store::rate_limits::purge_before(pool, now - WINDOW_MS).await;
        let _ = store::tokens::purge_expired(pool).await;
    }
    Ok(())
}

/// Resolve the organization and roles a user gets in a token.
async fn roles_for(
    conn: &mut sqlx::AnyConnection,
    user: &store::users::User,
    requested_org: Option<&str>,
) -> Result<(String, Vec<String>), ApiError> {
    let memberships = store::organizations::memberships_of(conn, &user.id).await?;
    let is_admin = user.platform_role.as_deref() == Some("admin");
    let chosen = match requested_org {
        Some(org) => memberships.iter().find(|m| m.org_id == org).cloned(),
        None => memberships.first().cloned(),
    };
    let mut roles = Vec::new();
    if is_admin {
        roles.push(Role::Admin.as_str().to_string());
    }
    match chosen {
        Some(m) => {
            roles.push(m.role);
            Ok((m.org_id, roles))
        }
        None if is_admin => {
            // Platform admins may act in any existing organization.
            let org = match requested_org {
                Some(org) => store::organizations::get(conn, org).await?,
                None => store::organizations::list(conn, None)
                    .await?
                    .into_iter()
                    .next(),
            };
            let org = org.ok_or_else(|| ApiError::not_found("organization"))?;
            Ok((org.id, roles))
        }
        None if requested_org.is_some() => Err(ApiError::not_found("organization")),
        None => Err(ApiError::forbidden("the user belongs to no organization")),
    }
}

/// A fresh token for `user` acting in `org_id` with `roles`, under the
/// user's current session epoch.
pub(crate) fn token_response(
    state: &AppState,
    user: &store::users::User,
    org_id: String,
    roles: Vec<String>,
) -> Result<TokenResponse, ApiError> {
    let (token, claims) = state
        .jwt
        .issue(&user.id, &org_id, roles.clone(), user.session_epoch)
        .map_err(ApiError::internal)?;
    Ok(TokenResponse {
        token,
        token_type: "Bearer".into(),
        expires_at: to_rfc3339(claims.exp * 1000),
        user: UserView::new(user, &org_id, &roles),
        org_id,
        roles,
    })
}

/// Exchange email and password for an access token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = req.email.trim().to_lowercase();
    if email.is_empty() || email.chars().count() > 160 {
        return Err(ApiError::invalid_field(
            "email",
            "must be 1 to 160 characters",
        ));
    }
    if req.password.is_empty() || req.password.len() > 1024 {
        return Err(ApiError::invalid_field(
            "password",
            "must be 1 to 1024 bytes",
        ));
    }
    check_password_attempts(&state, client.ip.as_deref(), &email).await?;

    let user = {
        let mut conn = state.db.platform_pool().acquire().await?;
        store::users::find_by_email(&mut conn, &email).await?
    };
    let hasher = state.passwords.clone();
    let password = req.password;
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let verified = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => hasher.verify(&password, &phc),
        None => {
            // Spend the same time on unknown emails so timing does not reveal accounts.
            let _ = hasher.hash(&password);
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let user = match (verified, user) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::unauthorized("invalid email or password")),
    };

    let mut tx = state.db.platform().await?;
    let (org_id, roles) = roles_for(&mut tx, &user, req.org_id.as_deref()).await?;
    audit::record_for(
        &mut tx,
        Some(&org_id),
        Some(&user.id),
        &client,
        "user_login",
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(token_response(&state, &user, org_id, roles)?))
}

/// Trade a valid token for a fresh one (roles re-read); the old one is
/// revoked first, so a token is refreshed once: of concurrent refreshes one
/// gets a token and the others 401.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn refresh(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> Result<Json<TokenResponse>, ApiError> {
    let Credential::Token { jti, exp } = &principal.credential else {
        return Err(ApiError::bad_request(
            "not_a_token",
            "API keys cannot be refreshed",
        ));
    };
    let user = {
        let mut conn = state.db.platform_pool().acquire().await?;
        store::users::find_by_id(&mut conn, &principal.user_id).await?
    }
    .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
    let mut tx = state.db.platform().await?;
    let (org_id, roles) = roles_for(&mut tx, &user, Some(&principal.org_id))
        .await
        .map_err(|_| ApiError::unauthorized("no longer a member of the organization"))?;
    if !store::tokens::revoke(&mut tx, jti, exp * 1000).await? {
        return Err(ApiError::unauthorized("token has been revoked"));
    }
    audit::record_for(
        &mut tx,
        Some(&org_id),
        Some(&user.id),
        &client,
        "token_refreshed",
        json!({}),
    )
    .await?;
    let response = token_response(&state, &user, org_id, roles)?;
    state
        .signals
        .commit_with(tx, Signal::TokenRevoked(jti.clone()))
        .await?;
    state.verified.forget_token(jti);
    Ok(Json(response))
}

/// Revoke an access token (until it would expire anyway) and tell every
/// instance to stop trusting it.
async fn revoke_token(state: &AppState, jti: &str, exp: i64) -> Result<(), ApiError> {
    let mut tx = state.db.platform().await?;
    store::tokens::revoke(&mut tx, jti, exp * 1000).await?;
    state
        .signals
        .commit_with(tx, Signal::TokenRevoked(jti.to_string()))
        .await?;
    state.verified.forget_token(jti);
    Ok(())
}

/// Revoke the presented token on every instance.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> Result<StatusCode, ApiError> {
    let Credential::Token { jti, exp } = &principal.credential else {
        return Err(ApiError::bad_request(
            "not_a_token",
            "API keys are revoked with DELETE /api/api-keys/{id}",
        ));
    };
    revoke_token(&state, jti, *exp).await?;
    let mut tx = state.db.tenant(&principal.org_id).await?;
    audit::record(&mut tx, &principal, &client, "user_logout", json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
