//! Helpers shared by the integration tests: a plain HTTP client and an SSE parser.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// A reqwest builder, after installing the TLS crypto provider (the
/// workspace's reqwest may have TLS without one).
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A reqwest client without timeouts (tests bound their waits with [`bounded`]).
pub(crate) fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// Fails the test instead of hanging forever if `fut` never completes.
pub(crate) async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("the awaited condition never came true")
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Parses a complete SSE body.
pub(crate) fn parse_sse(body: &str) -> Vec<Event> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            Event {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// An OpenAI-style chat request body.
pub(crate) fn chat_body(model: &str, prompt: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": prompt}
        ],
        "temperature": 0.2,
        "max_tokens": 100,
        "stream": stream,
        "stream_options": {"include_usage": true}
    })
}

/// An Anthropic Messages request body.
pub(crate) fn messages_body(model: &str, prompt: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "system": "be brief",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 100,
        "stream": stream
    })
}

/// Sends an Anthropic request with the usual headers.
pub(crate) fn anthropic_request(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "ak-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// Collects a streaming body until it ends or fails: (bytes received, whether it failed).
pub(crate) async fn collect_stream(response: reqwest::Response) -> (String, bool) {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), false)
}
