//! Messages to people, delivered by the operator: vel sends no mail. When
//! `VEL_NOTIFY_URL` is set, each message is POSTed to it as JSON
//! (`{"kind":"email_change","to":…,"token":…,"expires_at":…}`) and the
//! operator's service delivers it; features that need a message refuse to
//! start one when it is not set.
//!
//! Delivery runs on its own task with a short timeout, so a request's
//! answer never waits for it (nor does its timing tell anything about it).
//! A failure is logged with the message's kind and the hook's host, never
//! the message, which carries a secret token.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use serde::Serialize;

/// Longest one delivery to the hook may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The operator's hook (`VEL_NOTIFY_URL`): an `http` or `https` URL. Its
/// `Debug` and `Display` show no credentials, query or fragment, which may
/// hold the hook's own secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl(Url);

impl FromStr for NotifyUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<NotifyUrl, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("expected an http:// or https:// URL with a host".into());
        }
        Ok(NotifyUrl(url))
    }
}

impl fmt::Display for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(url.path())
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NotifyUrl({self})")
    }
}

/// A message for a person.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// Confirm a change of an account's email: sent to the new address.
    EmailChange {
        /// The new address.
        to: String,
        /// The one-time token that confirms the change.
        token: String,
        /// When the token expires (RFC 3339).
        expires_at: String,
    },
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::EmailChange { .. } => "email_change",
        }
    }
}

/// Hands messages to the operator's hook, when there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    hook: Option<(NotifyUrl, reqwest::Client)>,
}

impl Notifier {
    /// A notifier posting to `url`, or one that can deliver nothing.
    pub fn new(url: Option<NotifyUrl>) -> Result<Notifier, reqwest::Error> {
        let hook = match url {
            Some(url) => {
                // reqwest is built without a default rustls provider; an
                // error only means one is installed already.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("vel/", env!("CARGO_PKG_VERSION")))
                    .build()?;
                Some((url, client))
            }
            None => None,
        };
        Ok(Notifier { hook })
    }

    /// Whether messages can be delivered (`VEL_NOTIFY_URL` is set).
    pub fn is_configured(&self) -> bool {
        self.hook.is_some()
    }

    /// Deliver `message` in the background; false (and nothing sent) when
    /// no hook is configured.
    pub fn send(&self, message: Message) -> bool {
        let Some((url, client)) = &self.hook else {
            return false;
        };
        let request = client.post(url.0.clone()).json(&message);
        let (hook, kind) = (url.to_string(), message.kind());
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(kind, %hook, "notification delivered");
                }
                Ok(response) => {
                    tracing::warn!(kind, %hook, status = %response.status(),
                        "the notification hook (VEL_NOTIFY_URL) refused a message");
                }
                Err(error) => {
                    tracing::warn!(kind, %hook, error = %error.without_url(),
                        "the notification hook (VEL_NOTIFY_URL) could not be reached");
                }
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_http_and_shown_without_its_secrets() {
        let url: NotifyUrl = "https://user:pw@hooks.example:8443/vel/notify?key=s3cret#x"
            .parse()
            .expect("valid");
        assert_eq!(url.to_string(), "https://hooks.example:8443/vel/notify");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!format!("{url:?}").contains("pw"));
        assert!("ftp://hooks.example/".parse::<NotifyUrl>().is_err());
        assert!("not a url".parse::<NotifyUrl>().is_err());
    }

    #[test]
    fn a_message_names_its_kind() {
        let message = Message::EmailChange {
            to: "new@example.com".into(),
            token: "vel_ec_x".into(),
            expires_at: "2030-01-01T00:00:00.000Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&message).expect("json"),
            serde_json::json!({ "kind": "email_change", "to": "new@example.com",
                                "token": "vel_ec_x", "expires_at": "2030-01-01T00:00:00.000Z" })
        );
    }
}
