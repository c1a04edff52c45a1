//! The relay: signals for the other instances sent after a commit, from a
//! connection of their own (PostgreSQL only).
//!
//! PostgreSQL lets one notifying transaction commit at a time, cluster
//! wide, and a durable commit keeps that turn through its WAL flush. The
//! task workers' and the workflow engine's transactions therefore raise no
//! notification themselves ([`crate::store::Db::tenant_relayed`]); once
//! committed, the writer hands the signals here. The relay sends whatever has gathered in one
//! statement on a connection whose commits do not wait for the flush, so
//! at high rates many signals share one notifying commit, and at low rates
//! each goes at once. A signal lost here (the connection fails, the
//! process dies) costs the other instances latency, never correctness: the
//! database stays the one source of truth and their periodic polls heal it.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

/// At most this many signals in one statement.
const MAX_PER_STATEMENT: usize = 64;

/// A notification to send: channel and payload.
pub(super) type Notification = (&'static str, String);

/// Send the notifications arriving on `rx` to the PostgreSQL at `url` until
/// every sender is gone, reconnecting after failures.
pub(super) async fn run(url: String, mut rx: mpsc::UnboundedReceiver<Notification>) {
    let mut conn: Option<PgConnection> = None;
    let mut batch: Vec<Notification> = Vec::with_capacity(MAX_PER_STATEMENT);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_PER_STATEMENT {
            match rx.try_recv() {
                Ok(n) => batch.push(n),
                Err(_) => break,
            }
        }
        batch.sort_unstable();
        batch.dedup();
        if conn.is_none() {
            match connect(&url).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "signal relay cannot connect; signals dropped");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut()
            && let Err(e) = send(c, &batch).await
        {
            tracing::warn!(error = %e, "signal relay failed; signals dropped");
            conn = None;
        }
    }
}

/// A connection whose commits do not wait for the WAL flush: a lost
/// signal only costs latency.
async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("SET synchronous_commit TO OFF")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Send `batch` in one statement (one transaction: one turn to notify).
async fn send(conn: &mut PgConnection, batch: &[Notification]) -> Result<(), sqlx::Error> {
    let calls: Vec<String> = (0..batch.len())
        .map(|i| format!("pg_notify(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!("SELECT {}", calls.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (channel, payload) in batch {
        q = q.bind(*channel).bind(payload.as_str());
    }
    q.execute(conn).await?;
    Ok(())
}
