//! The usage recorder: requests answered synchronously (the OpenAI-compatible
//! gateway) are recorded as terminal `tasks` rows with their attempts and one
//! audit entry each — the same costs and audit trail as queued tasks — without
//! a database write on the request path. Handlers hand a [`Finished`] record
//! to a channel; one background task writes what has queued up in a single
//! transaction every [`RecorderConfig::linger`] or [`RecorderConfig::batch`]
//! records, whichever comes first.
//!
//! A record is lost only if the process dies within one linger period of the
//! request ending (a crash, not a shutdown: [`UsageRecorder::close`] writes
//! everything queued). When the database cannot keep up, the bounded channel
//! fills and handlers wait to enqueue: back-pressure rather than loss.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dispatch::totals;
use super::request::TaskRequest;
use crate::audit;
use crate::store::audit_logs::NewAudit;
use crate::store::tasks::Attempt;
use crate::store::usage::{self, FinishedTask};
use crate::store::{Db, now_ms};

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
            linger: Duration::from_millis(50),
            batch: 256,
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
    /// `gateway`.
    pub source: &'static str,
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
    /// Client IP, for the audit entry.
    pub ip_address: Option<String>,
    /// Client user agent, for the audit entry.
    pub user_agent: Option<String>,
    /// Audit action name (`gateway_request`).
    pub audit_action: &'static str,
}

enum Message {
    Record(Box<Finished>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the background writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<Message>,
    stop: CancellationToken,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Record(r) => write!(f, "Record({})", r.id),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl UsageRecorder {
    /// Start the writer task on the current runtime.
    pub fn start(db: Db, config: RecorderConfig) -> UsageRecorder {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let stop = CancellationToken::new();
        let worker = tokio::spawn(
            run(db, config, rx, stop.clone()).instrument(tracing::info_span!("usage_recorder")),
        );
        UsageRecorder {
            tx,
            stop,
            worker: Arc::new(Mutex::new(Some(worker))),
        }
    }

    /// Queue a finished request. Waits only while the queue is full.
    pub async fn record(&self, finished: Finished) {
        let id = finished.id.clone();
        if self
            .tx
            .send(Message::Record(Box::new(finished)))
            .await
            .is_err()
        {
            tracing::warn!(task_id = %id, "usage recorder is closed; request not recorded");
        }
    }

    /// Write everything queued so far; returns once it is committed (or
    /// has failed and been logged).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Flush(ack)).await.is_ok() {
            let _ = done.await;
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
    mut rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Finished> = Vec::with_capacity(config.batch);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            // Closing: refuse new records, write what is queued, stop.
            rx.close();
            while let Some(m) = rx.recv().await {
                take(m, &mut batch, &mut acks);
            }
            for chunk in std::mem::take(&mut batch).chunks(config.batch.max(1)) {
                write(&db, chunk.to_vec()).await;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            tracing::info!("usage recorder closed");
            return;
        };
        take(first, &mut batch, &mut acks);
        if acks.is_empty() {
            let deadline = tokio::time::Instant::now() + config.linger;
            while batch.len() < config.batch && acks.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => take(m, &mut batch, &mut acks),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            write(&db, std::mem::take(&mut batch)).await;
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

fn take(m: Message, batch: &mut Vec<Finished>, acks: &mut Vec<oneshot::Sender<()>>) {
    match m {
        Message::Record(r) => batch.push(*r),
        Message::Flush(ack) => acks.push(ack),
    }
}

/// Write a batch in one transaction; if it fails, write its records one by
/// one so that one bad record (say, of an organization deleted meanwhile)
/// does not lose the others.
async fn write(db: &Db, batch: Vec<Finished>) {
    let rows: Vec<(FinishedTask, NewAudit)> = batch.into_iter().map(rows).collect();
    let started = std::time::Instant::now();
    match write_rows(db, &rows).await {
        Ok(()) => {
            tracing::debug!(
                records = rows.len(),
                ms = started.elapsed().as_millis() as u64,
                "usage recorded"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, records = rows.len(), "usage batch failed; writing records one by one");
            for row in rows {
                if let Err(e) = write_rows(db, std::slice::from_ref(&row)).await {
                    tracing::error!(error = %e, task_id = %row.0.id, "usage record lost");
                }
            }
        }
    }
}

async fn write_rows(db: &Db, rows: &[(FinishedTask, NewAudit)]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let tasks: Vec<FinishedTask> = rows.iter().map(|(t, _)| t.clone()).collect();
    let audits: Vec<(NewAudit, i64)> = rows
        .iter()
        .map(|(t, a)| (a.clone(), t.finished_at.min(now)))
        .collect();
    // The batch spans organizations: a platform transaction (explicit RLS
    // bypass); every row carries its own org_id.
    let mut tx = db.platform().await?;
    usage::insert_finished_tasks(&mut tx, &tasks).await?;
    usage::insert_audits(&mut tx, &audits).await?;
    tx.commit().await
}

/// The task row and the audit entry of a finished request.
fn rows(f: Finished) -> (FinishedTask, NewAudit) {
    let (input_tokens, output_tokens, cost_usd) = totals(&f.attempts);
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
            "completed",
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
            "failed",
            None,
            Some(json!({ "kind": kind, "message": message })),
            partial_output.clone(),
            None,
            None,
        ),
        Outcome::Cancelled { partial_output } => (
            "cancelled",
            None,
            Some(json!({ "kind": "cancelled", "message": "the client closed the connection" })),
            partial_output.clone(),
            None,
            None,
        ),
    };
    let mut payload = json!({
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
        "cost_usd": cost_usd,
        "latency_ms": latency_ms,
        "error_kind": error.as_ref().map(|e| e["kind"].clone()).unwrap_or(Value::Null),
    });
    audit::redact(&mut payload);
    let audit = NewAudit {
        org_id: Some(f.org_id.clone()),
        user_id: Some(f.user_id.clone()),
        action: f.audit_action.to_string(),
        payload: payload.to_string(),
        ip_address: f.ip_address.clone(),
        user_agent: f.user_agent.clone(),
    };
    let request_hash = f.request.hash(&f.org_id);
    let task = FinishedTask {
        id: f.id,
        org_id: f.org_id,
        user_id: Some(f.user_id),
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
        cost_usd,
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
