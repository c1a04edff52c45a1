//! Authentication and authorization: who is calling (a JWT or an API key
//! turned into a [`Principal`]) and what their roles allow.

pub mod api_keys;
pub mod email_change;
pub mod jwt;
pub mod password;
pub mod verified;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;
use crate::store;

/// Why a request's credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid credential (answered 401 with this reason).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The database could not answer.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Roles: `admin` is platform-wide; the others are per organization, in
/// decreasing power.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Platform administrator: creates organizations, sees every tenant's audit log.
    Admin,
    /// Manages the organization: members, integrations, API keys, audit log.
    OrgAdmin,
    /// Creates and configures agents.
    AgentManager,
    /// Runs tasks.
    TaskExecutor,
    /// Reads.
    Viewer,
}

impl Role {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::OrgAdmin => "org_admin",
            Role::AgentManager => "agent_manager",
            Role::TaskExecutor => "task_executor",
            Role::Viewer => "viewer",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "org_admin" => Role::OrgAdmin,
            "agent_manager" => Role::AgentManager,
            "task_executor" => Role::TaskExecutor,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }

    /// Power within an organization (higher is more); `admin` tops everything.
    fn rank(self) -> u8 {
        match self {
            Role::Admin => 5,
            Role::OrgAdmin => 4,
            Role::AgentManager => 3,
            Role::TaskExecutor => 2,
            Role::Viewer => 1,
        }
    }

    /// True for roles held within an organization (everything but `admin`).
    pub fn is_org_role(self) -> bool {
        self != Role::Admin
    }

    /// The less powerful of two roles: what a credential may do when it
    /// carries one role and its holder now has the other.
    pub fn weaker(self, other: Role) -> Role {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

/// The roles a user holds in an organization now: `admin` for a platform
/// admin, then their membership role. Empty when they hold neither, which
/// ends whatever credential they present there.
pub fn current_roles(platform_role: Option<&str>, member_role: Option<&str>) -> Vec<Role> {
    let mut roles = Vec::with_capacity(2);
    if platform_role == Some(Role::Admin.as_str()) {
        roles.push(Role::Admin);
    }
    roles.extend(
        member_role
            .and_then(Role::parse)
            .filter(|r| r.is_org_role()),
    );
    roles
}

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A JWT with this id and expiry (unix seconds).
    Token {
        /// Token id.
        jti: String,
        /// Expiry, unix seconds.
        exp: i64,
    },
    /// An API key with this id.
    ApiKey {
        /// The key's row id.
        id: String,
    },
}

/// The authenticated caller of a request: the user, the organization the
/// request acts in, and the roles held there.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Organization every tenant-owned query is scoped to.
    pub org_id: String,
    /// Roles (`admin` plus at most one organization role).
    pub roles: Vec<Role>,
    /// Token or API key.
    pub credential: Credential,
}

impl Principal {
    /// Whether the caller is a platform admin.
    pub fn is_platform_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether the caller holds `min` or a stronger role in the organization
    /// (platform admins pass every organization check).
    pub fn has_at_least(&self, min: Role) -> bool {
        self.roles.iter().any(|r| r.rank() >= min.rank())
    }

    /// [`Forbidden`] unless [`Principal::has_at_least`].
    pub fn require(&self, min: Role) -> Result<(), Forbidden> {
        if self.has_at_least(min) {
            Ok(())
        } else {
            Err(Forbidden(min))
        }
    }

    /// [`Forbidden`] unless a platform admin.
    pub fn require_platform_admin(&self) -> Result<(), Forbidden> {
        if self.is_platform_admin() {
            Ok(())
        } else {
            Err(Forbidden(Role::Admin))
        }
    }
}

/// The caller lacks the role an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("requires the {} role", .0.as_str())]
pub struct Forbidden(pub Role);

/// Checks a well-signed token against the database: not revoked, issued
/// under the user's current session epoch, and its user still holds a role
/// in the token's organization. The roles are the current ones, not the
/// token's: a demotion takes effect at once.
async fn verify_token(
    state: &AppState,
    claims: &jwt::Claims,
) -> Result<verified::TokenHolder, AuthError> {
    // The tenant is the token's claim, not yet trusted: a platform read.
    let mut tx = state.db.platform_read().await?;
    let revoked = store::tokens::is_revoked(&mut tx, &claims.jti).await?;
    let standing = store::users::standing(&mut tx, &claims.sub, &claims.org).await?;
    tx.commit().await?;
    if revoked {
        return Err(AuthError::Unauthenticated("token has been revoked"));
    }
    let standing = standing.ok_or_else(|| AuthError::Unauthenticated("user no longer exists"))?;
    if standing.session_epoch != claims.ep {
        return Err(AuthError::Unauthenticated(
            "the session ended (password changed); log in again",
        ));
    }
    let roles = current_roles(
        standing.platform_role.as_deref(),
        standing.member_role.as_deref(),
    );
    if roles.is_empty() {
        return Err(AuthError::Unauthenticated(
            "no longer a member of the organization",
        ));
    }
    Ok(verified::TokenHolder {
        user_id: claims.sub.clone(),
        roles,
    })
}

/// The principal behind a bearer credential: an API key (`vel_…`) or an
/// access token, checked against the database (through the caches of
/// [`verified`]).
pub async fn authenticate(state: &AppState, bearer: &str) -> Result<Principal, AuthError> {
    if bearer.starts_with(api_keys::PREFIX) {
        return api_keys::authenticate(state, bearer).await;
    }
    let claims = state
        .jwt
        .verify(bearer)
        .map_err(|_| AuthError::Unauthenticated("invalid or expired token"))?;
    let holder = state
        .verified
        .tokens
        .get_or_load(&claims.jti, async || verify_token(state, &claims).await)
        .await?;
    Ok(Principal {
        user_id: claims.sub,
        org_id: claims.org,
        roles: holder.roles,
        credential: Credential::Token {
            jti: claims.jti,
            exp: claims.exp,
        },
    })
}
