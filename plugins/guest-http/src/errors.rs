//! Turning upstream HTTP failures into the `provider-error` the host acts on.
//!
//! Messages carry the status and, when the upstream's JSON error names one,
//! a short reason: never the raw body (an endpoint that is not the provider
//! it claims to be must not have its pages relayed) and never request or
//! response headers (they may hold credentials).

use crate::completion::ProviderError;
use serde_json::Value;

/// Longest upstream reason kept in a message, in characters.
const MAX_REASON: usize = 200;

/// The error for a non-2xx response.
///
/// 429 → `rate-limited` (with `retry_after_ms`), 401/403 → `auth`,
/// 408/504 → `timeout`, 5xx and 529 → `unavailable`, 400/404/413/422 →
/// `invalid-request` (or `content-filtered` when the upstream says the
/// content was refused), anything else → `other`.
pub fn from_status(status: u16, retry_after_ms: Option<u32>, body: &[u8]) -> ProviderError {
    let text = match upstream_reason(body) {
        Some(reason) => format!("upstream answered {status}: {reason}"),
        None => format!("upstream answered {status}"),
    };
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

/// The reason an upstream's JSON error body gives (`error.message`,
/// `message`, `error` or `detail`), with control characters removed and
/// shortened to [`MAX_REASON`] characters; `None` for a body that is not
/// JSON or names no reason.
pub fn upstream_reason(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    let raw = [
        v.pointer("/error/message"),
        v.get("message"),
        v.get("error"),
        v.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)?;
    let clean = raw
        .split(char::is_control)
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    if clean.is_empty() {
        return None;
    }
    Some(shorten(&clean))
}

/// [`upstream_reason`], or a placeholder when there is none.
pub fn upstream_message(body: &[u8]) -> String {
    upstream_reason(body).unwrap_or_else(|| "(no error message)".to_string())
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
    if text.chars().count() <= MAX_REASON {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX_REASON).collect();
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
        match from_status(503, None, br#"{"error": "down for maintenance"}"#) {
            ProviderError::Unavailable(m) => {
                assert_eq!(m, "upstream answered 503: down for maintenance")
            }
            other => panic!("{other:?}"),
        }
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
    fn raw_bodies_are_never_echoed() {
        // What an endpoint that is not a provider answers: an HTML page, a
        // banner, plain text. Only the status comes back.
        for body in [
            &b"<html><body>Internal admin console: db=10.0.0.5 password=hunter2</body></html>"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"down",
            b"{not json",
            br#"{"error": {"code": 17}}"#,
            br#"{"detail": [{"loc": ["body"], "msg": "secret-ish"}]}"#,
            br#"{"message": " \n\t "}"#,
        ] {
            match from_status(422, None, body) {
                ProviderError::InvalidRequest(m) => assert_eq!(m, "upstream answered 422"),
                other => panic!("{other:?}"),
            }
        }
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
    fn reasons_are_found_cleaned_and_shortened() {
        assert_eq!(
            upstream_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(upstream_message(br#"{"detail": "bad"}"#), "bad");
        assert_eq!(upstream_message(b""), "(no error message)");
        assert_eq!(upstream_message(b"plain text"), "(no error message)");
        // Control characters (escape sequences, line breaks) are removed.
        assert_eq!(
            upstream_reason(br#"{"message": "line one\nline two\u001b[31m red\u0007"}"#).unwrap(),
            "line one line two [31m red"
        );
        let long = format!(r#"{{"error": {{"message": "{}"}}}}"#, "x".repeat(2000));
        let reason = upstream_reason(long.as_bytes()).unwrap();
        assert_eq!(reason.chars().count(), MAX_REASON + 1);
        assert!(reason.ends_with('…'));
        match from_status(500, None, long.as_bytes()) {
            ProviderError::Unavailable(m) => {
                assert!(m.chars().count() <= MAX_REASON + 25, "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
