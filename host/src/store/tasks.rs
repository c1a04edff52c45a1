//! Tasks, their attempts and their events; the durable queue is the
//! `tasks` table itself.
//!
//! Claiming is one statement on both backends: on PostgreSQL the inner
//! `SELECT … FOR UPDATE SKIP LOCKED` lets many workers on many instances
//! claim concurrently without blocking each other; on SQLite, where there is
//! one writer at a time, the same `UPDATE … WHERE id = (SELECT …)` is atomic.
//! A claim is a lease: `in_progress` rows whose lease ran out (their worker
//! died) are claimed again, so a crash loses no task.
//!
//! A task's status, source and its attempts' outcomes are stored as text,
//! its `stream`, `use_cache` and `cached` flags as 0/1 integers; rows carry
//! them as [`TaskStatus`], [`TaskSource`], [`AttemptOutcome`] and `bool`,
//! converted here.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use super::{Backend, new_id, now_ms, parsed};
use crate::money::Money;
use crate::orchestrator::state::{AttemptOutcome, TaskSource, TaskStatus};

/// A stored task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Submitter (gone when the user was deleted).
    pub user_id: Option<String>,
    /// The agent it runs for, if any.
    pub agent_id: Option<String>,
    /// Where it was submitted.
    pub source: TaskSource,
    /// What the task is for.
    pub description: String,
    /// `reasoning`, `code_generation`, `research`, `light` or `general`.
    pub task_type: String,
    /// 0 low, 1 medium, 2 high.
    pub priority: i64,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// JSON: the canonical request (messages, parameters).
    pub request: String,
    /// Whether deltas are published as events.
    pub stream: bool,
    /// Whether the response cache may be used.
    pub use_cache: bool,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// sha256 of the canonical request.
    pub request_hash: String,
    /// JSON result once completed.
    pub result: Option<String>,
    /// Text received before a cancellation or failure.
    pub partial_output: Option<String>,
    /// JSON error once failed.
    pub error: Option<String>,
    /// Whether the result came from the response cache.
    pub cached: bool,
    /// Integration that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Prompt tokens over all attempts.
    pub input_tokens: i64,
    /// Completion tokens over all attempts.
    pub output_tokens: i64,
    /// Cost over all attempts.
    pub cost_nanos: Money,
    /// Instance and worker holding the lease.
    pub lease_owner: Option<String>,
    /// Unix ms.
    pub lease_expires_at: Option<i64>,
    /// Times claimed (more than 1: rescued after a worker died).
    pub claims: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms of the first claim.
    pub started_at: Option<i64>,
    /// Unix ms of the terminal state.
    pub finished_at: Option<i64>,
    /// The workflow whose step it runs.
    pub workflow_id: Option<String>,
    /// The batch whose item it runs.
    pub batch_id: Option<String>,
    /// The item of its batch its end releases (none: its lane's last).
    pub batch_next: Option<i64>,
    /// The API key it was submitted with.
    pub api_key_id: Option<String>,
}

impl FromRow<'_, AnyRow> for Task {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Task {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            user_id: row.try_get("user_id")?,
            agent_id: row.try_get("agent_id")?,
            source: parsed(row, "source")?,
            description: row.try_get("description")?,
            task_type: row.try_get("task_type")?,
            priority: row.try_get("priority")?,
            status: parsed(row, "status")?,
            request: row.try_get("request")?,
            stream: row.try_get::<i64, _>("stream")? != 0,
            use_cache: row.try_get::<i64, _>("use_cache")? != 0,
            idempotency_key: row.try_get("idempotency_key")?,
            request_hash: row.try_get("request_hash")?,
            result: row.try_get("result")?,
            partial_output: row.try_get("partial_output")?,
            error: row.try_get("error")?,
            cached: row.try_get::<i64, _>("cached")? != 0,
            provider: row.try_get("provider")?,
            model: row.try_get("model")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cost_nanos: Money::from(row.try_get::<i64, _>("cost_nanos")?),
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            claims: row.try_get("claims")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            workflow_id: row.try_get("workflow_id")?,
            batch_id: row.try_get("batch_id")?,
            batch_next: row.try_get("batch_next")?,
            api_key_id: row.try_get("api_key_id")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, user_id, agent_id, source, description, task_type, priority, \
     status, request, stream, use_cache, idempotency_key, request_hash, result, partial_output, \
     error, cached, provider, model, input_tokens, output_tokens, cost_nanos, lease_owner, \
     lease_expires_at, claims, created_at, updated_at, started_at, finished_at, workflow_id, batch_id, \
     batch_next, api_key_id";

/// The columns of [`Attempt`], in its order.
const ATTEMPT_COLUMNS: &str = "seq, provider, integration_id, plugin, model, outcome, error_kind, \
     error_message, latency_ms, input_tokens, output_tokens, cost_nanos, started_at";

/// Fields a caller supplies to create a task.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Owning organization.
    pub org_id: String,
    /// Submitter (a workflow's step: whoever started the workflow, if
    /// still a user).
    pub user_id: Option<String>,
    /// Agent, if any.
    pub agent_id: Option<String>,
    /// Where it was submitted.
    pub source: TaskSource,
    /// Description.
    pub description: String,
    /// Task type name.
    pub task_type: String,
    /// 0–2.
    pub priority: i64,
    /// Canonical request JSON.
    pub request: String,
    /// Publish deltas.
    pub stream: bool,
    /// May be served from the cache.
    pub use_cache: bool,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// sha256 of the canonical request.
    pub request_hash: String,
    /// The workflow whose step it runs: it does not count against the
    /// user's limit (the workflow does).
    pub workflow_id: Option<String>,
    /// The API key it was submitted with (its tokens count against the
    /// key's limits, its calls against the key's budgets).
    pub api_key_id: Option<String>,
}

/// What [`insert`] did.
#[derive(Debug)]
pub enum Inserted {
    /// A new pending task.
    Created(Box<Task>),
    /// The idempotency key was used before; this is that task.
    Existing(Box<Task>),
    /// The user already has `limit` unfinished tasks.
    TooManyUnfinished,
}

/// Insert a pending task unless the user already has `max_unfinished`
/// unfinished tasks and workflows (a workflow's step tasks count as their
/// workflow, once; a step's own task is never refused); with an idempotency
/// key already used by the user, return that task instead. The count and the
/// insert are one statement; run it in a transaction from
/// [`Db::tenant_serialised`](super::Db::tenant_serialised) keyed by the user
/// id, so that concurrent submissions of one user cannot overshoot the
/// limit. A new task starts with its
/// first event, `status: pending` (number 1), written here without the
/// numbering update [`append_event`] needs.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewTask,
    max_unfinished: u32,
) -> Result<Inserted, sqlx::Error> {
    if let Some(key) = &new.idempotency_key
        && let Some(user_id) = &new.user_id
        && let Some(task) = by_idempotency_key(conn, &new.org_id, user_id, key).await?
    {
        return Ok(Inserted::Existing(Box::new(task)));
    }
    let now = now_ms();
    let id = new_id();
    // A step's task is never refused, so its statement counts nothing (it
    // still names the limit, so both statements take the same parameters).
    let limit = if new.workflow_id.is_some() {
        "WHERE $15 >= 0"
    } else {
        &format!("WHERE {} < $15", unfinished("$2", Some("$3")))
    };
    let insert = format!(
        "INSERT INTO tasks (id, org_id, user_id, agent_id, source, description, task_type, \
             priority, status, request, stream, use_cache, idempotency_key, request_hash, \
             event_seq, created_at, updated_at, workflow_id, api_key_id) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12, $13, 1, $14, $14, $16, $17 \
         {limit}"
    );
    let postgres = Backend::of(conn) == Backend::Postgres;
    // On PostgreSQL the first event is written by the same statement (a
    // data-modifying CTE): one round trip less per submission.
    let sql = if postgres {
        format!(
            "WITH t AS ({insert} RETURNING {COLUMNS}), \
                  e AS (INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
                        SELECT id, 1, org_id, 'status', '{PENDING_EVENT}', created_at FROM t) \
             SELECT {COLUMNS} FROM t"
        )
    } else {
        format!("{insert} RETURNING {COLUMNS}")
    };
    let inserted: Option<Task> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .bind(&new.org_id)
        .bind(&new.user_id)
        .bind(&new.agent_id)
        .bind(new.source.as_str())
        .bind(&new.description)
        .bind(&new.task_type)
        .bind(new.priority)
        .bind(&new.request)
        .bind(i64::from(new.stream))
        .bind(i64::from(new.use_cache))
        .bind(&new.idempotency_key)
        .bind(&new.request_hash)
        .bind(now)
        .bind(i64::from(max_unfinished))
        .bind(&new.workflow_id)
        .bind(&new.api_key_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(task) = inserted else {
        return Ok(Inserted::TooManyUnfinished);
    };
    if !postgres {
        insert_event(conn, &task.org_id, &task.id, 1, "status", PENDING_EVENT).await?;
    }
    Ok(Inserted::Created(Box::new(task)))
}

/// The data of a new task's first event (quoted into SQL: no `'` in it).
pub(crate) const PENDING_EVENT: &str = r#"{"status":"pending"}"#;

/// Whether `new` repeats an earlier submission of its idempotency key
/// (which [`insert`] answers with the earlier task).
pub async fn is_replay(conn: &mut AnyConnection, new: &NewTask) -> Result<bool, sqlx::Error> {
    Ok(match (&new.idempotency_key, &new.user_id) {
        (Some(key), Some(user_id)) => by_idempotency_key(conn, &new.org_id, user_id, key)
            .await?
            .is_some(),
        _ => false,
    })
}

/// SQL counting the unfinished work of organization `org` (a placeholder),
/// or of its user `user`: tasks, workflows and batches, each workflow and
/// batch once (the tasks of its steps or items are not counted).
pub(crate) fn unfinished(org: &str, user: Option<&str>) -> String {
    let of_user = user
        .map(|u| format!("user_id = {u} AND "))
        .unwrap_or_default();
    format!(
        "((SELECT COUNT(*) FROM tasks WHERE {of_user}org_id = {org} \
            AND status IN ('pending', 'in_progress') AND workflow_id IS NULL \
            AND batch_id IS NULL) \
          + (SELECT COUNT(*) FROM workflows WHERE {of_user}org_id = {org} \
            AND status IN ('running', 'awaiting_approval')) \
          + (SELECT COUNT(*) FROM batches WHERE {of_user}org_id = {org} \
            AND status = 'running'))"
    )
}

/// The organization's unfinished tasks, workflows and batches submitted
/// through the API (see [`unfinished`]).
pub async fn count_unfinished_in_org(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {}",
        unfinished("$1", None)
    )))
    .bind(org_id)
    .fetch_one(conn)
    .await
}

async fn by_idempotency_key(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    key: &str,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tasks WHERE org_id = $1 AND user_id = $2 AND idempotency_key = $3"
    )))
    .bind(org_id)
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// One task of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tasks WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One task of the organization with its attempts in order. On PostgreSQL
/// one statement (the attempts aggregated into a JSON array), a round trip
/// less than [`get`] then [`attempts`]; on SQLite, whose statements are
/// calls rather than round trips, those two.
pub async fn get_with_attempts(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<(Task, Vec<Attempt>)>, sqlx::Error> {
    if Backend::of(conn) == Backend::Sqlite {
        let Some(task) = get(conn, org_id, id).await? else {
            return Ok(None);
        };
        let attempts = attempts(conn, org_id, id).await?;
        return Ok(Some((task, attempts)));
    }
    let row: Option<WithAttempts> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, \
             (SELECT coalesce(json_agg(a ORDER BY a.seq), '[]')::text \
              FROM (SELECT {ATTEMPT_COLUMNS} FROM task_attempts \
                    WHERE org_id = tasks.org_id AND task_id = tasks.id) a) AS attempts \
         FROM tasks WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let attempts =
            serde_json::from_str(&row.attempts).map_err(|e| sqlx::Error::ColumnDecode {
                index: "attempts".into(),
                source: Box::new(e),
            })?;
        Ok((row.task, attempts))
    })
    .transpose()
}

/// A task row with its attempts as a JSON array.
#[derive(FromRow)]
struct WithAttempts {
    #[sqlx(flatten)]
    task: Task,
    attempts: String,
}

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Created at or after (unix ms).
    pub from: Option<i64>,
    /// Created before (unix ms).
    pub to: Option<i64>,
    /// Text its description or one of its request's messages contains,
    /// case-insensitively (ASCII).
    pub text: Option<String>,
    /// Only those this integration answered.
    pub provider: Option<String>,
    /// Only those this model answered.
    pub model: Option<String>,
    /// Only those submitted here.
    pub source: Option<TaskSource>,
    /// Only those that cost at least this much.
    pub min_cost: Option<Money>,
    /// Only those that cost at most this much.
    pub max_cost: Option<Money>,
}

/// `text` as a `LIKE` pattern matching it anywhere, lower-cased, with the
/// pattern's own characters escaped (`\` is the escape).
fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_ascii_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The `WHERE` condition of [`TaskFilter`] over parameters `$1`–`$11`
/// (bound by [`page`] and [`after`] in one order). Absent filters bind NULL
/// and match everything, so one statement serves.
fn filter_condition(backend: Backend) -> String {
    // The messages' texts of the stored request, one row each.
    let message_texts = match backend {
        Backend::Postgres => {
            "SELECT m->>'content' AS content \
             FROM json_array_elements(CAST(request AS json)->'messages') AS m"
        }
        Backend::Sqlite => {
            "SELECT json_extract(m.value, '$.content') AS content \
             FROM json_each(request, '$.messages') AS m"
        }
    };
    format!(
        "org_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR agent_id = $3) \
         AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) \
         AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5) \
         AND (CAST($6 AS TEXT) IS NULL OR LOWER(description) LIKE $6 ESCAPE '\\' \
              OR EXISTS (SELECT 1 FROM ({message_texts}) AS t \
                         WHERE LOWER(t.content) LIKE $6 ESCAPE '\\')) \
         AND (CAST($7 AS TEXT) IS NULL OR provider = $7) \
         AND (CAST($8 AS TEXT) IS NULL OR model = $8) \
         AND (CAST($9 AS TEXT) IS NULL OR source = $9) \
         AND (CAST($10 AS BIGINT) IS NULL OR cost_nanos >= $10) \
         AND (CAST($11 AS BIGINT) IS NULL OR cost_nanos <= $11)"
    )
}

/// The filter's values in [`filter_condition`]'s order.
struct FilterValues<'a> {
    status: Option<&'static str>,
    agent_id: &'a Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    text: Option<String>,
    provider: &'a Option<String>,
    model: &'a Option<String>,
    source: Option<&'static str>,
    min_cost: Option<i64>,
    max_cost: Option<i64>,
}

impl<'a> FilterValues<'a> {
    fn of(filter: &'a TaskFilter) -> Self {
        FilterValues {
            status: filter.status.map(TaskStatus::as_str),
            agent_id: &filter.agent_id,
            from: filter.from,
            to: filter.to,
            text: filter.text.as_deref().map(contains_pattern),
            provider: &filter.provider,
            model: &filter.model,
            source: filter.source.map(TaskSource::as_str),
            min_cost: filter.min_cost.map(Money::nanos),
            max_cost: filter.max_cost.map(Money::nanos),
        }
    }
}

/// Bind `$1`–`$11` of [`filter_condition`] to a query (`query` or
/// `query_as` alike).
macro_rules! bind_filter {
    ($query:expr, $org_id:expr, $v:expr) => {
        $query
            .bind($org_id)
            .bind($v.status)
            .bind($v.agent_id)
            .bind($v.from)
            .bind($v.to)
            .bind(&$v.text)
            .bind($v.provider)
            .bind($v.model)
            .bind($v.source)
            .bind($v.min_cost)
            .bind($v.max_cost)
    };
}

/// A page of the organization's tasks, newest first, and the total.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: &str,
    filter: &TaskFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Task>, i64), sqlx::Error> {
    let condition = filter_condition(Backend::of(conn));
    let values = FilterValues::of(filter);
    let (total,): (i64,) = bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM tasks WHERE {condition}"
        ))),
        org_id,
        values
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE {condition} \
             ORDER BY created_at DESC, id LIMIT $12 OFFSET $13"
        ))),
        org_id,
        values
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Where an export has got to: the last task it read, in the list's order
/// (newest first, then by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// That task's creation time.
    pub created_at: i64,
    /// Its id.
    pub id: String,
}

/// Up to `limit` of the organization's tasks matching `filter` that come
/// after `cursor` (from the start without one), in the list's order: an
/// export reads its rows page by page, in constant memory, and rows added
/// meanwhile at the top never shift the pages still to come.
pub async fn after(
    conn: &mut AnyConnection,
    org_id: &str,
    filter: &TaskFilter,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    let condition = filter_condition(Backend::of(conn));
    let values = FilterValues::of(filter);
    let (created_at, id) = cursor.map_or((i64::MAX, ""), |c| (c.created_at, c.id.as_str()));
    // `created_at <= $12` repeats what the disjunction says, in a form an
    // index range scan starts from: without it PostgreSQL walks every row
    // before the cursor again for each page.
    bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE {condition} \
             AND created_at <= $12 AND (created_at < $12 OR (created_at = $12 AND id > $13)) \
             ORDER BY created_at DESC, id LIMIT $14"
        ))),
        org_id,
        values
    )
    .bind(created_at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// A task just claimed, whether other pending tasks were waiting when it
/// was taken (so the worker wakes another only when there is work), and
/// the cached answer to its request, read by the same statement.
#[derive(Debug, FromRow)]
pub struct Claimed {
    /// The task, now `in_progress` under the claimer's lease.
    #[sqlx(flatten)]
    pub task: Task,
    /// 1 when another pending task was there too.
    more_pending: i64,
    /// The unexpired cached answer (JSON) to the same request in the same
    /// organization, when the task may use the cache.
    pub cached_response: Option<String>,
}

impl Claimed {
    /// Whether another pending task was waiting; a hint (another worker
    /// may take it first), never a promise.
    pub fn more_pending(&self) -> bool {
        self.more_pending != 0
    }
}

/// Claim the next task: an `in_progress` one whose lease has expired (its
/// worker died) and that has been claimed fewer than `max_claims` times,
/// else the highest-priority, oldest pending one. Runs across
/// organizations (the worker serves all of them). Each case is its own
/// subquery so that both walk `tasks_queue_idx` instead of scanning every
/// finished task. The response-cache lookup rides along, so a run needs no
/// read transaction of its own. The claim's event (`status: in_progress`
/// with the claim count) is appended here.
pub async fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    lease_ms: i64,
    max_claims: i64,
) -> Result<Option<Claimed>, sqlx::Error> {
    claim_picked(conn, Pick::Next(max_claims), owner, lease_ms).await
}

/// Claim pending task `id` itself, as [`claim`] claims the next one: a
/// worker whose workflow step task just ended takes the next step's task
/// in the transaction that inserted it. Nothing when it is no longer
/// pending.
pub async fn claim_id(
    conn: &mut AnyConnection,
    id: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<Claimed>, sqlx::Error> {
    claim_picked(conn, Pick::Id(id), owner, lease_ms).await
}

/// Which task a claim takes.
#[derive(Debug, Clone, Copy)]
enum Pick<'a> {
    /// The next due one, rescued tasks first (claimed fewer than this many
    /// times).
    Next(i64),
    /// This pending one.
    Id(&'a str),
}

async fn claim_picked(
    conn: &mut AnyConnection,
    pick: Pick<'_>,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<Claimed>, sqlx::Error> {
    let now = now_ms();
    let postgres = Backend::of(conn) == Backend::Postgres;
    let sql = claim_sql(postgres, pick);
    let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now);
    let query = match pick {
        Pick::Next(max_claims) => query.bind(max_claims),
        Pick::Id(id) => query.bind(id),
    };
    let claimed: Option<Claimed> = query.fetch_optional(&mut *conn).await?;
    if let Some(c) = &claimed
        && !postgres
    {
        let t = &c.task;
        append_event(conn, &t.org_id, &t.id, "status", &claim_event(t.claims)).await?;
    }
    Ok(claimed)
}

/// The claim's statement ([`claim`], [`claim_id`]); its own function so
/// that a test can read SQLite's plan of it.
fn claim_sql(postgres: bool, pick: Pick<'_>) -> String {
    let (lock, number) = if postgres {
        ("FOR UPDATE SKIP LOCKED", ", event_seq = event_seq + 1")
    } else {
        ("", "")
    };
    let which = match pick {
        Pick::Next(_) => format!(
            "id = COALESCE( \
             (SELECT id FROM tasks \
              WHERE status = 'in_progress' AND lease_expires_at < $3 AND claims < $4 \
              ORDER BY priority DESC, created_at, id LIMIT 1 {lock}), \
             (SELECT id FROM tasks WHERE status = 'pending' AND org_id = ( \
                  SELECT p.org_id FROM tasks AS p WHERE p.status = 'pending' \
                  GROUP BY p.org_id \
                  ORDER BY (SELECT COUNT(*) FROM tasks AS r \
                            WHERE r.org_id = p.org_id AND r.status = 'in_progress'), \
                           MAX(p.priority) DESC, MIN(p.created_at) LIMIT 1) \
              ORDER BY priority DESC, created_at, id LIMIT 1 {lock}), \
             (SELECT id FROM tasks WHERE status = 'pending' \
              ORDER BY priority DESC, created_at, id LIMIT 1 {lock}))"
        ),
        Pick::Id(_) => "id = $4 AND status = 'pending'".to_string(),
    };
    let update = format!(
        "UPDATE tasks SET status = 'in_progress', lease_owner = $1, lease_expires_at = $2, \
             claims = claims + 1, started_at = COALESCE(started_at, $3), updated_at = $3{number} \
         WHERE {which} \
         RETURNING {COLUMNS}, \
             CASE WHEN EXISTS (SELECT 1 FROM tasks AS other \
                               WHERE other.status = 'pending' AND other.id <> tasks.id) \
                  THEN 1 ELSE 0 END AS more_pending, \
             (SELECT c.response FROM response_cache AS c \
              WHERE tasks.use_cache = 1 AND c.org_id = tasks.org_id \
                AND c.key = tasks.request_hash AND c.expires_at > $3) AS cached_response"
    );
    // On PostgreSQL the claim's event is written by the same statement (a
    // data-modifying CTE), as `claim_event` writes it: one round trip less
    // per task.
    if postgres {
        format!(
            "WITH c AS ({update}, event_seq), \
                  e AS (INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
                        SELECT id, event_seq, org_id, 'status', \
                            '{{\"status\":\"in_progress\",\"claims\":' || claims || '}}', $3 \
                        FROM c) \
             SELECT {COLUMNS}, more_pending, cached_response FROM c"
        )
    } else {
        update
    }
}

/// The data of a claim's event: the task is in progress, claimed `claims`
/// times.
fn claim_event(claims: i64) -> String {
    format!(r#"{{"status":"in_progress","claims":{claims}}}"#)
}

/// Extend the leases of the tasks in `ids` that `owner` still holds: only
/// those it is running, so that a task whose run ended without being
/// recorded (the database failed under the worker) keeps its old lease,
/// sees it run out and is rescued. Returns how many it still holds.
pub async fn heartbeat(
    conn: &mut AnyConnection,
    owner: &str,
    ids: &[String],
    lease_ms: i64,
) -> Result<u64, sqlx::Error> {
    super::leases::extend(
        conn,
        "tasks",
        "AND status = 'in_progress'",
        owner,
        ids,
        lease_ms,
    )
    .await
}

/// Ids of the tasks `owner` holds that were cancelled meanwhile: their
/// runs on that instance are to stop.
pub async fn cancelled_held_by(
    conn: &mut AnyConnection,
    owner: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM tasks WHERE lease_owner = $1 AND status = 'cancelled'")
            .bind(owner)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Make the leases `owner` holds on running tasks expire now, so that any
/// instance claims those tasks at once.
pub async fn release_leases(conn: &mut AnyConnection, owner: &str) -> Result<(), sqlx::Error> {
    super::leases::release(conn, "tasks", "AND status = 'in_progress'", owner).await
}

/// How a run ended, to be written with [`finish`].
#[derive(Debug, Clone)]
pub struct Finish {
    /// `Completed` or `Failed` ([`finish`]); `Cancelled` for
    /// [`record_cancelled_run`], which does not write it.
    pub status: TaskStatus,
    /// JSON result.
    pub result: Option<String>,
    /// JSON error.
    pub error: Option<String>,
    /// Text received before a failure.
    pub partial_output: Option<String>,
    /// Served from the cache.
    pub cached: bool,
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
    /// Provider calls the run made (usage analytics counts a completion
    /// after more than one as a fallback; not a column of the task).
    pub attempts: usize,
    /// Integration and model of the last provider call, when none
    /// answered: usage analytics counts a failure against them (not a
    /// column of the task, whose provider is the one that answered).
    pub last_tried: Option<(String, String)>,
}

impl Finish {
    /// The end recorded on terminal task `task` (its status, error and
    /// totals; the number of provider calls is not stored and is 0).
    pub fn recorded(task: &Task) -> Finish {
        Finish {
            result: task.result.clone(),
            error: task.error.clone(),
            partial_output: task.partial_output.clone(),
            cached: task.cached,
            provider: task.provider.clone(),
            model: task.model.clone(),
            input_tokens: task.input_tokens,
            output_tokens: task.output_tokens,
            cost_nanos: task.cost_nanos,
            ..Finish::new(task.status)
        }
    }

    /// An end in `status` with nothing else recorded yet.
    pub fn new(status: TaskStatus) -> Finish {
        Finish {
            status,
            result: None,
            error: None,
            partial_output: None,
            cached: false,
            provider: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: Money::ZERO,
            attempts: 0,
            last_tried: None,
        }
    }
}

/// Finish task `id`, which `owner` holds, as `f` says, and append `events`
/// (kind, JSON data) to it in order: the run's last reports and its
/// terminal status event. On PostgreSQL one statement (the numbering update
/// in a data-modifying CTE), on SQLite two. False, and nothing written,
/// when the task is no longer `owner`'s run in progress (cancelled, or
/// taken over after its lease ran out).
pub async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    owner: &str,
    f: &Finish,
    events: &[(&str, String)],
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let count = events.len();
    let update = format!(
        "UPDATE tasks SET status = $1, result = $2, error = $3, partial_output = $4, cached = $5, \
             provider = $6, model = $7, input_tokens = $8, output_tokens = $9, cost_nanos = $10, \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = $11, updated_at = $11, \
             event_seq = event_seq + {count} \
         WHERE id = $12 AND lease_owner = $13 AND status = 'in_progress' \
         RETURNING org_id, event_seq - {count} AS base"
    );
    if Backend::of(conn) == Backend::Postgres && count > 0 {
        let sql = format!(
            "WITH n AS ({update}) \
             INSERT INTO task_events (task_id, org_id, created_at, seq, kind, data) \
             SELECT $12, n.org_id, $11, n.base + e.column1, e.column2, e.column3 \
             FROM n, (VALUES {}) AS e RETURNING seq",
            event_rows(count, 14)
        );
        let mut q = bind_finish(sqlx::query_as(sqlx::AssertSqlSafe(sql)), f, now, id, owner);
        for (kind, data) in events {
            q = q.bind(*kind).bind(data.as_str());
        }
        let seqs: Vec<(i64,)> = q.fetch_all(conn).await?;
        return Ok(seqs.len() == count);
    }
    let row: Option<(String, i64)> = bind_finish(
        sqlx::query_as(sqlx::AssertSqlSafe(update)),
        f,
        now,
        id,
        owner,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some((org_id, base)) = row else {
        return Ok(false);
    };
    insert_events(conn, &org_id, id, base, events).await?;
    Ok(true)
}

/// [`finish`]'s parameters `$1`–`$13`.
fn bind_finish<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments>,
    f: &'q Finish,
    now: i64,
    id: &'q str,
    owner: &'q str,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
    q.bind(f.status.as_str())
        .bind(&f.result)
        .bind(&f.error)
        .bind(&f.partial_output)
        .bind(i64::from(f.cached))
        .bind(&f.provider)
        .bind(&f.model)
        .bind(f.input_tokens)
        .bind(f.output_tokens)
        .bind(f.cost_nanos.nanos())
        .bind(now)
        .bind(id)
        .bind(owner)
}

/// `(1, $first, $first+1), (2, …), …`: the rows of `count` events, each
/// its position in the list and its kind and data bound from `$first` on
/// (read as `column1`–`column3`, the names both databases give a `VALUES`
/// list's columns).
fn event_rows(count: usize, first: usize) -> String {
    (0..count)
        .map(|i| format!("({}, ${}, ${})", i + 1, first + 2 * i, first + 2 * i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Insert `events` (kind, JSON data) of task `task_id`, numbered from
/// `base + 1`, in one statement; the caller numbered them on the task row.
async fn insert_events(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    base: i64,
    events: &[(&str, String)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO task_events (task_id, org_id, created_at, seq, kind, data) \
         SELECT $1, $2, $3, $4 + e.column1, e.column2, e.column3 FROM (VALUES {}) AS e",
        event_rows(events.len(), 5)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(task_id)
        .bind(org_id)
        .bind(now_ms())
        .bind(base);
    for (kind, data) in events {
        q = q.bind(*kind).bind(data.as_str());
    }
    q.execute(conn).await?;
    Ok(())
}

/// Cancel a task that has not finished. Returns the task as it was before
/// (its status among the rest), or `None` when it was already terminal (or
/// does not exist).
pub async fn cancel(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Task>, sqlx::Error> {
    let Some(task) = get(conn, org_id, id).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE tasks SET status = 'cancelled', lease_expires_at = NULL, finished_at = $1, \
             updated_at = $1 \
         WHERE org_id = $2 AND id = $3 AND status IN ('pending', 'in_progress')",
    )
    .bind(now)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok((done.rows_affected() == 1).then_some(task))
}

/// Record what a cancelled run had received and spent before it stopped.
pub async fn record_cancelled_run(
    conn: &mut AnyConnection,
    id: &str,
    f: &Finish,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tasks SET partial_output = $1, provider = $2, model = $3, input_tokens = $4, \
             output_tokens = $5, cost_nanos = $6, lease_owner = NULL \
         WHERE id = $7 AND status = 'cancelled'",
    )
    .bind(&f.partial_output)
    .bind(&f.provider)
    .bind(&f.model)
    .bind(f.input_tokens)
    .bind(f.output_tokens)
    .bind(f.cost_nanos.nanos())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Fail tasks claimed too many times (each claim after the first is a
/// rescue from a dead worker): a task that kills its worker must not kill
/// every worker in turn. Returns them as they now are (failed).
pub async fn fail_exhausted(
    conn: &mut AnyConnection,
    max_claims: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE tasks SET status = 'failed', \
             error = '{{\"kind\":\"worker_lost\",\"message\":\"the workers running this task stopped repeatedly\"}}', \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = $1, updated_at = $1 \
         WHERE status = 'in_progress' AND lease_expires_at < $1 AND claims >= $2 \
         RETURNING {COLUMNS}"
    )))
    .bind(now)
    .bind(max_claims)
    .fetch_all(conn)
    .await
}

/// One provider call of a task.
#[derive(Debug, Clone, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// 1-based order within the task.
    pub seq: i64,
    /// Integration name.
    pub provider: String,
    /// Integration id.
    pub integration_id: Option<String>,
    /// Provider plugin.
    pub plugin: String,
    /// Model.
    pub model: String,
    /// How the call ended.
    #[sqlx(try_from = "String")]
    pub outcome: AttemptOutcome,
    /// Typed error kind.
    pub error_kind: Option<String>,
    /// Error message (secrets removed).
    pub error_message: Option<String>,
    /// Milliseconds.
    pub latency_ms: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost of the call.
    #[sqlx(try_from = "i64")]
    pub cost_nanos: Money,
    /// Unix ms.
    pub started_at: i64,
}

/// Record one attempt of task `task_id`.
pub async fn insert_attempt(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    a: &Attempt,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_attempts (id, org_id, task_id, seq, provider, integration_id, plugin, \
             model, outcome, error_kind, error_message, latency_ms, input_tokens, output_tokens, \
             cost_nanos, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(new_id())
    .bind(org_id)
    .bind(task_id)
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
    .bind(a.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attempts of a task, in order.
pub async fn attempts(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE org_id = $1 AND task_id = $2 ORDER BY seq"
    )))
    .bind(org_id)
    .bind(task_id)
    .fetch_all(conn)
    .await
}

/// One event of a task or a workflow, as its watchers see it.
#[derive(Debug, Clone, FromRow)]
pub struct Event {
    /// 1-based, gapless within the task; the SSE event id.
    pub seq: i64,
    /// `status`, `attempt`, `delta`, …
    pub kind: String,
    /// JSON.
    pub data: String,
}

/// Append an event to task `task_id`. Numbering goes through the task row
/// (`event_seq`), whose row lock orders concurrent writers, so numbers are
/// gapless and commit in order. Call inside a transaction. On PostgreSQL
/// the numbering and the insert are one statement (one round trip).
pub async fn append_event(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    kind: &str,
    data: &str,
) -> Result<i64, sqlx::Error> {
    append(conn, org_id, task_id, kind, data)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Append a run's progress events (plan, attempt, delta; kind and JSON
/// data) in order while the task is still in progress; false, and nothing
/// written, once it is terminal: nothing follows a task's terminal event,
/// whoever wrote it first (a cancel that overtook the run's last reports,
/// say). On PostgreSQL one statement, on SQLite two.
pub async fn append_progress_events(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    events: &[(&str, String)],
) -> Result<bool, sqlx::Error> {
    let count = events.len();
    if count == 0 {
        return Ok(true);
    }
    let number = format!(
        "UPDATE tasks SET event_seq = event_seq + {count} \
         WHERE id = $1 AND org_id = $2 AND status = 'in_progress' \
         RETURNING event_seq - {count} AS base"
    );
    if Backend::of(conn) == Backend::Postgres {
        let sql = format!(
            "WITH n AS ({number}) \
             INSERT INTO task_events (task_id, org_id, created_at, seq, kind, data) \
             SELECT $1, $2, $3, n.base + e.column1, e.column2, e.column3 \
             FROM n, (VALUES {}) AS e RETURNING seq",
            event_rows(count, 4)
        );
        let mut q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .bind(org_id)
            .bind(now_ms());
        for (kind, data) in events {
            q = q.bind(*kind).bind(data.as_str());
        }
        return Ok(q.fetch_all(conn).await?.len() == count);
    }
    let base: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(number))
        .bind(task_id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(base) = base else {
        return Ok(false);
    };
    insert_events(conn, org_id, task_id, base, events).await?;
    Ok(true)
}

/// [`append_event`]: the number, or `None` when the task is not there.
async fn append(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    kind: &str,
    data: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let number = "UPDATE tasks SET event_seq = event_seq + 1 WHERE id = $1 AND org_id = $2 RETURNING event_seq";
    if Backend::of(conn) == Backend::Postgres {
        return sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH n AS ({number}) \
             INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
             SELECT $1, event_seq, $2, $3, $4, $5 FROM n RETURNING seq"
        )))
        .bind(task_id)
        .bind(org_id)
        .bind(kind)
        .bind(data)
        .bind(now_ms())
        .fetch_optional(conn)
        .await;
    }
    let seq: Option<i64> = sqlx::query_scalar(number)
        .bind(task_id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(seq) = seq {
        insert_event(conn, org_id, task_id, seq, kind, data).await?;
    }
    Ok(seq)
}

/// Insert event number `seq` of a task, numbered by the caller.
async fn insert_event(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    seq: i64,
    kind: &str,
    data: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_events (task_id, seq, org_id, kind, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(task_id)
    .bind(seq)
    .bind(org_id)
    .bind(kind)
    .bind(data)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Events of a task after number `after`, in order.
pub async fn events_after(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    after: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, kind, data FROM task_events \
         WHERE org_id = $1 AND task_id = $2 AND seq > $3 ORDER BY seq LIMIT 500",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(after)
    .fetch_all(conn)
    .await
}

/// The data of the newest event of `kind` of a task, if it has one.
pub async fn last_event_data(
    conn: &mut AnyConnection,
    org_id: &str,
    task_id: &str,
    kind: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT data FROM task_events \
         WHERE org_id = $1 AND task_id = $2 AND kind = $3 ORDER BY seq DESC LIMIT 1",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(kind)
    .fetch_optional(conn)
    .await
}

/// Store an answer for `key` until `ttl_ms` from now (replacing an older one).
pub async fn cache_response(
    conn: &mut AnyConnection,
    org_id: &str,
    key: &str,
    response: &str,
    ttl_ms: i64,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO response_cache (org_id, key, response, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (org_id, key) DO UPDATE SET response = excluded.response, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
    )
    .bind(org_id)
    .bind(key)
    .bind(response)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    /// SQLite's plan of `sql` (its parameters bound to NULL), one line per step.
    async fn sqlite_plan(db: &Db, sql: &str, params: usize) -> Vec<String> {
        let mut tx = db.platform().await.expect("begin");
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(explain));
        for _ in 0..params {
            query = query.bind(None::<String>);
        }
        let rows = query.fetch_all(&mut *tx).await.expect("explain");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect()
    }

    /// SQLite keeps no statistics, so it can pick an index that reads an
    /// organization's whole history. The questions asked inside write
    /// transactions (which hold the one write lock) must seek instead:
    /// the claim and the unfinished-work limits (tasks, workflows and
    /// batches).
    #[tokio::test]
    async fn sqlite_write_transactions_do_not_read_the_history() {
        let dir = std::env::temp_dir().join(format!("vel-plans-{}", new_id()));
        let url = format!("sqlite://{}?mode=rwc", dir.join("vel.db").display());
        let db = Db::open(&url, None, 1).await.expect("open");
        let statements = [
            (claim_sql(false, Pick::Next(3)), 4),
            (claim_sql(false, Pick::Id("t")), 4),
            (format!("SELECT {}", unfinished("$1", None)), 1),
            (format!("SELECT {}", unfinished("$1", Some("$2"))), 2),
        ];
        for (sql, params) in statements {
            let plan = sqlite_plan(&db, &sql, params).await;
            assert!(!plan.is_empty());
            for step in &plan {
                let scan = step.starts_with("SCAN") && step != "SCAN CONSTANT ROW";
                assert!(
                    !step.contains("_org_time_idx") && !scan,
                    "{step} in the plan of {sql}: {plan:#?}"
                );
            }
        }
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
