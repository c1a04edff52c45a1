//! Turning upstream HTTP failures into the `provider-error` the host acts on.
//!
//! Messages carry the status and the upstream's own error message, never
//! request or response headers (they may hold credentials).

use crate::completion::ProviderError;
use serde_json::Value;

/// Longest upstream error text kept in a message.
const MAX_MESSAGE: usize = 500;

/// The error for a non-2xx response.
///
/// 429 → `rate-limited` (with `retry_after_ms`), 401/403 → `auth`,
/// 408/504 → `timeout`, 5xx and 529 → `unavailable`, 400/404/413/422 →
/// `invalid-request` (or `content-filtered` when the upstream says the
/// content was refused), anything else → `other`.
pub fn from_status(status: u16, retry_after_ms: Option<u32>, body: &[u8]) -> ProviderError {
    let message = upstream_message(body);
    let text = format!("upstream answered {status}: {message}");
    match status {
        429 => ProviderError::RateLimited(retry_after_ms),
        401 | 403 => ProviderError::Auth(text),
        408 | 504 => ProviderError::Timeout,
        400 | 404 | 413 | 422 if mentions_content_filter(body) => {
            ProviderError::ContentFiltered(text)
        }
        400 | 404 | 413 | 422 => ProviderError::InvalidRequest(text),
        500..=599 => ProviderError::Unavailable(text),
        _ => ProviderError::Other(text),
    }
}

/// The `retry-after-ms` header (milliseconds) or else `retry-after`
/// (seconds; an HTTP date is ignored), in milliseconds.
pub fn retry_after_ms(header: impl Fn(&str) -> Option<String>) -> Option<u32> {
    let parse = |name: &str, scale: f64| {
        header(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| (v * scale).ceil().min(f64::from(u32::MAX)) as u32)
    };
    parse("retry-after-ms", 1.0).or_else(|| parse("retry-after", 1000.0))
}

/// The upstream's error message: `error.message`, `message`, `error` or
/// `detail` from a JSON body, else the body's text, shortened.
pub fn upstream_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("error"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_string))
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if text.is_empty() {
        return "(no error message)".to_string();
    }
    shorten(&text)
}

/// Whether an error body says the content itself was refused.
fn mentions_content_filter(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let code = [v.pointer("/error/code"), v.pointer("/error/type")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>();
    code.iter()
        .any(|c| c.contains("content_filter") || c.contains("content_policy"))
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_actionable_errors() {
        let body =
            br#"{"error": {"message": "Invalid model 'x'", "type": "invalid_request_error"}}"#;
        assert!(matches!(
            from_status(429, Some(1500), b""),
            ProviderError::RateLimited(Some(1500))
        ));
        assert!(matches!(
            from_status(401, None, body),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            from_status(504, None, b""),
            ProviderError::Timeout
        ));
        assert!(
            matches!(from_status(503, None, b"down"), ProviderError::Unavailable(m) if m.contains("down"))
        );
        assert!(matches!(
            from_status(529, None, b""),
            ProviderError::Unavailable(_)
        ));
        match from_status(400, None, body) {
            ProviderError::InvalidRequest(m) => {
                assert_eq!(m, "upstream answered 400: Invalid model 'x'")
            }
            other => panic!("{other:?}"),
        }
        let filtered = br#"{"error": {"message": "no", "code": "content_filter"}}"#;
        assert!(matches!(
            from_status(400, None, filtered),
            ProviderError::ContentFiltered(_)
        ));
        assert!(matches!(
            from_status(302, None, b""),
            ProviderError::Other(_)
        ));
    }

    #[test]
    fn retry_after_headers() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(retry_after_ms(h(&[("retry-after", "2")])), Some(2000));
        assert_eq!(
            retry_after_ms(h(&[("retry-after", "0.5"), ("retry-after-ms", "120")])),
            Some(120)
        );
        assert_eq!(
            retry_after_ms(h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
        assert_eq!(retry_after_ms(h(&[])), None);
    }

    #[test]
    fn messages_are_found_and_shortened() {
        assert_eq!(
            upstream_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(upstream_message(br#"{"detail": "bad"}"#), "bad");
        assert_eq!(upstream_message(b""), "(no error message)");
        assert_eq!(
            upstream_message("x".repeat(2000).as_bytes())
                .chars()
                .count(),
            MAX_MESSAGE + 1
        );
    }
}
