//! Finished requests written after the fact, in batches: the gateway's
//! requests become `tasks` rows (source `gateway`, already terminal) with
//! their attempts and audit entries, so costs add up across tasks and the
//! gateway. Multi-row statements keep a batch to a handful of round trips.

use sqlx::AnyConnection;

use super::Backend;
use super::audit_logs::NewAudit;
use super::new_id;
use super::tasks::Attempt;

/// A request that already ended, written as a terminal `tasks` row.
#[derive(Debug, Clone)]
pub struct FinishedTask {
    /// Text UUID (the gateway's `chatcmpl-` id without the prefix).
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Caller (stored as NULL if the user has been deleted meanwhile).
    pub user_id: Option<String>,
    /// `gateway` (or `api`).
    pub source: &'static str,
    /// What the task was.
    pub description: String,
    /// Task type name.
    pub task_type: String,
    /// 0–2.
    pub priority: i64,
    /// `completed`, `failed` or `cancelled`.
    pub status: &'static str,
    /// Canonical request JSON.
    pub request: String,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// sha256 of the canonical request.
    pub request_hash: String,
    /// JSON result when completed.
    pub result: Option<String>,
    /// JSON error when failed.
    pub error: Option<String>,
    /// Text streamed before a failure or cancellation.
    pub partial_output: Option<String>,
    /// Integration that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Totals over the attempts.
    pub input_tokens: i64,
    /// Totals over the attempts.
    pub output_tokens: i64,
    /// Totals over the attempts.
    pub cost_usd: f64,
    /// Unix ms the request arrived.
    pub created_at: i64,
    /// Unix ms it ended.
    pub finished_at: i64,
    /// Provider calls, in order.
    pub attempts: Vec<Attempt>,
}

/// Most rows in one statement: 64 rows of 28 columns stay far below both
/// databases' parameter limits.
const MAX_ROWS_PER_STATEMENT: usize = 64;

/// The statement sizes that write `len` rows: the largest power of two that
/// fits, again and again (75 rows: 64, 8, 2, 1). A batch costs a handful of
/// round trips, and each table has at most seven statement texts, each
/// prepared once per connection and kept in its statement cache.
fn statement_sizes(mut len: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if len == 0 {
            return None;
        }
        let size = MAX_ROWS_PER_STATEMENT.min(1 << len.ilog2());
        len -= size;
        Some(size)
    })
}

/// `rows` split into statement-sized runs (see [`statement_sizes`]).
fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    statement_sizes(rows.len()).map(move |size| {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        chunk
    })
}

/// `(…), (…)` for `rows` rows of `template`. On PostgreSQL its `?`s become
/// numbered placeholders `$1`, `$2`, … in order. SQLite keeps the
/// anonymous `?`: sqlx looks up the name of every parameter it binds,
/// which SQLite finds by scanning the list of named ones, so `$n` names
/// make binding a statement of n parameters cost O(n²) (at 100 rows it
/// took an eighth of the gateway's CPU), while anonymous ones have no
/// name to find.
fn values(backend: Backend, rows: usize, template: &str) -> String {
    let mut out = String::with_capacity(rows * (template.len() + 32));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in template.chars() {
            if c == '?' && backend == Backend::Postgres {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out.push(')');
    }
    out
}

/// Insert finished tasks and all their attempts. Call inside a transaction.
pub async fn insert_finished_tasks(
    conn: &mut AnyConnection,
    tasks: &[FinishedTask],
) -> Result<(), sqlx::Error> {
    let backend = Backend::of(conn);
    // The user goes through a lookup so that a user deleted since the
    // request was served is stored as NULL rather than failing the batch.
    // No agent, no idempotency key, not cached, never claimed.
    const TASK_ROW: &str = "?, ?, (SELECT id FROM users WHERE id = ?), NULL, ?, ?, ?, ?, ?, ?, ?, \
                            0, NULL, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?";
    for chunk in statement_chunks(tasks) {
        let sql = format!(
            "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
                 priority, status, request, stream, use_cache, idempotency_key, request_hash, \
                 result, partial_output, error, cached, provider, model, input_tokens, \
                 output_tokens, cost_usd, claims, created_at, updated_at, started_at, finished_at) \
             VALUES {}",
            values(backend, chunk.len(), TASK_ROW)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            q = q
                .bind(&t.id)
                .bind(&t.org_id)
                .bind(&t.user_id)
                .bind(t.source)
                .bind(&t.description)
                .bind(&t.task_type)
                .bind(t.priority)
                .bind(t.status)
                .bind(&t.request)
                .bind(i64::from(t.stream))
                .bind(&t.request_hash)
                .bind(&t.result)
                .bind(&t.partial_output)
                .bind(&t.error)
                .bind(&t.provider)
                .bind(&t.model)
                .bind(t.input_tokens)
                .bind(t.output_tokens)
                .bind(t.cost_usd)
                .bind(t.created_at)
                .bind(t.finished_at)
                .bind(t.created_at)
                .bind(t.finished_at);
        }
        q.execute(&mut *conn).await?;
    }
    let attempts: Vec<(&FinishedTask, &Attempt)> = tasks
        .iter()
        .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
        .collect();
    const ATTEMPT_ROW: &str = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";
    for chunk in statement_chunks(&attempts) {
        let sql = format!(
            "INSERT INTO task_attempts (id, org_id, task_id, seq, provider, integration_id, plugin, \
                 model, outcome, error_kind, error_message, latency_ms, input_tokens, output_tokens, \
                 cost_usd, started_at) VALUES {}",
            values(backend, chunk.len(), ATTEMPT_ROW)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (t, a) in chunk {
            q = q
                .bind(new_id())
                .bind(&t.org_id)
                .bind(&t.id)
                .bind(a.seq)
                .bind(&a.provider)
                .bind(&a.integration_id)
                .bind(&a.plugin)
                .bind(&a.model)
                .bind(&a.outcome)
                .bind(&a.error_kind)
                .bind(&a.error_message)
                .bind(a.latency_ms)
                .bind(a.input_tokens)
                .bind(a.output_tokens)
                .bind(a.cost_usd)
                .bind(a.started_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Insert audit entries (payloads already redacted), each with its time.
/// Call inside a transaction.
pub async fn insert_audits(
    conn: &mut AnyConnection,
    entries: &[(NewAudit, i64)],
) -> Result<(), sqlx::Error> {
    let backend = Backend::of(conn);
    const AUDIT_ROW: &str = "?, ?, ?, ?, ?, ?, ?, ?";
    for chunk in statement_chunks(entries) {
        let sql = format!(
            "INSERT INTO audit_logs (id, org_id, user_id, action, payload, ip_address, user_agent, \
                 created_at) VALUES {}",
            values(backend, chunk.len(), AUDIT_ROW)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, at) in chunk {
            q = q
                .bind(new_id())
                .bind(&e.org_id)
                .bind(&e.user_id)
                .bind(&e.action)
                .bind(&e.payload)
                .bind(&e.ip_address)
                .bind(&e.user_agent)
                .bind(*at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_powers_of_two_up_to_the_maximum() {
        let sizes = |n| statement_sizes(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(75), [64, 8, 2, 1]);
        assert_eq!(sizes(200), [64, 64, 64, 8]);
        for n in 0..600 {
            assert_eq!(sizes(n).iter().sum::<usize>(), n);
        }
        let rows: Vec<usize> = (0..75).collect();
        let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
        assert_eq!(chunks.concat(), rows);
    }

    #[test]
    fn placeholders_are_numbered_only_for_postgres() {
        assert_eq!(
            values(Backend::Postgres, 2, "?, 0, ?"),
            "($1, 0, $2), ($3, 0, $4)"
        );
        assert_eq!(
            values(Backend::Sqlite, 2, "?, 0, ?"),
            "(?, 0, ?), (?, 0, ?)"
        );
    }
}
