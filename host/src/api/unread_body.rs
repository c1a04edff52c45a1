//! Responses sent before their request's body was read to the end say
//! `Connection: close`.
//!
//! A handler may answer without reading the body: an upload refused for its
//! role (403) or its size (413). hyper then stops reading and closes the
//! socket once the response is written, but the response head it wrote asked
//! for keep-alive, so the client puts the socket back in its pool and its next
//! request fails on a closed connection. Saying `Connection: close` on exactly
//! those responses makes hyper and the client agree: the client opens a fresh
//! connection, and requests whose bodies were read keep theirs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Middleware: track whether the handler read the request body to its end,
/// and close the connection after the response if it did not.
pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Tracked {
            inner,
            finished: finished.clone(),
        })
    });
    let mut response = next.run(req).await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it has been read to the end.
struct Tracked {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.finished.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route("/ignore", post(|| async { "refused unread" }))
            .route(
                "/read",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn(close_if_body_unread))
    }

    async fn connection(path: &str, body: Body) -> Option<String> {
        let req = Request::post(path).body(body).expect("request");
        let resp = app().oneshot(req).await.expect("response");
        resp.headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().expect("ascii").to_string())
    }

    #[tokio::test]
    async fn an_unread_body_closes_the_connection() {
        assert_eq!(
            connection("/ignore", Body::from(vec![7u8; 64 * 1024])).await,
            Some("close".into())
        );
    }

    #[tokio::test]
    async fn a_read_body_keeps_it() {
        assert_eq!(
            connection("/read", Body::from(vec![7u8; 64 * 1024])).await,
            None
        );
    }

    #[tokio::test]
    async fn a_streamed_body_read_to_its_end_keeps_it() {
        let chunks = futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"chunk"))),
        );
        assert_eq!(connection("/read", Body::from_stream(chunks)).await, None);
    }

    #[tokio::test]
    async fn a_request_without_a_body_keeps_it() {
        assert_eq!(connection("/ignore", Body::empty()).await, None);
    }
}
