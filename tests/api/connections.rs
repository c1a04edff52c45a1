//! Client connections are bounded: a head, a body and an idle keep-alive
//! connection each have a deadline, the number of open connections has a
//! cap, and a declared body over the limit is refused before it is read.
//! Raw sockets against the real binary, with short timeouts.
//!
//! Most run on SQLite only: connection handling happens before any
//! request reaches the database, so the backend makes no difference. The
//! answers to heads hyper refuses itself run on both, as every error shape
//! test does.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Server};

/// How long a test waits for the server before failing (generous: the
/// server's own timeouts here are 300 ms).
const PATIENCE: Duration = Duration::from_secs(20);

const SHORT: &str = "300";

async fn connect(s: &Server) -> TcpStream {
    let addr = s.base.strip_prefix("http://").expect("http base");
    TcpStream::connect(addr).await.expect("connect")
}

/// Read until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// One response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Value,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(self.body["error"]["message"].is_string(), "{self:?}");
        assert!(self.body["error"]["details"].is_object(), "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
    }
}

/// Read one response with a `Content-Length` body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    let read = tokio::time::timeout(PATIENCE, async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .expect("status line");
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .expect("content-length");
                let start = end + 4;
                if received.len() >= start + length {
                    let body = serde_json::from_slice(&received[start..start + length])
                        .unwrap_or(Value::Null);
                    return RawResponse {
                        status,
                        headers,
                        body,
                    };
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    read.expect("no response from the server")
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
}

const HEALTH: &[u8] = b"GET /api/health HTTP/1.1\r\nHost: vel\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_arrive_is_closed() {
    let s = Server::start_with(Backend::Sqlite, &[("VEL_HEADER_READ_TIMEOUT_MS", SHORT)]).await;
    // Half a head, then nothing.
    let mut half = connect(&s).await;
    write(&mut half, b"GET /api/health HTTP/1.1\r\nHost: vel\r\n").await;
    // Nothing at all.
    let mut silent = connect(&s).await;
    assert!(read_until_closed(&mut half).await.is_empty());
    assert!(read_until_closed(&mut silent).await.is_empty());
    // A whole request is still served.
    let mut whole = connect(&s).await;
    write(&mut whole, HEALTH).await;
    assert_eq!(read_response(&mut whole).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    // The header timeout stays long: the keep-alive one closes it.
    let s = Server::start_with(Backend::Sqlite, &[("VEL_KEEPALIVE_TIMEOUT_MS", SHORT)]).await;
    let mut stream = connect(&s).await;
    for _ in 0..2 {
        write(&mut stream, HEALTH).await;
        let r = read_response(&mut stream).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(read_until_closed(&mut stream).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let s = Server::start_with(Backend::Sqlite, &[("VEL_BODY_READ_TIMEOUT_MS", SHORT)]).await;
    let mut stream = connect(&s).await;
    write(
        &mut stream,
        b"POST /api/auth/login HTTP/1.1\r\nHost: vel\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await;
    let r = read_response(&mut stream).await;
    r.expect_error(408, "request_timeout");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    read_until_closed(&mut stream).await;
}

/// An event stream lasts longer than every timeout: they bound reading
/// the request, not the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_outlives_the_timeouts() {
    let s = Server::start_with(
        Backend::Sqlite,
        &[
            ("VEL_HEADER_READ_TIMEOUT_MS", SHORT),
            ("VEL_KEEPALIVE_TIMEOUT_MS", SHORT),
            ("VEL_BODY_READ_TIMEOUT_MS", SHORT),
            ("VEL_SSE_KEEPALIVE_SECS", "1"),
            // The task stays pending: its stream stays open.
            ("VEL_TASK_WORKERS", "0"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let task = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "wait", "prompt": "wait" }),
        )
        .await
        .expect(201);
    let id = task.body["id"].as_str().expect("task id");
    let mut stream = connect(&s).await;
    write(
        &mut stream,
        format!(
            "GET /api/tasks/{id}/stream HTTP/1.1\r\nHost: vel\r\nAuthorization: Bearer {admin}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    // Two keep-alive comments, a second apart, well past every timeout.
    let read = tokio::time::timeout(PATIENCE, async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while received.windows(3).filter(|w| w == b"\n:\n").count() < 2 {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "the stream was cut: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
        received
    })
    .await
    .expect("no keep-alive comments");
    assert!(read.starts_with(b"HTTP/1.1 200"), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_for_a_slot() {
    let s = Server::start_with(
        Backend::Sqlite,
        &[
            ("VEL_MAX_CONNECTIONS", "4"),
            ("VEL_HEADER_READ_TIMEOUT_MS", SHORT),
        ],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(&s).await);
    }
    // The server took all four and says it is full.
    let logged = tokio::time::timeout(PATIENCE, async {
        loop {
            if s.stderr().contains("connection limit reached") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        logged.is_ok(),
        "no log line about the cap; stderr:\n{}",
        s.stderr()
    );
    // A fifth client waits until an idle one is closed, then is served.
    let mut fifth = connect(&s).await;
    write(&mut fifth, HEALTH).await;
    assert_eq!(read_response(&mut fifth).await.status, 200);
    // The server closed an idle one before it took the fifth, and loopback
    // delivers in order: that close has arrived.
    let mut closed = 0;
    for stream in idle {
        // A non-blocking read on the socket itself: 0 once the close came.
        let mut stream = stream.into_std().expect("std socket");
        match std::io::Read::read(&mut stream, &mut [0u8; 1]) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert!(closed >= 1, "the fifth client was served while 4 were open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let s = Server::start_with(Backend::Sqlite, &[("VEL_MAX_BODY_BYTES", "1024")]).await;
    // One byte over, and no body sent: the answer comes at once.
    let mut stream = connect(&s).await;
    write(
        &mut stream,
        b"POST /api/auth/login HTTP/1.1\r\nHost: vel\r\nContent-Type: application/json\r\n\
          Content-Length: 1025\r\n\r\n",
    )
    .await;
    let r = read_response(&mut stream).await;
    r.expect_error(413, "payload_too_large");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    read_until_closed(&mut stream).await;

    // The upload route has its own, larger limit; far over it is refused
    // the same way, before authentication.
    let mut stream = connect(&s).await;
    write(
        &mut stream,
        b"POST /api/plugins HTTP/1.1\r\nHost: vel\r\n\
          Content-Type: multipart/form-data; boundary=x\r\n\
          Content-Length: 1000000000000\r\n\r\n",
    )
    .await;
    read_response(&mut stream)
        .await
        .expect_error(413, "payload_too_large");

    // Exactly the limit is read and answered.
    let login =
        json!({ "email": ADMIN_EMAIL, "password": format!("{ADMIN_PASSWORD}x") }).to_string();
    let body = format!("{login:<1024}");
    let mut stream = connect(&s).await;
    write(
        &mut stream,
        format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: vel\r\nContent-Type: application/json\r\n\
             Content-Length: 1024\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .await;
    read_response(&mut stream)
        .await
        .expect_error(401, "unauthorized");
}

/// A head over the limits gets the one JSON error shape, not hyper's empty
/// 431, and the connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_large_head_gets_a_json_431() {
    let s = Server::start(Backend::Sqlite).await;
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-Field-{i}: {i}\r\n")).collect() };

    // 100 fields in all (Host and 99 more) are served.
    let mut stream = connect(&s).await;
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: vel\r\n{}\r\n",
        fields(99)
    );
    write(&mut stream, head.as_bytes()).await;
    assert_eq!(read_response(&mut stream).await.status, 200);

    // One more is refused.
    let mut stream = connect(&s).await;
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: vel\r\n{}\r\n",
        fields(100)
    );
    write(&mut stream, head.as_bytes()).await;
    let r = read_response(&mut stream).await;
    r.expect_error(431, "headers_too_large");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    read_until_closed(&mut stream).await;

    // So is one field of 100 KB, with a body that is left unread.
    let mut stream = connect(&s).await;
    let big = "a".repeat(100 * 1024);
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: vel\r\nX-Big: {big}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    write(&mut stream, head.as_bytes()).await;
    let r = read_response(&mut stream).await;
    r.expect_error(431, "headers_too_large");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    read_until_closed(&mut stream).await;
}

/// Heads hyper refuses by itself, before any handler runs (beyond its own
/// limits, malformed, or a request target it does not parse), get the same
/// JSON error shape as every other error, and the connection ends.
async fn heads_hyper_refuses_get_the_json_shape(backend: Backend) {
    let s = Server::start(backend).await;
    let fields: String = (0..2000).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let cases = [
        (
            "2,000 header fields",
            format!("GET /api/health HTTP/1.1\r\nHost: vel\r\n{fields}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "a 500 KiB head",
            format!(
                "GET /api/health HTTP/1.1\r\nHost: vel\r\nX-Big: {}\r\n\r\n",
                "a".repeat(500 * 1024)
            ),
            431,
            "headers_too_large",
        ),
        (
            "a garbage request line",
            "GARBAGE!! \u{1}\r\nHost: vel\r\n\r\n".to_string(),
            400,
            "malformed_request",
        ),
        (
            "a 100 KiB request target",
            format!(
                "GET /api/health?q={} HTTP/1.1\r\nHost: vel\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
            414,
            "uri_too_long",
        ),
    ];
    for (what, head, status, code) in cases {
        let (mut reader, mut writer) = connect(&s).await.into_split();
        // hyper answers as soon as it gives up on the head, and may close
        // the connection before all of it was sent: a failed write is fine.
        let sending = tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            writer
        });
        let r = read_response(&mut reader).await;
        r.expect_error(status, code);
        assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
        let rest = read_until_closed(&mut reader).await;
        assert!(rest.is_empty(), "{what}: more after the answer: {rest:?}");
        drop(sending.await.expect("the writer"));
    }
}

/// Ordinary errors (ours, with their JSON bodies) leave a keep-alive
/// connection usable, answers without a body are left as they are, and a
/// HEAD request's error answer has no body.
async fn ordinary_errors_keep_the_connection(backend: Backend) {
    let s = Server::start(backend).await;
    let mut stream = connect(&s).await;
    write(&mut stream, HEALTH).await;
    assert_eq!(read_response(&mut stream).await.status, 200);
    write(
        &mut stream,
        b"GET /api/no-such-thing HTTP/1.1\r\nHost: vel\r\n\r\n",
    )
    .await;
    let r = read_response(&mut stream).await;
    r.expect_error(404, "not_found");
    assert_eq!(r.header("connection"), None, "{r:?}");
    write(
        &mut stream,
        b"POST /api/auth/login HTTP/1.1\r\nHost: vel\r\n\
          Content-Type: application/json\r\nContent-Length: 1\r\n\r\n{",
    )
    .await;
    let r = read_response(&mut stream).await;
    r.expect_error(400, "invalid_json");
    assert_eq!(r.header("connection"), None, "{r:?}");
    // A HEAD answer: a head only, then the next response follows at once.
    write(
        &mut stream,
        b"HEAD /api/health HTTP/1.1\r\nHost: vel\r\n\r\n",
    )
    .await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    write(&mut stream, HEALTH).await;
    assert_eq!(read_response(&mut stream).await.status, 200);

    // Our own 431 to a HEAD request: its head only, as written.
    let mut stream = connect(&s).await;
    let fields: String = (0..100).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    write(
        &mut stream,
        format!("HEAD /api/health HTTP/1.1\r\nHost: vel\r\n{fields}\r\n").as_bytes(),
    )
    .await;
    let answer = String::from_utf8(read_until_closed(&mut stream).await).expect("utf-8");
    assert!(
        answer.starts_with("HTTP/1.1 431 ") && answer.ends_with("\r\n\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(!answer.contains("content-length: 0\r\n"), "{answer}");
}

/// Read one response head, byte by byte so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let read = tokio::time::timeout(PATIENCE, async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read"));
        }
        String::from_utf8(head).expect("utf-8")
    })
    .await;
    read.expect("no response head from the server")
}

crate::dual_backend_tests!(
    heads_hyper_refuses_get_the_json_shape,
    ordinary_errors_keep_the_connection
);
