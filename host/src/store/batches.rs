//! Batches and their items (see `migrations/*/…_batches.sql`).
//!
//! An item becomes an ordinary pending task when it is released: the
//! first `parallelism` items when the batch is stored, then one more in
//! the transaction that ends each of the batch's tasks ([`task_ended`]).
//! The batch row is the cursor and the outcome counters; updating it first
//! in those transactions serialises a batch's releases (on PostgreSQL its
//! row lock, on SQLite the one writer), so no item is released twice and
//! at most `parallelism` tasks of a batch are unfinished at once; [`lock`]
//! takes that row lock first, before any task row, wherever a batch's task
//! ends or the batch is cancelled.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

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
    /// Items turned into tasks.
    pub released: i64,
    /// Tasks ended completed.
    pub completed: i64,
    /// Tasks ended failed.
    pub failed: i64,
    /// Tasks ended cancelled.
    pub cancelled: i64,
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

impl Batch {
    /// Tasks that ended, whatever their outcome.
    pub fn ended(&self) -> i64 {
        self.completed + self.failed + self.cancelled
    }
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
            released: row.try_get("released")?,
            completed: row.try_get("completed")?,
            failed: row.try_get("failed")?,
            cancelled: row.try_get("cancelled")?,
            idempotency_key: row.try_get("idempotency_key")?,
            request_hash: row.try_get("request_hash")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, user_id, description, status, parallelism, total, released, \
     completed, failed, cancelled, idempotency_key, request_hash, created_at, updated_at, \
     finished_at";

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

/// Items written per statement (13 parameters each).
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
    let released = new.parallelism.min(total);
    let batch: Option<Batch> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO batches (id, org_id, user_id, description, status, parallelism, total, \
             released, idempotency_key, request_hash, created_at, updated_at, api_key_id) \
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
    .bind(released)
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
    release(conn, &batch.id, 0, released, now).await?;
    Ok(Inserted::Created(Box::new(batch)))
}

async fn insert_items(
    conn: &mut AnyConnection,
    batch: &Batch,
    first: usize,
    items: &[NewItem],
) -> Result<(), sqlx::Error> {
    const COLS: usize = 13;
    let rows: Vec<String> = (0..items.len())
        .map(|r| {
            let params: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO batch_items (batch_id, idx, org_id, task_id, custom_id, description, \
             task_type, priority, agent_id, request, request_hash, stream, use_cache) VALUES {}",
        rows.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, item) in items.iter().enumerate() {
        q = q
            .bind(&batch.id)
            .bind((first + i) as i64)
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
            .bind(i64::from(item.use_cache));
    }
    q.execute(conn).await?;
    Ok(())
}

/// Turn items `from..to` of batch `batch_id` into pending tasks, each with
/// its first event (`status: pending`), as [`super::tasks::insert`] writes
/// them.
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
    sqlx::query(
        "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
             priority, status, request, stream, use_cache, request_hash, event_seq, created_at, \
             updated_at, batch_id, api_key_id) \
         SELECT i.task_id, i.org_id, b.user_id, i.agent_id, 'api', i.description, i.task_type, \
             i.priority, 'pending', i.request, i.stream, i.use_cache, i.request_hash, 1, $4, $4, \
             i.batch_id, b.api_key_id \
         FROM batch_items AS i JOIN batches AS b ON b.id = i.batch_id \
         WHERE i.batch_id = $1 AND i.idx >= $2 AND i.idx < $3",
    )
    .bind(batch_id)
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
         SELECT task_id, 1, org_id, 'status', '{}', $4 FROM batch_items \
         WHERE batch_id = $1 AND idx >= $2 AND idx < $3",
        super::tasks::PENDING_EVENT
    )))
    .bind(batch_id)
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the end of one of a batch's tasks did to the batch.
#[derive(Debug, Default)]
pub struct TaskEnded {
    /// The next item was released as a pending task.
    pub released: bool,
    /// The batch completed with this task: it as it is now.
    pub completed: Option<Batch>,
}

/// Count the end (in `status`) of a task of batch `batch_id`: its outcome
/// counter, the batch's completion when it was the last, and the release
/// of the next item while the batch runs. Run it in the transaction that
/// ends the task.
pub async fn task_ended(
    conn: &mut AnyConnection,
    batch_id: &str,
    status: TaskStatus,
) -> Result<TaskEnded, sqlx::Error> {
    let now = now_ms();
    let column = match status {
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::Pending | TaskStatus::InProgress => return Ok(TaskEnded::default()),
    };
    // Every SET expression reads the row as it was; the last task of a
    // running batch (every item released, this end the last) completes it.
    let last = "status = 'running' AND released = total \
                AND completed + failed + cancelled + 1 >= total";
    let batch: Option<Batch> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE batches SET {column} = {column} + 1, \
             status = CASE WHEN {last} THEN 'completed' ELSE status END, \
             finished_at = CASE WHEN {last} THEN $2 ELSE finished_at END, \
             updated_at = $2 \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(batch_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(batch) = batch else {
        return Ok(TaskEnded::default());
    };
    if batch.status == BatchStatus::Completed {
        let just = batch.finished_at == Some(now) && batch.ended() == batch.total;
        return Ok(TaskEnded {
            released: false,
            completed: just.then_some(batch),
        });
    }
    if batch.status != BatchStatus::Running || batch.released >= batch.total {
        return Ok(TaskEnded::default());
    }
    let next: Option<i64> = sqlx::query_scalar(
        "UPDATE batches SET released = released + 1 \
         WHERE id = $1 AND status = 'running' AND released < total RETURNING released",
    )
    .bind(batch_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(next) = next else {
        return Ok(TaskEnded::default());
    };
    release(conn, batch_id, next - 1, next, now).await?;
    Ok(TaskEnded {
        released: true,
        completed: None,
    })
}

/// Lock batch `batch_id`'s row for the rest of the transaction (on
/// PostgreSQL; SQLite has one writer). Every transaction that ends a task
/// of a batch, or cancels the batch, takes this lock before it touches a
/// task row, so their locks are always taken in the same order (batch,
/// then task) and they cannot deadlock.
pub async fn lock(conn: &mut AnyConnection, batch_id: &str) -> Result<(), sqlx::Error> {
    if Backend::of(conn) == Backend::Postgres {
        sqlx::query("SELECT id FROM batches WHERE id = $1 FOR UPDATE")
            .bind(batch_id)
            .fetch_optional(conn)
            .await?;
    }
    Ok(())
}

/// The batch a task runs an item of, if any.
pub async fn of_task(
    conn: &mut AnyConnection,
    task_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT batch_id FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.and_then(|(b,)| b))
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

/// What a batch's tasks spent so far, and how many are running.
pub async fn spent(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<(Money, i64, i64), sqlx::Error> {
    // PostgreSQL sums BIGINTs as NUMERIC: cast back.
    let (cost, input, output): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT), \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) \
         FROM tasks WHERE batch_id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(org_id)
    .fetch_one(conn)
    .await?;
    Ok((Money::from(cost), input, output))
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
