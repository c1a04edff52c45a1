//! How the server names a provider plugin's typed error: the kind that
//! attempts, plugin statistics and connectivity tests report, and the
//! message for people.

use vel_runtime::types::ProviderError;

/// The error's kind: `rate_limited`, `unavailable`, `timeout`,
/// `invalid_request`, `auth`, `content_filtered` or `other`.
pub fn kind(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::RateLimited(_) => "rate_limited",
        ProviderError::Unavailable(_) => "unavailable",
        ProviderError::Timeout => "timeout",
        ProviderError::InvalidRequest(_) => "invalid_request",
        ProviderError::Auth(_) => "auth",
        ProviderError::ContentFiltered(_) => "content_filtered",
        ProviderError::Other(_) => "other",
    }
}

/// The error's kind and its message for people.
pub fn describe(e: ProviderError) -> (&'static str, String) {
    let kind = kind(&e);
    let message = match e {
        ProviderError::RateLimited(Some(ms)) => {
            format!("the provider is throttling requests (retry after {ms} ms)")
        }
        ProviderError::RateLimited(None) => "the provider is throttling requests".into(),
        ProviderError::Timeout => "the provider did not answer in time".into(),
        ProviderError::Unavailable(m)
        | ProviderError::InvalidRequest(m)
        | ProviderError::Auth(m)
        | ProviderError::ContentFiltered(m)
        | ProviderError::Other(m) => m,
    };
    (kind, message)
}
