//! The [`Runner`] for tasks: one run plans the task's request and calls
//! providers through the [`Dispatcher`] (retries, fallback, breakers),
//! records plan, attempts and streamed text as events, and finishes the
//! task as completed (storing the answer in the response cache), failed or
//! cancelled.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vel_runtime::ToolProgress;

use super::dispatch::{Answer, DispatchError, Dispatcher, Progress, totals};
use super::queue::{Claim, Lease, MAX_CLAIMS, RunFuture, Runner};
use super::request::{TaskRequest, ToolInvocation, finish_reason_name};
use super::signals::{Signal, Signals, WorkKind};
use super::state::{AttemptOutcome, TaskStatus};
use super::tool_loop::Toolbox;
use crate::analytics::buckets::{self, Sample};
use crate::money::{Money, Usd};
use crate::store::tasks::{self, Attempt, Claimed, Finish, Task};
use crate::store::workflows;
use crate::store::{Db, now_ms};
use crate::workflows::engine::WorkflowRunner;

/// Runs claimed tasks through the dispatcher.
#[derive(Debug)]
pub struct TaskRunner {
    db: Db,
    dispatcher: Dispatcher,
    signals: Signals,
    /// How long an answer stays in the response cache.
    cache_ttl: Duration,
    /// The same for research tasks.
    research_cache_ttl: Duration,
    /// Takes a finished step task's workflow over in the finishing
    /// transaction.
    hand_over: Option<HandOver>,
}

/// The engine a finished step task hands its workflow to, and the lease
/// it claims the workflow under.
#[derive(Debug)]
pub struct HandOver {
    /// The workflow engine.
    pub engine: WorkflowRunner,
    /// How long the claim holds the workflow.
    pub lease_ms: i64,
}

impl TaskRunner {
    /// A runner writing to `db`, calling providers through `dispatcher` and
    /// waking watchers through `signals`; answers are cached for
    /// `cache_ttl` (`research_cache_ttl` for research tasks).
    pub fn new(
        db: Db,
        dispatcher: Dispatcher,
        signals: Signals,
        cache_ttl: Duration,
        research_cache_ttl: Duration,
    ) -> TaskRunner {
        TaskRunner {
            db,
            dispatcher,
            signals,
            cache_ttl,
            research_cache_ttl,
            hand_over: None,
        }
    }

    /// Hand each finished step task's workflow to `hand_over`'s engine in
    /// the transaction that finishes the task (see
    /// [`WorkflowRunner::take_over`]), instead of only waking it.
    pub fn with_hand_over(mut self, hand_over: HandOver) -> TaskRunner {
        self.hand_over = Some(hand_over);
        self
    }
}

impl Runner for TaskRunner {
    type Item = Claimed;

    fn kind(&self) -> WorkKind {
        WorkKind::Tasks
    }

    /// Claim a task; with it, whether more were pending and its cached
    /// answer. The claim's commit does not wait for the WAL flush: lost in
    /// a database crash, the task is simply pending again, and the run's
    /// last write (the synchronous finish) flushes it with everything else.
    async fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claim<Claimed>>, sqlx::Error> {
        let mut tx = self.db.platform_relaxed_relayed().await?;
        let claimed = tasks::claim(&mut tx, owner, lease_ms, MAX_CLAIMS).await?;
        let Some(claimed) = claimed else {
            tx.commit().await?;
            return Ok(None);
        };
        let task = &claimed.task;
        if task.claims > 1 {
            // A rescued run starts its answer over: a watcher drops the text
            // of the deltas before this event (the dead run's).
            let data = json!({ "reason": "rescued", "claims": task.claims });
            tasks::append_event(&mut tx, &task.org_id, &task.id, "reset", &data.to_string())
                .await?;
        }
        tx.commit().await?;
        self.signals.announce(Signal::Events(task.id.clone()));
        Ok(Some(claim_of(claimed)))
    }

    /// Extend the leases; stop tasks cancelled meanwhile; fail tasks that
    /// keep losing their workers (counted in the usage buckets as failures
    /// of the provider tried last, if any call was recorded; and wake their
    /// workflows).
    async fn beat(
        &self,
        owner: &str,
        running: &[String],
        lease_ms: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.db.platform().await?;
        tasks::heartbeat(&mut tx, owner, running, lease_ms).await?;
        let cancelled = tasks::cancelled_held_by(&mut tx, owner).await?;
        let exhausted = tasks::fail_exhausted(&mut tx, MAX_CLAIMS).await?;
        let mut woke = false;
        let mut hooks = 0;
        let mut released = false;
        for task in &exhausted {
            let data = json!({ "status": "failed", "error": { "kind": "worker_lost" } });
            tasks::append_event(&mut tx, &task.org_id, &task.id, "status", &data.to_string())
                .await?;
            woke |= workflows::wake_for_task(&mut tx, &task.id).await?;
            let finish = Finish {
                last_tried: tasks::attempts(&mut tx, &task.org_id, &task.id)
                    .await?
                    .pop()
                    .map(|a| (a.provider, a.model)),
                ..Finish::recorded(task)
            };
            buckets::record(&mut tx, &Sample::task(task, &finish, now_ms())).await?;
            hooks += crate::webhooks::events::task_ended(&mut tx, task, &finish).await?;
            let batch = crate::batches::task_ended(&mut tx, task, TaskStatus::Failed).await?;
            released |= batch.released;
            hooks += batch.deliveries;
        }
        tx.commit().await?;
        if released {
            self.signals.publish_due(WorkKind::Tasks);
        }
        for task in exhausted {
            tracing::warn!(task_id = %task.id, "task failed: its workers kept stopping");
            self.signals.publish(Signal::Events(task.id));
        }
        if woke {
            self.signals.publish_due(WorkKind::Workflows);
        }
        if hooks > 0 {
            self.signals.publish_due(WorkKind::Webhooks);
        }
        Ok(cancelled)
    }

    async fn release(&self, owner: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.platform().await?;
        tasks::release_leases(&mut tx, owner).await?;
        tx.commit().await
    }

    fn run<'a>(&'a self, claimed: Claimed, lease: Lease<'a>) -> RunFuture<'a, Claimed> {
        Box::pin(async move {
            let Claimed {
                task,
                cached_response,
                ..
            } = claimed;
            let next = self.run_task(&task, cached_response, lease).await?;
            Ok(next.map(claim_of))
        })
    }
}

/// A claimed task as the queue runs it.
fn claim_of(claimed: Claimed) -> Claim<Claimed> {
    let task = &claimed.task;
    Claim {
        id: task.id.clone(),
        more: claimed.more_pending(),
        span: tracing::info_span!("task", task_id = %task.id, org_id = %task.org_id, claims = task.claims),
        item: claimed,
    }
}

/// What a task run ended with.
enum Ended {
    Answered(Box<Answer>),
    Failed(DispatchError),
    Cancelled,
}

/// What the recorder has seen of a run.
#[derive(Default)]
struct Seen {
    attempts: Vec<Attempt>,
    /// The attempt in flight: (seq, provider, model, started_at).
    current: Option<(i64, String, String, i64)>,
    /// Text streamed so far: a failed attempt's is kept, as the run then
    /// either ends with it or continues it (see `StreamFailover`).
    partial: String,
}

impl Seen {
    /// Take note of a report; true when watchers should see it at once.
    fn observe(&mut self, p: &Progress, stream: bool) -> bool {
        match p {
            Progress::Planned { .. } => false,
            Progress::AttemptStarted {
                seq,
                provider,
                model,
            } => {
                self.current = Some((*seq, provider.clone(), model.clone(), now_ms()));
                false
            }
            Progress::AttemptFinished(a) => {
                self.current = None;
                self.attempts.push(a.clone());
                a.outcome != AttemptOutcome::Ok
            }
            Progress::Delta { text, .. } => {
                if stream {
                    self.partial.push_str(text);
                }
                stream
            }
            // A task's answer is its text: streamed tool-call pieces
            // are not published (the tool loop's calls are, below).
            Progress::ToolCall { .. } => false,
            Progress::ToolStarted(_) | Progress::ToolFinished(_) => true,
        }
    }
}

impl TaskRunner {
    /// Run one task to its end and record it under `lease`; the next task
    /// claimed with its end, if any (see [`Lease::may_claim_next`]).
    async fn run_task(
        &self,
        task: &Task,
        cached: Option<String>,
        lease: Lease<'_>,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let request: TaskRequest = match serde_json::from_str(&task.request) {
            Ok(r) => r,
            Err(e) => {
                let error = json!({ "kind": "invalid_request", "message": format!("stored request unreadable: {e}") });
                return self.fail(task, lease, error, &[], None, Vec::new()).await;
            }
        };
        if let Some(tool) = &request.tool {
            return self.run_tool(task, lease, tool).await;
        }
        // The claim read the cached answer; only a rescued task (claimed
        // before) has earlier attempts to continue from.
        if let Some(result) = cached.and_then(|text| serde_json::from_str(&text).ok()) {
            return self.complete_cached(task, lease, result).await;
        }
        let previous = if task.claims > 1 {
            let mut tx = self.db.tenant_read(&task.org_id).await?;
            let previous = tasks::attempts(&mut tx, &task.org_id, &task.id).await?;
            tx.commit().await?;
            previous
        } else {
            Vec::new()
        };
        let first_seq = previous.iter().map(|a| a.seq).max().unwrap_or(0);
        let mut job = request.to_job(&task.id, &task.org_id, task.priority, first_seq);
        job.spender.user_id = task.user_id.clone();
        job.spender.api_key_id = task.api_key_id.clone();
        if job.spender.agent_id.is_none() {
            job.spender.agent_id = task.agent_id.clone();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dispatcher = &self.dispatcher;
        // An agent with tool servers runs the tool loop; listing their
        // tools is part of the run, so a cancellation stops it too.
        let mut dispatch = Box::pin(async {
            let Some(tools) = &request.agent_tools else {
                return dispatcher.run(&job, task.stream, Some(&tx)).await;
            };
            let toolbox =
                match Toolbox::open(dispatcher.tools(), &task.org_id, &tools.integrations).await {
                    Ok(toolbox) => toolbox,
                    Err(e) => return Err(e),
                };
            dispatcher
                .run_tool_loop(
                    &job,
                    &toolbox,
                    tools.max_rounds,
                    task.stream,
                    Some(&tx),
                    "task",
                )
                .await
        });
        let mut seen = Seen {
            attempts: previous,
            ..Seen::default()
        };
        // Reports are held and written with the end of the run, in one
        // transaction, unless a watcher should see them now: streamed text,
        // or a failed attempt (a retry or fallback follows).
        let mut held: Vec<Progress> = Vec::new();
        let ended = loop {
            tokio::select! {
                biased;
                _ = lease.stop.cancelled() => break Ended::Cancelled,
                Some(p) = rx.recv() => {
                    let mut urgent = false;
                    let mut next = Some(p);
                    while let Some(p) = next {
                        urgent |= seen.observe(&p, task.stream);
                        held.push(p);
                        next = rx.try_recv().ok();
                    }
                    if urgent {
                        self.record(task, std::mem::take(&mut held)).await?;
                    }
                }
                result = &mut dispatch => {
                    break match result {
                        Ok(answer) => Ended::Answered(Box::new(answer)),
                        Err(e) => Ended::Failed(e),
                    };
                }
            }
        };
        // The dispatch future is dropped here when cancelled: the provider
        // call in flight stops and its upstream connection is dropped.
        drop(dispatch);
        while let Ok(p) = rx.try_recv() {
            seen.observe(&p, task.stream);
            held.push(p);
        }
        match ended {
            Ended::Answered(answer) => {
                self.complete(task, lease, &request, &seen, held, *answer)
                    .await
            }
            Ended::Failed(e) => {
                let error = json!({ "kind": e.kind, "message": e.message });
                let partial = (!seen.partial.is_empty()).then(|| seen.partial.clone());
                self.fail(task, lease, error, &seen.attempts, partial, held)
                    .await
            }
            Ended::Cancelled => {
                // The tool calls cut off are audited before the run ends.
                self.dispatcher.cut_off().settle(&task.id).await;
                self.record(task, held).await?;
                self.record_cancelled(task, &mut seen).await?;
                Ok(None)
            }
        }
    }

    /// Run a task that calls a tool: one call of the tool-server
    /// integration (recorded as an attempt: integration, plugin, the tool
    /// as its model, timing), its progress reports written as `progress`
    /// events as they come, its result (or error) as the task's.
    async fn run_tool(
        &self,
        task: &Task,
        lease: Lease<'_>,
        tool: &ToolInvocation,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let servers = self.dispatcher.tools();
        let server = match servers.by_name(&task.org_id, &tool.integration).await {
            Ok(server) => server,
            Err(e) => {
                let error = json!({ "kind": e.kind, "message": e.message });
                return self.fail(task, lease, error, &[], None, Vec::new()).await;
            }
        };
        let seq = if task.claims > 1 {
            let mut tx = self.db.tenant_read(&task.org_id).await?;
            let previous = tasks::attempts(&mut tx, &task.org_id, &task.id).await?;
            tx.commit().await?;
            previous.iter().map(|a| a.seq).max().unwrap_or(0) + 1
        } else {
            1
        };
        let started_at = now_ms();
        let mut kept = ProgressBudget(MAX_PROGRESS_EVENTS);
        let (tx, mut rx) = mpsc::unbounded_channel::<ToolProgress>();
        let mut call = Box::pin(servers.call(&server, &tool.name, &tool.arguments, Some(tx)));
        let ended = loop {
            tokio::select! {
                biased;
                _ = lease.stop.cancelled() => break None,
                Some(report) = rx.recv() => {
                    let mut events = vec![report];
                    events.extend(std::iter::from_fn(|| rx.try_recv().ok()));
                    let events = kept.take(events);
                    self.record_events(task, &events).await?;
                }
                result = &mut call => break Some(result),
            }
        };
        // Dropped when cancelled: the call stops and its connection closes.
        drop(call);
        let events = kept.take(std::iter::from_fn(|| rx.try_recv().ok()).collect());
        self.record_events(task, &events).await?;
        let mut attempt = Attempt {
            seq,
            provider: server.integration.name.clone(),
            integration_id: Some(server.integration.id.clone()),
            plugin: server.deployed.label(),
            model: tool.name.clone(),
            outcome: AttemptOutcome::Ok,
            error_kind: None,
            error_message: None,
            latency_ms: now_ms() - started_at,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: Money::ZERO,
            started_at,
        };
        match ended {
            None => {
                let mut seen = Seen {
                    current: Some((seq, attempt.provider, attempt.model, started_at)),
                    ..Seen::default()
                };
                self.record_cancelled(task, &mut seen).await?;
                Ok(None)
            }
            Some(Ok(output)) => {
                let result = json!({
                    "text": output.text(),
                    "content": output.content,
                    "structured_content": output.structured_content,
                    "tool": { "integration": server.integration.name, "name": tool.name },
                    "provider": server.integration.name,
                    "model": tool.name,
                    "cached": false,
                });
                let finish = Finish {
                    result: Some(result.to_string()),
                    provider: Some(server.integration.name.clone()),
                    model: Some(tool.name.clone()),
                    attempts: 1,
                    ..Finish::new(TaskStatus::Completed)
                };
                let event = completed_event(&result, Some(Money::ZERO))?;
                let held = vec![Progress::AttemptFinished(attempt)];
                self.finish(task, lease, &finish, event, held, None).await
            }
            Some(Err(e)) => {
                attempt.outcome = AttemptOutcome::Error;
                attempt.error_kind = Some(e.kind.to_string());
                attempt.error_message = Some(e.message.clone());
                let error = json!({ "kind": e.kind, "message": e.message });
                let attempts = [attempt.clone()];
                let held = vec![Progress::AttemptFinished(attempt)];
                self.fail(task, lease, error, &attempts, None, held).await
            }
        }
    }

    /// Write events (kind, JSON data) in one transaction and wake the
    /// watchers; nothing when there are none.
    async fn record_events(
        &self,
        task: &Task,
        events: &[(&'static str, String)],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.tenant_relaxed_relayed(&task.org_id).await?;
        tasks::append_progress_events(&mut tx, &task.org_id, &task.id, events).await?;
        tx.commit().await?;
        self.signals.announce(Signal::Events(task.id.clone()));
        Ok(())
    }

    /// Write progress reports in one transaction and wake the watchers.
    async fn record(&self, task: &Task, batch: Vec<Progress>) -> Result<(), sqlx::Error> {
        let mut tx = self.db.tenant_relaxed_relayed(&task.org_id).await?;
        let wrote = write_progress(&mut tx, task, batch).await?;
        tx.commit().await?;
        if wrote {
            self.signals.announce(Signal::Events(task.id.clone()));
        }
        Ok(())
    }

    async fn complete_cached(
        &self,
        task: &Task,
        lease: Lease<'_>,
        mut result: Value,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        if let Some(obj) = result.as_object_mut() {
            obj.insert("cached".into(), json!(true));
        }
        let finish = Finish {
            result: Some(result.to_string()),
            cached: true,
            provider: result["provider"].as_str().map(str::to_string),
            model: result["model"].as_str().map(str::to_string),
            ..Finish::new(TaskStatus::Completed)
        };
        let event = completed_event(&result, None)?;
        self.finish(task, lease, &finish, event, Vec::new(), None)
            .await
    }

    async fn complete(
        &self,
        task: &Task,
        lease: Lease<'_>,
        request: &TaskRequest,
        seen: &Seen,
        held: Vec<Progress>,
        answer: Answer,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let (input_tokens, output_tokens, cost) = totals(&seen.attempts);
        let response = &answer.response;
        let result = json!({
            "text": response.text,
            "finish_reason": finish_reason_name(response.finish_reason),
            "model": response.model,
            "provider": answer.provider,
            "usage": {
                "input_tokens": response.usage.input_tokens,
                "output_tokens": response.usage.output_tokens,
            },
            "cached": false,
        });
        let finish = Finish {
            result: Some(result.to_string()),
            cached: false,
            provider: Some(answer.provider.clone()),
            model: Some(response.model.clone()),
            input_tokens,
            output_tokens,
            cost_nanos: cost,
            attempts: seen.attempts.len(),
            ..Finish::new(TaskStatus::Completed)
        };
        let event = completed_event(&result, Some(cost))?;
        // A tool loop's answer depends on what its tools did: not reused.
        let cache = (task.use_cache && request.agent_tools.is_none()).then(|| {
            let ttl = request.cache_ttl(self.cache_ttl, self.research_cache_ttl);
            (
                result.to_string(),
                i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            )
        });
        self.finish(task, lease, &finish, event, held, cache).await
    }

    async fn fail(
        &self,
        task: &Task,
        lease: Lease<'_>,
        error: Value,
        attempts: &[Attempt],
        partial_output: Option<String>,
        held: Vec<Progress>,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let (input_tokens, output_tokens, cost) = totals(attempts);
        let finish = Finish {
            error: Some(error.to_string()),
            partial_output,
            input_tokens,
            output_tokens,
            cost_nanos: cost,
            attempts: attempts.len(),
            last_tried: attempts
                .last()
                .map(|a| (a.provider.clone(), a.model.clone())),
            ..Finish::new(TaskStatus::Failed)
        };
        let event = json!({ "status": "failed", "error": error }).to_string();
        self.finish(task, lease, &finish, event, held, None).await
    }

    /// Write the held reports, the terminal state, its event and the
    /// cached answer (`(response, ttl_ms)`) in one transaction; if the task
    /// is no longer ours (cancelled meanwhile), keep what the run produced
    /// on the cancelled task instead.
    async fn finish(
        &self,
        task: &Task,
        lease: Lease<'_>,
        finish: &Finish,
        event: String,
        held: Vec<Progress>,
        cache: Option<(String, i64)>,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        // Its signals are announced after the commit, the moves of a
        // workflow that commit with it included.
        let mut tx = self.db.tenant_relayed(&task.org_id).await?;
        let Reports {
            attempts,
            mut events,
        } = reports(task, held)?;
        for a in &attempts {
            tasks::insert_attempt(&mut tx, &task.org_id, &task.id, a).await?;
        }
        if let Some((response, ttl_ms)) = &cache {
            tasks::cache_response(&mut tx, &task.org_id, &task.request_hash, response, *ttl_ms)
                .await?;
        }
        // The run's last reports and its end, numbered in one go.
        events.push(("status", event));
        if !tasks::finish(&mut tx, &task.id, lease.owner, finish, &events).await? {
            // Not this run's any more: its reports are kept while the task
            // is in progress (taken over), and what it spent in any case.
            events.pop();
            tasks::append_progress_events(&mut tx, &task.org_id, &task.id, &events).await?;
            tasks::record_cancelled_run(&mut tx, &task.id, finish).await?;
            buckets::record(&mut tx, &spent(task, finish)).await?;
            tx.commit().await?;
            if !events.is_empty() {
                self.signals.announce(Signal::Events(task.id.clone()));
            }
            tracing::info!("task was cancelled or taken over before it finished");
            return Ok(None);
        }
        buckets::record(&mut tx, &Sample::task(task, finish, now_ms())).await?;
        let mut hooks = crate::webhooks::events::task_ended(&mut tx, task, finish).await?;
        let batch = crate::batches::task_ended(&mut tx, task, finish.status).await?;
        hooks += batch.deliveries;
        let mut wake = false;
        let mut next = None;
        if let Some(workflow_id) = &task.workflow_id {
            workflows::wake_for_task(&mut tx, &task.id).await?;
            // The workflow's next moves commit with the task's end when
            // this worker can take it over (and claim its next task, when
            // the queue allows); else a workflow worker is woken.
            let left = match &self.hand_over {
                Some(h) => {
                    let task_lease_ms = lease.may_claim_next().then_some(lease.lease_ms);
                    let taken = h
                        .engine
                        .take_over(
                            tx,
                            &task.org_id,
                            workflow_id,
                            lease.owner,
                            h.lease_ms,
                            task_lease_ms,
                        )
                        .await?;
                    next = taken.next;
                    taken.tx
                }
                None => Some(tx),
            };
            if let Some(left) = left {
                left.commit().await?;
                wake = true;
            }
        } else {
            tx.commit().await?;
        }
        self.signals.announce(Signal::Events(task.id.clone()));
        if wake {
            self.signals.announce_due(WorkKind::Workflows);
        }
        if batch.released {
            // Only a batch's task releases one, in a relayed transaction;
            // this worker claims next, as soon as this run returns.
            self.signals.announce_queued_elsewhere();
        }
        if hooks > 0 {
            self.signals.announce_due(WorkKind::Webhooks);
        }
        tracing::info!(
            status = finish.status.as_str(),
            cached = finish.cached,
            "task finished"
        );
        Ok(next)
    }

    /// The run was stopped by a cancellation: record the attempt in flight
    /// as cancelled and keep the partial output.
    async fn record_cancelled(&self, task: &Task, seen: &mut Seen) -> Result<(), sqlx::Error> {
        let mut tx = self.db.tenant(&task.org_id).await?;
        if let Some((seq, provider, model, started_at)) = seen.current.take() {
            let a = Attempt {
                seq,
                provider,
                integration_id: None,
                plugin: String::new(),
                model,
                outcome: AttemptOutcome::Cancelled,
                error_kind: Some("cancelled".into()),
                error_message: Some("the task was cancelled during the call".into()),
                latency_ms: now_ms() - started_at,
                input_tokens: 0,
                output_tokens: 0,
                cost_nanos: Money::ZERO,
                started_at,
            };
            tasks::insert_attempt(&mut tx, &task.org_id, &task.id, &a).await?;
            seen.attempts.push(a);
        }
        let (input_tokens, output_tokens, cost) = totals(&seen.attempts);
        let finish = Finish {
            partial_output: (!seen.partial.is_empty()).then(|| seen.partial.clone()),
            input_tokens,
            output_tokens,
            cost_nanos: cost,
            ..Finish::new(TaskStatus::Cancelled)
        };
        tasks::record_cancelled_run(&mut tx, &task.id, &finish).await?;
        buckets::record(&mut tx, &spent(task, &finish)).await?;
        tx.commit().await?;
        tracing::info!(
            partial_chars = seen.partial.len(),
            "task run stopped by cancellation"
        );
        Ok(())
    }
}

/// What a run of a task cancelled meanwhile spent: its task was counted
/// when it was cancelled.
fn spent(task: &Task, finish: &Finish) -> Sample {
    Sample {
        status: None,
        ..Sample::task(task, finish, now_ms())
    }
}

/// Progress reports as the rows that record them.
#[derive(Default)]
struct Reports {
    /// Finished attempts.
    attempts: Vec<Attempt>,
    /// Events in order (kind, JSON data).
    events: Vec<(&'static str, String)>,
}

/// The rows of progress reports, in order: plan and attempt events,
/// attempt rows, and streamed text coalesced into one `delta` event per
/// run of consecutive deltas of one attempt.
fn reports(task: &Task, batch: Vec<Progress>) -> Result<Reports, sqlx::Error> {
    let mut out = Reports::default();
    let mut pending_delta: Option<(i64, String)> = None;
    for p in batch {
        if let Progress::Delta { seq, text } = &p {
            if !task.stream {
                continue;
            }
            match &mut pending_delta {
                Some((s, buf)) if s == seq => buf.push_str(text),
                _ => {
                    if let Some((s, buf)) = pending_delta.take() {
                        out.events.push(delta_event(s, &buf));
                    }
                    pending_delta = Some((*seq, text.clone()));
                }
            }
            continue;
        }
        if let Some((s, buf)) = pending_delta.take() {
            out.events.push(delta_event(s, &buf));
        }
        match p {
            Progress::Planned {
                router,
                router_version,
                attempts,
                reason,
                fallback,
            } => {
                let data = json!({ "router": router, "router_version": router_version, "attempts": attempts,
                                   "reason": reason, "fallback": fallback });
                out.events.push(("plan", data.to_string()));
            }
            Progress::AttemptFinished(a) => {
                out.events
                    .push(("attempt", json_text(&AttemptView::from(&a))?));
                out.attempts.push(a);
            }
            Progress::ToolStarted(call) => out.events.push(("tool_call", json_text(&call)?)),
            Progress::ToolFinished(call) => out.events.push(("tool_result", json_text(&call)?)),
            Progress::AttemptStarted { .. }
            | Progress::Delta { .. }
            | Progress::ToolCall { .. } => {}
        }
    }
    if let Some((s, buf)) = pending_delta.take() {
        out.events.push(delta_event(s, &buf));
    }
    Ok(out)
}

/// Write progress reports (see [`reports`]); the events only while the
/// task is in progress. Returns whether there was anything to write.
async fn write_progress(
    tx: &mut sqlx::AnyConnection,
    task: &Task,
    batch: Vec<Progress>,
) -> Result<bool, sqlx::Error> {
    let Reports { attempts, events } = reports(task, batch)?;
    for a in &attempts {
        tasks::insert_attempt(tx, &task.org_id, &task.id, a).await?;
    }
    tasks::append_progress_events(tx, &task.org_id, &task.id, &events).await?;
    Ok(!events.is_empty())
}

/// Most `progress` events one tool call writes; a server reporting more
/// has the rest dropped (the call goes on).
const MAX_PROGRESS_EVENTS: usize = 1000;

/// How many more `progress` events a tool call may write.
struct ProgressBudget(usize);

impl ProgressBudget {
    /// The events of `reports`, as many as the budget has left.
    fn take(&mut self, reports: Vec<ToolProgress>) -> Vec<(&'static str, String)> {
        let kept = reports.len().min(self.0);
        self.0 -= kept;
        reports[..kept].iter().map(progress_event).collect()
    }
}

/// The `progress` event of a tool call's progress report.
fn progress_event(report: &ToolProgress) -> (&'static str, String) {
    let data =
        json!({ "progress": report.progress, "total": report.total, "message": report.message });
    ("progress", data.to_string())
}

/// The event of attempt `seq`'s streamed `text`.
fn delta_event(seq: i64, text: &str) -> (&'static str, String) {
    ("delta", json!({ "attempt": seq, "text": text }).to_string())
}

/// An attempt as the API and the event stream show it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// 1-based order within the task.
    pub seq: i64,
    /// Integration name.
    pub provider: String,
    /// Provider plugin (`name@version`).
    pub plugin: String,
    /// Model.
    pub model: String,
    /// `ok`, `error`, `cancelled` or `skipped`.
    pub outcome: AttemptOutcome,
    /// Kind and message, when it did not succeed.
    pub error: Option<AttemptError>,
    /// Milliseconds.
    pub latency_ms: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// US dollars.
    pub cost_usd: Usd,
    /// RFC 3339.
    pub started_at: String,
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptError {
    /// Typed error kind.
    pub kind: String,
    /// For people.
    pub message: Option<String>,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        AttemptView {
            seq: a.seq,
            provider: a.provider.clone(),
            plugin: a.plugin.clone(),
            model: a.model.clone(),
            outcome: a.outcome,
            error: a.error_kind.as_ref().map(|kind| AttemptError {
                kind: kind.clone(),
                message: a.error_message.clone(),
            }),
            latency_ms: a.latency_ms,
            input_tokens: a.input_tokens,
            output_tokens: a.output_tokens,
            cost_usd: a.cost_nanos.usd(),
            started_at: crate::store::to_rfc3339(a.started_at),
        }
    }
}

/// The data of a task's `completed` status event: the result, and the cost
/// of the run (absent for an answer from the cache, which cost nothing).
fn completed_event(result: &Value, cost: Option<Money>) -> Result<String, sqlx::Error> {
    #[derive(Serialize)]
    struct Completed<'a> {
        status: &'static str,
        result: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        cost_usd: Option<Usd>,
    }
    json_text(&Completed {
        status: "completed",
        result,
        cost_usd: cost.map(Money::usd),
    })
}

/// `value` as JSON text, for an event's data.
fn json_text<T: Serialize>(value: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}
