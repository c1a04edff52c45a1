//! Accepting connections and serving each in its own task, as
//! `axum::serve` does, but with every connection wrapped in
//! [`PollWhileSelfWoken`] (see there for why), held to the deadlines of
//! [`super::connection`], counted against the connection cap, and with a
//! graceful shutdown that lets in-flight requests finish.
//!
//! At the cap the loop stops accepting until a connection closes: clients
//! wait in the kernel's listen backlog (and, once it is full, their
//! connection attempts are retried by their TCP stack) instead of being
//! accepted and closed at once, which would spend a file descriptor on
//! each and invite them to reconnect in a tight loop. The deadlines make
//! sure a slot frees within the header-read or keep-alive timeout of an
//! idle client.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::connection::{Activity, Clock, Ended, Timeouts, Watched};
use super::self_wake::PollWhileSelfWoken;

/// How client connections are bounded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Per-connection deadlines.
    pub timeouts: Timeouts,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// At most one "connection limit reached" line per this interval.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then waits for
/// the open connections to finish their requests.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    // Dropping `stop_tx` tells every connection to finish; each holds a
    // `done_rx`, so `done_tx.closed()` resolves when the last one ends.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full_logged: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_logged.is_none_or(|at| at.elapsed() >= FULL_LOG_INTERVAL) {
                    full_logged = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached (VEL_MAX_CONNECTIONS): new connections wait \
                         in the listen backlog until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(error).await;
                continue;
            }
        };
        // A streamed answer is many small writes: with Nagle's algorithm
        // each waits for the client's (delayed, up to 40 ms) ACK of the one
        // before. hyper already writes a whole plain response at once.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
        let connection = serve_connection(
            stream,
            remote,
            app.clone(),
            limits.timeouts,
            stop_rx.clone(),
            (done_rx.clone(), slot),
        );
        tokio::spawn(connection);
    }
    drop(listener);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
}

/// One connection: HTTP/1.1 with keep-alive, held to `timeouts`, closed
/// gracefully (the request in flight finishes) once `stop` is dropped.
/// `_held` is released when it ends: the shutdown's count and the
/// connection's slot.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<()>,
    _held: (watch::Receiver<()>, OwnedSemaphorePermit),
) {
    let accepted = Instant::now();
    let activity = Arc::new(Activity::default());
    let service = {
        let requests = activity.clone();
        let responses = activity.clone();
        app.map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| requests.request_body(body));
            request.extensions_mut().insert(ConnectInfo(remote));
            request
        })
        .map_response(move |response: axum::response::Response| {
            response.map(|body| responses.response_body(body))
        })
    };
    // The clock looks at the connection after its self-woken polls, when
    // the request's head and body have been taken in, so a request that
    // arrives whole never moves the timer.
    // hyper's header-field limit is above vel's, which the router enforces
    // with a JSON 431 (see `crate::api::head_limit`).
    let mut connection = PollWhileSelfWoken::new(
        hyper::server::conn::http1::Builder::new()
            .max_headers(crate::api::head_limit::HYPER_MAX_HEADERS)
            .serve_connection(
                TokioIo::new(Watched::new(stream, activity.clone())),
                TowerToHyperService::new(service),
            ),
    );
    let mut timer = std::pin::pin!(tokio::time::sleep_until(accepted + timeouts.header_read));
    let mut clock = Clock::new(timeouts, activity, accepted);
    let mut stopping = false;
    loop {
        tokio::select! {
            ended = poll_fn(|cx| {
                clock.poll(std::pin::Pin::new(&mut connection), timer.as_mut(), cx)
            }) => {
                match ended {
                    Ended::Served(Err(error)) => {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                    Ended::Served(Ok(())) => {}
                    Ended::TimedOut(phase) => {
                        tracing::debug!(%remote, ?phase, "closing a connection: timed out");
                    }
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.inner_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors of one connection (reset before it was accepted) are skipped;
/// others (out of file descriptors: EMFILE, ENFILE) are logged and retried
/// after a pause, as `axum::serve` does, so they never spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
