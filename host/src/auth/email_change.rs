//! Changing an account's email without telling the requester who has an
//! account: a request is answered the same whether the new address is free
//! or taken, and the change takes effect only when confirmed with a
//! one-time token sent to the new address through the operator's hook
//! ([`crate::notify`]).
//!
//! A request for a free address stores the token's digest and sends the
//! token; one for a taken address stores the digest of a token that is
//! never sent, so both do the same database work and nothing is delivered
//! to the existing account. A confirmation whose address was taken
//! meanwhile fails as an unknown, used or expired token does.

use sqlx::AnyConnection;

use crate::auth::api_keys::secret_token;
use crate::notify::{Message, Notifier};
use crate::secrets::sha256_hex;
use crate::store::email_changes::{self, EmailChange};
use crate::store::{self, to_rfc3339};

/// How long a confirmation token is valid.
pub const TOKEN_TTL_MS: i64 = 3600 * 1000;

/// What every confirmation token starts with.
const TOKEN_PREFIX: &str = "vel_ec_";

/// Why a change of email was not made.
#[derive(Debug, thiserror::Error)]
pub enum EmailChangeError {
    /// No hook can deliver the token (`VEL_NOTIFY_URL` is unset).
    #[error(
        "changing an email needs a confirmation sent to the new address, and this server \
         cannot send one: the operator must set VEL_NOTIFY_URL"
    )]
    NotConfigured,
    /// The token is unknown, used or expired, or the address was taken meanwhile.
    #[error("the confirmation token is invalid or expired")]
    InvalidToken,
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// A requested change, stored; its message (if any) goes out once the
/// transaction that stored it has committed.
#[derive(Debug)]
pub struct Pending {
    /// Unix ms after which the token no longer confirms the change.
    pub expires_at: i64,
    message: Option<Message>,
}

impl Pending {
    /// Send the confirmation to the new address (nothing when it was taken).
    pub fn deliver(self, notifier: &Notifier) {
        if let Some(message) = self.message {
            notifier.send(message);
        }
    }
}

/// Fail early, before anything is checked or stored, when no token could
/// be delivered.
pub fn ensure_deliverable(notifier: &Notifier) -> Result<(), EmailChangeError> {
    if notifier.is_configured() {
        Ok(())
    } else {
        Err(EmailChangeError::NotConfigured)
    }
}

/// Request that `user_id`'s email become `new_email` (normalised),
/// replacing the user's earlier requests. Run on a platform transaction;
/// deliver the result after committing it.
pub async fn request(
    conn: &mut AnyConnection,
    user_id: &str,
    new_email: &str,
    now: i64,
) -> Result<Pending, EmailChangeError> {
    let taken = store::users::find_by_email(conn, new_email)
        .await?
        .is_some();
    let (token, token_hash) = secret_token(TOKEN_PREFIX);
    let change = EmailChange {
        user_id: user_id.to_string(),
        new_email: new_email.to_string(),
        expires_at: now + TOKEN_TTL_MS,
    };
    email_changes::replace(conn, &change, &token_hash, now).await?;
    let message = (!taken).then(|| Message::EmailChange {
        to: change.new_email,
        token,
        expires_at: to_rfc3339(change.expires_at),
    });
    Ok(Pending {
        expires_at: change.expires_at,
        message,
    })
}

/// Apply `user_id`'s change confirmed by `token`; returns the new email.
/// The token is used up even when the change fails (commit the
/// transaction either way): `Ok(None)` means invalid, expired or taken.
pub async fn confirm(
    conn: &mut AnyConnection,
    user_id: &str,
    token: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let Some(change) = email_changes::take(conn, user_id, &sha256_hex(token), now).await? else {
        return Ok(None);
    };
    if store::users::find_by_email(conn, &change.new_email)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let Some(mut user) = store::users::find_by_id(conn, user_id).await? else {
        return Ok(None);
    };
    user.email = change.new_email;
    store::users::update(conn, &user).await?;
    email_changes::forget(conn, user_id).await?;
    Ok(Some(user.email))
}
