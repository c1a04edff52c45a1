//! One holder per key at a time: the turn-taking behind
//! [`crate::expiring_cache::ExpiringCache`]'s one load per key.
//!
//! A caller takes the key's [`Turn`] before doing the work for that key;
//! callers of the same key wait in order until the holder drops its turn,
//! and callers of other keys do not wait at all. What the holder leaves for
//! the waiters (a cached entry, say) is the user's business: a waiter
//! checks for it once its turn comes. A turn is dropped with its future, so
//! a cancelled holder or waiter blocks nobody.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Keys whose turns are kept before the ones nobody holds are swept.
const SWEEP_ABOVE: usize = 1_024;

/// Turns to look up a key, one holder per key at a time.
#[derive(Debug)]
pub struct SingleFlight<K> {
    turns: Mutex<HashMap<K, Weak<AsyncMutex<()>>>>,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight {
            turns: Mutex::default(),
        }
    }
}

/// The right to look up one key; the next waiter's turn starts when it is
/// dropped.
#[derive(Debug)]
pub struct Turn<'a, K: Eq + Hash> {
    flight: &'a SingleFlight<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    /// Waits until no one else is looking up `key`, then holds its turn.
    /// Callers check their cache again once they have it: the holder before
    /// them may have filled it.
    pub async fn turn(&self, key: &K) -> Turn<'_, K> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            match turns.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if turns.len() >= SWEEP_ABOVE {
                        // Turns abandoned by cancelled waiters.
                        turns.retain(|_, turn| turn.strong_count() > 0);
                    }
                    let lock = Arc::new(AsyncMutex::new(()));
                    turns.insert(key.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        let guard = lock.lock_owned().await;
        Turn {
            flight: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// Keys with a lookup in progress or waited for (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<K: Eq + Hash> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        // Hand the turn on first; then the key's entry goes if no one waits.
        drop(self.guard.take());
        let mut turns = self.flight.turns.lock().unwrap_or_else(|e| e.into_inner());
        if turns
            .get(&self.key)
            .is_some_and(|turn| turn.strong_count() == 0)
        {
            turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Polls `future` once, without a runtime's waker.
    fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A cache in front of a slow lookup that counts its calls.
    #[derive(Default)]
    struct Cached {
        value: Mutex<Option<u32>>,
        lookups: AtomicUsize,
        flight: SingleFlight<String>,
    }

    impl Cached {
        async fn get(&self, release: &tokio::sync::Notify) -> u32 {
            if let Some(v) = *self.value.lock().unwrap() {
                return v;
            }
            let _turn = self.flight.turn(&"key".to_string()).await;
            if let Some(v) = *self.value.lock().unwrap() {
                return v;
            }
            self.lookups.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            *self.value.lock().unwrap() = Some(7);
            7
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup() {
        let cached = Cached::default();
        let release = tokio::sync::Notify::new();
        let mut calls: Vec<_> = (0..32).map(|_| Box::pin(cached.get(&release))).collect();
        // Every caller runs until it waits: the first in its lookup, the
        // others for its turn. Without the turn, all 32 would be looking up.
        for call in &mut calls {
            assert!(poll_once(call.as_mut()).is_pending());
        }
        assert_eq!(cached.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(cached.flight.len(), 1);

        release.notify_one();
        for call in calls {
            assert_eq!(call.await, 7);
        }
        assert_eq!(cached.lookups.load(Ordering::SeqCst), 1);
        // Nobody holds or waits for the key's turn any more.
        assert_eq!(cached.flight.len(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_block_the_key() {
        let flight = SingleFlight::<u8>::default();
        let first = flight.turn(&1).await;
        let mut waiter = Box::pin(flight.turn(&1));
        assert!(poll_once(waiter.as_mut()).is_pending());
        drop(waiter);
        drop(first);
        assert_eq!(flight.len(), 0);
        // Other keys never wait for this one.
        let _one = flight.turn(&1).await;
        let _two = flight.turn(&2).await;
        assert_eq!(flight.len(), 2);
    }
}
