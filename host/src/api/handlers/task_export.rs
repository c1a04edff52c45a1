//! `GET /api/tasks` as an export: every matching task as CSV or JSON Lines,
//! streamed page by page (a keyset cursor, `store::tasks::after`), so a
//! export of any size holds one page in memory.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::tasks::TaskView;
use crate::api::error::ApiError;
use crate::store::tasks::{self, Cursor, Task, TaskFilter};
use crate::store::{Db, to_rfc3339};

/// Rows read per database round trip.
const PAGE: i64 = 500;

/// The shapes an export comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row (`text/csv`).
    Csv,
    /// One `TaskView` JSON object per line (`application/x-ndjson`).
    JsonLines,
}

impl Format {
    /// The format `format=` names, else the one `Accept` asks for; `None`:
    /// the ordinary JSON page. 400 for a `format` that is none of them.
    pub fn wanted(format: Option<&str>, headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
        match format {
            Some("csv") => return Ok(Some(Format::Csv)),
            Some("jsonl") => return Ok(Some(Format::JsonLines)),
            Some("json") => return Ok(None),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "`format` must be json, csv or jsonl",
                ));
            }
            None => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(accept
            .split(',')
            .find_map(|part| match part.split(';').next().unwrap_or("").trim() {
                "text/csv" => Some(Format::Csv),
                "application/x-ndjson" | "application/jsonl" => Some(Format::JsonLines),
                _ => None,
            }))
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
        }
    }
}

/// The columns of a CSV export, in order.
const CSV_COLUMNS: [&str; 18] = [
    "id",
    "created_at",
    "finished_at",
    "status",
    "source",
    "task_type",
    "priority",
    "agent_id",
    "user_id",
    "description",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cached",
    "runs",
    "error_kind",
];

/// Why an export stopped midway.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// Reading a page failed.
    #[error("reading tasks: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing CSV failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Writing JSON failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What an export still has to send.
struct Export {
    db: Db,
    org_id: String,
    filter: TaskFilter,
    format: Format,
    /// Rows still allowed (`limit`), if capped.
    left: Option<i64>,
    cursor: Option<Cursor>,
    started: bool,
    done: bool,
}

/// The export's response: the organization's tasks matching `filter`,
/// newest first, at most `limit` of them.
pub fn export(
    db: Db,
    org_id: String,
    filter: TaskFilter,
    format: Format,
    limit: Option<i64>,
) -> Response {
    let state = Export {
        db,
        org_id,
        filter,
        format,
        left: limit,
        cursor: None,
        started: false,
        done: false,
    };
    let body = futures::stream::unfold(state, |mut export| async move {
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, ExportError>(chunk), export)),
            Ok(None) => None,
            Err(e) => {
                // The client sees the body end early: the status was sent.
                tracing::warn!(error = %e, "task export stopped");
                export.done = true;
                Some((Err(e), export))
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

impl Export {
    /// The next page, encoded (the CSV header with the first); `None` when
    /// every row was sent.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ExportError> {
        if self.done {
            return Ok(None);
        }
        let want = self.left.map_or(PAGE, |left| left.min(PAGE));
        let rows = if want > 0 {
            let mut tx = self.db.tenant_read(&self.org_id).await?;
            let rows = tasks::after(
                &mut tx,
                &self.org_id,
                &self.filter,
                self.cursor.as_ref(),
                want,
            )
            .await?;
            tx.commit().await?;
            rows
        } else {
            Vec::new()
        };
        if let Some(left) = &mut self.left {
            *left -= rows.len() as i64;
        }
        if (rows.len() as i64) < want || want == 0 {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.cursor = Some(Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            });
        }
        let first = !self.started;
        self.started = true;
        if rows.is_empty() && !(first && self.format == Format::Csv) {
            return Ok(None);
        }
        let bytes = match self.format {
            Format::Csv => csv_rows(&rows, first)?,
            Format::JsonLines => json_lines(&rows)?,
        };
        Ok(Some(Bytes::from(bytes)))
    }
}

fn csv_rows(rows: &[Task], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 256));
    if header {
        out.write_record(CSV_COLUMNS)?;
    }
    for t in rows {
        let error_kind = t
            .error
            .as_deref()
            .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .and_then(|e| e["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.write_record([
            t.id.as_str(),
            &to_rfc3339(t.created_at),
            &t.finished_at.map(to_rfc3339).unwrap_or_default(),
            t.status.as_str(),
            t.source.as_str(),
            &t.task_type,
            crate::orchestrator::submit::TaskPriority::name(t.priority),
            t.agent_id.as_deref().unwrap_or(""),
            t.user_id.as_deref().unwrap_or(""),
            &t.description,
            t.provider.as_deref().unwrap_or(""),
            t.model.as_deref().unwrap_or(""),
            &t.input_tokens.to_string(),
            &t.output_tokens.to_string(),
            &t.cost_nanos.to_string(),
            if t.cached { "true" } else { "false" },
            &t.claims.to_string(),
            &error_kind,
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

fn json_lines(rows: &[Task]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(rows.len() * 512);
    for t in rows {
        serde_json::to_writer(&mut out, &TaskView::from(t))?;
        out.push(b'\n');
    }
    Ok(out)
}
