//! Finished requests written after the fact, in batches: the gateway's
//! requests become `tasks` rows (source `gateway`, already terminal) with
//! their attempts and audit entries, so costs add up across tasks and the
//! gateway. On PostgreSQL a whole batch is one statement whose rows travel
//! as JSON; on SQLite, in process, multi-row statements.

use serde::Serialize;
use sqlx::AnyConnection;

use super::Backend;
use super::audit_logs::NewAudit;
use super::new_id;
use super::tasks::Attempt;
use crate::money::Money;
use crate::orchestrator::state::{TaskSource, TaskStatus};

/// A request that already ended, written as a terminal `tasks` row.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedTask {
    /// Text UUID (the gateway's `chatcmpl-` id without the prefix).
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Caller (stored as NULL if the user has been deleted meanwhile).
    pub user_id: Option<String>,
    /// The agent it ran for (`X-Vel-Agent`; stored as NULL if the agent
    /// has been deleted meanwhile).
    pub agent_id: Option<String>,
    /// Where it was submitted (the gateway).
    pub source: TaskSource,
    /// What the task was.
    pub description: String,
    /// Task type name.
    pub task_type: String,
    /// 0–2.
    pub priority: i64,
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: TaskStatus,
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
    pub cost_nanos: Money,
    /// Unix ms the request arrived.
    pub created_at: i64,
    /// Unix ms it ended.
    pub finished_at: i64,
    /// Provider calls, in order.
    #[serde(skip)]
    pub attempts: Vec<Attempt>,
}

/// Finished tasks with all their attempts, and audit entries (payloads
/// already redacted) each with its time, ready to write. On PostgreSQL the
/// rows are also encoded as the statement's JSON parameters, which is the
/// CPU-heavy part of a write; [`BatchBuilder`] does it a row at a time so
/// that a caller on an async worker can yield between rows.
#[derive(Debug)]
pub struct Batch {
    tasks: Vec<FinishedTask>,
    audits: Vec<(NewAudit, i64)>,
    json: Option<JsonArrays>,
}

impl Batch {
    /// The batch for `backend`, encoded for it in one go.
    pub fn new(
        backend: Backend,
        tasks: Vec<FinishedTask>,
        audits: Vec<(NewAudit, i64)>,
    ) -> Result<Batch, sqlx::Error> {
        let mut builder = BatchBuilder::new(backend, tasks.len());
        for (task, audit) in tasks.into_iter().zip(audits) {
            builder.push(task, audit)?;
        }
        Ok(builder.finish())
    }

    /// The rows back, to write them another way.
    pub fn into_rows(self) -> (Vec<FinishedTask>, Vec<(NewAudit, i64)>) {
        (self.tasks, self.audits)
    }
}

/// Builds a [`Batch`] a finished task (and its audit entry) at a time.
#[derive(Debug)]
pub struct BatchBuilder {
    tasks: Vec<FinishedTask>,
    audits: Vec<(NewAudit, i64)>,
    json: Option<JsonArrays>,
}

/// [`BATCH_POSTGRES`]'s three parameters: JSON arrays of rows, without
/// their closing brackets until the batch is finished.
#[derive(Debug, Default)]
struct JsonArrays {
    tasks: Vec<u8>,
    attempts: Vec<u8>,
    audits: Vec<u8>,
}

impl BatchBuilder {
    /// An empty batch for `backend`, with room for `capacity` tasks.
    pub fn new(backend: Backend, capacity: usize) -> BatchBuilder {
        BatchBuilder {
            tasks: Vec::with_capacity(capacity),
            audits: Vec::with_capacity(capacity),
            json: (backend == Backend::Postgres).then(JsonArrays::default),
        }
    }

    /// Adds a finished task and its audit entry.
    pub fn push(&mut self, task: FinishedTask, audit: (NewAudit, i64)) -> Result<(), sqlx::Error> {
        if let Some(json) = &mut self.json {
            append(&mut json.tasks, &task)?;
            for attempt in &task.attempts {
                let row = AttemptRow {
                    id: new_id(),
                    org_id: &task.org_id,
                    task_id: &task.id,
                    attempt,
                };
                append(&mut json.attempts, &row)?;
            }
            let row = AuditRow {
                id: new_id(),
                entry: &audit.0,
                created_at: audit.1,
            };
            append(&mut json.audits, &row)?;
        }
        self.tasks.push(task);
        self.audits.push(audit);
        Ok(())
    }

    /// The batch.
    pub fn finish(mut self) -> Batch {
        if let Some(json) = &mut self.json {
            for array in [&mut json.tasks, &mut json.attempts, &mut json.audits] {
                close(array);
            }
        }
        Batch {
            tasks: self.tasks,
            audits: self.audits,
            json: self.json,
        }
    }
}

/// Appends `row` as the next element of the JSON array in `out`.
fn append<T: Serialize>(out: &mut Vec<u8>, row: &T) -> Result<(), sqlx::Error> {
    out.push(if out.is_empty() { b'[' } else { b',' });
    serde_json::to_writer(&mut *out, row).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Ends the JSON array in `out` (`[]` when nothing was appended).
fn close(out: &mut Vec<u8>) {
    if out.is_empty() {
        out.push(b'[');
    }
    out.push(b']');
}

/// A finished JSON array as text (serde_json writes only UTF-8).
fn text(array: &[u8]) -> Result<&str, sqlx::Error> {
    std::str::from_utf8(array).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Insert a batch. Call inside a transaction.
pub async fn insert_batch(conn: &mut AnyConnection, batch: &Batch) -> Result<(), sqlx::Error> {
    match Backend::of(conn) {
        Backend::Postgres => match &batch.json {
            Some(json) => insert_batch_postgres(conn, json).await,
            None => Err(sqlx::Error::Protocol(
                "a usage batch built for SQLite was written to PostgreSQL".into(),
            )),
        },
        Backend::Sqlite => {
            insert_finished_tasks(conn, &batch.tasks).await?;
            insert_audits(conn, &batch.audits).await
        }
    }
}

/// The whole batch in one statement and one round trip: each table's rows
/// are one JSON parameter, expanded by `json_to_recordset`. The statement's
/// text never changes, so it is prepared once per connection. (Bound one
/// value at a time, a batch of 256 took twelve multi-row statements of up
/// to 1,792 parameters; under load each round trip waited behind the busy
/// workers, and the recorder fell behind the gateway.)
async fn insert_batch_postgres(
    conn: &mut AnyConnection,
    json: &JsonArrays,
) -> Result<(), sqlx::Error> {
    sqlx::query(BATCH_POSTGRES)
        .bind(text(&json.tasks)?)
        .bind(text(&json.attempts)?)
        .bind(text(&json.audits)?)
        .execute(conn)
        .await?;
    Ok(())
}

/// An attempt as a `task_attempts` row.
#[derive(Serialize)]
struct AttemptRow<'a> {
    id: String,
    org_id: &'a str,
    task_id: &'a str,
    #[serde(flatten)]
    attempt: &'a Attempt,
}

/// An audit entry as an `audit_logs` row.
#[derive(Serialize)]
struct AuditRow<'a> {
    id: String,
    #[serde(flatten)]
    entry: &'a NewAudit,
    created_at: i64,
}

/// [`insert_batch_postgres`]'s statement. Data-modifying `WITH` parts run
/// in the one statement; the attempts' foreign key to their task is checked
/// at its end, when the tasks are in. The user goes through a lookup so
/// that a user (or agent) deleted since the request was served is stored
/// as NULL rather than failing the batch. A finished request has no
/// idempotency key, was not cached and never claimed.
const BATCH_POSTGRES: &str = "\
WITH new_tasks AS (
    INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, priority,
        status, request, stream, use_cache, idempotency_key, request_hash, result, partial_output,
        error, cached, provider, model, input_tokens, output_tokens, cost_nanos, claims, created_at,
        updated_at, started_at, finished_at)
    SELECT id, org_id, (SELECT u.id FROM users u WHERE u.id = r.user_id),
        (SELECT a.id FROM agents a WHERE a.id = r.agent_id), source,
        description, task_type, priority, status, request, stream::int, 0, NULL, request_hash,
        result, partial_output, error, 0, provider, model, input_tokens, output_tokens, cost_nanos,
        0, created_at, finished_at, created_at, finished_at
    FROM json_to_recordset($1::json) AS r(id text, org_id text, user_id text, agent_id text,
        source text,
        description text, task_type text, priority bigint, status text, request text,
        stream boolean, request_hash text, result text, partial_output text, error text,
        provider text, model text, input_tokens bigint, output_tokens bigint,
        cost_nanos bigint, created_at bigint, finished_at bigint)
), new_attempts AS (
    INSERT INTO task_attempts (id, org_id, task_id, seq, provider, integration_id, plugin, model,
        outcome, error_kind, error_message, latency_ms, input_tokens, output_tokens, cost_nanos,
        started_at)
    SELECT id, org_id, task_id, seq, provider, integration_id, plugin, model, outcome,
        error_kind, error_message, latency_ms, input_tokens, output_tokens, cost_nanos, started_at
    FROM json_to_recordset($2::json) AS r(id text, org_id text, task_id text, seq bigint,
        provider text, integration_id text, plugin text, model text, outcome text,
        error_kind text, error_message text, latency_ms bigint, input_tokens bigint,
        output_tokens bigint, cost_nanos bigint, started_at bigint)
)
INSERT INTO audit_logs (id, org_id, user_id, action, payload, ip_address, user_agent, created_at)
SELECT id, org_id, user_id, action, payload, ip_address, user_agent, created_at
FROM json_to_recordset($3::json) AS r(id text, org_id text, user_id text, action text,
    payload text, ip_address text, user_agent text, created_at bigint)";

/// Most rows in one SQLite statement: 64 rows of 28 columns stay far below
/// its parameter limit.
const MAX_ROWS_PER_STATEMENT: usize = 64;

/// The statement sizes that write `len` rows: the largest power of two that
/// fits, again and again (75 rows: 64, 8, 2, 1). A batch costs a handful of
/// statements, and each table has at most seven statement texts, each
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

/// `(…), (…)` for `rows` rows of `template`, for SQLite. Its anonymous
/// `?`s stay: sqlx looks up the name of every parameter it binds, which
/// SQLite finds by scanning the list of named ones, so `$n` names make
/// binding a statement of n parameters cost O(n²) (at 100 rows it took an
/// eighth of the gateway's CPU), while anonymous ones have no name to find.
fn values(rows: usize, template: &str) -> String {
    let mut out = String::with_capacity(rows * (template.len() + 4));
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(template);
        out.push(')');
    }
    out
}

/// [`insert_batch`]'s tasks and attempts on SQLite.
async fn insert_finished_tasks(
    conn: &mut AnyConnection,
    tasks: &[FinishedTask],
) -> Result<(), sqlx::Error> {
    // The user and agent go through a lookup so that one deleted since
    // the request was served is stored as NULL rather than failing the
    // batch. No idempotency key, not cached, never claimed.
    const TASK_ROW: &str = "?, ?, (SELECT id FROM users WHERE id = ?), \
                            (SELECT id FROM agents WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, \
                            0, NULL, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?";
    for chunk in statement_chunks(tasks) {
        let sql = format!(
            "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
                 priority, status, request, stream, use_cache, idempotency_key, request_hash, \
                 result, partial_output, error, cached, provider, model, input_tokens, \
                 output_tokens, cost_nanos, claims, created_at, updated_at, started_at, finished_at) \
             VALUES {}",
            values(chunk.len(), TASK_ROW)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            q = q
                .bind(&t.id)
                .bind(&t.org_id)
                .bind(&t.user_id)
                .bind(&t.agent_id)
                .bind(t.source.as_str())
                .bind(&t.description)
                .bind(&t.task_type)
                .bind(t.priority)
                .bind(t.status.as_str())
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
                .bind(t.cost_nanos.nanos())
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
                 cost_nanos, started_at) VALUES {}",
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
                .bind(a.outcome.as_str())
                .bind(&a.error_kind)
                .bind(&a.error_message)
                .bind(a.latency_ms)
                .bind(a.input_tokens)
                .bind(a.output_tokens)
                .bind(a.cost_nanos.nanos())
                .bind(a.started_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`insert_batch`]'s audit entries on SQLite.
async fn insert_audits(
    conn: &mut AnyConnection,
    entries: &[(NewAudit, i64)],
) -> Result<(), sqlx::Error> {
    const AUDIT_ROW: &str = "?, ?, ?, ?, ?, ?, ?, ?";
    for chunk in statement_chunks(entries) {
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
    fn rows_make_json_arrays_even_when_there_are_none() {
        let mut none = Vec::new();
        close(&mut none);
        assert_eq!(text(&none).unwrap(), "[]");
        let mut out = Vec::new();
        append(&mut out, &serde_json::json!({ "a": "x\"y" })).unwrap();
        append(&mut out, &2).unwrap();
        close(&mut out);
        assert_eq!(text(&out).unwrap(), r#"[{"a":"x\"y"},2]"#);
    }

    #[test]
    fn values_repeat_the_row_template() {
        assert_eq!(values(2, "?, 0, ?"), "(?, 0, ?), (?, 0, ?)");
    }
}
