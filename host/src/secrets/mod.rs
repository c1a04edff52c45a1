//! The master keys and what is derived from them: AES-256-GCM encryption of
//! integration keys at rest, the JWT signing keys, and key fingerprints shown
//! in place of secrets. The keys form a ring (newest first) so they can be
//! rotated without downtime; [`rotation`] re-encrypts stored secrets under
//! the newest.

pub mod rotation;

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
    /// A stored ciphertext names a key that is not in the ring.
    #[error("stored secret was encrypted under key {0}, which VEL_SECRET_KEY no longer holds")]
    UnknownKey(String),
}

/// One key of the ring: its id and the keys derived from it.
#[derive(Clone)]
struct KeyVersion {
    /// Short public id, written beside what this key seals or signs.
    id: String,
    cipher_key: [u8; 32],
    jwt_key: [u8; 32],
}

/// The operator's master keys: a ring, newest first. The newest encrypts
/// and signs; every key in the ring still decrypts and verifies, so a key
/// can be rotated without downtime (README, "Rotating the secret key").
/// Never logged; `Debug` shows only the key ids.
#[derive(Clone)]
pub struct MasterKey {
    /// Never empty; the first is the current key.
    ring: Vec<KeyVersion>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.ids().collect::<Vec<_>>().join(","))
    }
}

/// Name of the generated key file inside the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Prefix of a value sealed before keys had ids (by the only key then):
/// `v1:` + base64(nonce ‖ ciphertext ‖ tag).
const LEGACY_PREFIX: &str = "v1:";
/// Prefix of a value sealed under a named key: `v2:KID:` + base64(…).
const PREFIX: &str = "v2:";

impl MasterKey {
    /// A ring of one key from raw bytes, deriving separate keys per purpose
    /// so the JWT signing key and the encryption key are never the same bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> MasterKey {
        MasterKey {
            ring: vec![version(raw)],
        }
    }

    /// Parse `VEL_SECRET_KEY`: one key, or several separated by commas or
    /// whitespace, newest first; each 64 hex characters or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, SecretError> {
        let mut ring: Vec<KeyVersion> = Vec::new();
        for (n, item) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .enumerate()
        {
            let key = parse_one(item)
                .map_err(|reason| SecretError::InvalidKey(format!("key {}: {reason}", n + 1)))?;
            if ring.iter().any(|k| k.id == key.id) {
                return Err(SecretError::InvalidKey(format!(
                    "key {} repeats key id {}",
                    n + 1,
                    key.id
                )));
            }
            ring.push(key);
        }
        if ring.is_empty() {
            return Err(SecretError::InvalidKey("no key given".into()));
        }
        Ok(MasterKey { ring })
    }

    /// Use the configured keys, else the ones in the data directory's key
    /// file (written on an earlier start; one key per line, newest first),
    /// else generate one now (0600) and warn.
    pub fn load_or_generate(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<MasterKey, SecretError> {
        if let Some(keys) = MasterKey::load(configured, data_dir)? {
            return Ok(keys);
        }
        let path = data_dir.join(KEY_FILE);
        let io_err = |e: std::io::Error| SecretError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
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

    /// The configured keys, else those of the data directory's key file;
    /// `None` when there are neither.
    pub fn load(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<Option<MasterKey>, SecretError> {
        if let Some(text) = configured {
            return MasterKey::parse(text).map(Some);
        }
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| SecretError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        MasterKey::parse(&text).map(Some)
    }

    /// Like [`MasterKey::load`], but having no key is an error (for tools
    /// that must not make one up).
    pub fn load_existing(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<MasterKey, SecretError> {
        MasterKey::load(configured, data_dir)?.ok_or_else(|| {
            SecretError::InvalidKey(format!(
                "not set, and no {KEY_FILE} in the data directory {}",
                data_dir.display()
            ))
        })
    }

    /// The ids of the ring's keys, newest (the current key) first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ring.iter().map(|k| k.id.as_str())
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        self.current().id.as_str()
    }

    /// The HS256 keys for access tokens as (key id, secret), newest first:
    /// the first signs, all verify.
    pub fn jwt_keys(&self) -> Vec<(String, [u8; 32])> {
        self.ring
            .iter()
            .map(|k| (k.id.clone(), k.jwt_key))
            .collect()
    }

    fn current(&self) -> &KeyVersion {
        // `parse` and `from_bytes` never build an empty ring.
        &self.ring[0]
    }

    /// Encrypt `plaintext` under the current key, bound to `context` (for
    /// example the integration's id), so a ciphertext copied into another
    /// row fails to decrypt. Output: `v2:KID:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> Result<String, SecretError> {
        let key = self.current();
        let cipher = Aes256Gcm::new((&key.cipher_key).into());
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
        Ok(format!("{PREFIX}{}:{}", key.id, B64.encode(out)))
    }

    /// Reverse [`MasterKey::encrypt`] with the same context, under the key
    /// the value names; a value sealed before keys had ids (`v1:`) is
    /// tried under each key of the ring (the tag tells the right one).
    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, SecretError> {
        if let Some(rest) = stored.strip_prefix(PREFIX) {
            let (id, body) = rest.split_once(':').ok_or(SecretError::Decrypt)?;
            let key = self
                .ring
                .iter()
                .find(|k| k.id == id)
                .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
            return open(key, body, context);
        }
        let body = stored
            .strip_prefix(LEGACY_PREFIX)
            .ok_or(SecretError::Decrypt)?;
        self.ring
            .iter()
            .find_map(|key| open(key, body, context).ok())
            .ok_or(SecretError::Decrypt)
    }

    /// Whether `stored` is sealed under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current_id())
    }

    /// `stored` sealed again under the current key, or `None` when it is
    /// sealed under it already.
    pub fn reseal(&self, stored: &str, context: &str) -> Result<Option<String>, SecretError> {
        if self.is_current(stored) {
            return Ok(None);
        }
        let plain = self.decrypt(stored, context)?;
        self.encrypt(&plain, context).map(Some)
    }
}

/// The key of `text` (64 hex characters or base64 of 32 bytes).
fn parse_one(text: &str) -> Result<KeyVersion, String> {
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        B64.decode(text)
            .map_err(|_| "expected 64 hex characters or base64 of 32 bytes".to_string())?
    };
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("decodes to {} bytes, expected 32", b.len()))?;
    Ok(version(&raw))
}

/// The ring entry of a raw key: its id is the first 8 hex digits of a
/// digest, public (it reveals nothing of the key) and stable across starts.
fn version(raw: &[u8; 32]) -> KeyVersion {
    KeyVersion {
        id: hex::encode(&derive(raw, b"vel/key-id")[..4]),
        cipher_key: derive(raw, b"vel/integration-keys/aes-256-gcm"),
        jwt_key: derive(raw, b"vel/jwt/hs256"),
    }
}

/// Open base64(nonce ‖ ciphertext ‖ tag) under `key`.
fn open(key: &KeyVersion, body: &str, context: &str) -> Result<String, SecretError> {
    let bytes = B64.decode(body).map_err(|_| SecretError::Decrypt)?;
    if bytes.len() < 12 + 16 {
        return Err(SecretError::Decrypt);
    }
    let (nonce_bytes, sealed) = bytes.split_at(12);
    let nonce_arr: [u8; 12] = nonce_bytes.try_into().map_err(|_| SecretError::Decrypt)?;
    let cipher = Aes256Gcm::new((&key.cipher_key).into());
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
    fn a_ring_reads_what_its_older_keys_sealed() {
        let old_hex = "07".repeat(32);
        let new_hex = "08".repeat(32);
        let old = MasterKey::parse(&old_hex).unwrap();
        let sealed = old.encrypt("sk-1", "row-1").unwrap();
        assert!(sealed.starts_with(&format!("v2:{}:", old.current_id())));
        let ring = MasterKey::parse(&format!("{new_hex}, {old_hex}")).unwrap();
        assert_eq!(ring.ids().count(), 2);
        assert_ne!(ring.current_id(), old.current_id());
        assert_eq!(ring.decrypt(&sealed, "row-1").unwrap(), "sk-1");
        assert!(!ring.is_current(&sealed));
        let resealed = ring.reseal(&sealed, "row-1").unwrap().unwrap();
        assert!(ring.is_current(&resealed));
        assert_eq!(ring.reseal(&resealed, "row-1").unwrap(), None);
        assert_eq!(ring.decrypt(&resealed, "row-1").unwrap(), "sk-1");
        // The old key alone cannot read what the new one sealed.
        assert!(matches!(
            old.decrypt(&resealed, "row-1"),
            Err(SecretError::UnknownKey(_))
        ));
        // A value sealed before keys had ids is read under any key of the ring.
        let legacy = format!("v1:{}", sealed.rsplit(':').next().unwrap());
        assert_eq!(ring.decrypt(&legacy, "row-1").unwrap(), "sk-1");
        assert!(!ring.is_current(&legacy));
        assert!(
            MasterKey::parse(&new_hex)
                .unwrap()
                .decrypt(&legacy, "row-1")
                .is_err()
        );
        // The same key twice is refused.
        assert!(MasterKey::parse(&format!("{old_hex},{old_hex}")).is_err());
        assert!(MasterKey::parse(" , ").is_err());
    }

    #[test]
    fn parse_formats() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&B64.encode([1u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
