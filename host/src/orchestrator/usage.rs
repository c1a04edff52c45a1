//! The usage recorder: requests answered synchronously (the OpenAI-compatible
//! gateway) are recorded as terminal `tasks` rows with their attempts and one
//! audit entry each — the same costs and audit trail as queued tasks — without
//! a database write on the request path. Handlers hand a [`Finished`] record
//! to a channel; one background task writes them in batches, one
//! transaction each: a record waits [`RecorderConfig::linger`] for others to
//! join it, at most [`RecorderConfig::batch`] go in one transaction, and a
//! backlog is written batch after batch without waiting.
//!
//! Few, large batches (by default a second's worth, up to 2,048 records):
//! each write is a burst of work for the database (a PostgreSQL backend,
//! SQLite's thread), and on a small machine a request thread woken on the
//! core of that burst waits behind it, for milliseconds. Each burst delays
//! a request or two, so the share of slow requests follows the number of
//! writes a second (figures in docs/benchmarks.md). The cap
//! bounds the memory a batch holds. The rows are built and encoded in
//! slices, yielding to the requests in between.
//!
//! A record is lost only if the process dies within one linger period of the
//! request ending (a crash, not a shutdown: [`UsageRecorder::close`] writes
//! everything queued). When the database cannot keep up, the bounded channel
//! fills and handlers wait to enqueue: back-pressure rather than loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dispatch::totals;
use super::request::TaskRequest;
use super::state::{TaskSource, TaskStatus};
use crate::analytics::buckets::{Buckets, Sample};
use crate::audit;
use crate::store::audit_logs::NewAudit;
use crate::store::tasks::Attempt;
use crate::store::usage::{self, FinishedTask};
use crate::store::usage_buckets::{self, BucketRow};
use crate::store::{Backend, Db, now_ms};

/// Batching of the recorder.
#[derive(Debug, Clone, Copy)]
pub struct RecorderConfig {
    /// Longest a record waits before its batch is written.
    pub linger: Duration,
    /// Most records per transaction.
    pub batch: usize,
    /// Records that may wait in the channel before handlers wait.
    pub capacity: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            linger: Duration::from_millis(1000),
            batch: 2048,
            capacity: 16_384,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A provider answered.
    Completed {
        /// The answer.
        text: String,
        /// OpenAI's name of the finish reason.
        finish_reason: &'static str,
        /// Model that answered.
        model: String,
        /// Integration that answered.
        provider: String,
        /// Prompt tokens of the answering call.
        input_tokens: u32,
        /// Completion tokens of the answering call.
        output_tokens: u32,
    },
    /// No provider answered.
    Failed {
        /// Dispatch error kind (`all_attempts_failed`, `no_candidate`, …).
        kind: String,
        /// For people.
        message: String,
        /// Text streamed before the failure.
        partial_output: Option<String>,
    },
    /// The client went away before the answer was complete.
    Cancelled {
        /// Text streamed before the client left.
        partial_output: Option<String>,
    },
}

/// One finished request, as a handler hands it over.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Task id (also the response id's suffix).
    pub id: String,
    /// Organization.
    pub org_id: String,
    /// Caller.
    pub user_id: String,
    /// Where it was submitted (the gateway).
    pub source: TaskSource,
    /// The canonical request (serialised and hashed off the request path).
    pub request: TaskRequest,
    /// Streamed or not.
    pub stream: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Provider calls, in order.
    pub attempts: Vec<Attempt>,
    /// Unix ms the request arrived.
    pub created_at: i64,
    /// Unix ms it ended.
    pub finished_at: i64,
    /// When it arrived, on the monotonic clock.
    pub started: Instant,
    /// From arrival to its end (set by [`Finished::end`]).
    pub latency: Duration,
    /// Client IP, for the audit entry.
    pub ip_address: Option<String>,
    /// Client user agent, for the audit entry.
    pub user_agent: Option<String>,
    /// Audit action name (`gateway_request`).
    pub audit_action: &'static str,
}

impl Finished {
    /// The request ends now: its end time and latency.
    pub fn end(&mut self) {
        self.finished_at = now_ms();
        self.latency = self.started.elapsed();
    }
}

/// Handle to the background writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<Box<Finished>>,
    /// Told when a batch's worth is queued, so the writer stops lingering.
    full: Arc<Notify>,
    /// Records per batch.
    batch: usize,
    stop: CancellationToken,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl UsageRecorder {
    /// Start the writer task on the current runtime.
    pub fn start(db: Db, config: RecorderConfig) -> UsageRecorder {
        // A batch larger than the queue could never fill: the writer would
        // linger while handlers wait for room.
        let capacity = config.capacity.max(1);
        let config = RecorderConfig {
            batch: config.batch.clamp(1, capacity),
            capacity,
            ..config
        };
        let (tx, rx) = mpsc::channel(capacity);
        let full = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let worker = tokio::spawn(
            run(db, config, rx, full.clone(), stop.clone())
                .instrument(tracing::info_span!("usage_recorder")),
        );
        UsageRecorder {
            tx,
            full,
            batch: config.batch,
            stop,
            worker: Arc::new(Mutex::new(Some(worker))),
        }
    }

    /// Queue a finished request. Waits only while the queue is full.
    pub async fn record(&self, finished: Finished) {
        let id = finished.id.clone();
        if enqueue(&self.tx, &self.full, self.batch, Box::new(finished))
            .await
            .is_err()
        {
            tracing::warn!(task_id = %id, "usage recorder is closed; request not recorded");
        }
    }

    /// Write everything queued and stop the writer (server shutdown, after
    /// in-flight requests have drained). Later records are dropped with a
    /// warning. Safe to call more than once.
    pub async fn close(&self) {
        self.stop.cancel();
        let Some(worker) = self.worker.lock().await.take() else {
            return;
        };
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "usage recorder stopped abnormally");
        }
    }
}

async fn run(
    db: Db,
    config: RecorderConfig,
    mut rx: mpsc::Receiver<Box<Finished>>,
    full: Arc<Notify>,
    stop: CancellationToken,
) {
    // `start` made the batch at least 1.
    let max = config.batch;
    while let Some(batch) = next_batch(&mut rx, max, config.linger, &full, &stop).await {
        write(&db, batch).await;
    }
    // Closing: refuse new records, write what is queued, stop.
    rx.close();
    let mut queued = Vec::new();
    while let Some(r) = rx.recv().await {
        queued.push(*r);
    }
    while !queued.is_empty() {
        let rest = queued.split_off(max.min(queued.len()));
        write(&db, std::mem::replace(&mut queued, rest)).await;
    }
    tracing::info!("usage recorder closed");
}

/// Sends `record`; once a batch's worth is queued, wakes the writer from
/// its linger (one wake-up per batch, not one per record). Waits only
/// while the queue is full.
async fn enqueue<T>(
    tx: &mpsc::Sender<Box<T>>,
    full: &Notify,
    batch: usize,
    record: Box<T>,
) -> Result<(), mpsc::error::SendError<Box<T>>> {
    tx.send(record).await?;
    if tx.max_capacity() - tx.capacity() >= batch {
        full.notify_one();
    }
    Ok(())
}

/// The next batch to write: waits for a record, then lets others join it
/// for `linger` with one sleep, unless `max` are queued already, or come
/// meanwhile (`full` is told), or shutdown is requested. A notification
/// left from a batch already taken can end the next linger early: one
/// smaller batch, never a lost record. `None` once shutdown is requested
/// or every sender is gone.
async fn next_batch<T>(
    rx: &mut mpsc::Receiver<Box<T>>,
    max: usize,
    linger: Duration,
    full: &Notify,
    stop: &CancellationToken,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        r = rx.recv() => r?,
        () = stop.cancelled() => return None,
    };
    let mut batch = Vec::with_capacity(max);
    batch.push(*first);
    take_queued(rx, &mut batch, max);
    if batch.len() < max {
        tokio::select! {
            () = tokio::time::sleep(linger) => {}
            () = full.notified() => {}
            () = stop.cancelled() => {}
        }
        take_queued(rx, &mut batch, max);
    }
    Some(batch)
}

/// Moves what is queued into `batch`, up to `max` records.
fn take_queued<T>(rx: &mut mpsc::Receiver<Box<T>>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max
        && let Ok(r) = rx.try_recv()
    {
        batch.push(*r);
    }
}

/// Write a batch in one transaction; if it fails, write its records one by
/// one so that one bad record (say, of an organization deleted meanwhile)
/// does not lose the others. The batch's usage buckets go in the same
/// transaction (one row per bucket it touched), or one by one after it.
async fn write(db: &Db, records: Vec<Finished>) {
    let backend = db.backend();
    let count = records.len();
    let (batch, buckets) = match build(backend, records).await {
        Ok(built) => built,
        Err(e) => {
            tracing::error!(error = %e, records = count, "usage batch could not be encoded; records lost");
            return;
        }
    };
    let started = std::time::Instant::now();
    match write_batch(db, &batch, &buckets).await {
        Ok(()) => {
            tracing::debug!(
                records = count,
                buckets = buckets.len(),
                ms = started.elapsed().as_millis() as u64,
                "usage recorded"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, records = count, "usage batch failed; writing records one by one");
            let (tasks, audits) = batch.into_rows();
            for (task, audit) in tasks.into_iter().zip(audits) {
                let id = task.id.clone();
                let one = match usage::Batch::new(backend, vec![task], vec![audit]) {
                    Ok(one) => write_batch(db, &one, &[]).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = one {
                    tracing::error!(error = %e, task_id = %id, "usage record lost");
                }
            }
            for bucket in &buckets {
                let one = async {
                    let mut tx = db.platform().await?;
                    usage_buckets::insert(&mut tx, std::slice::from_ref(bucket)).await?;
                    tx.commit().await
                };
                if let Err(e) = one.await {
                    tracing::error!(error = %e, org_id = %bucket.org_id, "usage bucket lost");
                }
            }
        }
    }
}

/// Records built and encoded between two yields to the other tasks.
const ROWS_PER_SLICE: usize = 64;

/// The rows of `records`, encoded for `backend`, and the usage buckets
/// they add to. A full batch is
/// milliseconds of CPU, so it is built in slices on this async worker,
/// yielding between them. Not on a blocking thread: an idle pool thread
/// keeps what it allocated resident until it exits, and the server's
/// memory grew by the batches.
async fn build(
    backend: Backend,
    records: Vec<Finished>,
) -> Result<(usage::Batch, Vec<BucketRow>), sqlx::Error> {
    let now = now_ms();
    let mut builder = usage::BatchBuilder::new(backend, records.len());
    let mut buckets = Buckets::default();
    for (i, f) in records.into_iter().enumerate() {
        if i > 0 && i % ROWS_PER_SLICE == 0 {
            tokio::task::yield_now().await;
        }
        let latency = f.latency;
        let (task, audit) = rows(f);
        // A failure counts against the last provider tried.
        let tried = task.attempts.last().filter(|_| task.provider.is_none());
        buckets.add(&Sample {
            org_id: task.org_id.clone(),
            finished_at: task.finished_at,
            provider: match tried {
                Some(a) => Some(a.provider.clone()),
                None => task.provider.clone(),
            },
            model: match tried {
                Some(a) => Some(a.model.clone()),
                None => task.model.clone(),
            },
            agent_id: task.agent_id.clone(),
            source: task.source,
            status: Some(task.status),
            attempts: task.attempts.len(),
            cached: false,
            input_tokens: task.input_tokens,
            output_tokens: task.output_tokens,
            cost: task.cost_nanos,
            latency,
        });
        let at = task.finished_at.min(now);
        builder.push(task, (audit, at))?;
    }
    Ok((builder.finish(), buckets.into_rows(now)))
}

async fn write_batch(
    db: &Db,
    batch: &usage::Batch,
    buckets: &[BucketRow],
) -> Result<(), sqlx::Error> {
    // The batch spans organizations: a platform transaction (explicit RLS
    // bypass); every row carries its own org_id.
    let mut tx = db.platform().await?;
    usage::insert_batch(&mut tx, batch).await?;
    usage_buckets::insert(&mut tx, buckets).await?;
    // A batch's message runs to megabytes on PostgreSQL; the pooled
    // connection need not keep buffers that size.
    tx.shrink_buffers();
    tx.commit().await
}

/// The task row and the audit entry of a finished request.
fn rows(f: Finished) -> (FinishedTask, NewAudit) {
    let (input_tokens, output_tokens, cost) = totals(&f.attempts);
    let latency_ms = f.finished_at - f.created_at;
    let (status, result, error, partial_output, provider, model) = match &f.outcome {
        Outcome::Completed {
            text,
            finish_reason,
            model,
            provider,
            input_tokens,
            output_tokens,
        } => (
            TaskStatus::Completed,
            Some(json!({
                "text": text,
                "finish_reason": finish_reason,
                "model": model,
                "provider": provider,
                "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens },
                "cached": false,
            })),
            None,
            None,
            Some(provider.clone()),
            Some(model.clone()),
        ),
        Outcome::Failed {
            kind,
            message,
            partial_output,
        } => (
            TaskStatus::Failed,
            None,
            Some(json!({ "kind": kind, "message": message })),
            partial_output.clone(),
            None,
            None,
        ),
        Outcome::Cancelled { partial_output } => (
            TaskStatus::Cancelled,
            None,
            Some(json!({ "kind": "cancelled", "message": "the client closed the connection" })),
            partial_output.clone(),
            None,
            None,
        ),
    };
    let payload = audit::Payload::from(json!({
        "task_id": f.id,
        "status": status,
        "stream": f.stream,
        "requested_model": f.request.model,
        "task_type": f.request.task_type,
        "provider": provider,
        "model": model,
        "attempts": f.attempts.len(),
        // Not `*_tokens`: the audit log redacts keys that mention tokens.
        "usage": { "input": input_tokens, "output": output_tokens },
        "latency_ms": latency_ms,
        "error_kind": error.as_ref().map(|e| e["kind"].clone()).unwrap_or(Value::Null),
    }))
    .usd("cost_usd", Some(cost));
    let audit = NewAudit {
        org_id: Some(f.org_id.clone()),
        user_id: Some(f.user_id.clone()),
        action: f.audit_action.to_string(),
        payload: payload.render(),
        ip_address: f.ip_address.clone(),
        user_agent: f.user_agent.clone(),
    };
    let request_hash = f.request.hash(&f.org_id);
    let task = FinishedTask {
        id: f.id,
        org_id: f.org_id,
        user_id: Some(f.user_id),
        agent_id: f.request.agent_id.clone(),
        source: f.source,
        description: description(&f.request),
        task_type: f.request.task_type.clone(),
        priority: 1,
        status,
        // Serialising a struct of plain fields cannot fail.
        request: serde_json::to_string(&f.request).unwrap_or_default(),
        stream: f.stream,
        request_hash,
        result: result.map(|r| r.to_string()),
        error: error.map(|e| e.to_string()),
        partial_output,
        provider,
        model,
        input_tokens,
        output_tokens,
        cost_nanos: cost,
        created_at: f.created_at,
        finished_at: f.finished_at,
        attempts: f.attempts,
    };
    (task, audit)
}

fn description(request: &TaskRequest) -> String {
    match &request.model {
        Some(m) => format!("chat completion via the gateway (model {m})"),
        None => "chat completion via the gateway".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(50);

    /// A channel holding `n` numbered records.
    async fn queued(n: u32) -> (mpsc::Sender<Box<u32>>, mpsc::Receiver<Box<u32>>) {
        let (tx, rx) = mpsc::channel(1024);
        for i in 0..n {
            tx.send(Box::new(i)).await.unwrap();
        }
        (tx, rx)
    }

    /// One linger has passed since `started` (the paused clock moves only
    /// to timers' deadlines, rounded to the millisecond).
    fn lingered_once(started: tokio::time::Instant) {
        let waited = started.elapsed();
        assert!(
            waited >= LINGER && waited < LINGER + Duration::from_millis(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn records_wait_one_linger_for_company() {
        let (tx, mut rx) = queued(1).await;
        let (full, stop) = (Notify::new(), CancellationToken::new());
        let started = tokio::time::Instant::now();
        let late = tokio::spawn(async move {
            // Arrives while the first record lingers.
            tokio::time::sleep(LINGER / 2).await;
            tx.send(Box::new(1)).await.unwrap();
            tx
        });
        let batch = next_batch(&mut rx, 256, LINGER, &full, &stop)
            .await
            .unwrap();
        assert_eq!(batch, vec![0, 1]);
        lingered_once(started);
        drop(late.await.unwrap());
        assert_eq!(next_batch(&mut rx, 256, LINGER, &full, &stop).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_is_written_without_waiting() {
        let (_tx, mut rx) = queued(5).await;
        let (full, stop) = (Notify::new(), CancellationToken::new());
        let started = tokio::time::Instant::now();
        assert_eq!(
            next_batch(&mut rx, 2, LINGER, &full, &stop).await.unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            next_batch(&mut rx, 2, LINGER, &full, &stop).await.unwrap(),
            vec![2, 3]
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The last one is short of a batch: it lingers.
        assert_eq!(
            next_batch(&mut rx, 2, LINGER, &full, &stop).await.unwrap(),
            vec![4]
        );
        assert_eq!(started.elapsed(), LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_the_linger_short() {
        let (_tx, mut rx) = queued(1).await;
        let (full, stop) = (Notify::new(), CancellationToken::new());
        stop.cancel();
        let started = tokio::time::Instant::now();
        // A record already taken is still handed back for writing.
        let batch = next_batch(&mut rx, 256, LINGER, &full, &stop).await;
        assert!(batch.is_none() || batch == Some(vec![0]), "{batch:?}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_cuts_the_linger_short() {
        let (tx, mut rx) = queued(1).await;
        let full = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let sender = full.clone();
        let late = tokio::spawn(async move {
            // Four more arrive while the first lingers: a batch's worth
            // queued wakes the writer.
            tokio::time::sleep(LINGER / 2).await;
            for i in 1..5 {
                enqueue(&tx, &sender, 4, Box::new(i)).await.unwrap();
            }
            tx
        });
        let batch = next_batch(&mut rx, 4, LINGER, &full, &stop).await.unwrap();
        assert_eq!(batch, vec![0, 1, 2, 3]);
        assert_eq!(started.elapsed(), LINGER / 2);
        drop(late.await.unwrap());
    }
}
