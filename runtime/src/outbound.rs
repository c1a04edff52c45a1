//! Outbound HTTP for provider plugins: the `wasi:http` send hook that only
//! lets requests through to allowed hosts, adds the integration's credential
//! on the host side, and sends them through one pooled client with timeouts
//! and a response-size cap. Its connector refuses restricted addresses
//! (see [`crate::destination`]): IP literals before connecting, names after
//! resolution, every address they resolve to, and connects only to the
//! addresses it checked.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower_service::Service;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::destination::AllowPrivate;
use crate::error::RuntimeError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Timeouts and caps for every outbound request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboundConfig {
    /// Establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// From sending the request to the response head (a new connection's
    /// set-up counts too, and is also bounded by `connect_timeout`).
    pub first_byte_timeout: Duration,
    /// Between two chunks of the response body (streams may idle this long).
    pub between_bytes_timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Restricted addresses (loopback, private, link-local, …) requests may
    /// still reach, and names that may resolve to them. Empty: none.
    #[serde(default)]
    pub allow_private: AllowPrivate,
    /// This server's name in the `Via` header every plugin request carries
    /// (`1.1 <hop>`, added by the host, so a guest cannot leave it out): a
    /// request that comes back to the server through a provider is
    /// recognised and refused there. `None`: no header.
    #[serde(default)]
    pub hop: Option<String>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            between_bytes_timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024 * 1024,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
            allow_private: AllowPrivate::default(),
            hop: None,
        }
    }
}

/// The host's single pooled HTTP/HTTPS client (rustls with the Mozilla
/// roots), shared by every provider call of a runtime.
#[derive(Clone)]
pub(crate) struct OutboundClient {
    client: Client<HttpsConnector<CheckedConnector>, WasiBody>,
    config: Arc<OutboundConfig>,
    /// `1.1 <hop>`, from [`OutboundConfig::hop`].
    via: Option<HeaderValue>,
}

impl OutboundClient {
    pub(crate) fn new(config: OutboundConfig) -> Result<Self, RuntimeError> {
        let allow = Arc::new(config.allow_private.clone());
        let mut http = HttpConnector::new_with_resolver(CheckedResolver {
            allow: allow.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let http = CheckedConnector { inner: http, allow };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| RuntimeError::Http(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(https);
        let via = match &config.hop {
            Some(hop) => Some(HeaderValue::from_str(&format!("1.1 {hop}")).map_err(|_| {
                RuntimeError::Http(format!("`{hop}` cannot be sent in a Via header"))
            })?),
            None => None,
        };
        Ok(OutboundClient {
            client,
            config: Arc::new(config),
            via,
        })
    }

    /// Sends one request; the response body enforces the between-bytes
    /// timeout and the size cap. Dropping the future (or the body) drops the
    /// upstream request.
    async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let cfg = &self.config;
        let mut request = request;
        if let Some(via) = &self.via {
            request.headers_mut().append(http::header::VIA, via.clone());
        }
        // A guest may ask for shorter timeouts, never longer ones.
        let shorter = |asked: Option<Duration>, ours: Duration| asked.map_or(ours, |a| a.min(ours));
        let first_byte = shorter(
            options.and_then(|o| o.first_byte_timeout),
            cfg.first_byte_timeout,
        );
        let between = shorter(
            options.and_then(|o| o.between_bytes_timeout),
            cfg.between_bytes_timeout,
        );
        let response = match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Err(_elapsed) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Err(err)) => return Err(client_error(&err)),
            Ok(Ok(response)) => response,
        };
        let max = cfg.max_response_bytes;
        if let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > max
        {
            return Err(HttpError::HttpResponseBodySize(Some(len)));
        }
        Ok(response.map(|body| CappedBody::new(body, between, max).boxed_unsync()))
    }
}

/// Turns a client failure into the `wasi:http` error the guest sees. A
/// refused destination is `destination-ip-prohibited`, whatever the port
/// would have answered (no connection was attempted).
fn client_error(err: &hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if e.downcast_ref::<DestinationDenied>().is_some() {
            return HttpError::DestinationIpProhibited;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => HttpError::ConnectionTimeout,
                std::io::ErrorKind::ConnectionRefused => HttpError::ConnectionRefused,
                _ if err.is_connect() => HttpError::DestinationUnavailable,
                _ => HttpError::ConnectionTerminated,
            };
        }
        source = e.source();
    }
    if err.is_connect() {
        HttpError::DestinationUnavailable
    } else {
        HttpError::InternalError(Some(err.to_string()))
    }
}

/// A connection refused because the destination's address is restricted.
#[derive(Debug, thiserror::Error)]
#[error("destination address not allowed: {host}")]
struct DestinationDenied {
    host: String,
}

impl DestinationDenied {
    fn new(host: &str, address: IpAddr) -> Self {
        tracing::warn!(
            host,
            %address,
            kind = crate::destination::restricted_range(address).unwrap_or("restricted"),
            "outbound request refused: destination address not allowed"
        );
        DestinationDenied {
            host: host.to_string(),
        }
    }
}

/// Resolves names with `getaddrinfo` (tokio's `lookup_host`) and refuses
/// the name unless every address it resolves to is allowed; the connector
/// then connects to exactly these addresses.
#[derive(Clone)]
struct CheckedResolver {
    allow: Arc<AllowPrivate>,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            if !allow.allows_name(host)
                && let Some(refused) = addrs.iter().find(|a| !allow.allows(a.ip()))
            {
                return Err(DestinationDenied::new(host, refused.ip()).into());
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The TCP connector: an IP-literal host (which `HttpConnector` connects to
/// without resolving) is checked here; names go through [`CheckedResolver`].
#[derive(Clone)]
struct CheckedConnector {
    inner: HttpConnector<CheckedResolver>,
    allow: Arc<AllowPrivate>,
}

impl Service<http::Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(address) = bare.parse::<IpAddr>()
            && !self.allow.allows(address)
        {
            let denied = DestinationDenied::new(bare, address);
            return Box::pin(async move { Err(denied.into()) });
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// The outbound-host rule, the one every check uses (the sandbox's hook,
/// the server's check of an integration's base URL, `vel plugin check`):
/// an entry `host:port` allows that host on that port only, over http or
/// https; a bare `host` allows it on the scheme's default port only
/// (`https://host` on 443, `http://host` on 80), not every service on
/// that host. Host names compare case-insensitively.
pub fn host_allows(entry: &str, https: bool, host: &str, port: u16) -> bool {
    let default_port = if https { 443 } else { 80 };
    match split_entry(entry) {
        (name, Some(p)) => p == port && name.eq_ignore_ascii_case(host),
        (name, None) => port == default_port && name.eq_ignore_ascii_case(host),
    }
}

/// What an allowlist entry allows, in words: `api.example.com (ports 443
/// and 80 only)` or `127.0.0.1:8080 (port 8080 only)`.
pub fn describe_host_entry(entry: &str) -> String {
    match split_entry(entry) {
        (_, Some(port)) => format!("{entry} (port {port} only, http or https)"),
        (_, None) => {
            format!("{entry} (https on 443 and http on 80 only; add :PORT for another port)")
        }
    }
}

/// `host` and its port, if the entry names one (`[v6]:port` included).
fn split_entry(entry: &str) -> (&str, Option<u16>) {
    if entry.ends_with(']') {
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

/// Which hosts one call may reach, and the credential it adds.
pub(crate) struct OutboundPolicy {
    /// Lower-case `host:port` entries, or `host` for the default port of
    /// the request's scheme (443 for https, 80 for http); see
    /// [`host_allows`].
    allowed: Vec<String>,
    credential: Option<Credential>,
}

/// The header the host adds, and the one origin it is added for.
pub(crate) struct Credential {
    pub(crate) header: (HeaderName, HeaderValue),
    /// The base URL's scheme, host and port; `None` (a provider without a
    /// base URL) adds it on requests to the call's allowed hosts.
    pub(crate) origin: Option<Origin>,
}

/// Scheme, lower-case host and port of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Origin {
    /// The origin of `uri`, ports defaulting by scheme.
    pub(crate) fn of(uri: &http::Uri) -> Option<Origin> {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        Some(Origin {
            https,
            host: uri.host()?.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl OutboundPolicy {
    pub(crate) fn new(allowed: Vec<String>, credential: Option<Credential>) -> Self {
        OutboundPolicy {
            allowed: allowed
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            credential,
        }
    }

    fn allows(&self, to: &Origin) -> bool {
        self.allowed
            .iter()
            .any(|a| host_allows(a, to.https, &to.host, to.port))
    }

    /// The credential header for a request to `to`, if it gets one.
    fn credential_for(&self, to: &Origin) -> Option<&(HeaderName, HeaderValue)> {
        let credential = self.credential.as_ref()?;
        match &credential.origin {
            Some(origin) if origin != to => None,
            _ => Some(&credential.header),
        }
    }
}

/// Why a request of a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// The host (`host:port`) is not among the call's allowed hosts.
    Host(String),
    /// The host (`host:port`) is allowed but its address is restricted.
    Address(String),
}

/// The call's `wasi:http` hooks. Routers and conditions get
/// [`OutboundHooks::deny_all`] (and may not even import `wasi:http`).
pub(crate) struct OutboundHooks {
    route: Option<(OutboundClient, Arc<OutboundPolicy>)>,
    /// The first request refused, set by the hook or, for a restricted
    /// address, by the request's future once the connector refused it.
    denied: Arc<Mutex<Option<Denial>>>,
}

impl OutboundHooks {
    pub(crate) fn deny_all() -> Self {
        OutboundHooks {
            route: None,
            denied: Arc::default(),
        }
    }

    pub(crate) fn new(client: OutboundClient, policy: Arc<OutboundPolicy>) -> Self {
        OutboundHooks {
            route: Some((client, policy)),
            denied: Arc::default(),
        }
    }

    /// The first refused request of the call, if any.
    pub(crate) fn denied(&self) -> Option<Denial> {
        self.denied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Records `denial` unless an earlier one is there.
fn record(cell: &Mutex<Option<Denial>>, denial: Denial) {
    cell.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(denial);
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_error: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let to = Origin::of(request.uri()).unwrap_or(Origin {
            https: false,
            host: String::new(),
            port: 80,
        });
        let target = to.authority();
        let allowed = self.route.as_ref().filter(|(_, policy)| policy.allows(&to));
        let Some((client, policy)) = allowed else {
            tracing::warn!(host = %target, "plugin request to a host that is not allowed");
            record(&self.denied, Denial::Host(target));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        if let Some((name, value)) = policy.credential_for(&to) {
            // Replaces whatever the guest put there.
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let client = client.clone();
        let denied = self.denied.clone();
        Box::new(async move {
            let response = match client.send(request, options).await {
                Ok(response) => response,
                Err(HttpError::DestinationIpProhibited) => {
                    record(&denied, Denial::Address(target));
                    return Err(HttpError::DestinationIpProhibited);
                }
                Err(other) => return Err(other),
            };
            let io_done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io_done))
        })
    }
}

/// A response body with a between-bytes timeout and a size cap.
struct CappedBody {
    inner: hyper::body::Incoming,
    between: Duration,
    idle: Pin<Box<Sleep>>,
    remaining: u64,
    max: u64,
}

impl CappedBody {
    fn new(inner: hyper::body::Incoming, between: Duration, max: u64) -> Self {
        CappedBody {
            inner,
            between,
            idle: Box::pin(tokio::time::sleep(between)),
            remaining: max,
            max,
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            this.max,
                        )))));
                    }
                    this.remaining -= len;
                }
                let deadline = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(HttpError::Hyper(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
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
    use super::*;

    #[test]
    fn a_bare_host_allows_the_default_ports_and_host_port_only_its_port() {
        assert!(host_allows("api.example.com", true, "api.example.com", 443));
        assert!(host_allows("API.example.com", false, "api.example.com", 80));
        assert!(!host_allows("api.example.com", true, "api.example.com", 80));
        assert!(!host_allows("127.0.0.1", false, "127.0.0.1", 18181));
        assert!(host_allows("127.0.0.1:18181", false, "127.0.0.1", 18181));
        assert!(host_allows("127.0.0.1:18181", true, "127.0.0.1", 18181));
        assert!(!host_allows("127.0.0.1:18181", false, "127.0.0.1", 18182));
        assert!(host_allows(
            "api.example.com:443",
            true,
            "api.example.com",
            443
        ));
        assert!(!host_allows("example.com", true, "api.example.com", 443));
        assert!(host_allows("[::1]:8080", false, "[::1]", 8080));
        assert!(host_allows("[::1]", false, "[::1]", 80));
        assert!(describe_host_entry("a.b").contains("443"));
        assert!(describe_host_entry("a.b:8080").contains("port 8080 only"));
    }
}
