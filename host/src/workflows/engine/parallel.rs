//! Parallel steps: a group of branches, each a chain of steps of its own,
//! run side by side.
//!
//! The group has one run of its own (kind `parallel`), the workflow's
//! current run while the group lasts; every run of a step inside a branch
//! names it (`parent_run`) and its branch (`lane`, 0-based). Each move of
//! the group is one transaction guarded by the lease, like every other
//! move: it finishes the branch steps whose tasks ended and, in the same
//! transaction, starts each such branch's next step (a choice, `succeed`
//! or `fail` is decided on the way; a task step inserts its task with its
//! run, so no branch step's task is created twice); it starts branches
//! not started yet while fewer than `max_concurrency` run; and it ends the
//! group once every branch has ended. In between, the workflow parks until
//! a branch's task ends (the task's finish wakes it) or a branch's retry
//! back-off is over.
//!
//! Inside a branch a step reads the state the group started with plus its
//! own branch's earlier steps (`steps.<id>`; `last` is the branch's last
//! output). `retry` and `catch` work as they do outside; a `succeed` ends
//! the branch as completed (its `output`, by default the branch's last
//! output, is the branch's output) and a `fail` ends the branch as failed,
//! not the workflow.
//!
//! When the group ends, one new state version records every branch step
//! under `steps.<id>` and the group under `steps.<parallel id>`:
//! `{"branches": [{"status", "output", "error"}, …], "output": [<each
//! branch's output>]}`, in the definition's branch order, so
//! `{{steps.<parallel id>.output}}` and `last` read the outputs. A branch
//! is `completed`, `failed`, `cancelled` (stopped by an abort) or
//! `skipped` (not started before an abort). With `on_failure: continue`
//! the group completes whatever its branches did; with `abort` the first
//! failed branch cancels the others' running tasks and the group fails
//! with `branch_failed`, in the failed branch's category, so `catch`
//! routes it.

use serde_json::{Value, json};

use super::{
    Failure, Moved, View, WorkflowRunner, millis, next_state, parse_text, run_events, task_result,
};
use crate::money::Money;
use crate::orchestrator::cancel::cancel_task;
use crate::orchestrator::signals::{Signal, Signals, WorkKind};
use crate::orchestrator::state::TaskStatus;
use crate::store::tasks::{self, Inserted, NewTask};
use crate::store::workflows::{self, StepRun};
use crate::store::{Tx, now_ms};
use crate::workflows::definition::{Branch, ErrorCategory, OnFailure, ParallelStep, Step};
use crate::workflows::status::StepRunStatus;
use crate::workflows::template::render;

/// A group move's writes to branch runs, applied in order inside the
/// move's transaction.
#[derive(Default)]
pub(super) struct Plan {
    ops: Vec<Op>,
}

/// One write of a [`Plan`].
enum Op {
    /// Insert a branch run, its task (inserted first) when it has one.
    Insert(StepRun, Option<Box<NewTask>>),
    /// Write how a stored branch run ended.
    Finish(StepRun),
    /// Cancel a branch's running task.
    Cancel(String),
}

/// What applying a plan did: its events, and what to signal once the
/// transaction commits.
pub(super) struct Applied {
    /// Events of the branch runs, in order.
    pub(super) events: Vec<(&'static str, Value)>,
    started: bool,
    cancelled: Vec<String>,
}

impl Plan {
    /// Apply the writes inside `tx`.
    pub(super) async fn apply(
        self,
        tx: &mut Tx,
        view: &View<'_>,
        signals: &Signals,
    ) -> Result<Applied, sqlx::Error> {
        let wf = view.wf;
        let mut applied = Applied {
            events: Vec::new(),
            started: false,
            cancelled: Vec::new(),
        };
        for op in self.ops {
            match op {
                Op::Insert(mut run, task) => {
                    if let Some(new) = task {
                        match tasks::insert(tx, &new, u32::MAX).await? {
                            Inserted::Created(task) => run.task_id = Some(task.id.clone()),
                            Inserted::Existing(_) | Inserted::TooManyUnfinished => {
                                return Err(sqlx::Error::RowNotFound);
                            }
                        }
                        applied.started = true;
                    }
                    workflows::insert_run(tx, &wf.org_id, &wf.id, &run).await?;
                    applied.events.extend(run_events(view, &run));
                }
                Op::Finish(run) => {
                    workflows::finish_run(tx, &wf.org_id, &run).await?;
                    applied.events.extend(run_events(view, &run));
                }
                Op::Cancel(task_id) => {
                    if cancel_task(tx, signals, &wf.org_id, &task_id)
                        .await?
                        .is_some()
                    {
                        applied.cancelled.push(task_id);
                    }
                }
            }
        }
        Ok(applied)
    }
}

impl Applied {
    /// Tell the workers of the tasks started and cancelled, after the
    /// commit of the relayed transaction that wrote them (a cancellation
    /// reaches other instances with the transaction, [`cancel_task`]).
    pub(super) fn announce(&self, signals: &Signals) {
        if self.started {
            signals.announce_due(WorkKind::Tasks);
        }
        for id in &self.cancelled {
            signals.announce(Signal::Events(id.clone()));
            signals.publish(Signal::Cancelled(id.clone()));
        }
    }
}

/// Where a branch is.
#[derive(Debug, Clone)]
enum LaneStatus {
    /// Not started.
    Waiting,
    /// Its step's task runs.
    Running(Box<StepRun>),
    /// Its step `step` runs again (attempt `attempt`) at `at`.
    Due { step: String, attempt: i64, at: i64 },
    /// Ended: `completed`, `failed`, `cancelled` or `skipped`.
    Ended {
        status: &'static str,
        error: Option<Value>,
    },
}

/// One branch as a move sees it.
struct Lane<'d> {
    branch: &'d Branch,
    /// The group's state plus this branch's steps.
    state: Value,
    /// Its last step's output.
    output: Value,
    status: LaneStatus,
    /// Spent by its steps' tasks.
    cost: Money,
}

impl<'d> Lane<'d> {
    /// Branch `index` of group run `group_id`, from its stored runs.
    fn read(view: &View<'_>, group_id: &str, index: usize, branch: &'d Branch) -> Lane<'d> {
        let mut lane = Lane {
            branch,
            state: view.state.clone(),
            output: Value::Null,
            status: LaneStatus::Waiting,
            cost: Money::ZERO,
        };
        let runs: Vec<&StepRun> = view
            .runs
            .iter()
            .filter(|r| r.parent_run.as_deref() == Some(group_id) && r.lane == lane_of(index))
            .collect();
        for run in &runs {
            lane.absorb(run);
        }
        lane.status = match runs.last() {
            None => LaneStatus::Waiting,
            Some(run) => match (run.status, &run.next_step) {
                (StepRunStatus::Running | StepRunStatus::Waiting, _) => {
                    LaneStatus::Running(Box::new((*run).clone()))
                }
                (StepRunStatus::Cancelled, _) => LaneStatus::Ended {
                    status: "cancelled",
                    error: None,
                },
                (status, Some(next)) => {
                    // Only a retry leaves a branch between two steps.
                    let (attempt, at) = if status == StepRunStatus::Failed && *next == run.step_id {
                        let attempt = run.attempt + 1;
                        let delay = branch
                            .steps
                            .get(next)
                            .and_then(Step::retry)
                            .map(|r| r.delay(u32::try_from(attempt).unwrap_or(u32::MAX)))
                            .unwrap_or_default();
                        let from = run.finished_at.unwrap_or(run.started_at);
                        (attempt, from.saturating_add(millis(delay)))
                    } else {
                        (1, now_ms())
                    };
                    LaneStatus::Due {
                        step: next.clone(),
                        attempt,
                        at,
                    }
                }
                (StepRunStatus::Completed, None) => LaneStatus::Ended {
                    status: "completed",
                    error: None,
                },
                (_, None) => LaneStatus::Ended {
                    status: "failed",
                    error: parse_text(&run.error),
                },
            },
        };
        lane
    }

    /// Take in what `run` recorded (once it ended) and what it spent.
    fn absorb(&mut self, run: &StepRun) {
        if let Some(record) = record_of(run) {
            if let Some(output) = record.get("output") {
                self.output = output.clone();
            }
            self.state = next_state(&self.state, &run.step_id, &record);
        }
        self.cost = self.cost.saturating_add(run.cost_nanos);
    }

    fn is_active(&self) -> bool {
        matches!(self.status, LaneStatus::Running(_) | LaneStatus::Due { .. })
    }

    fn failed(&self) -> bool {
        matches!(
            self.status,
            LaneStatus::Ended {
                status: "failed",
                ..
            }
        )
    }
}

/// What a branch step's run records in the branch's state once it ended
/// (the same as outside a group): a task's or `succeed`'s output, a
/// choice's branch, the error of a failure the branch goes on from.
fn record_of(run: &StepRun) -> Option<Value> {
    let parse = |text: &Option<String>| parse_text(text).unwrap_or(Value::Null);
    match run.status {
        StepRunStatus::Completed => Some(match run.kind.as_str() {
            "task" => json!({ "output": parse(&run.output), "task_id": run.task_id }),
            "choice" => json!({ "branch": run.branch, "next": run.next_step }),
            _ => json!({ "output": parse(&run.output) }),
        }),
        StepRunStatus::Failed if run.next_step.is_some() => {
            Some(json!({ "error": parse(&run.error) }))
        }
        _ => None,
    }
}

fn lane_of(index: usize) -> Option<i64> {
    i64::try_from(index).ok()
}

/// How a branch step's run came out.
enum Outcome {
    /// Its task was made: it runs.
    Started(Box<NewTask>),
    /// It completed; the branch goes to `next` (none: the branch ends).
    Completed(Option<String>),
    /// It failed: retried, caught, or the branch fails.
    Failed(Failure),
    /// It failed past any retry or catch (a `fail` step, the step limit).
    Stopped(Failure),
}

/// What happens to a branch after a run.
enum After {
    Go(String),
    Due(String, i64, i64),
    End(&'static str, Option<Value>),
}

/// The moving parts of one group move.
struct Group<'v, 'a> {
    view: &'v View<'a>,
    group_id: String,
    next_seq: i64,
    steps_run: i64,
    plan: Plan,
}

impl Group<'_, '_> {
    fn stored(&self, run: &StepRun) -> bool {
        self.view.runs.iter().any(|r| r.id == run.id)
    }
}

impl WorkflowRunner {
    /// One move of parallel step `p`, whose run is `group` (new when the
    /// step starts in this move).
    pub(super) async fn group_move(
        &self,
        view: &View<'_>,
        p: &ParallelStep,
        mut group: StepRun,
    ) -> Result<Moved, sqlx::Error> {
        let wf = view.wf;
        let is_new = !view.runs.iter().any(|r| r.id == group.id);
        let mut lanes: Vec<Lane> = p
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| Lane::read(view, &group.id, i, b))
            .collect();
        // The branch steps whose tasks ended.
        let mut ended = Vec::new();
        let mut tx = self.db.tenant_read(&wf.org_id).await?;
        for (i, lane) in lanes.iter().enumerate() {
            if let LaneStatus::Running(run) = &lane.status {
                let task = match &run.task_id {
                    Some(id) => tasks::get(&mut tx, &wf.org_id, id).await?,
                    None => None,
                };
                let running = task.as_ref().is_some_and(|t| {
                    matches!(t.status, TaskStatus::Pending | TaskStatus::InProgress)
                });
                if !running {
                    ended.push((i, (**run).clone(), task));
                }
            }
        }
        tx.commit().await?;
        let mut g = Group {
            view,
            group_id: group.id.clone(),
            next_seq: view.next_seq() + i64::from(is_new),
            steps_run: wf.steps_run + i64::from(is_new),
            plan: Plan::default(),
        };
        for (i, mut run, task) in ended {
            let outcome = match (lanes[i].branch.steps.get(&run.step_id), task) {
                (Some(Step::Task(t)), Some(task)) => {
                    run.cost_nanos = task.cost_nanos;
                    match task_result(t, &task) {
                        Some(Ok(output)) => {
                            run.output = Some(output.to_string());
                            Outcome::Completed(t.next.clone())
                        }
                        Some(Err(failure)) => Outcome::Failed(failure),
                        None => continue,
                    }
                }
                _ => Outcome::Failed(Failure::new(
                    ErrorCategory::Retryable,
                    "task_missing",
                    "the step's task is gone",
                )),
            };
            self.settle(&mut g, &mut lanes[i], i, run, outcome).await?;
        }
        let abort = p.on_failure == OnFailure::Abort;
        if !(abort && lanes.iter().any(Lane::failed)) {
            // Branches whose retry is due.
            let now = now_ms();
            for (i, lane) in lanes.iter_mut().enumerate() {
                let due = match &lane.status {
                    LaneStatus::Due { step, attempt, at } if *at <= now => {
                        Some((step.clone(), *attempt))
                    }
                    _ => None,
                };
                if let Some((step, attempt)) = due {
                    let (run, outcome) = self.begin(&mut g, lane, i, &step, attempt).await?;
                    self.settle(&mut g, lane, i, run, outcome).await?;
                }
            }
            // Branches not started yet, while fewer than max_concurrency run.
            while !(abort && lanes.iter().any(Lane::failed))
                && lanes.iter().filter(|l| l.is_active()).count()
                    < usize::try_from(p.max_concurrency).unwrap_or(1)
                && let Some(i) = lanes
                    .iter()
                    .position(|l| matches!(l.status, LaneStatus::Waiting))
            {
                let start = lanes[i].branch.start.clone();
                let (run, outcome) = self.begin(&mut g, &lanes[i], i, &start, 1).await?;
                self.settle(&mut g, &mut lanes[i], i, run, outcome).await?;
            }
        }
        let failed = lanes.iter().position(Lane::failed).filter(|_| abort);
        if failed.is_some() {
            stop_others(&mut g, &mut lanes);
        }
        if !lanes
            .iter()
            .all(|l| matches!(l.status, LaneStatus::Ended { .. }))
        {
            if g.plan.ops.is_empty() && !is_new {
                let wake_at = lanes
                    .iter()
                    .filter_map(|l| match l.status {
                        LaneStatus::Due { at, .. } => Some(at),
                        _ => None,
                    })
                    .min();
                return Ok(Moved::Wait(wake_at));
            }
            let mut progress = view.progress();
            progress.current_run = Some(group.id.clone());
            progress.steps_run = g.steps_run;
            let run = Some(&group).filter(|_| is_new);
            return self.write_with(view, g.plan, run, None, progress).await;
        }

        // Every branch has ended: gather them and end the group.
        let branches: Vec<Value> = lanes
            .iter()
            .map(|l| {
                let (status, error) = match &l.status {
                    LaneStatus::Ended { status, error } => (*status, error.clone()),
                    _ => ("running", None),
                };
                json!({ "status": status, "output": l.output, "error": error })
            })
            .collect();
        let outputs: Vec<Value> = lanes.iter().map(|l| l.output.clone()).collect();
        let mut merged = view.state.clone();
        for lane in &lanes {
            if let (Some(into), Some(from)) = (
                merged.get_mut("steps").and_then(Value::as_object_mut),
                lane.state.get("steps").and_then(Value::as_object),
            ) {
                for (id, record) in from {
                    if view.state["steps"].get(id) != Some(record) {
                        into.insert(id.clone(), record.clone());
                    }
                }
            }
        }
        group.cost_nanos = lanes
            .iter()
            .fold(Money::ZERO, |sum, l| sum.saturating_add(l.cost));
        // The group's own run is counted by complete/fail when it is new.
        let mut counted = wf.clone();
        counted.steps_run = g.steps_run - i64::from(is_new);
        let ended_view = View {
            wf: &counted,
            def: view.def,
            state: merged,
            runs: view.runs.clone(),
            owner: view.owner,
            batch: view.batch,
        };
        let record = json!({ "branches": branches, "output": outputs });
        match failed {
            None => {
                tracing::info!(step = %group.step_id, "parallel step completed");
                group.output = Some(record.to_string());
                self.complete_with(&ended_view, g.plan, group, record, p.next.clone())
                    .await
            }
            Some(i) => {
                let cause = match &lanes[i].status {
                    LaneStatus::Ended { error, .. } => error.clone().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                let category = cause
                    .get("category")
                    .and_then(|c| serde_json::from_value::<ErrorCategory>(c.clone()).ok())
                    .unwrap_or(ErrorCategory::Terminal);
                let failure = Failure {
                    category,
                    error: json!({
                        "kind": "branch_failed",
                        "category": category.as_str(),
                        "message": format!(
                            "branch {i} failed: {}",
                            cause["message"].as_str().unwrap_or("its step failed")
                        ),
                        "branch_index": i,
                        "branches": branches,
                    }),
                };
                group.output = Some(record.to_string());
                let step = view.def.steps.get(&group.step_id);
                match step {
                    Some(step) => {
                        self.fail_with(&ended_view, g.plan, step, group, failure)
                            .await
                    }
                    None => Ok(Moved::Done),
                }
            }
        }
    }

    /// A new run of branch step `step_id` (attempt `attempt`) on `lane`,
    /// and how it came out: a task step's task is made (inserted with the
    /// run when the move is written), a choice is evaluated, `succeed` and
    /// `fail` end the branch.
    async fn begin(
        &self,
        g: &mut Group<'_, '_>,
        lane: &Lane<'_>,
        index: usize,
        step_id: &str,
        attempt: i64,
    ) -> Result<(StepRun, Outcome), sqlx::Error> {
        let view = g.view;
        // A step the branch does not have is recorded as a task step.
        let kind = lane.branch.steps.get(step_id).map_or("task", Step::kind);
        let branch = lane_of(index).map(|lane| (g.group_id.clone(), lane));
        let mut run = StepRun::started(
            g.next_seq,
            step_id,
            kind,
            attempt,
            view.wf.state_version,
            branch,
        );
        g.next_seq += 1;
        let Some(step) = lane.branch.steps.get(step_id) else {
            let failure = Failure::new(
                ErrorCategory::Terminal,
                "unknown_step",
                format!("no step `{step_id}` in branch {index}"),
            );
            return Ok((run, Outcome::Stopped(failure)));
        };
        if g.steps_run >= i64::from(view.def.max_steps) {
            let failure = Failure::new(
                ErrorCategory::Terminal,
                "step_limit",
                format!(
                    "the workflow started {} steps, its max_steps",
                    view.def.max_steps
                ),
            );
            return Ok((run, Outcome::Stopped(failure)));
        }
        g.steps_run += 1;
        let outcome = match step {
            Step::Task(t) => match self
                .new_task(view.wf, step_id, t, &lane.state, view.batch)
                .await?
            {
                Ok(task) => Outcome::Started(Box::new(task)),
                Err(failure) => Outcome::Failed(failure),
            },
            Step::Choice(c) => {
                let (decided, evaluations) = self.evaluate(&view.wf.org_id, &lane.state, c).await;
                run.evaluations = Some(evaluations.to_string());
                match decided {
                    Ok((next, branch)) => {
                        run.branch = branch;
                        Outcome::Completed(Some(next))
                    }
                    Err(failure) => Outcome::Failed(failure),
                }
            }
            Step::Succeed(s) => {
                let output = match &s.output {
                    Some(t) => Value::String(render(t, &lane.state)),
                    None => lane.output.clone(),
                };
                run.output = Some(output.to_string());
                Outcome::Completed(None)
            }
            Step::Fail(f) => Outcome::Stopped(Failure {
                category: ErrorCategory::Terminal,
                error: json!({
                    "kind": f.error.clone().unwrap_or_else(|| "failed".into()),
                    "category": "terminal",
                    "message": f.message.as_deref().map(|m| render(m, &lane.state)),
                    "step": step_id,
                }),
            }),
            Step::Parallel(_) | Step::Approval(_) => Outcome::Stopped(Failure::new(
                ErrorCategory::Terminal,
                "unsupported",
                "a branch runs task, choice, succeed and fail steps",
            )),
        };
        Ok((run, outcome))
    }

    /// Go on along branch `index` after `run` (new in this move, or stored)
    /// came out as `outcome`: record it, and start the branch's next steps
    /// until one runs a task, waits for a retry, or the branch ends.
    async fn settle(
        &self,
        g: &mut Group<'_, '_>,
        lane: &mut Lane<'_>,
        index: usize,
        mut run: StepRun,
        mut outcome: Outcome,
    ) -> Result<(), sqlx::Error> {
        loop {
            let after = match outcome {
                Outcome::Started(task) => {
                    lane.status = LaneStatus::Running(Box::new(run.clone()));
                    g.plan.ops.push(Op::Insert(run, Some(task)));
                    return Ok(());
                }
                Outcome::Completed(next) => {
                    run.status = StepRunStatus::Completed;
                    run.next_step = next.clone();
                    match next {
                        Some(next) => After::Go(next),
                        None => After::End("completed", None),
                    }
                }
                Outcome::Failed(failure) => {
                    run.status = StepRunStatus::Failed;
                    run.error = Some(failure.error.to_string());
                    let step = lane.branch.steps.get(&run.step_id);
                    let attempt = u32::try_from(run.attempt).unwrap_or(u32::MAX);
                    if let Some(retry) = step.and_then(Step::retry)
                        && retry.covers(failure.category)
                        && attempt < retry.max_attempts
                    {
                        run.next_step = Some(run.step_id.clone());
                        let at = now_ms().saturating_add(millis(retry.delay(attempt + 1)));
                        After::Due(run.step_id.clone(), run.attempt + 1, at)
                    } else if let Some(c) = step.and_then(|s| {
                        s.catch()
                            .iter()
                            .find(|c| c.errors.iter().any(|e| e.covers(failure.category)))
                    }) {
                        run.next_step = Some(c.next.clone());
                        After::Go(c.next.clone())
                    } else {
                        After::End("failed", Some(failure.error))
                    }
                }
                Outcome::Stopped(failure) => {
                    run.status = StepRunStatus::Failed;
                    run.error = Some(failure.error.to_string());
                    After::End("failed", Some(failure.error))
                }
            };
            run.finished_at = Some(now_ms());
            lane.absorb(&run);
            if g.stored(&run) {
                g.plan.ops.push(Op::Finish(run));
            } else {
                g.plan.ops.push(Op::Insert(run, None));
            }
            let next = match after {
                After::Go(next) => next,
                After::Due(step, attempt, at) => {
                    lane.status = LaneStatus::Due { step, attempt, at };
                    return Ok(());
                }
                After::End(status, error) => {
                    if let Some(e) = &error {
                        tracing::info!(branch = index, error = %e, "parallel branch failed");
                    }
                    lane.status = LaneStatus::Ended { status, error };
                    return Ok(());
                }
            };
            (run, outcome) = self.begin(g, lane, index, &next, 1).await?;
        }
    }
}

/// A branch failed under `abort`: every other branch stops (its running
/// task cancelled, its run ended as cancelled; one never started is
/// skipped).
fn stop_others(g: &mut Group<'_, '_>, lanes: &mut [Lane<'_>]) {
    let now = now_ms();
    for lane in lanes.iter_mut() {
        let status = std::mem::replace(&mut lane.status, LaneStatus::Waiting);
        lane.status = match status {
            LaneStatus::Running(run) => {
                let mut run = *run;
                if g.stored(&run) {
                    if let Some(task_id) = &run.task_id {
                        g.plan.ops.push(Op::Cancel(task_id.clone()));
                    }
                    run.status = StepRunStatus::Cancelled;
                    run.finished_at = Some(now);
                    g.plan.ops.push(Op::Finish(run));
                } else {
                    // Started in this move: it never happens.
                    g.plan
                        .ops
                        .retain(|op| !matches!(op, Op::Insert(r, _) if r.id == run.id));
                    g.steps_run -= 1;
                }
                LaneStatus::Ended {
                    status: "cancelled",
                    error: None,
                }
            }
            LaneStatus::Due { .. } => LaneStatus::Ended {
                status: "cancelled",
                error: None,
            },
            LaneStatus::Waiting => LaneStatus::Ended {
                status: "skipped",
                error: None,
            },
            ended @ LaneStatus::Ended { .. } => ended,
        };
    }
}
