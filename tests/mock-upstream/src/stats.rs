//! Request counters, the guard that tells a finished request from one the
//! client abandoned, and waiting on the counters without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Notify;

/// A snapshot of the mock's counters. Admin requests (`/__mock/…`) are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests whose handling started.
    pub received: u64,
    /// Requests whose whole response was produced (including error responses
    /// and streams the mock cut on purpose).
    pub completed: u64,
    /// Requests abandoned by the client before the response was fully produced:
    /// the connection closed while the mock was waiting, hanging or streaming.
    pub dropped: u64,
    /// Requests neither completed nor dropped yet.
    pub in_flight: u64,
    /// The most requests in flight at once so far.
    pub peak_in_flight: u64,
    /// TCP connections accepted so far.
    pub connections_accepted: u64,
    /// TCP connections currently open.
    pub connections_open: u64,
}

/// Shared atomic counters plus a [`Notify`] woken on every change.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    completed: AtomicU64,
    dropped: AtomicU64,
    peak_in_flight: AtomicU64,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    changed: Notify,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        // Load the outcomes before `received` so that `received` is never
        // behind them (each outcome is counted after its request was received).
        let dropped = self.dropped.load(Ordering::SeqCst);
        let completed = self.completed.load(Ordering::SeqCst);
        let received = self.received.load(Ordering::SeqCst);
        let connections_open = self.connections_open.load(Ordering::SeqCst);
        let connections_accepted = self.connections_accepted.load(Ordering::SeqCst);
        Stats {
            received,
            completed,
            dropped,
            in_flight: received.saturating_sub(completed + dropped),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            connections_accepted,
            connections_open,
        }
    }

    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `pred` holds for a snapshot, and returns that snapshot.
    pub(crate) async fn wait_until(&self, mut pred: impl FnMut(&Stats) -> bool) -> Stats {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change between the check and the
            // await still wakes us.
            notified.as_mut().enable();
            let stats = self.snapshot();
            if pred(&stats) {
                return stats;
            }
            notified.await;
        }
    }
}

/// Lives as long as one request's handling (moved into the response body when
/// there is one). Dropped without [`RequestGuard::complete`] means the client
/// went away first.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    counters: Arc<Counters>,
    done: bool,
}

impl RequestGuard {
    /// Counts a received request.
    pub(crate) fn begin(counters: Arc<Counters>) -> Self {
        let received = counters.received.fetch_add(1, Ordering::SeqCst) + 1;
        let ended =
            counters.completed.load(Ordering::SeqCst) + counters.dropped.load(Ordering::SeqCst);
        counters
            .peak_in_flight
            .fetch_max(received.saturating_sub(ended), Ordering::SeqCst);
        counters.changed.notify_waiters();
        Self {
            counters,
            done: false,
        }
    }

    /// Marks the request as completed (idempotent).
    pub(crate) fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.counters.bump(&self.counters.completed);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counters.bump(&self.counters.dropped);
        }
    }
}

/// Lives as long as one TCP connection.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    counters: Arc<Counters>,
}

impl ConnectionGuard {
    pub(crate) fn open(counters: Arc<Counters>) -> Self {
        counters.connections_open.fetch_add(1, Ordering::SeqCst);
        counters.bump(&counters.connections_accepted);
        Self { counters }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::SeqCst);
        self.counters.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_completed_or_dropped() {
        let counters = Arc::new(Counters::default());
        let mut done = RequestGuard::begin(counters.clone());
        let abandoned = RequestGuard::begin(counters.clone());
        assert_eq!(counters.snapshot().in_flight, 2);
        done.complete();
        drop(done);
        drop(abandoned);
        let stats = counters.snapshot();
        assert_eq!((stats.received, stats.completed, stats.dropped), (2, 1, 1));
        assert_eq!(stats.in_flight, 0);
    }

    #[tokio::test]
    async fn wait_until_wakes_on_change() {
        let counters = Arc::new(Counters::default());
        let waiter = tokio::spawn({
            let counters = counters.clone();
            async move { counters.wait_until(|s| s.dropped >= 1).await }
        });
        drop(RequestGuard::begin(counters.clone()));
        let stats = waiter.await.expect("waiter task");
        assert_eq!(stats.dropped, 1);
    }
}
