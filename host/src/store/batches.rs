//! Batches and their items (see `migrations/*/…_batches.sql`).
//!
//! An item becomes an ordinary pending task when it is released: the
//! first item of each lane when the batch is stored, then item `i +
//! parallelism` in the transaction that ends item `i`'s task
//! ([`task_ended`]). A lane's tasks thus run one after another, the lanes
//! side by side, and the lanes share no counter: ending a task takes its
//! task row, then at most a shared lock on its batch's row (read to see
//! that the batch still runs), so concurrent ends do not wait for each
//! other. Only a lane's last task updates the batch row (the lanes done),
//! and cancelling a batch changes only its row, so every transaction takes
//! a task row before its batch's and none can deadlock. Progress is
//! counted from the tasks ([`counts`]).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use std::collections::HashMap;

use super::{Backend, new_id, now_ms, parsed};
use crate::batches::BatchStatus;
use crate::money::Money;
use crate::orchestrator::state::TaskStatus;

/// A stored batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Submitter (gone when the user was deleted).
    pub user_id: Option<String>,
    /// What it is for.
    pub description: String,
    /// Where it is in its life.
    pub status: BatchStatus,
    /// Tasks running at once, at most.
    pub parallelism: i64,
    /// Items.
    pub total: i64,
    /// Chains of items run side by side: min(parallelism, total).
    pub lanes: i64,
    /// Lanes whose last task ended.
    pub lanes_done: i64,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// sha256 of the items, for idempotent replays.
    pub request_hash: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms of completion or cancellation.
    pub finished_at: Option<i64>,
}

impl FromRow<'_, AnyRow> for Batch {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Batch {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            user_id: row.try_get("user_id")?,
            description: row.try_get("description")?,
            status: parsed(row, "status")?,
            parallelism: row.try_get("parallelism")?,
            total: row.try_get("total")?,
            lanes: row.try_get("lanes")?,
            lanes_done: row.try_get("lanes_done")?,
            idempotency_key: row.try_get("idempotency_key")?,
            request_hash: row.try_get("request_hash")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, user_id, description, status, parallelism, total, lanes, \
     lanes_done, idempotency_key, request_hash, created_at, updated_at, finished_at";

/// Fields a caller supplies to create a batch.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Owning organization.
    pub org_id: String,
    /// Submitter.
    pub user_id: String,
    /// The API key it was submitted with (its tasks count against it).
    pub api_key_id: Option<String>,
    /// What it is for.
    pub description: String,
    /// Tasks running at once, at most (at least 1).
    pub parallelism: i64,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// sha256 of the items.
    pub request_hash: String,
}

/// One task definition of a batch, prepared as a submitted task is.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The caller's own id for it.
    pub custom_id: Option<String>,
    /// What the task is for.
    pub description: String,
    /// Task type name.
    pub task_type: String,
    /// 0–2.
    pub priority: i64,
    /// Agent, if any.
    pub agent_id: Option<String>,
    /// Canonical request JSON.
    pub request: String,
    /// sha256 of the canonical request.
    pub request_hash: String,
    /// Publish deltas.
    pub stream: bool,
    /// May be served from the cache.
    pub use_cache: bool,
}

/// What [`insert`] did.
#[derive(Debug)]
pub enum Inserted {
    /// A new running batch, its first items released.
    Created(Box<Batch>),
    /// The idempotency key was used before; this is that batch.
    Existing(Box<Batch>),
    /// The user already has as many unfinished tasks, workflows and batches
    /// as allowed.
    TooManyUnfinished,
}

/// Items written per statement (14 parameters each).
const ITEMS_PER_STATEMENT: usize = 400;

/// Store a running batch of `items` unless the user already has
/// `max_unfinished` unfinished tasks, workflows and batches (the batch
/// counts once; its tasks do not count), and release its first
/// `parallelism` items; with an idempotency key the user used before,
/// return that batch instead. Run it in a transaction from
/// [`Db::tenant_serialised`](super::Db::tenant_serialised) as task
/// submissions are.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewBatch,
    items: &[NewItem],
    max_unfinished: u32,
) -> Result<Inserted, sqlx::Error> {
    if let Some(key) = &new.idempotency_key
        && let Some(batch) = by_idempotency_key(conn, &new.org_id, &new.user_id, key).await?
    {
        return Ok(Inserted::Existing(Box::new(batch)));
    }
    let now = now_ms();
    let total = items.len() as i64;
    let lanes = new.parallelism.min(total);
    let batch: Option<Batch> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO batches (id, org_id, user_id, description, status, parallelism, total, \
             lanes, idempotency_key, request_hash, created_at, updated_at, api_key_id) \
         SELECT $1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10, $10, $12 \
         WHERE {} < $11 \
         RETURNING {COLUMNS}",
        super::tasks::unfinished("$2", Some("$3"))
    )))
    .bind(new_id())
    .bind(&new.org_id)
    .bind(&new.user_id)
    .bind(&new.description)
    .bind(new.parallelism)
    .bind(total)
    .bind(lanes)
    .bind(&new.idempotency_key)
    .bind(&new.request_hash)
    .bind(now)
    .bind(i64::from(max_unfinished))
    .bind(&new.api_key_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(batch) = batch else {
        return Ok(Inserted::TooManyUnfinished);
    };
    for (n, chunk) in items.chunks(ITEMS_PER_STATEMENT).enumerate() {
        insert_items(conn, &batch, n * ITEMS_PER_STATEMENT, chunk).await?;
    }
    release(conn, &batch.id, 0, lanes, now).await?;
    Ok(Inserted::Created(Box::new(batch)))
}

async fn insert_items(
    conn: &mut AnyConnection,
    batch: &Batch,
    first: usize,
    items: &[NewItem],
) -> Result<(), sqlx::Error> {
    const COLS: usize = 14;
    let rows: Vec<String> = (0..items.len())
        .map(|r| {
            let params: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO batch_items (batch_id, idx, org_id, task_id, custom_id, description, \
             task_type, priority, agent_id, request, request_hash, stream, use_cache, next_idx) \
         VALUES {}",
        rows.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, item) in items.iter().enumerate() {
        let idx = (first + i) as i64;
        let next = Some(idx + batch.parallelism).filter(|n| *n < batch.total);
        q = q
            .bind(&batch.id)
            .bind(idx)
            .bind(&batch.org_id)
            .bind(new_id())
            .bind(&item.custom_id)
            .bind(&item.description)
            .bind(&item.task_type)
            .bind(item.priority)
            .bind(&item.agent_id)
            .bind(&item.request)
            .bind(&item.request_hash)
            .bind(i64::from(item.stream))
            .bind(i64::from(item.use_cache))
            .bind(next);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Turn items `from..to` of batch `batch_id` into pending tasks, each with
/// its first event (`status: pending`), as [`super::tasks::insert`] writes
/// them: on PostgreSQL in one statement (the events by a data-modifying
/// CTE), on SQLite in two.
async fn release(
    conn: &mut AnyConnection,
    batch_id: &str,
    from: i64,
    to: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    if from >= to {
        return Ok(());
    }
    let insert = "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
             priority, status, request, stream, use_cache, request_hash, event_seq, created_at, \
             updated_at, batch_id, batch_next, api_key_id) \
         SELECT i.task_id, i.org_id, b.user_id, i.agent_id, 'api', i.description, i.task_type, \
             i.priority, 'pending', i.request, i.stream, i.use_cache, i.request_hash, 1, $4, $4, \
             i.batch_id, i.next_idx, b.api_key_id \
         FROM batch_items AS i JOIN batches AS b ON b.id = i.batch_id \
         WHERE i.batch_id = $1 AND i.idx >= $2 AND i.idx < $3";
    let pending = super::tasks::PENDING_EVENT;
    // Every statement here takes the same parameters.
    let bound = |sql: String| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(batch_id)
            .bind(from)
            .bind(to)
            .bind(now)
    };
    if Backend::of(conn) == Backend::Postgres {
        bound(format!(
            "WITH t AS ({insert} RETURNING id, org_id) \
             INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
             SELECT id, 1, org_id, 'status', '{pending}', $4 FROM t"
        ))
        .execute(conn)
        .await?;
        return Ok(());
    }
    bound(insert.to_string()).execute(&mut *conn).await?;
    bound(format!(
        "INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
         SELECT task_id, 1, org_id, 'status', '{pending}', $4 FROM batch_items \
         WHERE batch_id = $1 AND idx >= $2 AND idx < $3"
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// What the end of one of a batch's tasks did to the batch.
#[derive(Debug, Default)]
pub struct TaskEnded {
    /// The next item of its lane was released as a pending task.
    pub released: bool,
    /// The batch completed with this task: it as it is now.
    pub completed: Option<Batch>,
}

/// A task of batch `batch_id` ended; `next` is the item its end releases
/// (`None`: it was its lane's last). While the batch runs, that item is
/// released; a lane's last task counts its lane done, and the last lane
/// done completes the batch. Run it in the transaction that ends the
/// task, after the task row was written.
pub async fn task_ended(
    conn: &mut AnyConnection,
    batch_id: &str,
    next: Option<i64>,
) -> Result<TaskEnded, sqlx::Error> {
    let now = now_ms();
    let Some(next) = next else {
        // Every SET expression reads the row as it was.
        let last = "status = 'running' AND lanes_done + 1 >= lanes";
        let batch: Option<Batch> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE batches SET lanes_done = lanes_done + 1, \
                 status = CASE WHEN {last} THEN 'completed' ELSE status END, \
                 finished_at = CASE WHEN {last} THEN $2 ELSE finished_at END, \
                 updated_at = $2 \
             WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(batch_id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        let completed = batch.filter(|b| {
            b.status == BatchStatus::Completed
                && b.finished_at == Some(now)
                && b.lanes_done == b.lanes
        });
        return Ok(TaskEnded {
            released: false,
            completed,
        });
    };
    // A shared lock: concurrent ends do not wait for each other, and a
    // cancellation (which updates the row) waits for them, or they for it.
    let lock = match Backend::of(conn) {
        Backend::Postgres => "FOR SHARE",
        Backend::Sqlite => "",
    };
    let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM batches WHERE id = $1 {lock}"
    )))
    .bind(batch_id)
    .fetch_optional(&mut *conn)
    .await?;
    if status.as_deref() != Some(BatchStatus::Running.as_str()) {
        return Ok(TaskEnded::default());
    }
    release(conn, batch_id, next, next + 1, now).await?;
    Ok(TaskEnded {
        released: true,
        completed: None,
    })
}

/// A batch's tasks by where they are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Items released as tasks.
    pub released: i64,
    /// Tasks pending or running.
    pub running: i64,
    /// Tasks ended completed.
    pub completed: i64,
    /// Tasks ended failed.
    pub failed: i64,
    /// Tasks ended cancelled.
    pub cancelled: i64,
    /// What the tasks spent so far.
    pub cost: Money,
}

/// The counts of the organization's batches `ids`, and what their tasks
/// spent, from their tasks (one grouped read).
pub async fn counts(
    conn: &mut AnyConnection,
    org_id: &str,
    ids: &[&str],
) -> Result<HashMap<String, Counts>, sqlx::Error> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        "SELECT batch_id, status, COUNT(*), CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) \
         FROM tasks WHERE org_id = $1 AND batch_id IN ({}) GROUP BY batch_id, status",
        list.join(", ")
    );
    let mut q =
        sqlx::query_as::<_, (String, String, i64, i64)>(sqlx::AssertSqlSafe(sql)).bind(org_id);
    for id in ids {
        q = q.bind(*id);
    }
    for (batch_id, status, n, cost) in q.fetch_all(conn).await? {
        let c = out.entry(batch_id).or_default();
        c.released += n;
        c.cost = c.cost.saturating_add(Money::from(cost));
        match status.parse::<TaskStatus>() {
            Ok(TaskStatus::Completed) => c.completed += n,
            Ok(TaskStatus::Failed) => c.failed += n,
            Ok(TaskStatus::Cancelled) => c.cancelled += n,
            _ => c.running += n,
        }
    }
    Ok(out)
}

/// Stop a running batch: no item is released any more. Returns it as it
/// is now, or `None` when it is not running (or does not exist).
pub async fn cancel(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE batches SET status = 'cancelled', finished_at = $1, updated_at = $1 \
         WHERE org_id = $2 AND id = $3 AND status = 'running' RETURNING {COLUMNS}"
    )))
    .bind(now)
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The ids of a batch's tasks that have not ended.
pub async fn unfinished_tasks(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM tasks WHERE batch_id = $1 AND org_id = $2 \
             AND status IN ('pending', 'in_progress') ORDER BY id",
    )
    .bind(id)
    .bind(org_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One batch of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM batches WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of the organization's batches, newest first, optionally in one
/// status; with the number of matching batches.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: &str,
    status: Option<BatchStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Batch>, i64), sqlx::Error> {
    let status = status.map(BatchStatus::as_str);
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM batches WHERE org_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    )))
    .bind(org_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batches WHERE org_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2)",
    )
    .bind(org_id)
    .bind(status)
    .fetch_one(conn)
    .await?;
    Ok((rows, total))
}

/// One item of a batch with its task's outcome (none while unreleased).
#[derive(Debug, Clone)]
pub struct ItemResult {
    /// 0-based position in the upload.
    pub index: i64,
    /// The caller's own id for it.
    pub custom_id: Option<String>,
    /// The task it runs as (once released).
    pub task_id: String,
    /// What the task is for.
    pub description: String,
    /// The task's status; `None` while the item waits for its turn (or
    /// never ran: the batch was cancelled first).
    pub status: Option<TaskStatus>,
    /// JSON result once completed.
    pub result: Option<String>,
    /// JSON error once failed.
    pub error: Option<String>,
    /// Integration that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost over all attempts.
    pub cost: Money,
    /// Unix ms of its first claim.
    pub started_at: Option<i64>,
    /// Unix ms of its end.
    pub finished_at: Option<i64>,
}

impl FromRow<'_, AnyRow> for ItemResult {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let status: Option<String> = row.try_get("status")?;
        Ok(ItemResult {
            index: row.try_get("idx")?,
            custom_id: row.try_get("custom_id")?,
            task_id: row.try_get("task_id")?,
            description: row.try_get("description")?,
            status: status.map(|s| s.parse()).transpose().map_err(|e| {
                sqlx::Error::ColumnDecode {
                    index: "status".into(),
                    source: Box::new(e),
                }
            })?,
            result: row.try_get("result")?,
            error: row.try_get("error")?,
            provider: row.try_get("provider")?,
            model: row.try_get("model")?,
            input_tokens: row.try_get::<Option<i64>, _>("input_tokens")?.unwrap_or(0),
            output_tokens: row.try_get::<Option<i64>, _>("output_tokens")?.unwrap_or(0),
            cost: Money::from(row.try_get::<Option<i64>, _>("cost_nanos")?.unwrap_or(0)),
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// Up to `limit` items of batch `id` after position `after` (-1: from the
/// first), in order, with their tasks' outcomes.
pub async fn results(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ItemResult>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.idx, i.custom_id, i.task_id, i.description, t.status, t.result, t.error, \
             t.provider, t.model, t.input_tokens, t.output_tokens, t.cost_nanos, t.started_at, \
             t.finished_at \
         FROM batch_items AS i LEFT JOIN tasks AS t ON t.id = i.task_id \
         WHERE i.batch_id = $1 AND i.org_id = $2 AND i.idx > $3 \
         ORDER BY i.idx LIMIT $4",
    )
    .bind(id)
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

async fn by_idempotency_key(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    key: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM batches WHERE org_id = $1 AND user_id = $2 AND idempotency_key = $3"
    )))
    .bind(org_id)
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}
