//! API keys for machine clients: `vel_` followed by 32 random bytes
//! (base64url). Shown once; only the sha256 digest is stored, which is
//! enough for keys of this entropy.

use base64::Engine;

use super::AuthError;
use super::{Credential, Holding, Permissions, Principal, Role, permissions};
use crate::secrets::sha256_hex;
use crate::state::AppState;
use crate::store;
use crate::store::api_keys::LiveKey;

/// Every API key starts with this, which is how the extractor tells keys from JWTs.
pub const PREFIX: &str = "vel_";

/// A fresh key and its digest.
pub fn generate() -> (String, String) {
    secret_token(PREFIX)
}

/// A one-time secret: `prefix` and 32 random bytes (base64url), with its
/// sha256 digest, which is all that is stored (enough at this entropy).
pub fn secret_token(prefix: &str) -> (String, String) {
    let raw: [u8; 32] = rand::random();
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let digest = sha256_hex(&token);
    (token, digest)
}

/// The first characters of a key, stored for recognition in listings.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 8).collect()
}

/// Resolve a presented key into a principal, or 401. The key acts with
/// the weaker of its own role and its creator's current one.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Principal, AuthError> {
    let digest = sha256_hex(key);
    let row = state
        .verified
        .api_keys
        .get_or_load(&digest, async || verify(state, &digest).await)
        .await?;
    principal(row)
}

/// Looks up the live key with this digest, noting its use.
async fn verify(state: &AppState, digest: &str) -> Result<LiveKey, AuthError> {
    // The tenant is not known until the key is found: a platform lookup.
    let mut tx = state.db.platform_read().await?;
    let row = store::api_keys::find_live_by_hash(&mut tx, digest)
        .await?
        .ok_or_else(|| AuthError::Unauthenticated("invalid or revoked API key"))?;
    tx.commit().await?;
    // `last_used_at` is kept to the minute: most requests only read.
    if row
        .key
        .last_used_at
        .is_none_or(|at| at < store::now_ms() - store::api_keys::TOUCH_EVERY_MS)
    {
        let mut tx = state.db.platform().await?;
        store::api_keys::touch(&mut tx, &row.key.id).await?;
        tx.commit().await?;
    }
    Ok(row)
}

fn principal(live: LiveKey) -> Result<Principal, AuthError> {
    if live.key.expires_at.is_some_and(|at| at <= store::now_ms()) {
        return Err(AuthError::Unauthenticated("API key has expired"));
    }
    let creator = Holding::current(
        live.creator_platform_role.as_deref(),
        live.creator_member_role.as_deref(),
        live.creator_role_permissions.as_deref(),
    )
    .ok_or(AuthError::Unauthenticated(
        "the API key's creator no longer belongs to the organization",
    ))?;
    // The key acts with its own role, never above what its creator holds
    // now; an `admin` key is a platform admin's while they remain one.
    let platform_admin = live.key.role == Role::Admin.as_str() && creator.platform_admin;
    let carried = if platform_admin {
        Permissions::all()
    } else {
        permissions::of_role(&live.key.role, live.key_role_permissions.as_deref())
    };
    let key = live.key;
    // The role it acts as: its own, or its creator's when that is weaker.
    let role =
        if !platform_admin && carried.covers(creator.permissions) && carried != creator.permissions
        {
            creator.role.unwrap_or(key.role)
        } else {
            key.role
        };
    Ok(Principal {
        user_id: key.user_id,
        org_id: key.org_id,
        holding: Holding {
            platform_admin,
            permissions: carried.intersect(creator.permissions),
            role: Some(role),
        },
        credential: Credential::ApiKey { id: key.id },
    })
}
