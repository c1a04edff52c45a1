//! Credentials verified against the database a moment ago: API keys by
//! digest, and access tokens by token id, each with its holder's current
//! roles. They are trusted for [`VERIFIED_TTL`] so that a busy client's
//! requests authenticate without a query each. A revocation, a role change,
//! a removal or a password change stops the credential at once on the
//! instance where it happened and, through the signal sent with it, on the
//! others; the TTL bounds what a missed signal can let through.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::Holding;
use crate::expiring_cache::ExpiringCache;
use crate::orchestrator::signals::{Signal, Signals};
use crate::state::AppState;
use crate::store::Tx;
use crate::store::api_keys::LiveKey;

/// How long a verified credential is trusted without asking the database again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(2);

/// Who holds a verified access token and the roles they hold now.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    /// The token's user.
    pub user_id: String,
    /// What they hold in the token's organization now.
    pub holding: Holding,
}

/// Every kind of credential this instance verified recently.
#[derive(Debug)]
pub struct Verified {
    /// API keys by sha256 digest, with their creator's standing.
    pub api_keys: ExpiringCache<LiveKey>,
    /// Access tokens found valid, by token id (`jti`).
    pub tokens: ExpiringCache<TokenHolder>,
}

impl Default for Verified {
    fn default() -> Self {
        Verified {
            api_keys: ExpiringCache::new(VERIFIED_TTL),
            tokens: ExpiringCache::new(VERIFIED_TTL),
        }
    }
}

impl Verified {
    /// Stop trusting the API key with this id (it was revoked).
    pub fn forget_key(&self, id: &str) {
        self.api_keys.forget(|_, live| live.key.id == id);
    }

    /// Stop trusting the access token with this id (it was revoked).
    pub fn forget_token(&self, jti: &str) {
        self.tokens.forget(|key, _| key == jti);
    }

    /// Stop trusting every credential of this user: tokens they hold and
    /// keys they created (their roles, memberships or password changed).
    pub fn forget_user(&self, user_id: &str) {
        self.tokens.forget(|_, holder| holder.user_id == user_id);
        self.api_keys.forget(|_, live| live.key.user_id == user_id);
    }

    /// Forget credentials revoked on other instances, as their signals
    /// arrive; forget everything when signals were missed.
    pub fn follow_revocations(self: &Arc<Self>, signals: &Signals) {
        let mut rx = signals.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Signal::KeyRevoked(id)) => this.forget_key(&id),
                    Ok(Signal::TokenRevoked(jti)) => this.forget_token(&jti),
                    Ok(Signal::UserChanged(user_id)) => this.forget_user(&user_id),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        this.api_keys.clear();
                        this.tokens.clear();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

/// Commit a change to `user_id`'s roles, memberships or sessions, and make
/// every instance verify the user's credentials again before trusting them:
/// this one at once, the others on the signal sent with the commit.
pub async fn commit_user_change(
    state: &AppState,
    tx: Tx,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    let signal = Signal::UserChanged(user_id.to_string());
    state.signals.commit_with(tx, signal).await?;
    state.verified.forget_user(user_id);
    Ok(())
}

/// [`commit_user_change`] for several users at once (a custom role they
/// carry changed).
pub async fn commit_users_change(
    state: &AppState,
    mut tx: Tx,
    user_ids: &[String],
) -> Result<(), sqlx::Error> {
    for user_id in user_ids {
        state
            .signals
            .notify(&mut tx, &Signal::UserChanged(user_id.clone()))
            .await?;
    }
    tx.commit().await?;
    for user_id in user_ids {
        state.signals.publish(Signal::UserChanged(user_id.clone()));
        state.verified.forget_user(user_id);
    }
    Ok(())
}
