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
use crate::single_flight::SingleFlight;
use crate::store::api_keys::ApiKeyRow;

/// How long a verified credential is trusted without asking the database again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(2);

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// One kind of recently verified credential, by what it is looked up with.
#[derive(Debug)]
pub struct Recent<V> {
    entries: Mutex<Entries<V>>,
    /// Concurrent misses of one credential share one verification.
    lookups: SingleFlight<String>,
}

/// The trusted values, and how many revocations have been applied.
#[derive(Debug)]
struct Entries<V> {
    /// Bumped by every forget: a verification that started before a
    /// revocation is never trusted after it.
    generation: u64,
    by_key: HashMap<String, (Instant, V)>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            entries: Mutex::new(Entries {
                generation: 0,
                by_key: HashMap::new(),
            }),
            lookups: SingleFlight::default(),
        }
    }
}

impl<V: Clone> Recent<V> {
    /// The value verified under `key` within the last [`VERIFIED_TTL`].
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock()
            .by_key
            .get(key)
            .filter(|(at, _)| at.elapsed() < VERIFIED_TTL)
            .map(|(_, value)| value.clone())
    }

    /// The value trusted under `key`, or what `verify` finds, which is then
    /// trusted for [`VERIFIED_TTL`]. While one caller verifies a key, the
    /// others wait for its answer instead of asking the database too; an
    /// error is returned to its own caller only and trusts nothing.
    pub async fn get_or_verify<E, F>(&self, key: &str, verify: F) -> Result<V, E>
    where
        F: AsyncFnOnce() -> Result<V, E>,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let key = key.to_string();
        let _turn = self.lookups.turn(&key).await;
        if let Some(value) = self.get(&key) {
            return Ok(value);
        }
        let generation = self.lock().generation;
        let value = verify().await?;
        let mut entries = self.lock();
        if entries.generation == generation {
            if entries.by_key.len() > SWEEP_ABOVE {
                entries
                    .by_key
                    .retain(|_, (at, _)| at.elapsed() < VERIFIED_TTL);
            }
            entries.by_key.insert(key, (Instant::now(), value.clone()));
        }
        Ok(value)
    }

    /// Stops trusting the entries `revoked` picks, and whatever a
    /// verification under way finds.
    fn forget(&self, revoked: impl Fn(&str, &V) -> bool) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries
            .by_key
            .retain(|key, (_, value)| !revoked(key, value));
    }

    fn clear(&self) {
        self.forget(|_, _| true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Waker};

    use tokio::sync::Notify;

    use super::*;

    /// Verifies `key` as `value` once `release` is notified, counting calls.
    async fn verify_slowly(
        recent: &Recent<u32>,
        key: &str,
        value: u32,
        calls: &AtomicUsize,
        release: &Notify,
    ) -> Result<u32, String> {
        recent
            .get_or_verify(key, async || {
                calls.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Ok(value)
            })
            .await
    }

    #[tokio::test]
    async fn waiters_share_a_verification_and_failures_trust_nothing() {
        let recent = Recent::<u32>::default();
        let calls = AtomicUsize::new(0);
        let release = Notify::new();
        let mut first = pin!(verify_slowly(&recent, "k", 5, &calls, &release));
        let mut second = pin!(verify_slowly(&recent, "k", 6, &calls, &release));
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(first.as_mut().poll(cx).is_pending());
        assert!(second.as_mut().poll(cx).is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the second waits");
        release.notify_one();
        assert_eq!(first.await, Ok(5));
        assert_eq!(second.await, Ok(5), "the second takes the first's answer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let failed: Result<u32, String> = recent
            .get_or_verify("bad", async || Err("unknown".to_string()))
            .await;
        assert_eq!(failed, Err("unknown".to_string()));
        assert_eq!(recent.get("bad"), None);
    }

    #[tokio::test]
    async fn a_revocation_during_verification_is_not_undone() {
        let recent = Recent::<u32>::default();
        let calls = AtomicUsize::new(0);
        let release = Notify::new();
        let mut lookup = pin!(verify_slowly(&recent, "k", 5, &calls, &release));
        assert!(
            lookup
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        // Revoked after the database said yes, before the answer is kept.
        recent.forget(|key, _| key == "k");
        release.notify_one();
        assert_eq!(lookup.await, Ok(5));
        assert_eq!(recent.get("k"), None, "the revoked key is not trusted");
    }
}
