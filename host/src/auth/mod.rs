//! Authentication and authorization: who is calling (a JWT or an API key
//! turned into a [`Principal`]) and what their roles allow.

pub mod api_keys;
pub mod email_change;
pub mod jwt;
pub mod password;
pub mod permissions;
pub mod roles;
pub mod verified;

pub use permissions::{Permission, Permissions};

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

    /// True for roles held within an organization (everything but `admin`).
    pub fn is_org_role(self) -> bool {
        self != Role::Admin
    }
}

/// What a user holds in one organization now: platform admin or not, their
/// membership role (built-in or custom) and the permissions these give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// A platform admin (every permission in every organization).
    pub platform_admin: bool,
    /// The membership role's name; `None` when not a member.
    pub role: Option<String>,
    /// What the user may do there.
    pub permissions: Permissions,
}

impl Holding {
    /// The holding of a user with `platform_role` whose membership role is
    /// `member_role` (`custom`: that role's stored permissions when it is
    /// the organization's own). `None` when they hold neither, which ends
    /// whatever credential they present there.
    pub fn current(
        platform_role: Option<&str>,
        member_role: Option<&str>,
        custom: Option<&str>,
    ) -> Option<Holding> {
        let platform_admin = platform_role == Some(Role::Admin.as_str());
        let role = member_role.filter(|r| *r != Role::Admin.as_str());
        if !platform_admin && role.is_none() {
            return None;
        }
        let mut permissions = role
            .map(|r| permissions::of_role(r, custom))
            .unwrap_or_default();
        if platform_admin {
            permissions = Permissions::all();
        }
        Some(Holding {
            platform_admin,
            role: role.map(str::to_string),
            permissions,
        })
    }

    /// Role names as tokens and views show them: `admin` first for a
    /// platform admin, then the membership role.
    pub fn role_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(2);
        if self.platform_admin {
            names.push(Role::Admin.as_str().to_string());
        }
        names.extend(self.role.clone());
        names
    }
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
/// request acts in, and what they may do there.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Organization every tenant-owned query is scoped to.
    pub org_id: String,
    /// Role and permissions in that organization (for an API key: the
    /// key's role, limited to what its creator holds now).
    pub holding: Holding,
    /// Token or API key.
    pub credential: Credential,
}

impl Principal {
    /// The id of the API key the caller authenticated with, if any.
    pub fn api_key_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { id } => Some(id),
            Credential::Token { .. } => None,
        }
    }

    /// Whether the caller is a platform admin.
    pub fn is_platform_admin(&self) -> bool {
        self.holding.platform_admin
    }

    /// Whether the caller may do `p` in their organization.
    pub fn can(&self, p: Permission) -> bool {
        self.holding.permissions.has(p)
    }

    /// [`Forbidden`] unless [`Principal::can`].
    pub fn require(&self, p: Permission) -> Result<(), Forbidden> {
        if self.can(p) {
            Ok(())
        } else {
            Err(Forbidden::Permission(p))
        }
    }

    /// [`Forbidden`] unless the caller holds every permission of `role`
    /// (the built-in role a workflow step or a grant names).
    pub fn require_role(&self, role: Role) -> Result<(), Forbidden> {
        if self.holding.permissions.covers(role.permissions()) {
            Ok(())
        } else {
            Err(Forbidden::Role(role))
        }
    }

    /// [`Forbidden`] unless a platform admin.
    pub fn require_platform_admin(&self) -> Result<(), Forbidden> {
        if self.is_platform_admin() {
            Ok(())
        } else {
            Err(Forbidden::PlatformAdmin)
        }
    }
}

/// The caller lacks what an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// A permission in the organization.
    #[error("requires the {0} permission")]
    Permission(Permission),
    /// Every permission of a built-in role.
    #[error("requires the permissions of the {} role", .0.as_str())]
    Role(Role),
    /// The platform admin role.
    #[error("requires the admin role")]
    PlatformAdmin,
}

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
    let holding = Holding::current(
        standing.platform_role.as_deref(),
        standing.member_role.as_deref(),
        standing.role_permissions.as_deref(),
    )
    .ok_or(AuthError::Unauthenticated(
        "no longer a member of the organization",
    ))?;
    Ok(verified::TokenHolder {
        user_id: claims.sub.clone(),
        holding,
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
        holding: holder.holding,
        credential: Credential::Token {
            jti: claims.jti,
            exp: claims.exp,
        },
    })
}
