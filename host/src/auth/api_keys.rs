//! API keys for machine clients: `vel_` followed by 32 random bytes
//! (base64url). Shown once; only the sha256 digest is stored, which is
//! enough for keys of this entropy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::{Credential, Principal, Role};
use crate::api::error::ApiError;
use crate::orchestrator::signals::{Signal, Signals};
use crate::secrets::sha256_hex;
use crate::state::AppState;
use crate::store;
use crate::store::api_keys::ApiKeyRow;

/// How long a verified key is trusted without asking the database again.
/// A revocation stops the key at once on this instance and, on the signal
/// sent with it, on the others; this bound heals a missed signal.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Recently verified keys by digest, so that a busy client's requests
/// authenticate without a query each.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, ApiKeyRow)>>,
}

impl KeyCache {
    fn get(&self, digest: &str) -> Option<ApiKeyRow> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(digest)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, row)| row.clone())
    }

    fn put(&self, digest: String, row: ApiKeyRow) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 10_000 {
            entries.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
        }
        entries.insert(digest, (Instant::now(), row));
    }

    /// Forget keys revoked on other instances, as their signals arrive.
    pub fn follow_revocations(self: &std::sync::Arc<Self>, signals: &Signals) {
        let mut rx = signals.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Signal::KeyRevoked(id)) => this.forget(&id),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        this.entries
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clear();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Stop trusting the key with this id (it was revoked).
    pub fn forget(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (_, row)| row.id != id);
    }
}

/// Every API key starts with this, which is how the extractor tells keys from JWTs.
pub const PREFIX: &str = "vel_";

/// A fresh key and its digest.
pub fn generate() -> (String, String) {
    let raw: [u8; 32] = rand::random();
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let digest = sha256_hex(&key);
    (key, digest)
}

/// The first characters of a key, stored for recognition in listings.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 8).collect()
}

/// Resolve a presented key into a principal, or 401.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let digest = sha256_hex(key);
    if let Some(row) = state.api_keys.get(&digest) {
        return principal(row);
    }
    // The tenant is not known until the key is found: a platform lookup.
    let mut tx = state.db.platform_read().await?;
    let row = store::api_keys::find_live_by_hash(&mut tx, &digest)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
    tx.commit().await?;
    // `last_used_at` is kept to the minute: most requests only read.
    if row
        .last_used_at
        .is_none_or(|at| at < store::now_ms() - store::api_keys::TOUCH_EVERY_MS)
    {
        let mut tx = state.db.platform().await?;
        store::api_keys::touch(&mut tx, &row.id).await?;
        tx.commit().await?;
    }
    state.api_keys.put(digest, row.clone());
    principal(row)
}

fn principal(row: ApiKeyRow) -> Result<Principal, ApiError> {
    let role =
        Role::parse(&row.role).ok_or_else(|| ApiError::unauthorized("invalid API key role"))?;
    Ok(Principal {
        user_id: row.user_id,
        org_id: row.org_id,
        roles: vec![role],
        credential: Credential::ApiKey { id: row.id },
    })
}
