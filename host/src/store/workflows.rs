//! Workflows, the runs of their steps and their state versions. A
//! workflow is also its own queue entry: one whose `wake_at` has come is
//! claimed under a lease (as tasks are, see [`super::tasks::claim`]),
//! advanced by the engine and parked again. The engine's writes are
//! guarded by its lease and by the workflow not being finished, so a
//! cancellation or a rescue by another instance always wins.

use sqlx::{AnyConnection, FromRow};

use super::tasks::Event;
use super::{Backend, new_id, now_ms};
use crate::money::Money;
use crate::workflows::status::{StepRunStatus, WorkflowStatus};

/// A stored workflow.
#[derive(Debug, Clone, FromRow)]
pub struct Workflow {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Who started it.
    pub user_id: Option<String>,
    /// Its definition's name.
    pub name: String,
    /// JSON: the checked definition.
    pub definition: String,
    /// JSON: the input.
    pub input: String,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub status: WorkflowStatus,
    /// The step to run, or running.
    pub current_step: Option<String>,
    /// The run of the current step, once started.
    pub current_run: Option<String>,
    /// Attempt of the current step (1-based).
    pub attempt: i64,
    /// Steps started so far.
    pub steps_run: i64,
    /// Latest state version.
    pub state_version: i64,
    /// JSON output, once completed.
    pub output: Option<String>,
    /// JSON error, once failed.
    pub error: Option<String>,
    /// Spent by its tasks.
    #[sqlx(try_from = "i64")]
    pub cost_nanos: Money,
    /// Unix ms when the engine looks at it again.
    pub wake_at: Option<i64>,
    /// Wake-ups so far (a park that missed one is refused).
    pub wakes: i64,
    /// Who holds its lease, while it moves.
    pub lease_owner: Option<String>,
    /// Claims since it last parked.
    pub claims: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms of the terminal state.
    pub finished_at: Option<i64>,
    /// The template it was started from, if any.
    pub template_id: Option<String>,
    /// That template's version.
    pub template_version: Option<i64>,
}

const COLUMNS: &str = "id, org_id, user_id, name, definition, input, status, current_step, \
     current_run, attempt, steps_run, state_version, output, error, cost_nanos, wake_at, wakes, \
     lease_owner, claims, created_at, updated_at, finished_at, template_id, template_version";

/// Statuses of a workflow that has not ended (SQL list).
const UNFINISHED: &str = "('running', 'awaiting_approval')";

/// Fields a caller supplies to create a workflow.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    /// Owning organization.
    pub org_id: String,
    /// Who starts it.
    pub user_id: String,
    /// Its definition's name.
    pub name: String,
    /// JSON definition.
    pub definition: String,
    /// JSON input.
    pub input: String,
    /// The first step.
    pub start: String,
    /// JSON: state version 0.
    pub state: String,
}

/// Insert a running workflow, due now, with its state version 0, unless
/// the user already has `max_unfinished` unfinished tasks and workflows
/// together (a workflow counts once; its steps' tasks do not count). Run
/// it in a transaction from
/// [`Db::tenant_serialised`](super::Db::tenant_serialised) keyed by the
/// user id, as task submissions are. `None` when over the limit.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewWorkflow,
    max_unfinished: u32,
) -> Result<Option<Workflow>, sqlx::Error> {
    let now = now_ms();
    let id = new_id();
    let row: Option<Workflow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO workflows (id, org_id, user_id, name, definition, input, status, \
             current_step, wake_at, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, 'running', $7, $8, $8, $8 \
         WHERE {} < $9 \
         RETURNING {COLUMNS}",
        super::tasks::unfinished("$2", Some("$3"))
    )))
    .bind(&id)
    .bind(&new.org_id)
    .bind(&new.user_id)
    .bind(&new.name)
    .bind(&new.definition)
    .bind(&new.input)
    .bind(&new.start)
    .bind(now)
    .bind(i64::from(max_unfinished))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(w) = &row {
        insert_state(conn, &w.org_id, &w.id, 0, None, &new.state).await?;
    }
    Ok(row)
}

/// One workflow of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Workflow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflows WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Filters of the workflow list.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this definition name.
    pub name: Option<String>,
    /// Created at or after (unix ms).
    pub from: Option<i64>,
    /// Created before (unix ms).
    pub to: Option<i64>,
    /// Only workflows started from this template.
    pub template: Option<String>,
}

/// A page of the organization's workflows, newest first, and the total.
pub async fn page(
    conn: &mut AnyConnection,
    org_id: &str,
    filter: &WorkflowFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Workflow>, i64), sqlx::Error> {
    let condition = "org_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR name = $3) \
         AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) \
         AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5) \
         AND (CAST($6 AS TEXT) IS NULL OR template_id = $6)";
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM workflows WHERE {condition}"
    )))
    .bind(org_id)
    .bind(&filter.status)
    .bind(&filter.name)
    .bind(filter.from)
    .bind(filter.to)
    .bind(&filter.template)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflows WHERE {condition} \
         ORDER BY created_at DESC, id LIMIT $7 OFFSET $8"
    )))
    .bind(org_id)
    .bind(&filter.status)
    .bind(&filter.name)
    .bind(filter.from)
    .bind(filter.to)
    .bind(&filter.template)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Claim the workflow due longest: `wake_at` has come and nobody holds
/// an unexpired lease on it (a dead instance's lease runs out and the
/// workflow is rescued). With it, whether another was due.
pub async fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    lease_ms: i64,
    max_claims: i64,
) -> Result<Option<(Workflow, bool)>, sqlx::Error> {
    let now = now_ms();
    let lock = match Backend::of(conn) {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let due = "wake_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
               AND claims < $4";
    let row: Option<Claimed> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET lease_owner = $1, lease_expires_at = $2, claims = claims + 1, \
             updated_at = $3 \
         WHERE id = (SELECT id FROM workflows WHERE {due} ORDER BY wake_at, id LIMIT 1 {lock}) \
         RETURNING {COLUMNS}, \
             CASE WHEN EXISTS (SELECT 1 FROM workflows AS other \
                               WHERE other.id <> workflows.id AND {due}) \
                  THEN 1 ELSE 0 END AS more_due"
    )))
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .bind(max_claims)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|c| (c.workflow, c.more_due != 0)))
}

/// Claim workflow `id` of organization `org_id` for `owner`, as
/// [`claim`] does, when it is due and nobody holds an unexpired lease on
/// it: the hand-over from its step's task inside the transaction that
/// finished the task.
pub async fn claim_one(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    owner: &str,
    lease_ms: i64,
    max_claims: i64,
) -> Result<Option<Workflow>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET lease_owner = $1, lease_expires_at = $2, claims = claims + 1, \
             updated_at = $3 \
         WHERE org_id = $4 AND id = $5 AND wake_at <= $3 \
           AND (lease_expires_at IS NULL OR lease_expires_at < $3) AND claims < $6 \
         RETURNING {COLUMNS}"
    )))
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .bind(org_id)
    .bind(id)
    .bind(max_claims)
    .fetch_optional(conn)
    .await
}

#[derive(FromRow)]
struct Claimed {
    #[sqlx(flatten)]
    workflow: Workflow,
    more_due: i64,
}

/// Extend the leases `owner` holds on the workflows in `ids`.
pub async fn heartbeat(
    conn: &mut AnyConnection,
    owner: &str,
    ids: &[String],
    lease_ms: i64,
) -> Result<(), sqlx::Error> {
    super::leases::extend(conn, "workflows", "", owner, ids, lease_ms).await?;
    Ok(())
}

/// Make the leases `owner` holds expire now.
pub async fn release_leases(conn: &mut AnyConnection, owner: &str) -> Result<(), sqlx::Error> {
    super::leases::release(conn, "workflows", "", owner).await
}

/// Fail workflows whose engine keeps dying on them (claimed `max_claims`
/// times without parking). Returns them as they now are (failed).
pub async fn fail_exhausted(
    conn: &mut AnyConnection,
    max_claims: i64,
) -> Result<Vec<Workflow>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET status = 'failed', \
             error = '{{\"kind\":\"worker_lost\",\"message\":\"the engine stopped repeatedly while advancing this workflow\"}}', \
             wake_at = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = $1, \
             updated_at = $1 \
         WHERE status IN {UNFINISHED} AND wake_at IS NOT NULL AND lease_expires_at < $1 \
           AND claims >= $2 \
         RETURNING {COLUMNS}"
    )))
    .bind(now)
    .bind(max_claims)
    .fetch_all(conn)
    .await
}

/// Hand a workflow back until `wake_at` (`None`: until something wakes it),
/// unless a wake-up came since the engine read `wakes`. Returns false when
/// one did (the engine looks again) or the lease is no longer `owner`'s.
pub async fn park(
    conn: &mut AnyConnection,
    id: &str,
    owner: &str,
    wakes: i64,
    wake_at: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE workflows SET wake_at = $1, lease_owner = NULL, lease_expires_at = NULL, \
             claims = 0, updated_at = $2 \
         WHERE id = $3 AND lease_owner = $4 AND wakes = $5",
    )
    .bind(wake_at)
    .bind(now_ms())
    .bind(id)
    .bind(owner)
    .bind(wakes)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Wake the workflow task `task_id` belongs to, if any and unfinished
/// (its task ended). Returns whether one was woken.
pub async fn wake_for_task(conn: &mut AnyConnection, task_id: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET wake_at = $1, wakes = wakes + 1 \
         WHERE id = (SELECT workflow_id FROM tasks WHERE id = $2) AND status IN {UNFINISHED}"
    )))
    .bind(now)
    .bind(task_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Where the engine moved a workflow, written with [`advance`].
#[derive(Debug, Clone)]
pub struct Progress {
    /// Running, awaiting approval, or a terminal status.
    pub status: WorkflowStatus,
    /// The step to run or running.
    pub current_step: Option<String>,
    /// Its run, once started.
    pub current_run: Option<String>,
    /// Attempt of the current step.
    pub attempt: i64,
    /// Steps started.
    pub steps_run: i64,
    /// Latest state version.
    pub state_version: i64,
    /// JSON output.
    pub output: Option<String>,
    /// JSON error.
    pub error: Option<String>,
    /// Spent so far.
    pub cost_nanos: Money,
}

impl Progress {
    /// The progress recorded on workflow `wf`.
    pub fn recorded(wf: &Workflow) -> Progress {
        Progress {
            status: wf.status,
            current_step: wf.current_step.clone(),
            current_run: wf.current_run.clone(),
            attempt: wf.attempt,
            steps_run: wf.steps_run,
            state_version: wf.state_version,
            output: wf.output.clone(),
            error: wf.error.clone(),
            cost_nanos: wf.cost_nanos,
        }
    }
}

/// Write `p` on a workflow `owner` holds that has not ended; a terminal
/// status also ends the wait. Returns false (nothing written) when the
/// workflow ended meanwhile (cancelled) or the lease was lost.
pub async fn advance(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    owner: &str,
    p: &Progress,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let finished = p.status.is_finished();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET status = $1, current_step = $2, current_run = $3, attempt = $4, \
             steps_run = $5, state_version = $6, output = $7, error = $8, cost_nanos = $9, \
             finished_at = $10, updated_at = $11, \
             wake_at = CASE WHEN CAST($10 AS BIGINT) IS NULL THEN wake_at ELSE NULL END \
         WHERE org_id = $12 AND id = $13 AND lease_owner = $14 AND status IN {UNFINISHED}"
    )))
    .bind(p.status.as_str())
    .bind(&p.current_step)
    .bind(&p.current_run)
    .bind(p.attempt)
    .bind(p.steps_run)
    .bind(p.state_version)
    .bind(&p.output)
    .bind(&p.error)
    .bind(p.cost_nanos.nanos())
    .bind(finished.then_some(now))
    .bind(now)
    .bind(org_id)
    .bind(id)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// End an unfinished workflow as cancelled. Returns its run in progress
/// (to stop), or `None` when it had already ended (or does not exist).
pub async fn cancel(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let now = now_ms();
    let row: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflows SET status = 'cancelled', wake_at = NULL, finished_at = $1, \
             updated_at = $1, wakes = wakes + 1 \
         WHERE org_id = $2 AND id = $3 AND status IN {UNFINISHED} RETURNING current_run"
    )))
    .bind(now)
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(run,)| run))
}

/// A run of one step.
#[derive(Debug, Clone, FromRow)]
pub struct StepRun {
    /// Text UUID.
    pub id: String,
    /// 1-based order within the workflow.
    pub seq: i64,
    /// The step's id in the definition.
    pub step_id: String,
    /// The step's kind.
    pub kind: String,
    /// 1-based attempt.
    pub attempt: i64,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub status: StepRunStatus,
    /// Its task, for a task step.
    pub task_id: Option<String>,
    /// The state version it read.
    pub state_version: i64,
    /// JSON output.
    pub output: Option<String>,
    /// The branch label a choice took.
    pub branch: Option<String>,
    /// Where the workflow went next.
    pub next_step: Option<String>,
    /// JSON: a choice's verdicts.
    pub evaluations: Option<String>,
    /// JSON: an approval's decision.
    pub decision: Option<String>,
    /// JSON error.
    pub error: Option<String>,
    /// Unix ms: an approval's deadline.
    pub deadline: Option<i64>,
    /// Spent by its task.
    #[sqlx(try_from = "i64")]
    pub cost_nanos: Money,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// For a step inside a parallel step's branch: the parallel step's run.
    pub parent_run: Option<String>,
    /// For a step inside a parallel step's branch: the branch, 0-based.
    pub lane: Option<i64>,
}

impl StepRun {
    /// A new run, running since now, of step `step_id` (of kind `kind`):
    /// number `seq` in the workflow, attempt `attempt`, reading state
    /// version `state_version`; inside a parallel step's branch, `branch`
    /// names the group's run and the branch (0-based).
    pub fn started(
        seq: i64,
        step_id: &str,
        kind: &str,
        attempt: i64,
        state_version: i64,
        branch: Option<(String, i64)>,
    ) -> StepRun {
        let (parent_run, lane) = branch.unzip();
        StepRun {
            id: new_id(),
            seq,
            step_id: step_id.to_string(),
            kind: kind.to_string(),
            attempt,
            status: StepRunStatus::Running,
            task_id: None,
            state_version,
            output: None,
            branch: None,
            next_step: None,
            evaluations: None,
            decision: None,
            error: None,
            deadline: None,
            cost_nanos: Money::ZERO,
            started_at: now_ms(),
            finished_at: None,
            parent_run,
            lane,
        }
    }
}

const RUN_COLUMNS: &str = "id, seq, step_id, kind, attempt, status, task_id, state_version, \
     output, branch, next_step, evaluations, decision, error, deadline, cost_nanos, started_at, \
     finished_at, parent_run, lane";

/// Insert run number `run.seq` of a workflow.
pub async fn insert_run(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    run: &StepRun,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workflow_steps (id, org_id, workflow_id, seq, step_id, kind, attempt, \
             status, task_id, state_version, output, branch, next_step, evaluations, decision, \
             error, deadline, cost_nanos, started_at, finished_at, parent_run, lane) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22)",
    )
    .bind(&run.id)
    .bind(org_id)
    .bind(workflow_id)
    .bind(run.seq)
    .bind(&run.step_id)
    .bind(&run.kind)
    .bind(run.attempt)
    .bind(run.status.as_str())
    .bind(&run.task_id)
    .bind(run.state_version)
    .bind(&run.output)
    .bind(&run.branch)
    .bind(&run.next_step)
    .bind(&run.evaluations)
    .bind(&run.decision)
    .bind(&run.error)
    .bind(run.deadline)
    .bind(run.cost_nanos.nanos())
    .bind(run.started_at)
    .bind(run.finished_at)
    .bind(&run.parent_run)
    .bind(run.lane)
    .execute(conn)
    .await?;
    Ok(())
}

/// Write how run `run.id` ended (status, output, branch, next, decision,
/// error, cost). Returns false (nothing written) when a different decision
/// was recorded meanwhile (an approver answered as its wait timed out).
pub async fn finish_run(
    conn: &mut AnyConnection,
    org_id: &str,
    run: &StepRun,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE workflow_steps SET status = $1, output = $2, branch = $3, next_step = $4, \
             error = $5, cost_nanos = $6, finished_at = $7, decision = $8 \
         WHERE org_id = $9 AND id = $10 AND (decision IS NULL OR decision = $8)",
    )
    .bind(run.status.as_str())
    .bind(&run.output)
    .bind(&run.branch)
    .bind(&run.next_step)
    .bind(&run.error)
    .bind(run.cost_nanos.nanos())
    .bind(run.finished_at)
    .bind(&run.decision)
    .bind(org_id)
    .bind(&run.id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every run of a workflow, in order.
pub async fn runs(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
) -> Result<Vec<StepRun>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM workflow_steps WHERE org_id = $1 AND workflow_id = $2 \
         ORDER BY seq"
    )))
    .bind(org_id)
    .bind(workflow_id)
    .fetch_all(conn)
    .await
}

/// One run.
pub async fn run(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<StepRun>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM workflow_steps WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Record a decision on a waiting approval run and wake its workflow.
/// Returns false (nothing written) when the run no longer waits.
pub async fn decide(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    run_id: &str,
    decision: &str,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE workflow_steps SET decision = $1 \
         WHERE org_id = $2 AND id = $3 AND workflow_id = $4 AND status = 'waiting' \
           AND decision IS NULL",
    )
    .bind(decision)
    .bind(org_id)
    .bind(run_id)
    .bind(workflow_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE workflows SET wake_at = $1, wakes = wakes + 1, updated_at = $1 \
         WHERE org_id = $2 AND id = $3 AND status = 'awaiting_approval'",
    )
    .bind(now)
    .bind(org_id)
    .bind(workflow_id)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Write state version `version` of a workflow.
pub async fn insert_state(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    version: i64,
    step_seq: Option<i64>,
    state: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workflow_states (workflow_id, version, org_id, step_seq, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(workflow_id)
    .bind(version)
    .bind(org_id)
    .bind(step_seq)
    .bind(state)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// State version `version` of a workflow (the latest when `None`), with
/// its number.
pub async fn state(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    version: Option<i64>,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, state FROM workflow_states \
         WHERE org_id = $1 AND workflow_id = $2 AND (CAST($3 AS BIGINT) IS NULL OR version = $3) \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(org_id)
    .bind(workflow_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Run an ended workflow again from step `step`, on state version
/// `version` (already written): it is due now. Returns false (nothing
/// written) unless it had ended.
pub async fn resume_from(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    step: &str,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE workflows SET status = 'running', current_step = $1, current_run = NULL, \
             attempt = 1, state_version = $2, output = NULL, error = NULL, finished_at = NULL, \
             wake_at = $3, wakes = wakes + 1, updated_at = $3 \
         WHERE org_id = $4 AND id = $5 AND status IN ('completed', 'failed', 'cancelled')",
    )
    .bind(step)
    .bind(version)
    .bind(now)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Append an event to workflow `workflow_id`, numbered through the
/// workflow row (`event_seq`), whose row lock orders concurrent writers
/// (the engine, a cancel, a decision), so numbers are gapless and commit in
/// order. Call inside a transaction.
pub async fn append_event(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    kind: &str,
    data: &str,
) -> Result<i64, sqlx::Error> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE workflows SET event_seq = event_seq + 1 WHERE org_id = $1 AND id = $2 \
         RETURNING event_seq",
    )
    .bind(org_id)
    .bind(workflow_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO workflow_events (workflow_id, seq, org_id, kind, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(workflow_id)
    .bind(seq)
    .bind(org_id)
    .bind(kind)
    .bind(data)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(seq)
}

/// Append `events` (kind, JSON data) to workflow `workflow_id` in order,
/// numbered as [`append_event`] numbers one, in two statements whatever
/// their count. Call inside a transaction.
pub async fn append_events(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    events: &[(&str, String)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(
        "UPDATE workflows SET event_seq = event_seq + $1 WHERE org_id = $2 AND id = $3 \
         RETURNING event_seq",
    )
    .bind(count)
    .bind(org_id)
    .bind(workflow_id)
    .fetch_one(&mut *conn)
    .await?;
    let rows = (0..events.len())
        .map(|i| {
            let b = 3 + i * 3;
            format!("($1, $2, $3, ${}, ${}, ${})", b + 1, b + 2, b + 3)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO workflow_events (workflow_id, org_id, created_at, seq, kind, data) \
         VALUES {rows}"
    )))
    .bind(workflow_id)
    .bind(org_id)
    .bind(now_ms());
    let first = last - count + 1;
    for (i, (kind, data)) in events.iter().enumerate() {
        query = query
            .bind(first + i64::try_from(i).unwrap_or(i64::MAX))
            .bind(*kind)
            .bind(data.as_str());
    }
    query.execute(conn).await?;
    Ok(())
}

/// Up to 500 events of a workflow after number `after`, in order.
pub async fn events_after(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    after: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, kind, data FROM workflow_events \
         WHERE org_id = $1 AND workflow_id = $2 AND seq > $3 ORDER BY seq LIMIT 500",
    )
    .bind(org_id)
    .bind(workflow_id)
    .bind(after)
    .fetch_all(conn)
    .await
}
