//! `vel rotate-keys`: every stored secret sealed again under the ring's
//! newest key, in small transactions so the servers keep running, and
//! idempotent (a value under the newest key already is left alone).
//!
//! Sealed columns: `integrations.key_ciphertext` (bound to the row's id)
//! and `webhooks.secret_ciphertext` and `previous_secret_ciphertext` (the
//! secret a rotation replaced, while it still signs; both bound to
//! `webhook:<id>`).

use tracing::Instrument;

use super::{MasterKey, SecretError};
use crate::store::Db;
use crate::store::sealed::{self, SealedColumn};

/// Every column holding sealed values.
pub const SEALED: [SealedColumn; 3] = [
    SealedColumn {
        table: "integrations",
        column: "key_ciphertext",
        context: str::to_string,
    },
    SealedColumn {
        table: "webhooks",
        column: "secret_ciphertext",
        context: crate::webhooks::delivery::secret_context,
    },
    SealedColumn {
        table: "webhooks",
        column: "previous_secret_ciphertext",
        context: crate::webhooks::delivery::secret_context,
    },
];

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
    async {
        for col in SEALED {
            rotate_column(db, keys, batch, col, &mut done).await?;
        }
        Ok::<(), RotationError>(())
    }
    .instrument(tracing::info_span!("rotate_keys", key = keys.current_id()))
    .await?;
    Ok(done)
}

async fn rotate_column(
    db: &Db,
    keys: &MasterKey,
    batch: i64,
    col: SealedColumn,
    done: &mut Rotation,
) -> Result<(), RotationError> {
    let mut after = String::new();
    loop {
        let mut tx = db.platform().await?;
        let rows = sealed::after(&mut tx, col, &after, batch).await?;
        let Some(last) = rows.last() else {
            tx.rollback().await?;
            return Ok(());
        };
        after = last.id.clone();
        for row in &rows {
            match keys.reseal(&row.sealed, &(col.context)(&row.id)) {
                Ok(None) => done.current += 1,
                Ok(Some(resealed)) => {
                    if sealed::reseal(&mut tx, col, &row.id, &row.sealed, &resealed).await? {
                        done.resealed += 1;
                    } else {
                        done.changed += 1;
                    }
                }
                Err(SecretError::Decrypt | SecretError::UnknownKey(_)) => {
                    tracing::warn!(table = col.table, id = %row.id, "no key of the ring opens this value");
                    done.unreadable.push(row.id.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}
