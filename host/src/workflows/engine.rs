//! The workflow engine: the [`Runner`] for workflows on the durable queue.
//!
//! A claimed workflow is advanced as far as it can go, one move at a time,
//! each move's writes guarded by the lease: start a step (a task step
//! inserts its ordinary task with its run, so a step's task is created
//! exactly once), finish a step whose task ended, evaluate a choice, wait
//! for an approval, end the workflow. When nothing more can happen now it
//! parks: until its task ends (the task's finish wakes it in the same
//! transaction), until a decision, or until a retry's back-off or an
//! approval's deadline.
//!
//! The moves of one claim share a transaction ([`Batch`]) committed when
//! the workflow parks: a task step's end, the choice after it, the next
//! step's start (its task) and the park are one commit, and each move
//! goes on from what the previous one wrote, kept in memory, instead of
//! reading it back. An instance that dies before the commit loses those
//! uncommitted moves together, never a part of one; the lease runs out
//! and any instance makes them again. On SQLite, whose writers take turns,
//! the batch is committed before a condition plugin runs, so no plugin
//! call holds the write lock. A parallel step moves its branches the same
//! way (`engine/parallel.rs`), each of its moves starting from committed
//! data.
//!
//! The worker whose step task ends takes the workflow over in the
//! transaction that records the task's end ([`WorkflowRunner::take_over`]):
//! the task's end, the workflow's next moves, its next task and its park
//! are then a single commit, and no workflow worker is woken. When the
//! workflow is not to be had there (another worker holds it) the task's
//! end only wakes it, as before. When the queue allows it (another worker
//! of the instance is idle, so nothing due waits), the same commit claims
//! the next step's task for that worker, which runs it next: no task
//! worker is woken and no claim transaction of its own is spent.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use vel_runtime::PluginKind;
use vel_runtime::types::{ConditionError, ConditionInput};

mod parallel;

use parallel::{Applied, Plan};

use super::definition::{
    ApprovalStep, ChoiceStep, Definition, ErrorCategory, Parse, Step, TaskStep,
};
use super::status::{StepRunStatus, WorkflowStatus};
use super::template::{lookup, render};
use crate::orchestrator::queue::{Claim, Lease, MAX_CLAIMS, RunFuture, Runner};
use crate::orchestrator::request::ChatMessage;
use crate::orchestrator::signals::{Signal, Signals, WorkKind};
use crate::orchestrator::state::{TaskSource, TaskStatus};
use crate::orchestrator::submit::{self, SubmitError, TaskPriority, Work};
use crate::plugins::Plugins;
use crate::store::tasks::{self, Inserted, NewTask};
use crate::store::workflows::{self, Progress, StepRun, Workflow};
use crate::store::{Backend, Db, Tx, now_ms};

/// Moves one claim makes at most before handing the workflow back (a
/// fairness bound: a long chain of choices does not hold a worker).
const MAX_MOVES_PER_CLAIM: usize = 64;

/// Advances claimed workflows.
#[derive(Debug)]
pub struct WorkflowRunner {
    db: Db,
    plugins: Plugins,
    signals: Signals,
}

impl WorkflowRunner {
    /// A runner writing to `db`, evaluating conditions with `plugins`.
    pub fn new(db: Db, plugins: Plugins, signals: Signals) -> WorkflowRunner {
        WorkflowRunner {
            db,
            plugins,
            signals,
        }
    }
}

impl Runner for WorkflowRunner {
    type Item = Workflow;

    fn kind(&self) -> WorkKind {
        WorkKind::Workflows
    }

    async fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claim<Workflow>>, sqlx::Error> {
        // As a task's claim, the commit does not wait for the WAL flush:
        // lost in a database crash, the workflow is simply due again, and
        // the moves' commit flushes it with everything else.
        let mut tx = self.db.platform_relaxed().await?;
        let claimed = workflows::claim(&mut tx, owner, lease_ms, MAX_CLAIMS).await?;
        tx.commit().await?;
        Ok(claimed.map(|(wf, more)| Claim {
            id: wf.id.clone(),
            more,
            span: tracing::info_span!("workflow", workflow_id = %wf.id, org_id = %wf.org_id, claims = wf.claims),
            item: wf,
        }))
    }

    async fn beat(
        &self,
        owner: &str,
        running: &[String],
        lease_ms: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.db.platform().await?;
        workflows::heartbeat(&mut tx, owner, running, lease_ms).await?;
        let failed = workflows::fail_exhausted(&mut tx, MAX_CLAIMS).await?;
        let mut hooks = 0;
        for wf in &failed {
            let p = Progress::recorded(wf);
            let error = p
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok());
            let data = json!({ "status": "failed", "error": error });
            workflows::append_event(&mut tx, &wf.org_id, &wf.id, "status", &data.to_string())
                .await?;
            hooks += crate::webhooks::events::workflow_moved(&mut tx, wf, &p).await?;
        }
        tx.commit().await?;
        for wf in failed {
            tracing::warn!(workflow_id = %wf.id, "workflow failed: the engine kept stopping on it");
            self.signals.publish(Signal::Events(wf.id));
        }
        if hooks > 0 {
            self.signals.publish_due(WorkKind::Webhooks);
        }
        Ok(Vec::new())
    }

    async fn release(&self, owner: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.platform().await?;
        workflows::release_leases(&mut tx, owner).await?;
        tx.commit().await
    }

    fn run<'a>(&'a self, wf: Workflow, lease: Lease<'a>) -> RunFuture<'a, Workflow> {
        Box::pin(async move {
            self.advance(wf, lease.owner, lease.stop).await?;
            Ok(None)
        })
    }
}

/// What one move did.
enum Moved {
    /// Wrote a change: look again.
    Again,
    /// Nothing to do until `wake_at` (`None`: until woken).
    Wait(Option<i64>),
    /// The workflow ended, or is no longer ours: hand it back.
    Done,
}

/// How a step failed.
struct Failure {
    category: ErrorCategory,
    error: Value,
}

impl Failure {
    fn new(category: ErrorCategory, kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            category,
            error: json!({ "kind": kind, "category": category.as_str(), "message": message.into() }),
        }
    }
}

/// What [`WorkflowRunner::take_over`] leaves its caller.
#[derive(Debug)]
pub struct TakenOver {
    /// The transaction, for the caller to commit, when the workflow was
    /// not to be had (not due, or another worker holds it) or the engine
    /// failed before committing anything (its writes undone, the task's
    /// end kept); `None` when the engine committed it.
    pub tx: Option<Tx>,
    /// The next step's task, claimed in that commit for the caller to run.
    pub next: Option<tasks::Claimed>,
}

impl TakenOver {
    fn left(tx: Tx) -> TakenOver {
        TakenOver {
            tx: Some(tx),
            next: None,
        }
    }
}

/// The workflow as one move sees it.
struct View<'a> {
    wf: &'a Workflow,
    def: &'a Definition,
    state: Value,
    runs: Vec<StepRun>,
    owner: &'a str,
    /// Where the move writes.
    batch: &'a Mutex<Batch>,
}

/// The writes of a claim's moves not committed yet: one transaction,
/// committed when the workflow parks (see the module's documentation),
/// and what to tell this process's workers and watchers once it is.
#[derive(Default)]
struct Batch {
    tx: Option<Tx>,
    /// Events were appended to the workflow's log.
    events: bool,
    /// The step tasks inserted.
    started: Vec<String>,
    /// Claim one of them at the commit, for this owner under a lease of
    /// this many milliseconds (see [`WorkflowRunner::take_over`]).
    claim: Option<(String, i64)>,
    /// The task so claimed.
    claimed: Option<tasks::Claimed>,
    /// Webhook deliveries were queued.
    hooks: bool,
    /// The workflow was parked due at a time: a wake-up for any instance.
    due: bool,
    /// The batch's transaction is a hand-over's (see
    /// [`WorkflowRunner::take_over`]) not committed yet: a rollback goes
    /// back to the savepoint, keeping the task's end.
    savepoint: bool,
    /// What parallel moves started and cancelled.
    applied: Vec<Applied>,
    /// The workflow as the batch's moves left it, which the next move
    /// starts from instead of reading it back; `None` after a parallel
    /// move (its branch runs are not kept here) or a rollback.
    after: Option<After>,
}

/// The workflow after a move, as the move wrote it.
struct After {
    wf: Workflow,
    state: Value,
    runs: Vec<StepRun>,
}

impl Batch {
    /// The batch's transaction, begun on first use. It raises no signals
    /// itself ([`Db::tenant_relayed`]): [`Batch::commit`] announces them.
    async fn tx(&mut self, db: &Db, org_id: &str) -> Result<&mut Tx, sqlx::Error> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => db.tenant_relayed(org_id).await?,
        };
        Ok(self.tx.insert(tx))
    }

    /// Commit what the batch holds (with the claim of a task it started,
    /// when asked to claim one), then signal it.
    async fn commit(&mut self, signals: &Signals, workflow_id: &str) -> Result<(), sqlx::Error> {
        if let Some(mut tx) = self.tx.take() {
            let claimed = match (&self.claim, self.started.first()) {
                (Some((owner, lease_ms)), Some(id)) if self.claimed.is_none() => {
                    tasks::claim_id(&mut tx, id, owner, *lease_ms).await?
                }
                _ => None,
            };
            tx.commit().await?;
            self.savepoint = false;
            if let Some(claimed) = claimed {
                self.started.retain(|id| *id != claimed.task.id);
                signals.announce(Signal::Events(claimed.task.id.clone()));
                self.claimed = Some(claimed);
            }
        }
        if std::mem::take(&mut self.events) {
            signals.announce(Signal::Events(workflow_id.to_string()));
        }
        if !std::mem::take(&mut self.started).is_empty() {
            signals.announce_due(WorkKind::Tasks);
        }
        if std::mem::take(&mut self.hooks) {
            signals.announce_due(WorkKind::Webhooks);
        }
        if std::mem::take(&mut self.due) {
            signals.announce_due(WorkKind::Workflows);
        }
        for applied in self.applied.drain(..) {
            applied.announce(signals);
        }
        Ok(())
    }

    /// Drop every uncommitted move: the workflow is read afresh.
    async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        self.events = false;
        self.started.clear();
        self.hooks = false;
        self.due = false;
        self.applied.clear();
        self.after = None;
        match self.tx.take() {
            Some(mut tx) if self.savepoint => {
                sqlx::query("ROLLBACK TO SAVEPOINT workflow_hand_over")
                    .execute(&mut *tx)
                    .await?;
                self.tx = Some(tx);
                Ok(())
            }
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }

    /// Keep `wf` as the move that wrote `p` (and `run`, and `state` when a
    /// new version) left it.
    fn moved(
        &mut self,
        view: &View<'_>,
        p: &Progress,
        run: Option<&StepRun>,
        state: Option<&Value>,
    ) {
        let mut wf = view.wf.clone();
        wf.status = p.status;
        wf.current_step.clone_from(&p.current_step);
        wf.current_run.clone_from(&p.current_run);
        wf.attempt = p.attempt;
        wf.steps_run = p.steps_run;
        wf.state_version = p.state_version;
        wf.output.clone_from(&p.output);
        wf.error.clone_from(&p.error);
        wf.cost_nanos = p.cost_nanos;
        if p.status.is_finished() {
            wf.wake_at = None;
            wf.finished_at = Some(now_ms());
        }
        let mut runs = view.runs.clone();
        if let Some(run) = run {
            match runs.iter_mut().find(|r| r.id == run.id) {
                Some(stored) => *stored = run.clone(),
                None => runs.push(run.clone()),
            }
        }
        self.after = Some(After {
            wf,
            state: state.cloned().unwrap_or_else(|| view.state.clone()),
            runs,
        });
    }
}

impl View<'_> {
    fn progress(&self) -> Progress {
        Progress {
            status: WorkflowStatus::Running,
            current_step: self.wf.current_step.clone(),
            current_run: self.wf.current_run.clone(),
            attempt: self.wf.attempt,
            steps_run: self.wf.steps_run,
            state_version: self.wf.state_version,
            output: None,
            error: None,
            cost_nanos: self.wf.cost_nanos,
        }
    }

    fn next_seq(&self) -> i64 {
        self.runs.last().map_or(1, |r| r.seq + 1)
    }
}

impl WorkflowRunner {
    /// Advance `wf` until it waits or ends, then hand it back.
    async fn advance(
        &self,
        wf: Workflow,
        owner: &str,
        stop: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        // Dropped on an error: whatever it holds is rolled back.
        let batch = Mutex::new(Batch::default());
        self.advance_in(wf, owner, stop, &batch).await
    }

    /// Take over workflow `workflow_id` of organization `org_id` in `tx`,
    /// the transaction that finished its step's task and woke it: claim it
    /// there for `owner` (a lease of `lease_ms`) and make its moves, so the
    /// task's end, the workflow's next moves, its next task's start and its
    /// park are one commit and no other worker needs waking. With
    /// `task_lease_ms`, that commit also claims the next step's task for
    /// `owner` under a lease of that many milliseconds.
    pub async fn take_over(
        &self,
        mut tx: Tx,
        org_id: &str,
        workflow_id: &str,
        owner: &str,
        lease_ms: i64,
        task_lease_ms: Option<i64>,
    ) -> Result<TakenOver, sqlx::Error> {
        sqlx::query("SAVEPOINT workflow_hand_over")
            .execute(&mut *tx)
            .await?;
        let claimed =
            workflows::claim_one(&mut tx, org_id, workflow_id, owner, lease_ms, MAX_CLAIMS).await?;
        let Some(wf) = claimed else {
            return Ok(TakenOver::left(tx));
        };
        let span = tracing::info_span!("workflow", workflow_id = %wf.id, org_id = %wf.org_id, claims = wf.claims, hand_over = true);
        let batch = Mutex::new(Batch {
            tx: Some(tx),
            savepoint: true,
            claim: task_lease_ms.map(|ms| (owner.to_string(), ms)),
            ..Batch::default()
        });
        let stop = CancellationToken::new();
        let advanced =
            tracing::Instrument::instrument(self.advance_in(wf, owner, &stop, &batch), span).await;
        let mut batch = batch.into_inner();
        match advanced {
            // What is left uncommitted (the task's end, after a rollback
            // to the savepoint) is the caller's to commit.
            Ok(()) => Ok(TakenOver {
                tx: batch.tx,
                next: batch.claimed,
            }),
            Err(e) if batch.savepoint => {
                let Some(mut tx) = batch.tx.take() else {
                    return Err(e);
                };
                tracing::warn!(error = %e, workflow_id, "taking over the workflow failed; it is woken instead");
                sqlx::query("ROLLBACK TO SAVEPOINT workflow_hand_over")
                    .execute(&mut *tx)
                    .await?;
                Ok(TakenOver::left(tx))
            }
            // The task's end is committed; the workflow is rescued once
            // the lease runs out.
            Err(e) => {
                tracing::warn!(error = %e, workflow_id, "the workflow's moves failed after its task's end was committed");
                Ok(TakenOver {
                    tx: None,
                    next: batch.claimed,
                })
            }
        }
    }

    /// [`Self::advance`] in `batch`.
    async fn advance_in(
        &self,
        mut wf: Workflow,
        owner: &str,
        stop: &CancellationToken,
        batch: &Mutex<Batch>,
    ) -> Result<(), sqlx::Error> {
        let def: Definition = match serde_json::from_str(&wf.definition) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "stored workflow definition unreadable");
                let message = format!("stored definition unreadable: {e}");
                return self.end_unreadable(&wf, owner, &message, batch).await;
            }
        };
        let mut moves = 0;
        loop {
            let moved = if stop.is_cancelled() || moves >= MAX_MOVES_PER_CLAIM {
                // Shutting down, or fair to others: due again now.
                Moved::Wait(Some(now_ms()))
            } else {
                moves += 1;
                self.step(&wf, &def, owner, batch).await?
            };
            let mut b = batch.lock().await;
            let park = match moved {
                Moved::Again => None,
                Moved::Wait(wake_at) => Some((wake_at, stop.is_cancelled())),
                Moved::Done => Some((None, false)),
            };
            if let Some((wake_at, stopping)) = park {
                // The park is written with the moves before it.
                let tx = b.tx(&self.db, &wf.org_id).await?;
                let parked = workflows::park(tx, &wf.id, owner, wf.wakes, wake_at).await?;
                b.due |= parked && wake_at.is_some();
                b.commit(&self.signals, &wf.id).await?;
                if parked || stopping {
                    return Ok(());
                }
                // Woken meanwhile (or the lease is gone): look again.
                b.after = None;
            }
            match b.after.as_ref() {
                Some(after) => wf = after.wf.clone(),
                None => {
                    let fresh = {
                        let tx = b.tx(&self.db, &wf.org_id).await?;
                        workflows::get(tx, &wf.org_id, &wf.id).await?
                    };
                    match fresh {
                        // Only while the lease is still ours.
                        Some(fresh) if fresh.lease_owner.as_deref() == Some(owner) => wf = fresh,
                        _ => return b.rollback().await,
                    }
                }
            }
        }
    }

    /// Make one move.
    async fn step(
        &self,
        wf: &Workflow,
        def: &Definition,
        owner: &str,
        batch: &Mutex<Batch>,
    ) -> Result<Moved, sqlx::Error> {
        if wf.status.is_finished() {
            return Ok(Moved::Done);
        }
        let parallel = wf
            .current_step
            .as_ref()
            .and_then(|id| def.steps.get(id))
            .is_some_and(|s| matches!(s, Step::Parallel(_)));
        let (state, runs, task) = {
            let mut b = batch.lock().await;
            if parallel {
                // A group's move reads its branches' tasks on other
                // connections: it starts from committed data.
                b.commit(&self.signals, &wf.id).await?;
                b.after = None;
            }
            let kept = b.after.take();
            self.read(&mut b, wf, kept, parallel).await?
        };
        let view = View {
            wf,
            def,
            state,
            runs,
            owner,
            batch,
        };
        let Some(step_id) = wf.current_step.clone() else {
            return self
                .end_failed(
                    &view,
                    json!({"kind": "no_step", "message": "the workflow has no current step"}),
                )
                .await;
        };
        let Some(step) = def.steps.get(&step_id) else {
            return self
                .end_failed(
                    &view,
                    json!({"kind": "unknown_step", "message": format!("no step `{step_id}`")}),
                )
                .await;
        };
        // The current run is the last top-level run; a parallel step's
        // branch runs come after it.
        let current = view
            .runs
            .iter()
            .rev()
            .find(|r| Some(&r.id) == wf.current_run.as_ref())
            .cloned();
        let moved = match current {
            None => self.start(&view, &step_id, step).await,
            Some(run) => self.follow(&view, step, run, task).await,
        };
        if parallel {
            batch.lock().await.after = None;
        }
        moved
    }

    /// What a move starts from: `wf`'s state version and runs (`kept` when
    /// the batch's last move left them) and its current run's task. Read on
    /// the batch's transaction when it has one (it sees the batch's
    /// writes); on PostgreSQL the reads begin it, except for a `parallel`
    /// step's move (it reads its branches' tasks on a connection of its
    /// own, and a worker holds one connection at a time); else they take a
    /// read transaction of their own, which on SQLite does not wait for
    /// writers.
    async fn read(
        &self,
        b: &mut Batch,
        wf: &Workflow,
        kept: Option<After>,
        parallel: bool,
    ) -> Result<(Value, Vec<StepRun>, Option<tasks::Task>), sqlx::Error> {
        let current_task = |runs: &[StepRun]| {
            runs.iter()
                .rev()
                .find(|r| Some(&r.id) == wf.current_run.as_ref())
                .and_then(|r| r.task_id.clone())
        };
        let kept = match kept {
            // Nothing to read.
            Some(after) if current_task(&after.runs).is_none() => {
                return Ok((after.state, after.runs, None));
            }
            kept => kept,
        };
        let mut own: Option<Tx> = None;
        let conn: &mut sqlx::AnyConnection =
            if b.tx.is_some() || (self.db.backend() == Backend::Postgres && !parallel) {
                b.tx(&self.db, &wf.org_id).await?
            } else {
                own.insert(self.db.tenant_read(&wf.org_id).await?)
            };
        let (state, runs) = match kept {
            Some(after) => (after.state, after.runs),
            None => {
                let state =
                    workflows::state(conn, &wf.org_id, &wf.id, Some(wf.state_version)).await?;
                let runs = workflows::runs(conn, &wf.org_id, &wf.id).await?;
                let state = state
                    .and_then(|(_, s)| serde_json::from_str::<Value>(&s).ok())
                    .unwrap_or_else(|| json!({}));
                (state, runs)
            }
        };
        let task = match current_task(&runs) {
            Some(task_id) => tasks::get(conn, &wf.org_id, &task_id).await?,
            None => None,
        };
        if let Some(tx) = own {
            tx.commit().await?;
        }
        Ok((state, runs, task))
    }

    /// Start `step`: the first move of each step run.
    async fn start(
        &self,
        view: &View<'_>,
        step_id: &str,
        step: &Step,
    ) -> Result<Moved, sqlx::Error> {
        let wf = view.wf;
        if wf.steps_run >= i64::from(view.def.max_steps) {
            let error = json!({
                "kind": "step_limit",
                "category": "terminal",
                "message": format!("the workflow started {} steps, its max_steps", view.def.max_steps),
            });
            return self.end_failed(view, error).await;
        }
        let mut run = StepRun::started(
            view.next_seq(),
            step_id,
            step.kind(),
            wf.attempt,
            wf.state_version,
            None,
        );
        match step {
            Step::Task(t) => self.start_task(view, t, run).await,
            Step::Choice(c) => {
                if self.db.backend() == Backend::Sqlite {
                    // No plugin call holds SQLite's write lock.
                    view.batch
                        .lock()
                        .await
                        .commit(&self.signals, &wf.id)
                        .await?;
                }
                let (decided, evaluations) = self.evaluate(&wf.org_id, &view.state, c).await;
                run.evaluations = Some(evaluations.to_string());
                match decided {
                    Ok((next, branch)) => {
                        run.branch = branch.clone();
                        let record = json!({ "branch": branch, "next": next });
                        self.complete(view, run, record, Some(next)).await
                    }
                    Err(failure) => self.fail(view, step, run, failure).await,
                }
            }
            Step::Approval(a) => self.start_approval(view, a, run).await,
            Step::Succeed(s) => {
                let output = match &s.output {
                    Some(t) => Value::String(render(t, &view.state)),
                    None => view.state["last"]["output"].clone(),
                };
                run.status = StepRunStatus::Completed;
                run.output = Some(output.to_string());
                run.finished_at = Some(now_ms());
                let mut p = view.progress();
                p.status = WorkflowStatus::Completed;
                p.current_run = None;
                p.steps_run += 1;
                p.output = Some(output.to_string());
                self.write(view, Some(&run), None, p).await
            }
            Step::Fail(f) => {
                let error = json!({
                    "kind": f.error.clone().unwrap_or_else(|| "failed".into()),
                    "category": "terminal",
                    "message": f.message.as_deref().map(|m| render(m, &view.state)),
                    "step": step_id,
                });
                run.status = StepRunStatus::Failed;
                run.error = Some(error.to_string());
                run.finished_at = Some(now_ms());
                let mut p = view.progress();
                p.status = WorkflowStatus::Failed;
                p.current_run = None;
                p.steps_run += 1;
                p.error = Some(error.to_string());
                self.write(view, Some(&run), None, p).await
            }
            Step::Parallel(p) => {
                run.status = StepRunStatus::Running;
                self.group_move(view, p, run).await
            }
        }
    }

    /// Start a task step: its task is inserted with the run and the
    /// workflow's progress; the workflow then waits for the task (parked
    /// in the same commit, before any worker can see the task).
    async fn start_task(
        &self,
        view: &View<'_>,
        t: &TaskStep,
        mut run: StepRun,
    ) -> Result<Moved, sqlx::Error> {
        let wf = view.wf;
        let new = match self
            .new_task(wf, &run.step_id, t, &view.state, view.batch)
            .await?
        {
            Ok(new) => new,
            Err(failure) => {
                let step = &view.def.steps[&run.step_id];
                return self.fail(view, step, run, failure).await;
            }
        };
        let mut b = view.batch.lock().await;
        let tx = b.tx(&self.db, &wf.org_id).await?;
        let task = match tasks::insert(tx, &new, u32::MAX).await? {
            Inserted::Created(task) => task,
            Inserted::Existing(_) | Inserted::TooManyUnfinished => {
                b.rollback().await?;
                return Err(sqlx::Error::RowNotFound);
            }
        };
        run.task_id = Some(task.id.clone());
        workflows::insert_run(tx, &wf.org_id, &wf.id, &run).await?;
        let mut p = view.progress();
        p.current_run = Some(run.id.clone());
        p.steps_run += 1;
        if !workflows::advance(tx, &wf.org_id, &wf.id, view.owner, &p).await? {
            b.rollback().await?;
            return Ok(Moved::Done);
        }
        append_events(tx, wf, events_of(view, Some(&run), &p)).await?;
        b.events = true;
        b.started.push(task.id.clone());
        b.moved(view, &p, Some(&run), None);
        tracing::info!(step = %run.step_id, task_id = %task.id, "workflow step started its task");
        Ok(Moved::Wait(None))
    }

    /// The task of task step `step_id` (`t`), its templates rendered from
    /// `state`; or why it cannot run (a bad agent).
    async fn new_task(
        &self,
        wf: &Workflow,
        step_id: &str,
        t: &TaskStep,
        state: &Value,
        batch: &Mutex<Batch>,
    ) -> Result<Result<NewTask, Failure>, sqlx::Error> {
        let messages = match (&t.prompt, &t.messages) {
            (Some(p), _) => vec![ChatMessage {
                role: "user".into(),
                content: render(p, state),
                ..ChatMessage::default()
            }],
            (None, Some(list)) => list
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: render(&m.content, state),
                    ..ChatMessage::default()
                })
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut metadata = match &t.metadata {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        metadata.insert("workflow_id".into(), json!(wf.id));
        metadata.insert("step".into(), json!(step_id));
        let work = Work {
            task_type: t.task_type.clone().unwrap_or_else(|| "general".into()),
            messages,
            sampling: t.sampling(),
            agent_id: t.agent_id.clone(),
            metadata: Value::Object(metadata),
        };
        // An agent is read on the batch's transaction when it has one (a
        // worker holds one connection at a time).
        let prepared = match batch.lock().await.tx.as_mut() {
            Some(tx) if work.agent_id.is_some() => submit::prepare_on(tx, &wf.org_id, work).await,
            _ => submit::prepare(&self.db, &wf.org_id, work).await,
        };
        let request = match prepared {
            Ok(r) => r,
            Err(SubmitError::Storage(e)) => return Err(e),
            Err(e) => {
                return Ok(Err(Failure::new(
                    ErrorCategory::Terminal,
                    "invalid_request",
                    e.to_string(),
                )));
            }
        };
        Ok(Ok(NewTask {
            org_id: wf.org_id.clone(),
            user_id: wf.user_id.clone(),
            agent_id: request.agent_id.clone(),
            source: TaskSource::Api,
            description: format!("{} / {}", wf.name, step_id),
            task_type: request.task_type.clone(),
            priority: TaskPriority::Medium.rank(),
            request: request.to_json(),
            stream: false,
            use_cache: false,
            idempotency_key: None,
            request_hash: request.hash(&wf.org_id),
            workflow_id: Some(wf.id.clone()),
            api_key_id: None,
        }))
    }

    /// Start an approval: the workflow waits for a decision or the deadline.
    async fn start_approval(
        &self,
        view: &View<'_>,
        a: &ApprovalStep,
        mut run: StepRun,
    ) -> Result<Moved, sqlx::Error> {
        run.status = StepRunStatus::Waiting;
        run.deadline = a
            .timeout()
            .map(|d| run.started_at + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
        if let Some(m) = &a.message {
            run.output = Some(
                json!({ "message": render(m, &view.state), "role": a.role().as_str() }).to_string(),
            );
        }
        let mut p = view.progress();
        p.status = WorkflowStatus::AwaitingApproval;
        p.current_run = Some(run.id.clone());
        p.steps_run += 1;
        let mut b = view.batch.lock().await;
        let tx = b.tx(&self.db, &view.wf.org_id).await?;
        workflows::insert_run(tx, &view.wf.org_id, &view.wf.id, &run).await?;
        if !workflows::advance(tx, &view.wf.org_id, &view.wf.id, view.owner, &p).await? {
            b.rollback().await?;
            return Ok(Moved::Done);
        }
        let hooks = crate::webhooks::events::workflow_moved(tx, view.wf, &p).await?;
        append_events(tx, view.wf, events_of(view, Some(&run), &p)).await?;
        b.events = true;
        b.hooks |= hooks > 0;
        b.moved(view, &p, Some(&run), None);
        tracing::info!(step = %run.step_id, "workflow awaits approval");
        Ok(Moved::Wait(run.deadline))
    }

    /// Follow a step run in progress: its task, or its approval.
    async fn follow(
        &self,
        view: &View<'_>,
        step: &Step,
        mut run: StepRun,
        task: Option<tasks::Task>,
    ) -> Result<Moved, sqlx::Error> {
        match step {
            Step::Task(t) => {
                let Some(task) = task else {
                    let failure = Failure::new(
                        ErrorCategory::Retryable,
                        "task_missing",
                        "the step's task is gone",
                    );
                    return self.fail(view, step, run, failure).await;
                };
                run.cost_nanos = task.cost_nanos;
                match task_result(t, &task) {
                    None => Ok(Moved::Wait(None)),
                    Some(Ok(output)) => {
                        let record = json!({ "output": output, "task_id": task.id });
                        run.output = Some(output.to_string());
                        let next = t.next.clone();
                        self.complete(view, run, record, next).await
                    }
                    Some(Err(failure)) => self.fail(view, step, run, failure).await,
                }
            }
            Step::Approval(a) => {
                let decision: Option<Value> = run
                    .decision
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok());
                match decision {
                    Some(d) if d["approved"] == json!(true) => {
                        let record = json!({ "decision": d });
                        let next = a.next.clone();
                        self.complete(view, run, record, next).await
                    }
                    Some(d) => {
                        let mut failure = Failure::new(
                            ErrorCategory::Rejected,
                            "rejected",
                            "the approver rejected it",
                        );
                        failure.error["decision"] = d;
                        self.fail(view, step, run, failure).await
                    }
                    None => match run.deadline {
                        Some(deadline) if deadline <= now_ms() => {
                            let timeout = json!({ "timed_out": true, "at": crate::store::to_rfc3339(deadline) });
                            run.decision = Some(timeout.to_string());
                            if let Some(next) = &a.on_timeout {
                                let record = json!({ "decision": timeout });
                                return self.complete(view, run, record, Some(next.clone())).await;
                            }
                            let failure = Failure::new(
                                ErrorCategory::Rejected,
                                "approval_timeout",
                                "nobody decided before the timeout",
                            );
                            self.fail(view, step, run, failure).await
                        }
                        deadline => Ok(Moved::Wait(deadline)),
                    },
                }
            }
            Step::Parallel(p) => self.group_move(view, p, run).await,
            // Other kinds finish in the move that starts them.
            _ => {
                let failure = Failure::new(
                    ErrorCategory::Retryable,
                    "interrupted",
                    "the step was interrupted",
                );
                self.fail(view, step, run, failure).await
            }
        }
    }

    /// Finish `run` as completed: record `record` under the step in a new
    /// state version and go to `next` (none: the workflow completes with
    /// the step's output).
    async fn complete(
        &self,
        view: &View<'_>,
        run: StepRun,
        record: Value,
        next: Option<String>,
    ) -> Result<Moved, sqlx::Error> {
        self.complete_with(view, Plan::default(), run, record, next)
            .await
    }

    /// [`Self::complete`], with a parallel group's writes in the same
    /// transaction.
    async fn complete_with(
        &self,
        view: &View<'_>,
        plan: Plan,
        mut run: StepRun,
        record: Value,
        next: Option<String>,
    ) -> Result<Moved, sqlx::Error> {
        run.status = StepRunStatus::Completed;
        run.next_step = next.clone();
        run.finished_at = Some(now_ms());
        let state = next_state(&view.state, &run.step_id, &record);
        let mut p = view.progress();
        p.cost_nanos = p.cost_nanos.saturating_add(run.cost_nanos);
        p.current_run = None;
        p.attempt = 1;
        p.state_version += 1;
        if !view.runs.iter().any(|r| r.id == run.id) {
            p.steps_run += 1;
        }
        match next {
            Some(next) => p.current_step = Some(next),
            None => {
                p.status = WorkflowStatus::Completed;
                p.output = Some(state["last"]["output"].to_string());
            }
        }
        self.write_with(view, plan, Some(&run), Some(&state), p)
            .await
    }

    /// `run` failed: retry it after its back-off, go to a matching
    /// `catch`, or fail the workflow. A run that was never written (it
    /// failed in the move that started it) counts as a step started, as in
    /// [`Self::complete`].
    async fn fail(
        &self,
        view: &View<'_>,
        step: &Step,
        run: StepRun,
        failure: Failure,
    ) -> Result<Moved, sqlx::Error> {
        self.fail_with(view, Plan::default(), step, run, failure)
            .await
    }

    /// [`Self::fail`], with a parallel group's writes in the same
    /// transaction.
    async fn fail_with(
        &self,
        view: &View<'_>,
        plan: Plan,
        step: &Step,
        mut run: StepRun,
        failure: Failure,
    ) -> Result<Moved, sqlx::Error> {
        run.status = StepRunStatus::Failed;
        run.error = Some(failure.error.to_string());
        run.finished_at = Some(now_ms());
        let mut p = view.progress();
        p.cost_nanos = p.cost_nanos.saturating_add(run.cost_nanos);
        p.current_run = None;
        if !view.runs.iter().any(|r| r.id == run.id) {
            p.steps_run += 1;
        }
        let attempt = u32::try_from(view.wf.attempt).unwrap_or(u32::MAX);
        if let Some(retry) = step.retry()
            && retry.covers(failure.category)
            && attempt < retry.max_attempts
        {
            p.attempt += 1;
            let delay = retry.delay(attempt + 1);
            let wake_at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
            tracing::info!(step = %run.step_id, attempt, category = failure.category.as_str(), "workflow step failed; retrying");
            return match self.write_with(view, plan, Some(&run), None, p).await? {
                Moved::Again => Ok(Moved::Wait(Some(wake_at))),
                other => Ok(other),
            };
        }
        let record = json!({ "error": failure.error });
        let state = next_state(&view.state, &run.step_id, &record);
        p.state_version += 1;
        p.attempt = 1;
        if let Some(c) = step
            .catch()
            .iter()
            .find(|c| c.errors.iter().any(|e| e.covers(failure.category)))
        {
            run.next_step = Some(c.next.clone());
            p.current_step = Some(c.next.clone());
            tracing::info!(step = %run.step_id, next = %c.next, category = failure.category.as_str(), "workflow step failed; caught");
        } else {
            let mut error = failure.error;
            error["step"] = json!(run.step_id);
            p.status = WorkflowStatus::Failed;
            p.error = Some(error.to_string());
            tracing::info!(step = %run.step_id, category = failure.category.as_str(), "workflow failed");
        }
        self.write_with(view, plan, Some(&run), Some(&state), p)
            .await
    }

    /// End the workflow as failed with `error` without a step run.
    async fn end_failed(&self, view: &View<'_>, error: Value) -> Result<Moved, sqlx::Error> {
        let mut p = view.progress();
        p.status = WorkflowStatus::Failed;
        p.current_run = None;
        p.error = Some(error.to_string());
        self.write(view, None, None, p).await
    }

    /// Write a move: the run (inserted when it is not stored yet, else
    /// updated), a new state version, and the workflow's progress, in one
    /// transaction.
    async fn write(
        &self,
        view: &View<'_>,
        run: Option<&StepRun>,
        state: Option<&Value>,
        p: Progress,
    ) -> Result<Moved, sqlx::Error> {
        self.write_with(view, Plan::default(), run, state, p).await
    }

    /// [`Self::write`], with a parallel group's writes (branch runs and
    /// their tasks, cancellations) in the same transaction: after the
    /// run when it is new, before it when it ends.
    async fn write_with(
        &self,
        view: &View<'_>,
        plan: Plan,
        run: Option<&StepRun>,
        state: Option<&Value>,
        p: Progress,
    ) -> Result<Moved, sqlx::Error> {
        let wf = view.wf;
        let mut b = view.batch.lock().await;
        let tx = b.tx(&self.db, &wf.org_id).await?;
        let stored = run.is_some_and(|run| view.runs.iter().any(|r| r.id == run.id));
        let mut events = Vec::new();
        if let Some(run) = run.filter(|_| !stored) {
            workflows::insert_run(tx, &wf.org_id, &wf.id, run).await?;
            events.extend(run_events(view, run));
        }
        let mut applied = plan.apply(tx, view, &self.signals).await?;
        events.append(&mut applied.events);
        if let Some(run) = run.filter(|_| stored) {
            if !workflows::finish_run(tx, &wf.org_id, run).await? {
                // A decision arrived meanwhile: look again.
                b.rollback().await?;
                return Ok(Moved::Again);
            }
            events.extend(run_events(view, run));
        }
        if let Some(state) = state {
            workflows::insert_state(
                tx,
                &wf.org_id,
                &wf.id,
                p.state_version,
                run.map(|r| r.seq),
                &state.to_string(),
            )
            .await?;
        }
        let ended = p.status.is_finished();
        if !workflows::advance(tx, &wf.org_id, &wf.id, view.owner, &p).await? {
            b.rollback().await?;
            return Ok(Moved::Done);
        }
        let hooks = crate::webhooks::events::workflow_moved(tx, wf, &p).await?;
        events.extend(status_event(view, &p));
        append_events(tx, wf, events).await?;
        b.events = true;
        b.hooks |= hooks > 0;
        b.applied.push(applied);
        b.moved(view, &p, run, state);
        if ended {
            tracing::info!(status = p.status.as_str(), "workflow ended");
            return Ok(Moved::Done);
        }
        Ok(Moved::Again)
    }

    /// End a workflow whose stored definition cannot be read.
    async fn end_unreadable(
        &self,
        wf: &Workflow,
        owner: &str,
        message: &str,
        batch: &Mutex<Batch>,
    ) -> Result<(), sqlx::Error> {
        let mut p = Progress {
            status: WorkflowStatus::Failed,
            current_step: wf.current_step.clone(),
            current_run: None,
            attempt: wf.attempt,
            steps_run: wf.steps_run,
            state_version: wf.state_version,
            output: None,
            error: None,
            cost_nanos: wf.cost_nanos,
        };
        p.error = Some(json!({ "kind": "invalid_definition", "message": message }).to_string());
        let mut b = batch.lock().await;
        let tx = b.tx(&self.db, &wf.org_id).await?;
        let mut hooks = 0;
        if workflows::advance(tx, &wf.org_id, &wf.id, owner, &p).await? {
            hooks = crate::webhooks::events::workflow_moved(tx, wf, &p).await?;
            let data = json!({ "status": "failed", "error": p.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()) });
            workflows::append_event(tx, &wf.org_id, &wf.id, "status", &data.to_string()).await?;
        }
        workflows::park(tx, &wf.id, owner, wf.wakes, None).await?;
        b.hooks |= hooks > 0;
        b.commit(&self.signals, &wf.id).await
    }

    /// Evaluate a choice's rules in order: the step to go to and the branch
    /// label, or why none; and every verdict, for the record.
    async fn evaluate(
        &self,
        org_id: &str,
        state: &Value,
        c: &ChoiceStep,
    ) -> (Result<(String, Option<String>), Failure>, Value) {
        let output = match &c.input {
            Some(t) => render(t, state),
            None => match lookup("last.output", state) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        };
        let state_text = state.to_string();
        let mut verdicts = Vec::new();
        for (i, rule) in c.rules.iter().enumerate() {
            let Some(deployed) = self.plugins.lookup(org_id, &rule.condition) else {
                let failure = Failure::new(
                    ErrorCategory::ConditionFailed,
                    "condition_failed",
                    format!("condition `{}` is not live", rule.condition),
                );
                verdicts.push(json!({ "rule": i, "condition": rule.condition, "error": failure.error["message"] }));
                return (Err(failure), Value::Array(verdicts));
            };
            if deployed.plugin.kind() != PluginKind::Condition {
                let failure = Failure::new(
                    ErrorCategory::ConditionFailed,
                    "condition_failed",
                    format!("`{}` is not a condition plugin", rule.condition),
                );
                verdicts.push(json!({ "rule": i, "condition": rule.condition, "error": failure.error["message"] }));
                return (Err(failure), Value::Array(verdicts));
            }
            let input = ConditionInput {
                output: output.clone(),
                state: state_text.clone(),
                args: rule.args.to_string(),
            };
            let started = Instant::now();
            let span =
                tracing::info_span!("condition_call", condition = %deployed.label(), rule = i);
            let call = tracing::Instrument::instrument(
                self.plugins
                    .runtime()
                    .evaluate(&deployed.plugin, &deployed.limits, &input),
                span,
            )
            .await;
            let elapsed = started.elapsed();
            let guest_error = match &call.result {
                Ok(Err(ConditionError::InvalidArgs(_))) => Some("invalid_args"),
                Ok(Err(ConditionError::Other(_))) => Some("other"),
                _ => None,
            };
            self.plugins
                .stats()
                .record(&deployed.stats_key, &call, guest_error);
            let label = deployed.label();
            let why = match call.result {
                Ok(Ok(outcome)) => {
                    verdicts.push(json!({
                        "rule": i,
                        "condition": label,
                        "matched": outcome.matched,
                        "branch": outcome.branch,
                        "score": outcome.score.filter(|s| s.is_finite()),
                        "explanation": outcome.explanation,
                        "elapsed_us": micros(elapsed),
                    }));
                    if let Some(next) = outcome.branch.as_ref().and_then(|b| rule.branches.get(b)) {
                        return (
                            Ok((next.clone(), outcome.branch.clone())),
                            Value::Array(verdicts),
                        );
                    }
                    if outcome.matched
                        && let Some(next) = &rule.next
                    {
                        return (
                            Ok((next.clone(), outcome.branch.clone())),
                            Value::Array(verdicts),
                        );
                    }
                    continue;
                }
                Ok(Err(ConditionError::InvalidArgs(m))) => format!("invalid arguments: {m}"),
                Ok(Err(ConditionError::Other(m))) => m,
                Err(e) => e.to_string(),
            };
            let failure = Failure::new(
                ErrorCategory::ConditionFailed,
                "condition_failed",
                format!("condition `{label}` failed: {why}"),
            );
            verdicts.push(json!({ "rule": i, "condition": label, "error": failure.error["message"], "elapsed_us": micros(elapsed) }));
            return (Err(failure), Value::Array(verdicts));
        }
        match &c.default {
            Some(next) => (Ok((next.clone(), None)), Value::Array(verdicts)),
            None => (
                Err(Failure::new(
                    ErrorCategory::ConditionFailed,
                    "no_branch",
                    "no rule decided and the step has no default",
                )),
                Value::Array(verdicts),
            ),
        }
    }
}

/// The events a move writes: what happened to `run`, and to the workflow.
fn events_of(view: &View<'_>, run: Option<&StepRun>, p: &Progress) -> Vec<(&'static str, Value)> {
    let mut out = run.map(|run| run_events(view, run)).unwrap_or_default();
    out.extend(status_event(view, p));
    out
}

/// The workflow's `status` event, when the move changes its status.
fn status_event(view: &View<'_>, p: &Progress) -> Option<(&'static str, Value)> {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    (p.status != view.wf.status).then(|| {
        (
            "status",
            json!({ "status": p.status, "output": parse(&p.output), "error": parse(&p.error) }),
        )
    })
}

/// The events of what a move did to `run` (started when it is not stored
/// yet, and how it ended); a branch step's events name its branch.
fn run_events(view: &View<'_>, run: &StepRun) -> Vec<(&'static str, Value)> {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    let mut out = Vec::new();
    if !view.runs.iter().any(|r| r.id == run.id) {
        let mut started = json!({ "seq": run.seq, "step": run.step_id, "kind": run.kind,
                "attempt": run.attempt, "task_id": run.task_id });
        if let Some(lane) = run.lane {
            started["branch_index"] = json!(lane);
        }
        out.push(("step_started", started));
    }
    match run.status {
        StepRunStatus::Completed => {
            if run.kind == "choice" {
                out.push((
                    "branch_taken",
                    json!({ "step": run.step_id, "branch": run.branch, "next": run.next_step }),
                ));
            }
            out.push((
                "step_completed",
                json!({ "seq": run.seq, "step": run.step_id, "next": run.next_step,
                        "output": parse(&run.output) }),
            ));
        }
        StepRunStatus::Failed => out.push((
            "step_failed",
            json!({ "seq": run.seq, "step": run.step_id, "attempt": run.attempt,
                    "error": parse(&run.error), "next": run.next_step }),
        )),
        StepRunStatus::Waiting => out.push((
            "awaiting_approval",
            json!({ "seq": run.seq, "step": run.step_id,
                    "deadline": run.deadline.map(crate::store::to_rfc3339),
                    "message": parse(&run.output).and_then(|o| o.get("message").cloned()) }),
        )),
        StepRunStatus::Cancelled => out.push((
            "step_cancelled",
            json!({ "seq": run.seq, "step": run.step_id }),
        )),
        StepRunStatus::Running => {}
    }
    out
}

/// Append `events` to `wf`'s log inside the move's transaction.
async fn append_events(
    tx: &mut sqlx::AnyConnection,
    wf: &Workflow,
    events: Vec<(&'static str, Value)>,
) -> Result<(), sqlx::Error> {
    let events: Vec<(&str, String)> = events
        .into_iter()
        .map(|(kind, data)| (kind, data.to_string()))
        .collect();
    workflows::append_events(tx, &wf.org_id, &wf.id, &events).await
}

/// What an ended task means for its step `t`: the step's output, or how
/// it failed; `None` while the task runs.
fn task_result(t: &TaskStep, task: &tasks::Task) -> Option<Result<Value, Failure>> {
    match task.status {
        TaskStatus::Pending | TaskStatus::InProgress => None,
        TaskStatus::Completed => {
            let result = parse_text(&task.result).unwrap_or(Value::Null);
            let text = result["text"].as_str().unwrap_or_default().to_string();
            Some(match t.parse {
                Some(Parse::Json) => parse_json_answer(&text).ok_or_else(|| {
                    Failure::new(
                        ErrorCategory::ParseFailed,
                        "parse_failed",
                        "the answer is not a JSON document",
                    )
                }),
                None => Ok(Value::String(text)),
            })
        }
        TaskStatus::Cancelled => Some(Err(Failure::new(
            ErrorCategory::Cancelled,
            "cancelled",
            "the step's task was cancelled",
        ))),
        TaskStatus::Failed => {
            let error = parse_text(&task.error).unwrap_or_else(|| json!({}));
            let kind = error["kind"].as_str().unwrap_or("failed").to_string();
            let message = error["message"].as_str().unwrap_or_default().to_string();
            Some(Err(Failure::new(category_of(&kind), &kind, message)))
        }
    }
}

/// A stored JSON text column, parsed.
fn parse_text(text: &Option<String>) -> Option<Value> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

/// `d` in whole milliseconds, for adding to unix-ms times.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The state after step `step_id` recorded `record`: `steps.<id>` is
/// replaced and `last` names it, when it has an output.
fn next_state(state: &Value, step_id: &str, record: &Value) -> Value {
    let mut state = state.clone();
    if !state.is_object() {
        state = json!({});
    }
    let obj = state.as_object_mut().expect("made an object above");
    let steps = obj
        .entry("steps")
        .or_insert_with(|| Value::Object(Map::new()));
    if !steps.is_object() {
        *steps = Value::Object(Map::new());
    }
    if let Some(steps) = steps.as_object_mut() {
        steps.insert(step_id.to_string(), record.clone());
    }
    if let Some(output) = record.get("output") {
        obj.insert("last".into(), json!({ "step": step_id, "output": output }));
    }
    state
}

/// The JSON document in a model's answer: the whole text, or the body of
/// a fenced code block.
fn parse_json_answer(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    let body = trimmed.strip_prefix("```")?;
    let body = body.split_once('\n').map_or(body, |(_, rest)| rest);
    let body = body.trim_end().strip_suffix("```")?;
    serde_json::from_str(body.trim()).ok()
}

/// The category of a failed task's error kind.
pub fn category_of(kind: &str) -> ErrorCategory {
    match kind {
        "deadline_exceeded" => ErrorCategory::Timeout,
        "invalid_request" | "content_filtered" | "no_candidate" | "router_failed" => {
            ErrorCategory::Terminal
        }
        "budget_exceeded" => ErrorCategory::BudgetExceeded,
        "cancelled" => ErrorCategory::Cancelled,
        _ => ErrorCategory::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_records_each_step() {
        let s0 = json!({ "input": { "x": 1 } });
        let s1 = next_state(&s0, "draft", &json!({ "output": "hello" }));
        assert_eq!(s1["steps"]["draft"]["output"], "hello");
        assert_eq!(s1["last"]["step"], "draft");
        let s2 = next_state(&s1, "check", &json!({ "branch": "ok" }));
        assert_eq!(s2["last"]["step"], "draft", "a choice has no output");
        assert_eq!(s2["input"]["x"], 1);
    }

    #[test]
    fn json_answers_are_found_in_fences() {
        assert_eq!(parse_json_answer(" {\"a\":1} "), Some(json!({"a": 1})));
        assert_eq!(
            parse_json_answer("```json\n{\"a\":2}\n```"),
            Some(json!({"a": 2}))
        );
        assert_eq!(parse_json_answer("not json"), None);
    }

    #[test]
    fn task_errors_have_categories() {
        assert_eq!(category_of("all_attempts_failed"), ErrorCategory::Retryable);
        assert_eq!(category_of("invalid_request"), ErrorCategory::Terminal);
        assert_eq!(category_of("deadline_exceeded"), ErrorCategory::Timeout);
    }
}
