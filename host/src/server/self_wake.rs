//! A connection future that wakes itself is polled again at once instead of
//! being rescheduled.
//!
//! hyper serves a connection and its handler in one task, and the two talk
//! through wakers: when the handler takes the request body, hyper's body
//! channel wakes the connection so it can read the body's end. That wake
//! comes from inside the task's own poll, and Tokio treats a task woken
//! while running as one that yields: it goes to the back of the run queue
//! and an idle worker is woken to take it. At low load that hands nearly
//! every request from one worker to the other. [`PollWhileSelfWoken`]
//! catches wakes that arrive during its own poll and polls again, a
//! bounded number of times, before returning; wakes at any other time go
//! to the task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Polls again, at most this many times per poll, before yielding the way
/// Tokio does (so one connection cannot hold its worker).
const MAX_POLLS_AGAIN: usize = 4;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled, not woken yet.
const POLLING: u8 = 1;
/// Being polled and woken meanwhile: poll again.
const WOKEN: u8 = 2;

/// See the module documentation.
pub(super) struct PollWhileSelfWoken<F> {
    inner: Pin<Box<F>>,
    relay: Arc<Relay>,
    waker: Waker,
}

impl<F: Future> PollWhileSelfWoken<F> {
    /// Wraps `inner`.
    pub(super) fn new(inner: F) -> Self {
        let relay = Arc::new(Relay {
            state: AtomicU8::new(IDLE),
            task: futures::task::AtomicWaker::new(),
        });
        PollWhileSelfWoken {
            inner: Box::pin(inner),
            waker: Waker::from(relay.clone()),
            relay,
        }
    }

    /// The wrapped future (to tell a connection to shut down, say).
    pub(super) fn inner_mut(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }
}

impl<F: Future> Future for PollWhileSelfWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.relay.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_POLLS_AGAIN {
            this.relay.state.store(POLLING, Ordering::SeqCst);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            // The swap settles a wake racing with the end of the poll: it
            // either landed before (seen here as WOKEN) or sees IDLE and
            // goes to the task.
            let state = this.relay.state.swap(IDLE, Ordering::SeqCst);
            if polled.is_ready() || state != WOKEN {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The waker the inner future sees.
struct Relay {
    state: AtomicU8,
    task: futures::task::AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a poll, mark it; otherwise (IDLE) wake the task. Already
        // WOKEN needs nothing more.
        if let Err(IDLE) =
            self.state
                .compare_exchange(POLLING, WOKEN, Ordering::SeqCst, Ordering::SeqCst)
        {
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Wakes itself during its first `self_wakes` polls, counting polls.
    struct WakesItself {
        self_wakes: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for WakesItself {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.self_wakes == 0 {
                return Poll::Ready(polls);
            }
            self.self_wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wakes the task received.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(f: &mut PollWhileSelfWoken<F>, task: &Arc<Counter>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn self_wakes_are_polled_again_within_the_same_poll() {
        let polls = Arc::new(AtomicUsize::new(0));
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let mut f = PollWhileSelfWoken::new(WakesItself {
            self_wakes: 3,
            polls: polls.clone(),
        });
        assert_eq!(poll_once(&mut f, &task), Poll::Ready(4));
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task was woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_after_the_bound() {
        let polls = Arc::new(AtomicUsize::new(0));
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let mut f = PollWhileSelfWoken::new(WakesItself {
            self_wakes: usize::MAX,
            polls: polls.clone(),
        });
        assert_eq!(poll_once(&mut f, &task), Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), MAX_POLLS_AGAIN + 1);
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the task must be woken to go on"
        );
    }

    #[tokio::test]
    async fn wakes_from_elsewhere_reach_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiting = tokio::spawn(PollWhileSelfWoken::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).expect("receiver alive");
        let got = waiting.await.expect("task").expect("value");
        assert_eq!(got, 7);
    }
}
