//! The one response body type: pre-rendered frames, then an ending that is a
//! clean finish, a deliberate cut, or a stall. It carries the request's guard,
//! so a body dropped before its end counts as a client drop.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Frame, SizeHint};

use crate::stats::RequestGuard;

/// The body error hyper sees when the mock cuts a response on purpose; hyper
/// then closes the connection without the body's terminator.
#[derive(Debug, thiserror::Error)]
#[error("vel-mock-upstream cut the response on purpose")]
pub(crate) struct StreamCut;

/// How a body ends once its frames are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Normal end of body.
    Finish,
    /// Error out, so the connection is closed mid-body.
    Cut,
    /// Stay silent forever (until the client goes away).
    Stall,
    /// Send the last frame again and again, as fast as the client reads,
    /// until it goes away (an endless stream).
    Repeat,
}

/// A response body made of ready frames and an [`End`].
#[derive(Debug)]
pub(crate) struct MockBody {
    frames: VecDeque<Bytes>,
    end: End,
    guard: Option<RequestGuard>,
    /// For [`End::Cut`]: whether hyper was given one chance to flush.
    flushed_before_cut: bool,
    /// For [`End::Repeat`]: the frame sent again and again.
    repeated: Option<Bytes>,
}

impl MockBody {
    pub(crate) fn new(frames: Vec<Bytes>, end: End, guard: Option<RequestGuard>) -> Self {
        Self {
            repeated: frames.last().cloned(),
            frames: frames.into(),
            end,
            guard,
            flushed_before_cut: false,
        }
    }

    fn complete(&mut self) {
        if let Some(guard) = self.guard.as_mut() {
            guard.complete();
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            // hyper may stop polling once `is_end_stream` says so: count the
            // request as completed with its last frame.
            if this.frames.is_empty() && this.end == End::Finish {
                this.complete();
            }
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        match this.end {
            End::Finish => {
                this.complete();
                Poll::Ready(None)
            }
            // hyper discards its unflushed output when a body fails; yield
            // once (waking ourselves) so the frames sent so far reach the
            // client before the cut.
            End::Cut if !this.flushed_before_cut => {
                this.flushed_before_cut = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            End::Cut => {
                this.complete();
                this.end = End::Finish;
                Poll::Ready(Some(Err(StreamCut)))
            }
            // Never woken on purpose: the connection task ends (and drops
            // this body) when the client closes the socket.
            End::Stall => Poll::Pending,
            End::Repeat => match &this.repeated {
                Some(frame) => Poll::Ready(Some(Ok(Frame::data(frame.clone())))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.end == End::Finish
    }

    fn size_hint(&self) -> SizeHint {
        match self.end {
            End::Finish => SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum()),
            End::Cut | End::Stall | End::Repeat => SizeHint::default(),
        }
    }
}

/// A complete JSON response.
pub(crate) fn json(
    status: StatusCode,
    body: Bytes,
    guard: Option<RequestGuard>,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::new(vec![body], End::Finish, guard));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response that announces its full length, sends the first half and cuts.
pub(crate) fn json_cut(body: Bytes, guard: RequestGuard) -> Response<MockBody> {
    let full_len = body.len();
    let half = body.slice(..full_len / 2);
    let mut response = Response::new(MockBody::new(vec![half], End::Cut, Some(guard)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
    response
}

/// A server-sent-events response.
pub(crate) fn event_stream(
    frames: Vec<Bytes>,
    end: End,
    guard: RequestGuard,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::new(frames, end, Some(guard)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
