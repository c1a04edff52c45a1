//! A request whose head is too large (too many header fields, or too many
//! bytes in its request line and fields) is refused with a JSON 431, like
//! every other error, and the connection is closed.
//!
//! hyper refuses an over-large head itself, with an empty 431. The server
//! sets hyper's limits above these ([`HYPER_MAX_HEADERS`], and hyper's
//! default read buffer of about 400 KiB, far above [`MAX_HEAD_BYTES`]) and
//! this layer enforces vel's, with the request at hand; a head beyond
//! hyper's own limits gets hyper's answer, which the connection rewrites
//! in the same JSON shape (`crate::server::automatic_errors`).
//!
//! A plain tower layer rather than `middleware::from_fn`, which boxes a
//! future and a service for every request.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::{Layer, Service};

use super::error::ApiError;

/// Most header fields a request may have (each repeated field counts).
pub const MAX_HEADERS: usize = 100;

/// Most bytes a request's line and header fields may take together.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// hyper's own limit on header fields, set above [`MAX_HEADERS`] so that a
/// head slightly over vel's limit reaches this layer and gets the JSON
/// answer. Above hyper's default of 100, hyper allocates room for this many
/// fields per request, so it stays a small multiple.
pub const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;

/// The layer that refuses over-large heads.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadLimits;

impl<S> Layer<S> for HeadLimits {
    type Service = RefuseLargeHeads<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseLargeHeads { inner }
    }
}

/// A service that answers 431 when the request's head is over the limits.
#[derive(Debug, Clone)]
pub struct RefuseLargeHeads<S> {
    inner: S,
}

impl<S> Service<Request> for RefuseLargeHeads<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match oversize(&req) {
            Some(error) => {
                let mut response = error.into_response();
                // The body (if any) is left unread; the client is told the
                // connection ends, as hyper does for its own 431.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Either::Left(ready(Ok(response)))
            }
            None => Either::Right(self.inner.call(req)),
        }
    }
}

/// The error for a head over the limits, or `None` when it is within them.
fn oversize(req: &Request) -> Option<ApiError> {
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Some(ApiError::headers_too_large(format!(
            "the request has {} header fields; at most {MAX_HEADERS} are accepted",
            headers.len()
        )));
    }
    if head_bytes(req) > MAX_HEAD_BYTES {
        return Some(ApiError::headers_too_large(format!(
            "the request line and header fields exceed {MAX_HEAD_BYTES} bytes"
        )));
    }
    None
}

/// The size of the request's head as sent, give or take the optional
/// whitespace around field values: `METHOD target HTTP/1.1\r\n`, then
/// `name: value\r\n` per field, then `\r\n`.
fn head_bytes(req: &Request) -> usize {
    let target = req
        .uri()
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(fields: &[(&str, String)]) -> Request {
        let mut builder = Request::builder().uri("/api/health");
        for (name, value) in fields {
            builder = builder.header(*name, value);
        }
        builder.body(Body::empty()).expect("request")
    }

    #[test]
    fn the_head_size_counts_the_line_and_every_field() {
        let req = request(&[("host", "vel".into()), ("x-a", "1".into())]);
        let sent = "GET /api/health HTTP/1.1\r\nhost: vel\r\nx-a: 1\r\n\r\n";
        assert_eq!(head_bytes(&req), sent.len());
    }

    #[test]
    fn heads_at_the_limits_pass_and_over_them_are_refused() {
        let many: Vec<(&str, String)> = (0..MAX_HEADERS).map(|_| ("x-a", "1".into())).collect();
        assert!(oversize(&request(&many)).is_none());
        let too_many: Vec<(&str, String)> =
            (0..=MAX_HEADERS).map(|_| ("x-a", "1".into())).collect();
        let refused = oversize(&request(&too_many)).expect("refused");
        assert_eq!(refused.status().as_u16(), 431);

        let line = "GET /api/health HTTP/1.1\r\n".len();
        let room = MAX_HEAD_BYTES - line - "x-big: \r\n".len() - 2;
        assert!(oversize(&request(&[("x-big", "a".repeat(room))])).is_none());
        let refused = oversize(&request(&[("x-big", "a".repeat(room + 1))])).expect("refused");
        assert_eq!(refused.status().as_u16(), 431);
    }
}
