//! Access tokens: JWT HS256 carrying user, organization and roles, with a
//! unique `jti` so a single token can be revoked.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims vel signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Organization the token acts in.
    pub org: String,
    /// Role names (`admin`, `org_admin`, …).
    pub roles: Vec<String>,
    /// Unique token id, for revocation.
    pub jti: String,
    /// The user's session epoch when issued; a token of an older epoch is
    /// refused (its user changed their password since).
    #[serde(default)]
    pub ep: i64,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Always `vel`.
    pub iss: String,
}

/// Signing and verification keys plus the token lifetime.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// Token creation or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, malformed, wrong issuer or expired.
    #[error("invalid or expired token")]
    Invalid,
    /// Signing failed.
    #[error("token signing failed: {0}")]
    Sign(String),
}

impl JwtKeys {
    /// Keys from the derived 32-byte secret; tokens live for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        }
    }

    /// Issue a token under the user's session `epoch`; returns it with its claims.
    pub fn issue(
        &self,
        user_id: &str,
        org_id: &str,
        roles: Vec<String>,
        epoch: i64,
    ) -> Result<(String, Claims), TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            org: org_id.to_string(),
            roles,
            jti: uuid::Uuid::new_v4().to_string(),
            ep: epoch,
            iat: now,
            exp: now + self.ttl_secs,
            iss: "vel".into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verify signature, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["vel"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let keys = JwtKeys::new(&[1; 32], Duration::from_secs(3600));
        let (token, claims) = keys.issue("u", "o", vec!["viewer".into()], 3).unwrap();
        let back = keys.verify(&token).unwrap();
        assert_eq!(back.jti, claims.jti);
        assert_eq!(back.roles, vec!["viewer".to_string()]);
        assert_eq!(back.ep, 3);
        let other = JwtKeys::new(&[2; 32], Duration::from_secs(3600));
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }
}
