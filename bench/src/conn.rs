//! One keep-alive HTTP/1.1 connection per worker, built directly on hyper's
//! connection API so that a worker's requests never share or wait for a
//! pooled connection: what is measured is one client talking to the server
//! over one socket, sequentially, like a well-behaved SDK.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// The URL is not a plain `http://host:port/path` URL.
    #[error("invalid URL {0:?}: {1}")]
    Url(String, String),
    /// A `--header` is not `Name: value`.
    #[error("invalid header {0:?}")]
    Header(String),
    /// The host name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// Connecting failed.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// Building the request failed.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The request took longer than the timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// Reading a file given on the command line failed.
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    /// A response did not contain the expected JSON field.
    #[error("response has no string or number at {pointer}: {body}")]
    MissingField {
        /// JSON pointer looked up.
        pointer: String,
        /// Start of the body.
        body: String,
    },
    /// The run completed but some requests failed.
    #[error("{0}")]
    Failed(String),
}

/// Where requests go: the resolved address, the `Host` header and the
/// scheme-less origin used to build request URIs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `host:port` as written in the URL.
    pub authority: String,
}

/// Split an `http://` URL into its target and path-and-query.
pub(crate) async fn parse_url(url: &str) -> Result<(Target, String), BenchError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| BenchError::Url(url.into(), e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(BenchError::Url(
            url.into(),
            "only http:// is supported".into(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| BenchError::Url(url.into(), "no host".into()))?;
    let host_port = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let addr = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| BenchError::Resolve(host_port.clone(), e))?
        .next()
        .ok_or_else(|| {
            BenchError::Resolve(host_port.clone(), std::io::ErrorKind::NotFound.into())
        })?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    Ok((
        Target {
            addr,
            authority: authority.as_str().to_string(),
        },
        path,
    ))
}

/// Parse repeated `Name: value` arguments into a header map.
pub(crate) fn parse_headers(raw: &[String]) -> Result<HeaderMap, BenchError> {
    let mut headers = HeaderMap::new();
    for h in raw {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| BenchError::Header(h.clone()))?;
        let name: http::HeaderName = name
            .trim()
            .parse()
            .map_err(|_| BenchError::Header(h.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| BenchError::Header(h.clone()))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A response: status, body and how long the exchange took.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// Status code.
    pub status: u16,
    /// Whole body.
    pub body: Bytes,
    /// From sending the request to having read the whole body.
    pub latency: Duration,
}

/// A worker's connection, reopened transparently after an error or a
/// server-side close.
pub(crate) struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// How many times a connection was opened (1 for a healthy run).
    pub connects: u64,
}

impl Conn {
    /// A connection to `target`, opened on first use.
    pub(crate) fn new(target: Target) -> Conn {
        Conn {
            target,
            sender: None,
            connects: 0,
        }
    }

    /// Open the connection now if it is not open (so that connecting is not
    /// measured as part of the first request).
    pub(crate) async fn ensure_open(&mut self) -> Result<(), BenchError> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| BenchError::Connect(self.target.addr, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::Connect(self.target.addr, e))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server
            // closes it; either way the next request reconnects.
            let _ = connection.await;
        });
        self.sender = Some(sender);
        self.connects += 1;
        Ok(())
    }

    /// Send one request and read the whole response body.
    pub(crate) async fn send(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Exchange, BenchError> {
        self.ensure_open().await?;
        let mut builder = Request::builder().method(method.clone()).uri(path);
        if let Some(h) = builder.headers_mut() {
            h.insert(
                HOST,
                HeaderValue::from_str(&self.target.authority)
                    .map_err(|e| BenchError::Request(e.into()))?,
            );
            h.extend(headers.clone());
        }
        let request = builder.body(Full::new(body))?;
        let Some(sender) = self.sender.as_mut() else {
            return Err(BenchError::Failed("connection not open".into()));
        };
        let started = Instant::now();
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        let latency = started.elapsed();
        match outcome {
            Ok(Ok((status, body))) => Ok(Exchange {
                status,
                body,
                latency,
            }),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e.into())
            }
            Err(_) => {
                self.sender = None;
                Err(BenchError::Timeout(timeout))
            }
        }
    }
}

/// The string or number at `pointer` (a JSON pointer such as `/id`) in a JSON body.
pub(crate) fn json_field(body: &[u8], pointer: &str) -> Result<String, BenchError> {
    let missing = || BenchError::MissingField {
        pointer: pointer.to_string(),
        body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| missing())?;
    match value.pointer(pointer) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_reject() {
        let h = parse_headers(&[
            "Authorization: Bearer abc".into(),
            "content-type:application/json".into(),
        ])
        .expect("valid headers");
        assert_eq!(h["authorization"], "Bearer abc");
        assert_eq!(h["content-type"], "application/json");
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&["bad name: x".into()]).is_err());
    }

    #[test]
    fn json_field_reads_strings_and_numbers() {
        assert_eq!(json_field(br#"{"id":"t-1"}"#, "/id").unwrap(), "t-1");
        assert_eq!(json_field(br#"{"a":{"n":7}}"#, "/a/n").unwrap(), "7");
        assert!(json_field(br#"{"id":null}"#, "/id").is_err());
        assert!(json_field(b"not json", "/id").is_err());
    }
}
