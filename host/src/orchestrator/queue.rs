//! The durable queue as one instance works it: workers claim tasks under a
//! lease, a heartbeat extends the leases this instance holds, cancellations
//! (signalled, or seen by the heartbeat) stop the runs they concern, and a
//! shutdown hands the leases back. When an instance dies its leases run out
//! and any instance rescues its tasks.
//!
//! What a claimed task does is not the queue's business: a [`Runner`] runs
//! it to its end and records it. Whatever a runner does inherits the
//! queue's guarantees: one instance at a time, rescue after a crash,
//! cancellation, hand-over at shutdown.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::signals::{Signal, Signals};
use crate::store::tasks::{self, Claimed};
use crate::store::{Db, new_id};

/// Claims after which a task that keeps losing its worker is failed.
pub const MAX_CLAIMS: i64 = 3;

/// The future of one [`Runner::run`].
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;

/// Runs a claimed task to its end and records its terminal state.
pub trait Runner: Debug + Send + Sync {
    /// Run `claimed` and record how it ended. The terminal state is written
    /// only while `lease.owner` still holds the task (see
    /// [`tasks::finish`]). When `lease.stop` is cancelled (the task was
    /// cancelled, or the instance stops past its grace) the run stops its
    /// work and records what it had. An error means the end could not be
    /// recorded: the lease then runs out and the task is rescued.
    fn run<'a>(&'a self, claimed: Claimed, lease: Lease<'a>) -> RunFuture<'a>;
}

/// What a runner holds a claimed task under.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// Lease owner name of this instance.
    pub owner: &'a str,
    /// Cancelled when the run must stop.
    pub stop: &'a CancellationToken,
}

/// How one instance works the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Tasks run at once; 0 claims nothing.
    pub workers: u32,
    /// How long a claim holds a task without a heartbeat.
    pub lease_ms: u64,
    /// How often an idle worker looks for work it was not woken for.
    pub poll_ms: u64,
}

/// This instance's workers on the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    signals: Signals,
    config: QueueConfig,
    runner: Arc<dyn Runner>,
    /// Lease owner name of this instance.
    owner: String,
    /// Tasks running here, by id.
    running: Mutex<HashMap<String, Run>>,
    /// Stops claiming.
    stop: CancellationToken,
    workers: TaskTracker,
}

impl Queue {
    /// Start `config.workers` workers running what they claim with
    /// `runner`, the heartbeat and the cancel watcher.
    pub fn start(db: Db, signals: Signals, config: QueueConfig, runner: Arc<dyn Runner>) -> Queue {
        let owner = format!("{}:{}", hostname(), new_id());
        let inner = Arc::new(Inner {
            db,
            signals,
            config,
            runner,
            owner,
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            workers: TaskTracker::new(),
        });
        for n in 0..inner.config.workers {
            let inner = inner.clone();
            inner.workers.clone().spawn(async move {
                inner
                    .work(n)
                    .instrument(tracing::info_span!("worker", n))
                    .await
            });
        }
        inner.workers.close();
        tokio::spawn(inner.clone().heartbeat());
        tokio::spawn(inner.clone().watch_cancellations());
        tracing::info!(owner = %inner.owner, workers = inner.config.workers, "task workers started");
        Queue { inner }
    }

    /// Lease owner name of this instance.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Stop the in-flight run of `task_id` if it runs here, and wait up to
    /// `wait` for it to record what it had. Returns false when it does not
    /// run here or did not stop in time.
    pub async fn cancel_local(&self, task_id: &str, wait: Duration) -> bool {
        let Some(stopped) = self.inner.cancel_local(task_id) else {
            return false;
        };
        tokio::time::timeout(wait, stopped.cancelled())
            .await
            .is_ok()
    }

    /// Stop claiming, let running tasks finish for up to `grace`, then stop
    /// them and hand their leases back so another instance (or the next
    /// start) picks them up at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        if tokio::time::timeout(grace, self.inner.workers.wait())
            .await
            .is_err()
        {
            let tokens: Vec<CancellationToken> = self
                .inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|run| run.stop.clone())
                .collect();
            for t in tokens {
                t.cancel();
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.workers.wait()).await;
        }
        if let Err(e) = self.inner.release_leases().await {
            tracing::warn!(error = %e, "could not hand back task leases");
        }
    }
}

/// A run in progress on this instance.
#[derive(Debug, Clone)]
struct Run {
    /// Cancelled to stop the run.
    stop: CancellationToken,
    /// Cancelled once the run has stopped and recorded its end.
    stopped: CancellationToken,
}

impl Inner {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease_ms).unwrap_or(i64::MAX)
    }

    fn cancel_local(&self, task_id: &str) -> Option<CancellationToken> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let run = running.get(task_id)?;
        run.stop.cancel();
        Some(run.stopped.clone())
    }

    async fn work(self: Arc<Self>, n: u32) {
        // One worker polls (to find rescued tasks and missed wake-ups); the
        // others rest until woken, so an idle instance costs one query per
        // poll interval, not one per worker.
        let poll = Duration::from_millis(if n == 0 {
            self.config.poll_ms
        } else {
            self.config.poll_ms.saturating_mul(20)
        });
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            match self.claim().await {
                Ok(Some(claimed)) => {
                    if claimed.more_pending() {
                        // Wake another idle worker for the next one.
                        self.signals.publish_queue();
                    }
                    let task = &claimed.task;
                    let span = tracing::info_span!("task", task_id = %task.id, org_id = %task.org_id, claims = task.claims);
                    self.run(claimed).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.signals.queue_changed() => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a task failed");
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Claim a task; with it, whether more were pending and its cached
    /// answer. The claim's commit does not wait for the WAL flush: lost in
    /// a database crash, the task is simply pending again, and the run's
    /// last write (the synchronous finish) flushes it with everything else.
    async fn claim(&self) -> Result<Option<Claimed>, sqlx::Error> {
        let mut tx = self.db.platform_relaxed().await?;
        let claimed = tasks::claim(&mut tx, &self.owner, self.lease_ms(), MAX_CLAIMS).await?;
        let Some(claimed) = claimed else {
            tx.commit().await?;
            return Ok(None);
        };
        let task = &claimed.task;
        let data = json!({ "status": "in_progress", "claims": task.claims });
        tasks::append_event(&mut tx, &task.org_id, &task.id, "status", &data.to_string()).await?;
        if task.claims > 1 {
            // A rescued run starts its answer over: a watcher drops the text
            // of the deltas before this event (the dead run's).
            let data = json!({ "reason": "rescued", "claims": task.claims });
            tasks::append_event(&mut tx, &task.org_id, &task.id, "reset", &data.to_string())
                .await?;
        }
        tx.commit().await?;
        self.signals.publish(Signal::Events(task.id.clone()));
        Ok(Some(claimed))
    }

    /// Run one claimed task to its end through the runner.
    async fn run(&self, claimed: Claimed) {
        let id = claimed.task.id.clone();
        let run = Run {
            stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), run.clone());
        let lease = Lease {
            owner: &self.owner,
            stop: &run.stop,
        };
        if let Err(e) = self.runner.run(claimed, lease).await {
            // The database failed under us: the lease runs out and the task
            // is rescued, by this instance or another.
            tracing::error!(error = %e, "recording the task failed; it will be retried");
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        run.stopped.cancel();
    }

    /// Extend this instance's leases; stop runs whose task was cancelled
    /// (a missed cancel signal heals here); fail tasks that keep losing
    /// their workers.
    async fn heartbeat(self: Arc<Self>) {
        let every = Duration::from_millis((self.config.lease_ms / 3).max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop.cancelled() => {
                    if self.running.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "task heartbeat failed");
            }
        }
    }

    async fn beat(&self) -> Result<(), sqlx::Error> {
        let running: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut tx = self.db.platform().await?;
        tasks::heartbeat(&mut tx, &self.owner, &running, self.lease_ms()).await?;
        let cancelled = tasks::cancelled_held_by(&mut tx, &self.owner).await?;
        let exhausted = tasks::fail_exhausted(&mut tx, MAX_CLAIMS).await?;
        for (id, org_id) in &exhausted {
            let data = json!({ "status": "failed", "error": { "kind": "worker_lost" } });
            tasks::append_event(&mut tx, org_id, id, "status", &data.to_string()).await?;
        }
        tx.commit().await?;
        for id in cancelled {
            self.cancel_local(&id);
        }
        for (id, _) in exhausted {
            tracing::warn!(task_id = %id, "task failed: its workers kept stopping");
            self.signals.publish(Signal::Events(id));
        }
        Ok(())
    }

    async fn watch_cancellations(self: Arc<Self>) {
        let mut rx = self.signals.subscribe();
        loop {
            match rx.recv().await {
                Ok(Signal::Cancelled(id)) => {
                    self.cancel_local(&id);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Make this instance's leases expire now (graceful shutdown).
    async fn release_leases(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.db.platform().await?;
        tasks::release_leases(&mut tx, &self.owner).await?;
        tx.commit().await
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("FLY_MACHINE_ID"))
        .unwrap_or_else(|_| "vel".into())
}
