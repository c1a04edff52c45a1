//! Sealed columns read and rewritten by key rotation (`secrets::rotation`),
//! across every organization (platform transactions).

use sqlx::{AnyConnection, FromRow};

/// A column holding values sealed by the master key ring.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    /// Table name.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// The encryption context of the row with this id.
    pub context: fn(&str) -> String,
}

/// A sealed value and its row's id.
#[derive(Debug, Clone, FromRow)]
pub struct Sealed {
    /// The row's id.
    pub id: String,
    /// The value as stored.
    pub sealed: String,
}

/// Up to `limit` sealed values of `col`, in id order after `after`.
pub async fn after(
    conn: &mut AnyConnection,
    col: SealedColumn,
    after: &str,
    limit: i64,
) -> Result<Vec<Sealed>, sqlx::Error> {
    let (table, column) = (col.table, col.column);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, {column} AS sealed FROM {table} \
         WHERE {column} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Replace row `id`'s value with `resealed`, only if it is still `sealed`
/// (a value changed meanwhile is left as the change wrote it). True when
/// replaced.
pub async fn reseal(
    conn: &mut AnyConnection,
    col: SealedColumn,
    id: &str,
    sealed: &str,
    resealed: &str,
) -> Result<bool, sqlx::Error> {
    let (table, column) = (col.table, col.column);
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3"
    )))
    .bind(resealed)
    .bind(id)
    .bind(sealed)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
