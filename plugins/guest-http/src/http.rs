//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host decides where requests may go, adds the credential and pools the
//! connections; this side only builds the request, sends the body and reads
//! the response as it arrives, so streamed answers are handed on at once.

use crate::completion::ProviderError;
use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::{InputStream, StreamError};

/// Largest slice written or read in one stream call.
const CHUNK: usize = 4096;
/// Largest error body read to find the upstream's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A POST request with a body.
#[derive(Debug, Clone)]
pub struct Post<'a> {
    /// Absolute `http://` or `https://` URL.
    pub url: &'a str,
    /// Extra headers (the host adds the credential itself).
    pub headers: Vec<(&'a str, &'a str)>,
    /// The request body.
    pub body: &'a [u8],
    /// Connect, first-byte and between-bytes timeout, when set.
    pub timeout: Option<Duration>,
}

/// A response whose body is read as it arrives.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    headers: Vec<(String, Vec<u8>)>,
    // Field order is drop order: the stream before its body, the body
    // before its response (WASI child resources).
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
}

impl Response {
    /// The first value of header `name` (lower-case), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The next piece of the body, or `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        match self.stream.blocking_read(CHUNK as u64 * 4) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StreamError::Closed) => Ok(None),
            Err(StreamError::LastOperationFailed(e)) => {
                Err(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => from_error_code(&code),
                    None => ProviderError::Unavailable(format!(
                        "reading the response failed: {}",
                        e.to_debug_string()
                    )),
                })
            }
        }
    }

    /// The whole body, up to `limit` bytes.
    pub fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(ProviderError::Other(format!(
                    "the upstream response is larger than {limit} bytes"
                )));
            }
        }
        Ok(body)
    }

    /// Fails with the mapped `provider-error` unless the status is 2xx.
    pub fn error_for_status(mut self) -> Result<Self, ProviderError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let retry_after = crate::errors::retry_after_ms(|name| self.header(name));
        // A body cut short still tells the status; keep what was read.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = self.next_chunk() {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        Err(crate::errors::from_status(self.status, retry_after, &body))
    }
}

/// Sends `post` and waits for the response head.
pub fn post(post: &Post) -> Result<Response, ProviderError> {
    send(Method::Post, post)
}

/// Sends a DELETE request (its body, usually empty, is `request.body`) and
/// waits for the response head: e.g. ending a protocol session.
pub fn delete(request: &Post) -> Result<Response, ProviderError> {
    send(Method::Delete, request)
}

/// Sends a request with `method` and waits for the response head.
fn send(method: Method, post: &Post) -> Result<Response, ProviderError> {
    let url = Url::parse(post.url)?;
    // A known length instead of chunked encoding: every server accepts it.
    let mut header_list: Vec<(String, Vec<u8>)> = post
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    header_list.push((
        "content-length".to_string(),
        post.body.len().to_string().into_bytes(),
    ));
    let headers = Fields::from_list(&header_list)
        .map_err(|e| ProviderError::InvalidRequest(format!("bad request header: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let refused = |what: &str| ProviderError::InvalidRequest(format!("bad {what} in {}", post.url));
    request
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    request
        .set_scheme(Some(&url.scheme))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(url.authority))
        .map_err(|()| refused("host"))?;
    request
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|()| refused("path"))?;
    let body = request
        .body()
        .map_err(|()| ProviderError::Other("request body already taken".into()))?;

    let options = post.timeout.map(|t| {
        let options = RequestOptions::new();
        let ns = Some(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        // A host that does not support a timeout refuses it; its own apply then.
        let _ = options.set_connect_timeout(ns);
        let _ = options.set_first_byte_timeout(ns);
        let _ = options.set_between_bytes_timeout(ns);
        options
    });

    // Hand the request over first, then stream the body into it, so a large
    // body cannot fill a buffer nobody drains yet.
    let pending = outgoing_handler::handle(request, options).map_err(|e| from_error_code(&e))?;
    {
        let out = body
            .write()
            .map_err(|()| ProviderError::Other("request body stream already taken".into()))?;
        for chunk in post.body.chunks(CHUNK) {
            out.blocking_write_and_flush(chunk).map_err(|e| match e {
                StreamError::LastOperationFailed(e) => wasip2::http::types::http_error_code(&e)
                    .map(|c| from_error_code(&c))
                    .unwrap_or_else(|| {
                        ProviderError::Unavailable("sending the request failed".into())
                    }),
                StreamError::Closed => {
                    ProviderError::Unavailable("the connection closed while sending".into())
                }
            })?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| from_error_code(&e))?;

    let response = loop {
        match pending.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(from_error_code(&code)),
            Some(Err(())) => return Err(ProviderError::Other("response already taken".into())),
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields.entries()
    };
    let incoming = response
        .consume()
        .map_err(|()| ProviderError::Other("response body already taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| ProviderError::Other("response body stream already taken".into()))?;
    Ok(Response {
        status,
        headers,
        stream,
        _body: incoming,
        _response: response,
    })
}

/// The `provider-error` for a transport failure: timeouts are `timeout`,
/// unreachable or broken upstreams `unavailable`, a host refusal (a host
/// or a destination address that is not allowed) `other`.
pub fn from_error_code(code: &ErrorCode) -> ProviderError {
    match code {
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => ProviderError::Timeout,
        ErrorCode::HttpRequestDenied => ProviderError::Other(
            "the host refused the outbound request (its host is not allowed for this plugin)"
                .into(),
        ),
        ErrorCode::DestinationIpProhibited => ProviderError::Other(
            "the host refused the outbound request (destination address not allowed)".into(),
        ),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => {
            ProviderError::InvalidRequest(format!("the host refused the request: {code:?}"))
        }
        ErrorCode::HttpResponseBodySize(_) | ErrorCode::HttpResponseContentCoding(_) => {
            ProviderError::Other(format!("unusable upstream response: {code:?}"))
        }
        other => ProviderError::Unavailable(format!("upstream unreachable: {other:?}")),
    }
}

/// The parts of a URL a wasi:http request needs.
#[derive(Debug)]
struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: &'a str,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, ProviderError> {
        let bad = |why: &str| ProviderError::InvalidRequest(format!("bad URL {url:?}: {why}"));
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let (authority, path_and_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no user info)"));
        }
        Ok(Url {
            scheme,
            authority,
            path_and_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_request_parts() {
        let u = Url::parse("https://api.openai.com/v1/chat/completions").unwrap();
        assert!(matches!(u.scheme, Scheme::Https));
        assert_eq!(
            (u.authority, u.path_and_query),
            ("api.openai.com", "/v1/chat/completions")
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(matches!(u.scheme, Scheme::Http));
        assert_eq!((u.authority, u.path_and_query), ("127.0.0.1:8080", "/"));
        assert!(Url::parse("ftp://x/y").is_err());
        assert!(Url::parse("https:///path").is_err());
        assert!(Url::parse("https://user:pw@host/").is_err());
    }

    #[test]
    fn transport_errors_map() {
        assert!(matches!(
            from_error_code(&ErrorCode::ConnectionRefused),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            from_error_code(&ErrorCode::HttpResponseTimeout),
            ProviderError::Timeout
        ));
        assert!(matches!(
            from_error_code(&ErrorCode::HttpRequestDenied),
            ProviderError::Other(_)
        ));
        assert!(matches!(
            from_error_code(&ErrorCode::DestinationIpProhibited),
            ProviderError::Other(m) if m.contains("destination address not allowed")
        ));
    }
}
