//! The server: [`MockUpstream`], its accept loop, and the knobs tests turn.

mod handle;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::stats::ConnectionGuard;
use crate::{Fault, RecordedRequest, Stats};
use state::State;

/// How long [`MockUpstream::wait_until`] waits before it fails the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// A running mock upstream on loopback (HTTP/1.1, keep-alive).
///
/// Dropping it (or [`MockUpstream::shutdown`]) stops the server and closes
/// every open connection.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    server: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock on `127.0.0.1` with a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound; this is a test helper, use
    /// [`MockUpstream::bind`] to handle the error.
    pub async fn start() -> Self {
        match Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
            Ok(mock) => mock,
            Err(e) => panic!("vel-mock-upstream: cannot bind a loopback port: {e}"),
        }
    }

    /// Starts a mock listening on `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let server = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Self {
            addr,
            state,
            server: Some(server),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash; append
    /// `/v1/chat/completions`, `/openai/v1/chat/completions` (Groq),
    /// `/chat/completions` (Perplexity) or `/v1/messages` (Anthropic).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues one behaviour for the next completion request.
    pub fn push(&self, fault: Fault) {
        self.state.script().push(fault);
    }

    /// Queues behaviours for the next completion requests, in order.
    pub fn push_many(&self, faults: impl IntoIterator<Item = Fault>) {
        let mut script = self.state.script();
        for fault in faults {
            script.push(fault);
        }
    }

    /// Queued behaviours not consumed yet.
    pub fn pending_faults(&self) -> usize {
        self.state.script().pending()
    }

    /// Drops the queued behaviours.
    pub fn clear_faults(&self) {
        self.state.script().clear_queue();
    }

    /// The behaviour when no override, queued fault or `fail_every` rule applies
    /// (initially [`Fault::Ok`]).
    pub fn set_default(&self, fault: Fault) {
        self.state.script().set_default(fault);
    }

    /// Every `every`-th completion request (counted from 1 over all completion
    /// requests) fails with `status`, unless a per-model override or a queued
    /// fault applies. `every == 0` switches this off.
    pub fn fail_every(&self, every: u64, status: u16) {
        self.state.script().fail_every(every, status);
    }

    /// Requests for `model` always get `fault` (before the queue is consulted).
    pub fn set_model_fault(&self, model: impl Into<String>, fault: Fault) {
        self.state
            .script()
            .set_model_fault(model.into(), Some(fault));
    }

    /// Removes a per-model override.
    pub fn clear_model_fault(&self, model: &str) {
        self.state.script().set_model_fault(model.to_owned(), None);
    }

    /// Latency added to every completion request before its behaviour.
    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// Requires this API key (`Authorization: Bearer KEY` for OpenAI-style
    /// paths, `x-api-key: KEY` for Anthropic); `None` (the default) accepts any.
    /// A missing or wrong key gets 401 in the provider's error shape.
    pub fn require_api_key(&self, key: Option<&str>) {
        self.state.set_api_key(key.map(str::to_owned));
    }

    /// Switches request recording on (the default) or off (for load tests).
    pub fn set_recording(&self, on: bool) {
        self.state.set_recording(on);
    }

    /// The requests recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forgets the recorded requests (counters are kept).
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// Waits (without polling or sleeping) until `pred` holds, and returns the
    /// stats that satisfied it.
    ///
    /// # Panics
    ///
    /// After [`WAIT_LIMIT`] without `pred` holding, with the last counters:
    /// a test waiting for something that never happens fails instead of
    /// hanging its whole run.
    pub async fn wait_until(&self, pred: impl FnMut(&Stats) -> bool) -> Stats {
        match tokio::time::timeout(WAIT_LIMIT, self.state.counters.wait_until(pred)).await {
            Ok(stats) => stats,
            Err(_) => panic!(
                "mock upstream: the awaited condition did not hold within {WAIT_LIMIT:?}; counters: {:?}",
                self.stats()
            ),
        }
    }

    /// Waits until at least `n` requests were received.
    pub async fn wait_for_requests(&self, n: u64) -> Stats {
        self.wait_until(|s| s.received >= n).await
    }

    /// Waits until at least `n` requests were completed.
    pub async fn wait_for_completed(&self, n: u64) -> Stats {
        self.wait_until(|s| s.completed >= n).await
    }

    /// Waits until at least `n` requests were dropped by their client.
    pub async fn wait_for_dropped(&self, n: u64) -> Stats {
        self.wait_until(|s| s.dropped >= n).await
    }

    /// Waits until at least `n` requests are in flight at once.
    ///
    /// "At least", not "exactly": requests arriving together can move the
    /// count past `n` between two wake-ups, and an exact wait would then
    /// miss it and wait for ever.
    pub async fn wait_for_in_flight(&self, n: u64) -> Stats {
        self.wait_until(|s| s.in_flight >= n).await
    }

    /// Stops the server, closes all connections, and waits for that.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the [`JoinSet`], which
/// aborts every connection task.
async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "vel-mock-upstream: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let _open = ConnectionGuard::open(state.counters.clone());
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handle::handle(state.clone(), request));
    if let Err(e) = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "vel-mock-upstream: connection ended with an error");
    }
}
