//! The workers of one instance: the durable [`Queue`] running claimed tasks
//! through the [`TaskRunner`] and claimed workflows through the
//! [`WorkflowRunner`], under one lease owner name.

use std::time::Duration;

use super::dispatch::Dispatcher;
use super::queue::{Queue, QueueConfig, owner_name};
use super::signals::Signals;
use super::task_runner::{HandOver, TaskRunner};
use crate::config::TaskConfig;
use crate::plugins::Plugins;
use crate::store::Db;
use crate::workflows::engine::WorkflowRunner;

pub use super::queue::MAX_CLAIMS;
pub use super::task_runner::{AttemptError, AttemptView};

/// This instance's task and workflow workers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    tasks: Queue<TaskRunner>,
    workflows: Queue<WorkflowRunner>,
}

impl Executor {
    /// Start `config.workers` task workers and `config.workflow_workers`
    /// workflow workers, their heartbeats and cancel watchers.
    pub fn start(
        db: Db,
        dispatcher: Dispatcher,
        plugins: Plugins,
        signals: Signals,
        config: TaskConfig,
    ) -> Executor {
        let owner = owner_name();
        // A step task's worker takes its workflow over as the task ends.
        let hand_over = HandOver {
            engine: WorkflowRunner::new(db.clone(), plugins.clone(), signals.clone()),
            lease_ms: i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX),
        };
        let runner = TaskRunner::new(
            db.clone(),
            dispatcher,
            signals.clone(),
            config.cache_ttl,
            config.research_cache_ttl,
        )
        .with_hand_over(hand_over);
        let queue = QueueConfig {
            workers: config.workers,
            lease: config.lease,
            poll_interval: config.poll_interval,
        };
        let tasks = Queue::start(signals.clone(), queue, runner, owner.clone());
        let engine = WorkflowRunner::new(db, plugins, signals.clone());
        let queue = QueueConfig {
            workers: config.workflow_workers,
            ..queue
        };
        let workflows = Queue::start(signals, queue, engine, owner);
        Executor { tasks, workflows }
    }

    /// Lease owner name of this instance.
    pub fn owner(&self) -> &str {
        self.tasks.owner()
    }

    /// Stop the in-flight run of `task_id` if it runs here, and wait up to
    /// `wait` for it to record what it had (partial output, the attempt in
    /// flight). Returns false when it does not run here or did not stop in time.
    pub async fn cancel_local(&self, task_id: &str, wait: Duration) -> bool {
        self.tasks.cancel_local(task_id, wait).await
    }

    /// Stop claiming, let running tasks and workflow moves finish for up to
    /// `grace`, then stop them and hand their leases back so another
    /// instance (or the next start) picks them up at once.
    pub async fn shutdown(&self, grace: Duration) {
        tokio::join!(self.tasks.shutdown(grace), self.workflows.shutdown(grace));
    }
}
