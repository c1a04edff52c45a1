//! Credentials verified against the database a moment ago: API keys by
//! digest, and access tokens found not revoked, by token id. They are
//! trusted for [`VERIFIED_TTL`] so that a busy client's requests
//! authenticate without a query each. A revocation stops the credential at
//! once on the instance that revoked it and, through the signal sent with
//! it, on the others; the TTL bounds what a missed signal can let through.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::expiring_cache::ExpiringCache;
use crate::orchestrator::signals::{Signal, Signals};
use crate::store::api_keys::ApiKeyRow;

/// How long a verified credential is trusted without asking the database again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(2);

/// Every kind of credential this instance verified recently.
#[derive(Debug)]
pub struct Verified {
    /// API keys by sha256 digest.
    pub api_keys: ExpiringCache<ApiKeyRow>,
    /// Access tokens found not revoked, by token id (`jti`).
    pub tokens: ExpiringCache<()>,
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
        self.api_keys.forget(|_, row| row.id == id);
    }

    /// Stop trusting the access token with this id (it was revoked).
    pub fn forget_token(&self, jti: &str) {
        self.tokens.forget(|key, _| key == jti);
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
