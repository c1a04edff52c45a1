//! Watching an event log as Server-Sent Events: a task's or a workflow's
//! numbered events, each number its SSE id, resumable with
//! `Last-Event-ID`, ending after the terminal status.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::api::error::ApiError;
use crate::orchestrator::signals::Signal;
use crate::state::AppState;
use crate::store::{self, tasks::Event as Row};

/// How often a watcher re-reads the events even without a signal.
const STREAM_POLL: Duration = Duration::from_secs(2);

/// Which log is watched.
#[derive(Debug, Clone, Copy)]
pub enum EventLog {
    /// A task's `task_events`.
    Task,
    /// A workflow's `workflow_events`.
    Workflow,
}

impl EventLog {
    /// The status of the object `id`, `None` when the organization has none.
    async fn status(
        self,
        state: &AppState,
        org_id: &str,
        id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = state.db.tenant_read(org_id).await?;
        let status = match self {
            EventLog::Task => store::tasks::get(&mut tx, org_id, id)
                .await?
                .map(|t| t.status.as_str().to_owned()),
            EventLog::Workflow => store::workflows::get(&mut tx, org_id, id)
                .await?
                .map(|w| w.status.as_str().to_owned()),
        };
        tx.commit().await?;
        Ok(status)
    }

    /// Up to 500 events after number `after`.
    async fn after(
        self,
        state: &AppState,
        org_id: &str,
        id: &str,
        after: i64,
    ) -> Result<Vec<Row>, sqlx::Error> {
        let mut tx = state.db.tenant_read(org_id).await?;
        let rows = match self {
            EventLog::Task => store::tasks::events_after(&mut tx, org_id, id, after).await?,
            EventLog::Workflow => {
                store::workflows::events_after(&mut tx, org_id, id, after).await?
            }
        };
        tx.commit().await?;
        Ok(rows)
    }

    fn not_found(self) -> ApiError {
        match self {
            EventLog::Task => ApiError::not_found("task"),
            EventLog::Workflow => ApiError::not_found("workflow"),
        }
    }
}

/// Whether a status has no successor (tasks and workflows share the names).
fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// Whether the event is a terminal status: the last a stream sends.
fn is_terminal_event(row: &Row) -> bool {
    row.kind == "status"
        && serde_json::from_str::<Value>(&row.data)
            .ok()
            .and_then(|d| d["status"].as_str().map(is_terminal))
            .unwrap_or(false)
}

/// Watch `log` of object `id` in `org_id`. Keep-alive comments are sent
/// while nothing happens; the stream ends after the terminal status. A
/// finished object's stream sends the events after `Last-Event-ID` and
/// closes; with none left it answers 204, which tells a browser's
/// `EventSource` to stop reconnecting.
pub async fn watch(
    state: AppState,
    org_id: &str,
    log: EventLog,
    id: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let after = match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::trim))
    {
        None | Some(Ok("")) => 0,
        Some(v) => v
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be an event number",
                )
            })?,
    };
    // Subscribe before the first read, so nothing falls between them.
    let signals = state.signals.subscribe();
    let status = log
        .status(&state, org_id, &id)
        .await?
        .ok_or_else(|| log.not_found())?;
    if is_terminal(&status) {
        // Every event of a finished object is written: send the rest, close.
        let mut rows = Vec::new();
        loop {
            let from = rows.last().map_or(after, |r: &Row| r.seq);
            let page = log.after(&state, org_id, &id, from).await?;
            let full = page.len() >= 500;
            rows.extend(page);
            if !full {
                break;
            }
        }
        // The terminal status ends the stream, as it does a live one; when
        // it was at or before Last-Event-ID, nothing is left to send.
        match rows.iter().position(is_terminal_event) {
            Some(end) => rows.truncate(end + 1),
            None => rows.clear(),
        }
        if rows.is_empty() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let events = rows.into_iter().map(|row| {
            Ok::<_, Infallible>(
                Event::default()
                    .id(row.seq.to_string())
                    .event(row.kind)
                    .data(row.data),
            )
        });
        return Ok(Sse::new(futures::stream::iter(events)).into_response());
    }
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let keep_alive = state.config.tasks.sse_keepalive;
    tokio::spawn(pump(state, org_id.to_string(), log, id, after, signals, tx));
    let events =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// Reads new events from the database whenever the object is signalled
/// (or every [`STREAM_POLL`]) and sends them, until the terminal status is
/// sent or the client goes away.
async fn pump(
    state: AppState,
    org_id: String,
    log: EventLog,
    id: String,
    mut after: i64,
    mut signals: broadcast::Receiver<Signal>,
    out: mpsc::Sender<Event>,
) {
    loop {
        let rows = match log.after(&state, &org_id, &id, after).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, id = %id, "reading events failed");
                Vec::new()
            }
        };
        let full_page = rows.len() >= 500;
        for row in rows {
            after = row.seq;
            let terminal = is_terminal_event(&row);
            let event = Event::default()
                .id(row.seq.to_string())
                .event(row.kind)
                .data(row.data);
            if out.send(event).await.is_err() {
                return;
            }
            if terminal {
                return;
            }
        }
        if full_page {
            continue;
        }
        // Wait for a signal about this object, the poll interval, or the
        // client leaving.
        let wait = async {
            loop {
                match signals.recv().await {
                    Ok(Signal::Events(signalled)) if signalled == id => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep(STREAM_POLL) => {}
            _ = out.closed() => return,
        }
    }
}
