//! Access tokens: JWT HS256 carrying user, organization and roles, with a
//! unique `jti` so a single token can be revoked. The header's `kid` names
//! the key of the ring that signed it (`secrets::MasterKey`): a token is
//! verified by that key only, and refused once the key leaves the ring.

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

/// The signing key (the ring's newest), the verification keys by id, and
/// the token lifetime.
#[derive(Clone)]
pub struct JwtKeys {
    signing_id: String,
    encoding: EncodingKey,
    /// (key id, key), newest first.
    decoding: Vec<(String, DecodingKey)>,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("signing_id", &self.signing_id)
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
    /// Keys from the ring's derived 32-byte secrets as (key id, secret),
    /// newest first: the first signs, every one verifies the tokens naming
    /// it. Tokens live for `ttl`. `None` for an empty ring.
    pub fn new(ring: &[(String, [u8; 32])], ttl: Duration) -> Option<JwtKeys> {
        let (signing_id, secret) = ring.first()?;
        Some(JwtKeys {
            signing_id: signing_id.clone(),
            encoding: EncodingKey::from_secret(secret),
            decoding: ring
                .iter()
                .map(|(id, secret)| (id.clone(), DecodingKey::from_secret(secret)))
                .collect(),
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        })
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
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verify signature, issuer and expiry, under the key the header's
    /// `kid` names (a key no longer in the ring refuses the token). A token
    /// signed before tokens named their key has no `kid`: it is verified
    /// under each key of the ring.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["vel"]);
        validation.leeway = 0;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map(|d| d.claims)
                .map_err(|_| TokenError::Invalid)
        };
        match header.kid {
            Some(kid) => self
                .decoding
                .iter()
                .find(|(id, _)| *id == kid)
                .map_or(Err(TokenError::Invalid), |(_, key)| decode(key)),
            None => self
                .decoding
                .iter()
                .find_map(|(_, key)| decode(key).ok())
                .ok_or(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(id: &str, byte: u8) -> (String, [u8; 32]) {
        (id.to_string(), [byte; 32])
    }

    #[test]
    fn issue_and_verify() {
        let keys = JwtKeys::new(&[key("a", 1)], HOUR).unwrap();
        let (token, claims) = keys.issue("u", "o", vec!["viewer".into()], 3).unwrap();
        let back = keys.verify(&token).unwrap();
        assert_eq!(back.jti, claims.jti);
        assert_eq!(back.roles, vec!["viewer".to_string()]);
        assert_eq!(back.ep, 3);
        let other = JwtKeys::new(&[key("b", 2)], HOUR).unwrap();
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
        assert!(JwtKeys::new(&[], HOUR).is_none());
    }

    #[test]
    fn tokens_name_their_key_and_survive_a_rotation() {
        let old = JwtKeys::new(&[key("a", 1)], HOUR).unwrap();
        let (token, _) = old.issue("u", "o", vec![], 0).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("a"));
        // A new key first, the old one still accepted.
        let rotated = JwtKeys::new(&[key("b", 2), key("a", 1)], HOUR).unwrap();
        assert!(rotated.verify(&token).is_ok());
        let (fresh, _) = rotated.issue("u", "o", vec![], 0).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some("b")
        );
        // The old key retired: its tokens are refused.
        let retired = JwtKeys::new(&[key("b", 2)], HOUR).unwrap();
        assert!(retired.verify(&token).is_err());
        assert!(retired.verify(&fresh).is_ok());
        // A token naming one key is not tried under another.
        let misnamed = JwtKeys::new(&[key("a", 2)], HOUR).unwrap();
        assert!(misnamed.verify(&token).is_err());
        // A token signed before tokens carried a `kid` is tried under each key.
        let claims = old.verify(&token).unwrap();
        let legacy = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[1; 32]),
        )
        .unwrap();
        assert!(rotated.verify(&legacy).is_ok());
        assert!(retired.verify(&legacy).is_err());
    }
}
