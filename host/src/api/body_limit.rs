//! A request whose declared `Content-Length` exceeds its route's body limit
//! is refused with 413 before any of its body is read: the extractors would
//! otherwise read the body up to the limit first. The answer says
//! `Connection: close` (the body is unread, see [`super::unread_body`]).
//!
//! A plain tower layer rather than `middleware::from_fn`, which boxes a
//! future and a service for every request.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::{Layer, Service};

use super::error::ApiError;

/// The body limits of the API's routes; as a layer, refuses a declared
/// length over the route's limit.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Every route but the plugin upload (`VEL_MAX_BODY_BYTES`).
    pub default: usize,
    /// `POST /api/plugins`, which streams its parts under their own caps
    /// (see `handlers::plugins::upload_body_limit`).
    pub upload: usize,
    /// `POST /api/batches`, read as it arrives (`VEL_BATCH_MAX_BYTES`).
    pub batch: usize,
}

impl BodyLimits {
    fn of(&self, req: &Request) -> usize {
        if req.method() != Method::POST {
            return self.default;
        }
        match req.uri().path() {
            "/api/plugins" => self.upload,
            "/api/batches" => self.batch,
            _ => self.default,
        }
    }
}

impl<S> Layer<S> for BodyLimits {
    type Service = RefuseDeclaredOversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseDeclaredOversize {
            inner,
            limits: *self,
        }
    }
}

/// A route that answers 413 when the declared length is over its limit.
#[derive(Debug, Clone)]
pub struct RefuseDeclaredOversize<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> Service<Request> for RefuseDeclaredOversize<S>
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
        // hyper reports a declared `Content-Length` as the body's exact size.
        let declared = req.body().size_hint().lower();
        let limit = self.limits.of(&req);
        if declared > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Either::Left(ready(
                Ok(ApiError::payload_too_large(limit).into_response()),
            ));
        }
        Either::Right(self.inner.call(req))
    }
}
