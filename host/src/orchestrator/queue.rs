//! The durable queue as one instance works it: workers claim items under a
//! lease, a heartbeat extends the leases this instance holds, cancellations
//! (signalled, or seen by the heartbeat) stop the runs they concern, and a
//! shutdown hands the leases back. When an instance dies its leases run out
//! and any instance rescues its items.
//!
//! What an item is and what a claimed item does is not the queue's
//! business: a [`Runner`] claims items of its kind from the store (tasks,
//! workflows) and runs them to their end. Whatever a runner does inherits
//! the queue's guarantees: one instance at a time, rescue after a crash,
//! cancellation, hand-over at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Debug, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::signals::{Signal, Signals, WorkKind};
use crate::plugins::stats::family;
use crate::store::new_id;

/// Claims after which an item that keeps losing its worker is failed.
pub const MAX_CLAIMS: i64 = 3;

/// Items this process's workers claimed, by kind of work and how (see
/// [`render_claims`]).
static CLAIMS: Mutex<BTreeMap<(&'static str, &'static str), u64>> = Mutex::new(BTreeMap::new());

fn count_claim(kind: WorkKind, how: &'static str) {
    *CLAIMS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((kind.as_str(), how))
        .or_default() += 1;
}

/// Append `vel_queue_claims_total` in the Prometheus text format: claims
/// by kind of work and how they were made, `fair` (a worker claimed the
/// next due item) or `chained` (a run claimed the item that follows from
/// its end, in the commit that recorded the end).
pub fn render_claims(out: &mut String) {
    family(
        out,
        "vel_queue_claims_total",
        "counter",
        "Items this instance's workers claimed, by kind of work and how: fair (the next due item) or chained (claimed by the run before it).",
    );
    let claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((kind, how), n) in claims {
        let _ = writeln!(
            out,
            "vel_queue_claims_total{{kind=\"{kind}\",how=\"{how}\"}} {n}"
        );
    }
}

/// The future of one [`Runner::run`]: the item the run claimed to run
/// next, if it did.
pub type RunFuture<'a, I> =
    Pin<Box<dyn Future<Output = Result<Option<Claim<I>>, sqlx::Error>> + Send + 'a>>;

/// One kind of work on the queue: how its items are claimed, kept and
/// handed back in the store, and how a claimed item runs.
pub trait Runner: Debug + Send + Sync + 'static {
    /// What a claim hands the run.
    type Item: Send + 'static;

    /// Which kind of work this is (its wake-ups and log lines).
    fn kind(&self) -> WorkKind;

    /// Claim the next due item under a lease of `lease_ms` for `owner`.
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Option<Claim<Self::Item>>, sqlx::Error>> + Send + 'a;

    /// Extend the leases `owner` holds on `running`; returns the ids whose
    /// runs must stop (cancelled meanwhile) and fails items that keep
    /// losing their workers.
    fn beat<'a>(
        &'a self,
        owner: &'a str,
        running: &'a [String],
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a;

    /// Make the leases `owner` holds expire now (graceful shutdown).
    fn release<'a>(
        &'a self,
        owner: &'a str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Run `item` and record how it ended. The end is written only while
    /// `lease.owner` still holds the item. When `lease.stop` is cancelled
    /// (the item was cancelled, or the instance stops past its grace) the
    /// run stops its work and records what it had. An error means the end
    /// could not be recorded: the lease then runs out and the item is
    /// rescued.
    ///
    /// A run may claim the item that follows from its end in the
    /// transaction that records the end (a workflow's next step task),
    /// when [`Lease::may_claim_next`] allows: the worker runs it next.
    fn run<'a>(&'a self, item: Self::Item, lease: Lease<'a>) -> RunFuture<'a, Self::Item>;
}

/// An item just claimed.
#[derive(Debug)]
pub struct Claim<I> {
    /// Its id (what cancellations name).
    pub id: String,
    /// What the run gets.
    pub item: I,
    /// Whether more items were due: another worker is woken for them.
    pub more: bool,
    /// The span the run is recorded in.
    pub span: tracing::Span,
}

/// What a runner holds a claimed item under.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// Lease owner name of this instance.
    pub owner: &'a str,
    /// Cancelled when the run must stop.
    pub stop: &'a CancellationToken,
    /// How long a claim holds an item without a heartbeat.
    pub lease_ms: i64,
    /// This instance's workers, to tell whether one is idle.
    workers: u32,
    /// How many of them hold an item.
    busy: &'a AtomicU32,
    /// Cancelled when the instance stops claiming.
    stopping: &'a CancellationToken,
}

impl Lease<'_> {
    /// Whether the run may claim the item to run next itself (see
    /// [`Runner::run`]): only while another of this instance's workers is
    /// idle (so no due item was left waiting for this one; fair claims stay
    /// with the idle workers) and the instance is still claiming.
    pub fn may_claim_next(&self) -> bool {
        self.busy.load(Ordering::Relaxed) < self.workers && !self.stopping.is_cancelled()
    }
}

/// How one instance works the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Items run at once; 0 claims nothing.
    pub workers: u32,
    /// How long a claim holds an item without a heartbeat.
    pub lease: Duration,
    /// How often an idle worker looks for work it was not woken for.
    pub poll_interval: Duration,
}

/// This instance's workers on the queue for one kind of work; cheap to
/// clone.
#[derive(Debug)]
pub struct Queue<R: Runner> {
    inner: Arc<Inner<R>>,
}

impl<R: Runner> Clone for Queue<R> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<R: Runner> {
    signals: Signals,
    config: QueueConfig,
    runner: R,
    /// Lease owner name of this instance.
    owner: String,
    /// Items running here, by id.
    running: Mutex<HashMap<String, Run>>,
    /// Workers holding an item.
    busy: AtomicU32,
    /// Stops claiming.
    stop: CancellationToken,
    workers: TaskTracker,
}

impl<R: Runner> Queue<R> {
    /// Start `config.workers` workers running what they claim with
    /// `runner`, the heartbeat and the cancel watcher; `owner` names this
    /// instance's leases.
    pub fn start(signals: Signals, config: QueueConfig, runner: R, owner: String) -> Queue<R> {
        let inner = Arc::new(Inner {
            signals,
            config,
            runner,
            owner,
            running: Mutex::new(HashMap::new()),
            busy: AtomicU32::new(0),
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
        tracing::info!(owner = %inner.owner, workers = inner.config.workers, kind = inner.runner.kind().as_str(), "workers started");
        Queue { inner }
    }

    /// Lease owner name of this instance.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Stop the in-flight run of item `id` if it runs here, and wait up to
    /// `wait` for it to record what it had. Returns false when it does not
    /// run here or did not stop in time.
    pub async fn cancel_local(&self, id: &str, wait: Duration) -> bool {
        let Some(stopped) = self.inner.cancel_local(id) else {
            return false;
        };
        tokio::time::timeout(wait, stopped.cancelled())
            .await
            .is_ok()
    }

    /// Stop claiming, let running items finish for up to `grace`, then stop
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
        if let Err(e) = self.inner.runner.release(&self.inner.owner).await {
            tracing::warn!(error = %e, "could not hand back leases");
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

impl<R: Runner> Inner<R> {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn cancel_local(&self, id: &str) -> Option<CancellationToken> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let run = running.get(id)?;
        run.stop.cancel();
        Some(run.stopped.clone())
    }

    async fn work(self: Arc<Self>, n: u32) {
        // One worker polls (to find rescued tasks and missed wake-ups); the
        // others rest until woken, so an idle instance costs one query per
        // poll interval, not one per worker.
        let poll = if n == 0 {
            self.config.poll_interval
        } else {
            self.config.poll_interval.saturating_mul(20)
        };
        let kind = self.runner.kind();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            match self.runner.claim(&self.owner, self.lease_ms()).await {
                Ok(Some(claim)) => {
                    self.busy.fetch_add(1, Ordering::Relaxed);
                    count_claim(kind, "fair");
                    let mut next = Some(claim);
                    while let Some(claim) = next {
                        if claim.more {
                            // Wake another idle worker for the next one.
                            self.signals.publish_due(kind);
                        }
                        let span = claim.span.clone();
                        next = self.run(claim.id, claim.item).instrument(span).await;
                        if next.is_some() {
                            count_claim(kind, "chained");
                        }
                    }
                    self.busy.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.signals.due(kind) => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = kind.as_str(), "claiming failed");
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Run one claimed item to its end through the runner; the item it
    /// claimed to run next, if any.
    async fn run(&self, id: String, item: R::Item) -> Option<Claim<R::Item>> {
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
            lease_ms: self.lease_ms(),
            workers: self.config.workers,
            busy: &self.busy,
            stopping: &self.stop,
        };
        let next = match self.runner.run(item, lease).await {
            Ok(next) => next,
            Err(e) => {
                // The database failed under us: the lease runs out and the
                // item is rescued, by this instance or another.
                tracing::error!(error = %e, "recording the run failed; it will be retried");
                None
            }
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        run.stopped.cancel();
        next
    }

    /// Extend this instance's leases; stop runs whose item was cancelled
    /// (a missed cancel signal heals here); fail items that keep losing
    /// their workers.
    async fn heartbeat(self: Arc<Self>) {
        let every = Duration::from_millis((self.lease_ms() / 3).max(100).unsigned_abs());
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
                tracing::warn!(error = %e, kind = self.runner.kind().as_str(), "heartbeat failed");
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
        let stop = self
            .runner
            .beat(&self.owner, &running, self.lease_ms())
            .await?;
        for id in stop {
            self.cancel_local(&id);
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
}

/// A lease owner name for this instance: the machine and a fresh id.
pub fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("FLY_MACHINE_ID"))
        .unwrap_or_else(|_| "vel".into());
    format!("{host}:{}", new_id())
}
