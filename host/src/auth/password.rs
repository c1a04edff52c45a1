//! Password rules (12–72 characters with a lower-case letter, an upper-case
//! letter and a digit), email rules, and argon2id hashing with configurable
//! cost so tests can run fast.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// Hashes and verifies passwords with argon2id at the configured cost.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
}

/// Hashing failed (bad parameters or RNG failure) — an operator problem, not the user's.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl PasswordHasher {
    /// Build with memory (KiB), iterations and lanes; validated at start-up by the config.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    ) -> Result<PasswordHasher, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(PasswordHasher { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hash a password into a PHC string (`$argon2id$…`). CPU-heavy: call
    /// from a blocking task.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    }

    /// Check a password against a stored PHC string; any parse failure is a mismatch.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        self.argon2()
            .verify_password(password.as_bytes(), phc)
            .is_ok()
    }
}

/// The password policy; the error says which rule failed (never the password).
pub fn check_strength(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if !(12..=72).contains(&len) {
        return Err("must be 12 to 72 characters long".into());
    }
    if password.len() > 72 {
        return Err("must be at most 72 bytes long".into());
    }
    let lower = password.chars().any(|c| c.is_lowercase());
    let upper = password.chars().any(|c| c.is_uppercase());
    let digit = password.chars().any(|c| c.is_ascii_digit());
    if !(lower && upper && digit) {
        return Err("must contain a lower-case letter, an upper-case letter and a digit".into());
    }
    if is_common(password) {
        return Err("is too common (a well-known password with digits or symbols added)".into());
    }
    Ok(())
}

/// The words of [`common_passwords.txt`](common_passwords.txt).
static COMMON_WORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| {
        include_str!("common_passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    });

/// Whether the password is a common word dressed up: lower-cased, without
/// the digits and symbols around it, read with the usual letter
/// substitutions (`@` for a, `0` for o …), or with its digits and symbols
/// dropped. `Password1234`, `P@ssw0rd2024!` and `1qaz2wsx3edc` are.
fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    let unleet: String = core
        .chars()
        .map(|c| match c {
            '@' | '4' => 'a',
            '0' => 'o',
            '1' | '!' => 'i',
            '3' => 'e',
            '5' | '$' => 's',
            '7' => 't',
            other => other,
        })
        .collect();
    let letters: String = core.chars().filter(|c| c.is_alphabetic()).collect();
    let words = &*COMMON_WORDS;
    [core, unleet.as_str(), letters.as_str()]
        .iter()
        .any(|form| words.contains(form) || is_repeated_word(form, words))
}

/// `passwordpassword`, `qwertyqwerty`: a common word said twice or more.
fn is_repeated_word(form: &str, words: &std::collections::HashSet<&'static str>) -> bool {
    (1..=form.len() / 2).any(|n| {
        form.len().is_multiple_of(n)
            && form.is_char_boundary(n)
            && words.contains(&form[..n])
            && form
                .as_bytes()
                .chunks(n)
                .all(|c| c == &form.as_bytes()[..n])
    })
}

/// Email shape: `local@domain`, no whitespace, at most 160 characters.
pub fn is_valid_email(email: &str) -> bool {
    if email.chars().count() > 160 || email.chars().any(char::is_whitespace) {
        return false;
    }
    match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    }
}

/// A random password satisfying the policy, for the first admin when none is configured.
pub fn generate() -> String {
    use base64::Engine;
    let raw: [u8; 18] = rand::random();
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    // Guarantee each character class regardless of the random part.
    format!("Vel{body}7a")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_strength("Short1a").is_err());
        assert!(check_strength("alllowercase123").is_err());
        assert!(check_strength("NoDigitsHereAtAll").is_err());
        assert!(check_strength("GoodPassword123").is_ok());
        assert!(check_strength(&format!("Aa1{}", "x".repeat(70))).is_err());
        assert!(check_strength(&generate()).is_ok());
    }

    #[test]
    fn common_passwords_are_refused() {
        for common in [
            "Password1234",
            "P@ssw0rd2024!",
            "Welcome12345",
            "Qwerty123456",
            "1Qaz2wsx3edc",
            "Iloveyou2024",
            "Summer2024!!",
            "PasswordPassword1",
            "Trustno11234",
        ] {
            assert!(check_strength(common).is_err(), "{common} was accepted");
        }
        for fine in [
            "UserPassw0rd12",
            "AdminPassw0rd1",
            "GoodPassword123",
            "Correct7HorseBattery",
        ] {
            assert!(check_strength(fine).is_ok(), "{fine} was refused");
        }
    }

    #[test]
    fn emails() {
        assert!(is_valid_email("a@b.c"));
        assert!(!is_valid_email("a b@c"));
        assert!(!is_valid_email("nobody"));
        assert!(!is_valid_email(&format!("{}@x.y", "a".repeat(160))));
    }

    #[test]
    fn hash_round_trip() {
        let h = PasswordHasher::new(64, 1, 1).unwrap();
        let phc = h.hash("GoodPassword123").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("GoodPassword123", &phc));
        assert!(!h.verify("GoodPassword124", &phc));
    }
}
