//! The master key and what is derived from it: AES-256-GCM encryption of
//! integration keys at rest, the JWT signing key, and key fingerprints shown
//! in place of secrets.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

/// Why the master key could not be loaded or a secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `VEL_SECRET_KEY` (or the key file) does not hold 32 bytes in hex or base64.
    #[error("invalid setting VEL_SECRET_KEY: {0}")]
    InvalidKey(String),
    /// The generated key file could not be read or written.
    #[error("secret key file {path}: {reason}")]
    KeyFile {
        /// The key file's path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The plaintext could not be sealed (only for absurdly large inputs).
    #[error("secret cannot be encrypted")]
    Encrypt,
    /// A stored ciphertext is malformed or was encrypted under another key.
    #[error("stored secret cannot be decrypted (wrong VEL_SECRET_KEY or corrupted row)")]
    Decrypt,
}

/// The operator's 32-byte master key. Never logged; `Debug` hides it.
#[derive(Clone)]
pub struct MasterKey {
    cipher_key: [u8; 32],
    jwt_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Name of the generated key file inside the data directory.
pub const KEY_FILE: &str = "secret.key";

impl MasterKey {
    /// Build from raw bytes, deriving separate keys per purpose so the JWT
    /// signing key and the encryption key are never the same bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> MasterKey {
        MasterKey {
            cipher_key: derive(raw, b"vel/integration-keys/aes-256-gcm"),
            jwt_key: derive(raw, b"vel/jwt/hs256"),
        }
    }

    /// Parse `VEL_SECRET_KEY`: 64 hex characters or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, SecretError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| SecretError::InvalidKey(e.to_string()))?
        } else {
            B64.decode(text).map_err(|_| {
                SecretError::InvalidKey("expected 64 hex characters or base64 of 32 bytes".into())
            })?
        };
        let raw: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SecretError::InvalidKey(format!("decodes to {} bytes, expected 32", b.len()))
        })?;
        Ok(MasterKey::from_bytes(&raw))
    }

    /// Use the configured key, else the one generated into the data
    /// directory on an earlier start, else generate one now (0600) and warn.
    pub fn load_or_generate(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<MasterKey, SecretError> {
        if let Some(text) = configured {
            return MasterKey::parse(text);
        }
        let path = data_dir.join(KEY_FILE);
        let io_err = |e: std::io::Error| SecretError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io_err)?;
            return MasterKey::parse(&text);
        }
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let raw: [u8; 32] = rand::random();
        write_private(&path, hex::encode(raw).as_bytes()).map_err(io_err)?;
        tracing::warn!(
            path = %path.display(),
            "VEL_SECRET_KEY is not set; generated a random key into the data directory. \
             Set VEL_SECRET_KEY for production and keep it safe: losing it makes stored \
             integration keys unreadable"
        );
        Ok(MasterKey::from_bytes(&raw))
    }

    /// The HS256 signing key for access tokens.
    pub fn jwt_key(&self) -> &[u8; 32] {
        &self.jwt_key
    }

    /// Encrypt `plaintext` bound to `context` (for example the integration's
    /// id), so a ciphertext copied into another row fails to decrypt.
    /// Output: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> Result<String, SecretError> {
        let cipher = Aes256Gcm::new((&self.cipher_key).into());
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Encrypt)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("v1:{}", B64.encode(out)))
    }

    /// Reverse [`MasterKey::encrypt`] with the same context.
    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, SecretError> {
        let body = stored.strip_prefix("v1:").ok_or(SecretError::Decrypt)?;
        let bytes = B64.decode(body).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 + 16 {
            return Err(SecretError::Decrypt);
        }
        let (nonce_bytes, sealed) = bytes.split_at(12);
        let nonce_arr: [u8; 12] = nonce_bytes.try_into().map_err(|_| SecretError::Decrypt)?;
        let cipher = Aes256Gcm::new((&self.cipher_key).into());
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce_arr),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

/// A short, non-reversible identifier of a secret, shown instead of it:
/// `sha256:` and the first 12 hex digits of its digest.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// Full sha256 hex digest, used to store high-entropy API keys.
pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

fn derive(raw: &[u8; 32], purpose: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(purpose);
    h.update(raw);
    h.finalize().into()
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let sealed = key.encrypt("sk-test-123", "row-1").unwrap();
        assert!(!sealed.contains("sk-test"));
        assert_eq!(key.decrypt(&sealed, "row-1").unwrap(), "sk-test-123");
        assert!(key.decrypt(&sealed, "row-2").is_err());
        let other = MasterKey::from_bytes(&[8; 32]);
        assert!(other.decrypt(&sealed, "row-1").is_err());
    }

    #[test]
    fn parse_formats() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&B64.encode([1u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
