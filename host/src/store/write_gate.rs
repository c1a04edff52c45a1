//! SQLite's in-process write gate: one writing transaction at a time, in
//! arrival order, each woken the moment the previous one ends (SQLite's
//! own busy handler polls by sleeping 1, 2, 5, 10… ms instead). The gate
//! times how long writers wait for it and how long each holds it, so that
//! `/metrics` shows when writers queue behind each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A transaction that holds the gate longer than this is logged: every
/// other writer waited at least that long.
const SLOW_HOLD: Duration = Duration::from_secs(1);

/// The gate and its counters; cloning shares both.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteGate {
    lock: Arc<Mutex<()>>,
    stats: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    entered: AtomicU64,
    wait_nanos: AtomicU64,
    hold_nanos: AtomicU64,
    longest_hold_nanos: AtomicU64,
}

/// The gate, held until dropped (after the transaction ends).
#[derive(Debug)]
pub(crate) struct Held {
    _guard: OwnedMutexGuard<()>,
    since: Instant,
    stats: Arc<Counters>,
}

/// What the gate has seen since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Writing transactions that went through the gate.
    pub entered: u64,
    /// Their waits for it, summed.
    pub waited: Duration,
    /// Their time holding it, summed.
    pub held: Duration,
    /// The longest single hold.
    pub longest_hold: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl WriteGate {
    /// Wait (at most `timeout`) for the gate; `None` when the wait timed out.
    pub(crate) async fn enter(&self, timeout: Duration) -> Option<Held> {
        let asked = Instant::now();
        let guard = tokio::time::timeout(timeout, self.lock.clone().lock_owned())
            .await
            .ok()?;
        let since = Instant::now();
        self.stats
            .wait_nanos
            .fetch_add(nanos(since - asked), Ordering::Relaxed);
        self.stats.entered.fetch_add(1, Ordering::Relaxed);
        Some(Held {
            _guard: guard,
            since,
            stats: self.stats.clone(),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> GateStats {
        let s = &self.stats;
        let d = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        GateStats {
            entered: s.entered.load(Ordering::Relaxed),
            waited: d(&s.wait_nanos),
            held: d(&s.hold_nanos),
            longest_hold: d(&s.longest_hold_nanos),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        let n = nanos(held);
        self.stats.hold_nanos.fetch_add(n, Ordering::Relaxed);
        self.stats
            .longest_hold_nanos
            .fetch_max(n, Ordering::Relaxed);
        if held >= SLOW_HOLD {
            tracing::warn!(
                ms = held.as_millis() as u64,
                "a SQLite write transaction held the write gate for over a second"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_waits_and_holds_in_arrival_order() {
        let gate = WriteGate::default();
        let first = gate.enter(Duration::from_secs(1)).await.unwrap();
        // A second writer times out while the first holds the gate.
        assert!(gate.enter(Duration::from_millis(10)).await.is_none());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(Duration::from_secs(5)).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        waiting.await.unwrap().unwrap();
        let s = gate.stats();
        assert_eq!(s.entered, 2);
        assert!(s.held >= Duration::from_millis(20), "{s:?}");
        assert!(s.longest_hold >= Duration::from_millis(20), "{s:?}");
        assert!(s.waited >= Duration::from_millis(10), "{s:?}");
    }
}
