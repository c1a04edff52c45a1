//! A small in-memory cache in front of the database, for answers that may
//! be reused for a few seconds: verified credentials, organizations'
//! catalogues.
//!
//! Three things every such cache needs, kept here once:
//! - entries expire after a fixed time to live, which bounds how long a
//!   missed change signal can go unnoticed;
//! - concurrent misses of one key share one load ([`SingleFlight`]), so an
//!   expiry under load costs one query instead of one per request in flight;
//! - a forget (a revocation, a changed integration) also discards what a
//!   load already under way finds, so an older answer cannot undo it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::single_flight::SingleFlight;

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Values by string key, each reused for `ttl` after its load started.
#[derive(Debug)]
pub struct ExpiringCache<V> {
    ttl: Duration,
    entries: Mutex<Entries<V>>,
    loads: SingleFlight<String>,
}

/// The values, and how many forgets have been applied.
#[derive(Debug)]
struct Entries<V> {
    /// Bumped by every forget: a load that started before it is not kept.
    generation: u64,
    by_key: HashMap<String, (Instant, V)>,
}

impl<V: Clone> ExpiringCache<V> {
    /// An empty cache whose entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        ExpiringCache {
            ttl,
            entries: Mutex::new(Entries {
                generation: 0,
                by_key: HashMap::new(),
            }),
            loads: SingleFlight::default(),
        }
    }

    /// The value under `key`, if it is younger than the time to live.
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock()
            .by_key
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    /// The value under `key`, or what `load` finds, which is then kept for
    /// the time to live. While one caller loads a key, the others wait for
    /// its answer instead of loading too; an error goes to its own caller
    /// only and keeps nothing, so the next waiter loads for itself.
    pub async fn get_or_load<E, F>(&self, key: &str, load: F) -> Result<V, E>
    where
        F: AsyncFnOnce() -> Result<V, E>,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let key = key.to_string();
        let _turn = self.loads.turn(&key).await;
        if let Some(value) = self.get(&key) {
            return Ok(value);
        }
        let (generation, started) = (self.lock().generation, Instant::now());
        let value = load().await?;
        let mut entries = self.lock();
        if entries.generation == generation {
            if entries.by_key.len() > SWEEP_ABOVE {
                let ttl = self.ttl;
                entries.by_key.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            entries.by_key.insert(key, (started, value.clone()));
        }
        Ok(value)
    }

    /// Drops the entries `stale` picks, and whatever a load under way finds.
    pub fn forget(&self, stale: impl Fn(&str, &V) -> bool) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.by_key.retain(|key, (_, value)| !stale(key, value));
    }

    /// Drops every entry, and whatever a load under way finds.
    pub fn clear(&self) {
        self.forget(|_, _| true);
    }

    fn lock(&self) -> MutexGuard<'_, Entries<V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Waker};

    use tokio::sync::Notify;

    use super::*;

    /// Loads `key` as `value` once `release` is notified, counting calls.
    async fn load_slowly(
        cache: &ExpiringCache<u32>,
        key: &str,
        value: u32,
        calls: &AtomicUsize,
        release: &Notify,
    ) -> Result<u32, String> {
        cache
            .get_or_load(key, async || {
                calls.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Ok(value)
            })
            .await
    }

    #[tokio::test]
    async fn waiters_share_a_load_and_failures_keep_nothing() {
        let cache = ExpiringCache::<u32>::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        let release = Notify::new();
        let mut first = pin!(load_slowly(&cache, "k", 5, &calls, &release));
        let mut second = pin!(load_slowly(&cache, "k", 6, &calls, &release));
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(first.as_mut().poll(cx).is_pending());
        assert!(second.as_mut().poll(cx).is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the second waits");
        release.notify_one();
        assert_eq!(first.await, Ok(5));
        assert_eq!(second.await, Ok(5), "the second takes the first's answer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let failed: Result<u32, String> = cache
            .get_or_load("bad", async || Err("unknown".to_string()))
            .await;
        assert_eq!(failed, Err("unknown".to_string()));
        assert_eq!(cache.get("bad"), None);
    }

    #[tokio::test]
    async fn a_forget_during_a_load_is_not_undone() {
        let cache = ExpiringCache::<u32>::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        let release = Notify::new();
        let mut load = pin!(load_slowly(&cache, "k", 5, &calls, &release));
        assert!(
            load.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        // Forgotten after the database answered, before the answer is kept.
        cache.forget(|key, _| key == "k");
        release.notify_one();
        assert_eq!(load.await, Ok(5));
        assert_eq!(cache.get("k"), None, "the forgotten entry is not kept");
    }

    #[tokio::test]
    async fn entries_expire() {
        let cache = ExpiringCache::<u32>::new(Duration::ZERO);
        let loaded: Result<u32, ()> = cache.get_or_load("k", async || Ok(1)).await;
        assert_eq!(loaded, Ok(1));
        assert_eq!(cache.get("k"), None);
        let reloaded: Result<u32, ()> = cache.get_or_load("k", async || Ok(2)).await;
        assert_eq!(reloaded, Ok(2));
    }
}
