//! The signature on every delivery: `X-Vel-Signature: t=<unix seconds>,v1=<hex>`
//! where the hex is HMAC-SHA256, keyed with the webhook's secret (its
//! text, as shown once at creation or rotation), of `"<t>.<body>"`; during
//! a rotation's overlap a second `v1=` is made with the old secret. A receiver
//! recomputes it over the raw body, compares in constant time, and
//! refuses timestamps too far from its clock (replays). See
//! docs/webhooks.md for verification snippets.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of generated secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Vel-Signature` value for `body` sent at `timestamp` (unix
/// seconds) under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    sign_with(&[secret], timestamp, body)
}

/// The `X-Vel-Signature` value for `body` sent at `timestamp` under each
/// of `secrets` in turn: `t=…,v1=<first>,v1=<second>` (the current secret
/// first, then the one a rotation replaced, while it still signs).
pub fn sign_with(secrets: &[impl AsRef<str>], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let digest = mac(secret.as_ref(), timestamp, body)
            .finalize()
            .into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex::encode(digest));
    }
    header
}

/// Whether `header` is a valid signature of `body` under `secret`, made
/// within `tolerance_secs` of `now` (unix seconds). Any `v1` entry may
/// match (several are sent while a secret changes).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    candidates
        .iter()
        .any(|c| mac(secret, t, body).verify_slice(c).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_nothing_else_does() {
        let secret = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 6 + 64);
        let body = br#"{"id":"e1"}"#;
        let header = sign(&secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(&secret, &header, body, 1_700_000_100, 300));
        assert!(!verify(&secret, &header, b"{}", 1_700_000_100, 300));
        assert!(!verify("whsec_other", &header, body, 1_700_000_100, 300));
        assert!(!verify(&secret, &header, body, 1_700_001_000, 300));
        assert!(!verify(&secret, "v1=00", body, 1_700_000_000, 300));
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let (new, old) = (new_secret(), new_secret());
        let body = br#"{"id":"e2"}"#;
        let header = sign_with(&[&new, &old], 1_700_000_000, body);
        assert_eq!(header.matches(",v1=").count(), 2, "{header}");
        assert!(header.starts_with(&sign(&new, 1_700_000_000, body)));
        assert!(verify(&new, &header, body, 1_700_000_000, 300));
        assert!(verify(&old, &header, body, 1_700_000_000, 300));
        assert!(!verify(&new_secret(), &header, body, 1_700_000_000, 300));
    }

    #[test]
    fn the_digest_is_hmac_sha256_of_timestamp_dot_body() {
        // printf '1.x' | openssl dgst -sha256 -hmac k
        assert_eq!(
            sign("k", 1, b"x"),
            "t=1,v1=976cb87e4f568d1c0f03f32859e90af8597cf00b978ba37c229c97d3a15b8449"
        );
    }
}
