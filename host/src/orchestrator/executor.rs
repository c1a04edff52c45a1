//! The workers of one instance: the durable [`Queue`] running claimed tasks
//! through the [`TaskRunner`].

use std::sync::Arc;
use std::time::Duration;

use super::dispatch::Dispatcher;
use super::queue::{Queue, QueueConfig};
use super::signals::Signals;
use super::task_runner::TaskRunner;
use crate::config::TaskConfig;
use crate::store::Db;

pub use super::queue::MAX_CLAIMS;
pub use super::task_runner::{AttemptError, AttemptView};

/// This instance's task workers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    queue: Queue,
}

impl Executor {
    /// Start `config.workers` workers, the heartbeat and the cancel watcher.
    pub fn start(db: Db, dispatcher: Dispatcher, signals: Signals, config: TaskConfig) -> Executor {
        let runner = TaskRunner::new(
            db.clone(),
            dispatcher,
            signals.clone(),
            config.cache_ttl_secs,
            config.research_cache_ttl_secs,
        );
        let queue = QueueConfig {
            workers: config.workers,
            lease_ms: config.lease_ms,
            poll_ms: config.poll_ms,
        };
        Executor {
            queue: Queue::start(db, signals, queue, Arc::new(runner)),
        }
    }

    /// Lease owner name of this instance.
    pub fn owner(&self) -> &str {
        self.queue.owner()
    }

    /// Stop the in-flight run of `task_id` if it runs here, and wait up to
    /// `wait` for it to record what it had (partial output, the attempt in
    /// flight). Returns false when it does not run here or did not stop in time.
    pub async fn cancel_local(&self, task_id: &str, wait: Duration) -> bool {
        self.queue.cancel_local(task_id, wait).await
    }

    /// Stop claiming, let running tasks finish for up to `grace`, then stop
    /// them and hand their leases back so another instance (or the next
    /// start) picks them up at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.queue.shutdown(grace).await
    }
}
