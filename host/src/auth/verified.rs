//! Credentials verified against the database a moment ago: API keys by
//! digest, and access tokens found not revoked, by token id. They are
//! trusted for [`VERIFIED_TTL`] so that a busy client's requests
//! authenticate without a query each. A revocation stops the credential at
//! once on the instance that revoked it and, through the signal sent with
//! it, on the others; the TTL bounds what a missed signal can let through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use crate::orchestrator::signals::{Signal, Signals};
use crate::store::api_keys::ApiKeyRow;

/// How long a verified credential is trusted without asking the database again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(2);

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// One kind of recently verified credential, by what it is looked up with.
#[derive(Debug)]
pub struct Recent<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            entries: Mutex::default(),
        }
    }
}

impl<V: Clone> Recent<V> {
    /// The value verified under `key` within the last [`VERIFIED_TTL`].
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < VERIFIED_TTL)
            .map(|(_, value)| value.clone())
    }

    /// Remembers that `key` was verified just now.
    pub fn put(&self, key: String, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, (at, _)| at.elapsed() < VERIFIED_TTL);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Stops trusting the entries `revoked` picks.
    fn forget(&self, revoked: impl Fn(&str, &V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|key, (_, value)| !revoked(key, value));
    }

    fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Every kind of credential this instance verified recently.
#[derive(Debug, Default)]
pub struct Verified {
    /// API keys by sha256 digest.
    pub api_keys: Recent<ApiKeyRow>,
    /// Access tokens found not revoked, by token id (`jti`).
    pub tokens: Recent<()>,
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
