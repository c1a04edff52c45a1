//! Deadlines on one client connection: the head of a request must arrive
//! within the header-read timeout, its body within the body-read timeout,
//! and a connection with no request in progress is closed after the
//! keep-alive timeout. Nothing bounds a request once it has been read: a
//! handler or a long response (an event stream) runs as long as it needs.
//!
//! hyper's own `header_read_timeout` is not used: it starts again while a
//! keep-alive connection waits for its next request (so the idle limit
//! could not be longer than the header limit) and it allocates and
//! registers a new timer for every request. Here the connection's parts
//! report what they do through [`Activity`] (counters and flags, no
//! allocation), and the connection's task keeps one timer, moved only when
//! a deadline comes earlier than the one it is set for; a later deadline is
//! taken up when the timer fires. Back-to-back requests whose heads and
//! bodies arrive whole therefore touch the timer at most once per timeout
//! period, not once per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::automatic_errors::{self, Pending};

/// The three connection timeouts (see `crate::config::ConnectionConfig`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// Longest a request's head may take.
    pub header_read: Duration,
    /// Longest a connection may wait with no request in progress.
    pub keep_alive: Duration,
    /// Longest a request's body may take once its head has arrived.
    pub body_read: Duration,
}

/// What a connection's parts (its socket, its requests' and responses'
/// bodies) report to the connection's task. The counters only ever grow
/// (wrapping); the task compares them with what it saw last.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests whose head arrived.
    heads: AtomicU32,
    /// Requests whose body has ended (read to its end, failed or dropped);
    /// a request without a body counts at once.
    bodies: AtomicU32,
    /// Responses hyper has finished with (their body dropped).
    responses: AtomicU32,
    /// The socket returned bytes since the task last cleared this.
    read: AtomicBool,
    /// The body-read deadline passed: a socket read that would wait fails
    /// instead, so the handler reading the body gets an error (408).
    body_expired: AtomicBool,
}

impl Activity {
    /// A request's head arrived: count it, and wrap its body so its end is
    /// counted too.
    pub(super) fn request_body(self: &Arc<Self>, body: Incoming) -> Body {
        self.heads.fetch_add(1, Relaxed);
        if http_body::Body::is_end_stream(&body) {
            self.bodies.fetch_add(1, Relaxed);
            Body::new(body)
        } else {
            Body::new(RequestBody {
                inner: body,
                activity: Some(self.clone()),
            })
        }
    }

    /// No request is in progress: every head that arrived has had its
    /// response finished (or is being flushed).
    fn no_request_in_progress(&self) -> bool {
        self.heads.load(Relaxed) == self.responses.load(Relaxed)
    }

    /// Wrap a response's body so that its end is counted.
    pub(super) fn response_body(self: Arc<Self>, body: Body) -> ResponseBody {
        ResponseBody {
            inner: body,
            _done: ResponseDone(self),
        }
    }
}

/// A request body that reports its end (or its being dropped) once.
struct RequestBody {
    inner: Incoming,
    activity: Option<Arc<Activity>>,
}

impl RequestBody {
    fn ended(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.bodies.fetch_add(1, Relaxed);
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if ended {
            self.ended();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.ended();
    }
}

/// A response body; hyper drops it once it has written its last frame
/// (or given up on the connection), which ends the request.
pub(super) struct ResponseBody {
    inner: Body,
    _done: ResponseDone,
}

/// Counts a response as finished when dropped.
struct ResponseDone(Arc<Activity>);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.0.responses.fetch_add(1, Relaxed);
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's socket: notes reads that returned bytes, fails a read
/// that would wait once the body-read deadline has passed, and writes
/// hyper's own error answers in vel's JSON shape
/// (see [`super::automatic_errors`]).
pub(super) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// The JSON answer being written in place of hyper's.
    replacement: Option<Pending>,
}

impl Watched {
    /// Watch `stream` for `activity`.
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Watched {
            stream,
            activity,
            replacement: None,
        }
    }

    /// Finish writing the replacement answer, if there is one.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(pending) = &mut self.replacement {
            ready!(pending.poll_drain(&mut self.stream, cx))?;
            self.replacement = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written when it is hyper's automatic error answer,
    /// whose JSON replacement is then written instead. `buf` is only looked
    /// at beyond its first bytes when no request is in progress.
    fn replaced(&mut self, buf: &[u8]) -> bool {
        if !automatic_errors::may_be_automatic(buf) || !self.activity.no_request_in_progress() {
            return false;
        }
        match automatic_errors::replacement(buf) {
            Some(answer) => {
                self.replacement = Some(Pending::new(answer));
                true
            }
            None => false,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.read.store(true, Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.activity.body_expired.load(Relaxed) => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if this.replaced(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        // hyper writes its answer as one slice (its head buffer).
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        if let Some(first) = slices.next()
            && automatic_errors::may_be_automatic(first)
            && slices.next().is_none()
            && this.replaced(first)
        {
            return Poll::Ready(Ok(first.len()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Where a connection is, as its task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Accepted, no request yet: the first head must arrive within the
    /// header-read timeout of the accept.
    Fresh,
    /// Between requests, nothing of the next one received.
    Idle,
    /// Between requests, part of the next head received.
    Head,
    /// A request in progress whose body has not all arrived.
    Body,
    /// A request in progress whose body has arrived (or that had none):
    /// no deadline.
    Busy,
}

/// How a guarded connection ended.
pub(super) enum Ended<T> {
    /// hyper finished with it (the client closed it, or an error).
    Served(T),
    /// A deadline passed in this phase; the connection is to be dropped.
    TimedOut(Phase),
}

/// The connection task's view of its [`Activity`], and its one timer.
pub(super) struct Clock {
    timeouts: Timeouts,
    activity: Arc<Activity>,
    phase: Phase,
    /// `(heads, bodies, responses)` when last looked at.
    seen: (u32, u32, u32),
    /// When the current phase times out.
    deadline: Option<Instant>,
    /// When the timer is set to fire, if it is set and has not fired.
    armed: Option<Instant>,
    /// The body-read deadline passed and the socket was told to fail.
    body_failed: bool,
}

impl Clock {
    /// A connection just accepted.
    pub(super) fn new(timeouts: Timeouts, activity: Arc<Activity>, accepted: Instant) -> Self {
        Clock {
            timeouts,
            activity,
            phase: Phase::Fresh,
            seen: (0, 0, 0),
            deadline: Some(accepted + timeouts.header_read),
            armed: None,
            body_failed: false,
        }
    }

    /// Poll the connection, then hold it to the deadline of the phase it
    /// is in. `timer` is the connection's one timer.
    pub(super) fn poll<F: Future>(
        &mut self,
        mut connection: Pin<&mut F>,
        mut timer: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<Ended<F::Output>> {
        loop {
            if let Poll::Ready(output) = connection.as_mut().poll(cx) {
                return Poll::Ready(Ended::Served(output));
            }
            self.observe();
            let Some(deadline) = self.deadline else {
                return Poll::Pending;
            };
            if self.armed.is_none_or(|armed| armed > deadline) {
                timer.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            self.armed = None;
            let now = Instant::now();
            if now < deadline {
                // Fired for an earlier deadline: set it again for this one.
                continue;
            }
            match self.phase {
                Phase::Body if !self.body_failed => {
                    // Make the pending body read fail (the handler answers
                    // 408), and poll again so it does now; if the body is
                    // still unfinished after another period, drop it all.
                    self.body_failed = true;
                    self.activity.body_expired.store(true, Relaxed);
                    self.deadline = Some(now + self.timeouts.body_read);
                }
                Phase::Busy => self.deadline = None,
                phase => return Poll::Ready(Ended::TimedOut(phase)),
            }
        }
    }

    /// Take in what the connection's parts reported since the last look.
    fn observe(&mut self) {
        let activity = &*self.activity;
        let seen = (
            activity.heads.load(Relaxed),
            activity.bodies.load(Relaxed),
            activity.responses.load(Relaxed),
        );
        if seen != self.seen {
            self.seen = seen;
            let (heads, bodies, responses) = seen;
            if self.body_failed {
                self.body_failed = false;
                activity.body_expired.store(false, Relaxed);
            }
            if heads == responses {
                activity.read.store(false, Relaxed);
                self.phase = Phase::Idle;
                self.deadline = Some(Instant::now() + self.timeouts.keep_alive);
            } else if heads != bodies {
                self.phase = Phase::Body;
                self.deadline = Some(Instant::now() + self.timeouts.body_read);
            } else {
                self.phase = Phase::Busy;
                self.deadline = None;
            }
        } else if self.phase == Phase::Idle && activity.read.load(Relaxed) {
            self.phase = Phase::Head;
            self.deadline = Some(Instant::now() + self.timeouts.header_read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
            body_read: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_activity_and_set_their_deadlines() {
        let activity = Arc::new(Activity::default());
        let start = Instant::now();
        let mut clock = Clock::new(timeouts(), activity.clone(), start);
        clock.observe();
        assert_eq!(clock.phase, Phase::Fresh);
        assert_eq!(clock.deadline, Some(start + Duration::from_secs(10)));

        // A head with a body: the body's deadline.
        activity.heads.fetch_add(1, Relaxed);
        clock.observe();
        assert_eq!(clock.phase, Phase::Body);
        assert_eq!(clock.deadline, Some(start + Duration::from_secs(30)));

        // The body arrived: no deadline while the handler and response run.
        activity.bodies.fetch_add(1, Relaxed);
        clock.observe();
        assert_eq!((clock.phase, clock.deadline), (Phase::Busy, None));

        // The response is done: idle, then part of a head.
        tokio::time::advance(Duration::from_secs(100)).await;
        activity.responses.fetch_add(1, Relaxed);
        clock.observe();
        assert_eq!(clock.phase, Phase::Idle);
        assert_eq!(clock.deadline, Some(start + Duration::from_secs(160)));
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read.store(true, Relaxed);
        clock.observe();
        assert_eq!(clock.phase, Phase::Head);
        assert_eq!(clock.deadline, Some(start + Duration::from_secs(115)));
    }
}
