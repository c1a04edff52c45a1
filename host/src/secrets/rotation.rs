//! `vel rotate-keys`: every stored secret sealed again under the ring's
//! newest key, in small transactions so the servers keep running, and
//! idempotent (a value under the newest key already is left alone).
//!
//! Sealed columns: `integrations.key_ciphertext` (bound to the row's id).

use tracing::Instrument;

use super::{MasterKey, SecretError};
use crate::store::{Db, integrations};

/// Rows read and written per transaction.
pub const BATCH: i64 = 100;

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Values sealed again under the newest key.
    pub resealed: u64,
    /// Values under the newest key already.
    pub current: u64,
    /// Values changed by someone else between the read and the write
    /// (written under the newest key by that change).
    pub changed: u64,
    /// Ids of the values no key of the ring opens (left as they are).
    pub unreadable: Vec<String>,
}

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A value could not be sealed.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Seal every stored secret under `keys`' newest key, `batch` rows per
/// transaction.
pub async fn rotate(db: &Db, keys: &MasterKey, batch: i64) -> Result<Rotation, RotationError> {
    let mut done = Rotation::default();
    let mut after = String::new();
    async {
        loop {
            let mut tx = db.platform().await?;
            let rows = integrations::sealed_keys_after(&mut tx, &after, batch).await?;
            let Some(last) = rows.last() else {
                tx.rollback().await?;
                break;
            };
            after = last.id.clone();
            for row in &rows {
                match keys.reseal(&row.key_ciphertext, &row.id) {
                    Ok(None) => done.current += 1,
                    Ok(Some(resealed)) => {
                        if integrations::reseal_key(&mut tx, &row.id, &row.key_ciphertext, &resealed)
                            .await?
                        {
                            done.resealed += 1;
                        } else {
                            done.changed += 1;
                        }
                    }
                    Err(SecretError::Decrypt | SecretError::UnknownKey(_)) => {
                        tracing::warn!(integration = %row.id, "no key of the ring opens this integration key");
                        done.unreadable.push(row.id.clone());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tx.commit().await?;
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < batch {
                break;
            }
        }
        Ok::<(), RotationError>(())
    }
    .instrument(tracing::info_span!("rotate_keys", key = keys.current_id()))
    .await?;
    Ok(done)
}
