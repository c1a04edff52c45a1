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

/// Rows per statement. PostgreSQL: 100 (well under its bind limit), so a
/// batch costs a handful of round trips. SQLite: one, because it has no
/// round trips to save, and binding a statement of n parameters costs
/// O(n²) there (sqlx names each parameter through
/// `sqlite3_bind_parameter_name`, a linear scan): at 100 rows it took an
/// eighth of the gateway's CPU. The one-row statement is prepared once and
/// reused from the connection's statement cache.
fn rows_per_statement(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 100,
    }
}

/// `(…), (…)` for `rows` rows of `template`, whose `?`s become numbered
/// placeholders `$1`, `$2`, … in order.
fn values(rows: usize, template: &str) -> String {
    let mut out = String::with_capacity(rows * (template.len() + 32));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in template.chars() {
            if c == '?' {
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
    for chunk in tasks.chunks(rows_per_statement(backend)) {
        let sql = format!(
            "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
                 priority, status, request, stream, use_cache, idempotency_key, request_hash, \
                 result, partial_output, error, cached, provider, model, input_tokens, \
                 output_tokens, cost_usd, claims, created_at, updated_at, started_at, finished_at) \
             VALUES {}",
            values(chunk.len(), TASK_ROW)
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
    for chunk in attempts.chunks(rows_per_statement(backend)) {
        let sql = format!(
            "INSERT INTO task_attempts (id, org_id, task_id, seq, provider, integration_id, plugin, \
                 model, outcome, error_kind, error_message, latency_ms, input_tokens, output_tokens, \
                 cost_usd, started_at) VALUES {}",
            values(chunk.len(), ATTEMPT_ROW)
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
    for chunk in entries.chunks(rows_per_statement(backend)) {
        let sql = format!(
            "INSERT INTO audit_logs (id, org_id, user_id, action, payload, ip_address, user_agent, \
                 created_at) VALUES {}",
            values(chunk.len(), AUDIT_ROW)
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
