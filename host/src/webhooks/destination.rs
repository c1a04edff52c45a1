//! Where webhooks may POST: `https` URLs (`http` too when the operator
//! allows it), never to loopback, private, link-local, metadata or other
//! restricted addresses unless the operator allows them
//! (`VEL_WEBHOOK_ALLOW_PRIVATE`). The ranges are the plugin runtime's
//! ([`vel_runtime::AllowPrivate`]), one classification for every outbound
//! request.
//!
//! A URL is checked when it is stored ([`check_url`], [`check_resolved`]:
//! an address, or a name that resolves to a refused one, is a 422) and
//! again on every connection: the client resolves names through
//! [`GuardedResolver`], which refuses a name resolving to any refused
//! address and hands the client only the addresses it checked, so a name
//! that resolves elsewhere later (DNS rebinding) still cannot reach them;
//! an address written in the URL is checked by [`refused_literal`] before
//! each attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use vel_runtime::AllowPrivate;
use vel_runtime::destination::restricted_range;

use super::WebhookConfig;
use crate::validation::{FieldErrors, check_destination};

/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;
/// What a resolver fails with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest a name is resolved for at creation.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection refused because of where it would go.
#[derive(Debug, Clone, thiserror::Error)]
#[error("destination not allowed: `{host}` is a {kind} address")]
pub struct DestinationRefused {
    /// The host named.
    pub host: String,
    /// The restricted range (`loopback`, `private`, …).
    pub kind: &'static str,
}

/// Check `raw` as a webhook URL, recording problems under `field`; the URL
/// when it passed.
pub fn check_url(
    errors: &mut FieldErrors,
    field: &str,
    raw: &str,
    config: &WebhookConfig,
) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().count() > MAX_URL_CHARS || raw.chars().any(char::is_whitespace)
    {
        errors.add(
            field,
            &format!("must be an https URL of at most {MAX_URL_CHARS} characters"),
        );
        return None;
    }
    let Ok(url) = Url::parse(raw) else {
        errors.add(field, "must be an absolute https URL");
        return None;
    };
    let scheme_ok = url.scheme() == "https" || (config.allow_http && url.scheme() == "http");
    if !scheme_ok {
        let message = if config.allow_http {
            "must be an http or https URL"
        } else {
            "must be an https URL (http is not allowed on this server)"
        };
        errors.add(field, message);
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.add(field, "must not carry credentials");
        return None;
    }
    let Some(host) = url.host_str() else {
        errors.add(field, "must name a host");
        return None;
    };
    if config.allow_private.refused_host(host).is_some() {
        check_destination(errors, field, host, &config.allow_private);
        return None;
    }
    Some(url)
}

/// Refuse a URL whose host is a name resolving to a refused address (a
/// name that does not resolve now passes: it is checked at every
/// connection).
pub async fn check_resolved(
    errors: &mut FieldErrors,
    field: &str,
    url: &Url,
    allow: &AllowPrivate,
) {
    let Some(name) = url.domain() else {
        return;
    };
    if allow.allows_name(name) {
        return;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await;
    if let Ok(Ok(addrs)) = found {
        for addr in addrs {
            if !allow.allows(addr.ip()) {
                let kind = restricted_range(addr.ip()).unwrap_or("restricted");
                errors.add(
                    field,
                    &format!(
                        "`{name}` resolves to {}, a {kind} address: webhooks may not go there \
                         (destination address not allowed)",
                        addr.ip()
                    ),
                );
                return;
            }
        }
    }
}

/// The refusal of `url` when its host is an address (or a name that always
/// means one, such as `localhost`) the operator does not allow; names are
/// checked by [`GuardedResolver`] when the client resolves them.
pub fn refused_literal(url: &Url, allow: &AllowPrivate) -> Option<DestinationRefused> {
    let host = url.host_str()?;
    allow.refused_host(host).map(|kind| DestinationRefused {
        host: host.to_string(),
        kind,
    })
}

/// The delivery client's resolver: the system's, refusing a name unless
/// every address it resolves to is allowed, so the client connects only
/// to addresses this check passed (no second lookup for DNS rebinding to
/// exploit).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: Arc<AllowPrivate>,
}

impl GuardedResolver {
    /// A resolver allowing what `allow` does beyond public addresses.
    pub fn new(allow: AllowPrivate) -> GuardedResolver {
        GuardedResolver {
            allow: Arc::new(allow),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => return Err(Box::new(e) as BoxError),
            };
            // As the plugins' connector: a name is refused unless every
            // address it resolves to is allowed.
            let any_name = allow.allows_name(&host);
            if let Some(refused) = found
                .iter()
                .find(|addr| !any_name && !allow.allows(addr.ip()))
            {
                let kind = restricted_range(refused.ip()).unwrap_or("restricted");
                return Err(Box::new(DestinationRefused { host, kind }) as BoxError);
            }
            if found.is_empty() {
                let message = format!("`{host}` resolves to no address");
                return Err(
                    Box::new(std::io::Error::new(std::io::ErrorKind::NotFound, message))
                        as BoxError,
                );
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Whether `error` (or one of its sources) is a [`DestinationRefused`].
pub fn is_refused(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<DestinationRefused>() {
            return Some(refused.to_string());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow_http: bool, allow_private: &str) -> WebhookConfig {
        WebhookConfig {
            allow_http,
            allow_private: allow_private.parse().expect("list"),
            ..WebhookConfig::default()
        }
    }

    fn check(raw: &str, c: &WebhookConfig) -> bool {
        let mut errors = FieldErrors::new();
        let url = check_url(&mut errors, "url", raw, c);
        url.is_some() && errors.finish().is_ok()
    }

    #[test]
    fn https_and_public_by_default() {
        let strict = config(false, "");
        assert!(check("https://hooks.example.com/vel", &strict));
        assert!(!check("http://hooks.example.com/vel", &strict));
        assert!(!check("ftp://hooks.example.com/", &strict));
        assert!(!check("https://user:pw@hooks.example.com/", &strict));
        assert!(!check("hooks.example.com", &strict));
        for refused in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:8443/",
            "https://2130706433/",
            "https://[::ffff:127.0.0.1]/",
            "https://metadata.google.internal/",
        ] {
            assert!(!check(refused, &strict), "{refused} passed");
        }
        let open = config(true, "127.0.0.0/8");
        assert!(check("http://127.0.0.1:9/hook", &open));
        assert!(!check("http://10.0.0.1/", &open));
    }

    #[test]
    fn an_address_in_the_url_is_refused_at_send_time() {
        let url = Url::parse("https://127.0.0.1:1/").expect("url");
        let refused = refused_literal(&url, &AllowPrivate::default()).expect("refused");
        assert_eq!(refused.kind, "loopback");
        assert!(refused_literal(&url, &"127.0.0.1".parse().expect("list")).is_none());
    }

    #[tokio::test]
    async fn the_resolver_hands_out_only_allowed_addresses() {
        let strict = GuardedResolver::new(AllowPrivate::default());
        let name: Name = "localhost".parse().expect("name");
        let err = match strict.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert!(is_refused(&*err).is_some(), "{err}");
        let open = GuardedResolver::new("127.0.0.0/8,::1/128".parse().expect("list"));
        let name: Name = "localhost".parse().expect("name");
        let addrs: Vec<SocketAddr> = open.resolve(name).await.expect("resolved").collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
