//! What every leased queue table (`tasks`, `workflows`,
//! `webhook_deliveries`) does alike with its `lease_owner` and
//! `lease_expires_at`: extend the leases an instance holds, hand them
//! back at shutdown. Claims differ per table and stay with it.

use sqlx::AnyConnection;

use super::now_ms;

/// `$first, $first+1, …`: `count` numbered placeholders for an `IN` list.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Extend to `lease_ms` from now the leases `owner` holds on the rows of
/// `table` with the ids `ids` (and `only`, an extra SQL condition such as
/// `AND status = 'in_progress'`, or empty). Returns how many were
/// extended.
pub async fn extend(
    conn: &mut AnyConnection,
    table: &'static str,
    only: &'static str,
    owner: &str,
    ids: &[String],
    lease_ms: i64,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let list = placeholders(3, ids.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET lease_expires_at = $1 WHERE lease_owner = $2 {only} AND id IN ({list})"
    )))
    .bind(now_ms() + lease_ms)
    .bind(owner);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Make the leases `owner` holds on the rows of `table` (and `only`, as
/// in [`extend`]) expire now, so another worker claims them at once.
pub async fn release(
    conn: &mut AnyConnection,
    table: &'static str,
    only: &'static str,
    owner: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET lease_expires_at = 0 WHERE lease_owner = $1 {only}"
    )))
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(2, 0), "");
    }
}
