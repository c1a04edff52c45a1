//! hyper's own error answers, given vel's JSON error shape.
//!
//! When a request's head cannot be parsed (a malformed request line or
//! header field, more header fields than hyper's limit, a head larger than
//! its read buffer, a request target over 65534 bytes), hyper answers by
//! itself before any service runs: a head-only `400`, `431` or `414` with
//! `content-length: 0`, written when no response is in progress, after
//! which it closes the connection. It has no hook to change that answer,
//! so the client would get the one error of the server without the JSON
//! body every other error has.
//!
//! The connection's socket (`super::connection::Watched`) therefore looks
//! at what hyper writes while no request is in progress: a buffer that is
//! exactly such an answer (status line, then only `connection: close`,
//! `content-length: 0` and `date`) is taken as written and
//! [`replacement`]'s JSON answer is sent in its place. Only the first few
//! bytes of a write are compared otherwise, so responses cost nothing
//! more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use crate::api::error::ApiError;
use crate::api::head_limit::{MAX_HEAD_BYTES, MAX_HEADERS};

/// hyper's answers are about a hundred bytes; anything longer is not one.
const MAX_AUTOMATIC_LEN: usize = 256;

/// Whether `buf` may be one of hyper's answers: a cheap look at its start
/// and length, made for every write while no request is in progress.
#[inline]
pub(super) fn may_be_automatic(buf: &[u8]) -> bool {
    buf.len() <= MAX_AUTOMATIC_LEN
        && buf.len() > 12
        && buf.starts_with(b"HTTP/1.")
        && matches!(&buf[9..13], b"400 " | b"414 " | b"431 ")
}

/// vel's answer in place of `buf` when `buf` is exactly one of hyper's
/// automatic error answers (see the module's documentation).
pub(super) fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if !may_be_automatic(buf) {
        return None;
    }
    let head = std::str::from_utf8(buf.strip_suffix(b"\r\n\r\n")?).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let error = match status_line.get(9..)? {
        "400 Bad Request" => ApiError::bad_request(
            "malformed_request",
            "the request line or a header field is malformed",
        ),
        "414 URI Too Long" => ApiError::uri_too_long("the request target is too long"),
        "431 Request Header Fields Too Large" => ApiError::headers_too_large(format!(
            "the request's head is too large: at most {MAX_HEADERS} header fields and \
             {MAX_HEAD_BYTES} bytes of request line and header fields are accepted"
        )),
        _ => return None,
    };
    let mut empty = false;
    let mut date = None;
    for line in lines {
        match line.split_once(": ")? {
            ("connection", "close") => {}
            ("content-length", "0") => empty = true,
            ("date", value) => date = Some(value),
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::to_vec(&error.into_body()).ok()?;
    let mut answer = Vec::with_capacity(160 + body.len());
    answer.extend_from_slice(status_line.as_bytes());
    answer.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    answer.extend_from_slice(body.len().to_string().as_bytes());
    answer.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(date) = date {
        answer.extend_from_slice(b"date: ");
        answer.extend_from_slice(date.as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&body);
    Some(answer)
}

/// A replacement answer being written to the socket.
pub(super) struct Pending {
    bytes: Vec<u8>,
    written: usize,
}

impl Pending {
    /// Write `bytes` in place of hyper's answer.
    pub(super) fn new(bytes: Vec<u8>) -> Self {
        Pending { bytes, written: 0 }
    }

    /// Write what is left of the answer to `to`, however many writes it
    /// takes.
    pub(super) fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(rest) = self.bytes.get(self.written..).filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut *to).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 06 Dec 2026 15:00:00 GMT";

    fn automatic(status: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        )
        .into_bytes()
    }

    fn parse(answer: &[u8]) -> (String, Vec<String>, serde_json::Value) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n").map(str::to_string);
        let status = lines.next().unwrap();
        let headers: Vec<String> = lines.collect();
        let length = format!("content-length: {}", body.len());
        assert!(headers.contains(&length), "{headers:?}");
        (status, headers, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hypers_answers_get_the_json_shape() {
        for (status, code) in [
            ("400 Bad Request", "malformed_request"),
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "headers_too_large"),
        ] {
            let answer = replacement(&automatic(status)).unwrap();
            let (line, headers, body) = parse(&answer);
            assert_eq!(line, format!("HTTP/1.1 {status}"));
            for expected in [
                "content-type: application/json".to_string(),
                "connection: close".to_string(),
                format!("date: {DATE}"),
            ] {
                assert!(headers.contains(&expected), "{headers:?}");
            }
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string());
            assert!(body["error"]["details"].is_object());
        }
    }

    #[test]
    fn other_writes_are_left_alone() {
        let json_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
                         content-type: application/json\r\ncontent-length: 2\r\n\
                         connection: close\r\n\r\n{}";
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let no_content = b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n";
        let head_answer = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                            content-length: 80\r\n\r\n";
        let with_body = [automatic("400 Bad Request"), b"{}".to_vec()].concat();
        let cut = &automatic("400 Bad Request")[..40];
        let long = vec![b'a'; 4096];
        for buf in [
            &json_431[..],
            &ok[..],
            &no_content[..],
            &head_answer[..],
            &with_body[..],
            cut,
            &long[..],
            b"",
        ] {
            assert!(
                replacement(buf).is_none(),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}
