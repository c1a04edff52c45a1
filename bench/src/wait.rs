//! `vel-bench wait`: poll objects (e.g. tasks created by `vel-bench http
//! --ids-out`) until a JSON field reaches a value, to time end-to-end work.
//!
//! Ids are taken in order by a few workers; each polls its id until done
//! and only then takes the next, so the load added to the server stays
//! small while work completes roughly in submission order.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use http::header::HeaderMap;
use serde::Serialize;
use tracing::Instrument as _;

use crate::conn::{self, BenchError, Conn, Target};

/// Placeholder in `--url-template` replaced by each id.
pub(crate) const ID_PLACEHOLDER: &str = "{id}";

/// Arguments of `vel-bench wait`.
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// URL of one object, with `{id}` where the id goes.
    #[arg(long)]
    pub url_template: String,
    /// File with one id per line.
    #[arg(long)]
    pub ids_file: PathBuf,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// JSON pointer of the field to watch.
    #[arg(long, default_value = "/status")]
    pub pointer: String,
    /// Value that means done.
    #[arg(long, default_value = "completed")]
    pub until: String,
    /// Values that mean the object will never be done (repeatable).
    #[arg(long)]
    pub fail_on: Vec<String>,
    /// Concurrent pollers.
    #[arg(long, short = 'c', default_value_t = 2)]
    pub concurrency: usize,
    /// Pause before polling the same id again.
    #[arg(long, default_value_t = 5)]
    pub poll_interval_ms: u64,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Measure from this instant (Unix milliseconds, e.g. `date +%s%3N`
    /// taken before submitting) instead of from the start of the wait.
    #[arg(long)]
    pub started_at_ms: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Result of a wait.
#[derive(Debug, Serialize)]
pub(crate) struct WaitReport {
    /// Ids waited for.
    pub ids: usize,
    /// Ids that reached the value.
    pub done: usize,
    /// Ids that reached a failure value, failed to poll, or timed out.
    pub failed: usize,
    /// Seconds from the start (see `--started-at-ms`) to the last id done.
    pub elapsed_s: f64,
    /// `done / elapsed_s`.
    pub per_sec: f64,
    /// Poll requests sent.
    pub polls: u64,
    /// First failure seen, for diagnosis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

impl WaitReport {
    /// Whether every id reached the value.
    pub(crate) fn passed(&self) -> bool {
        self.failed == 0 && self.done == self.ids
    }

    /// Human-readable form.
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "waited for {} ids: {} done, {} failed, {:.3} s, {:.1}/s ({} polls)",
            self.ids, self.done, self.failed, self.elapsed_s, self.per_sec, self.polls
        );
        if let Some(f) = &self.first_failure {
            out.push_str(&format!("\n  first failure: {f}"));
        }
        out
    }
}

struct Job {
    target: Target,
    path_template: String,
    headers: HeaderMap,
    ids: Vec<String>,
    next: AtomicUsize,
    pointer: String,
    until: String,
    fail_on: Vec<String>,
    interval: Duration,
    deadline: Instant,
}

#[derive(Default)]
struct PollerResult {
    done: usize,
    failed: usize,
    polls: u64,
    first_failure: Option<String>,
}

/// Poll every id until done, failed or out of time.
pub(crate) async fn run(args: WaitArgs) -> Result<WaitReport, BenchError> {
    let start_wall = SystemTime::now();
    let started = Instant::now();
    // Parse with a placeholder-free URL so `{id}` never reaches the URI parser.
    let probe = args.url_template.replace(ID_PLACEHOLDER, "x");
    let (target, _) = conn::parse_url(&probe).await?;
    let path_template = args
        .url_template
        .split_once(&target.authority)
        .map(|(_, rest)| rest.to_string())
        .ok_or_else(|| BenchError::Url(args.url_template.clone(), "no authority".into()))?;
    let ids: Vec<String> = std::fs::read_to_string(&args.ids_file)
        .map_err(|e| BenchError::File(args.ids_file.display().to_string(), e))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let job = Arc::new(Job {
        target,
        path_template,
        headers: conn::parse_headers(&args.headers)?,
        ids,
        next: AtomicUsize::new(0),
        pointer: args.pointer.clone(),
        until: args.until.clone(),
        fail_on: args.fail_on.clone(),
        interval: Duration::from_millis(args.poll_interval_ms),
        deadline: started + Duration::from_secs(args.timeout_secs),
    });
    let mut pollers = Vec::new();
    for p in 0..args.concurrency.max(1) {
        pollers.push(tokio::spawn(
            poller(job.clone()).instrument(tracing::info_span!("poller", p)),
        ));
    }
    let mut total = PollerResult::default();
    for handle in pollers {
        let r = handle
            .await
            .map_err(|e| BenchError::Failed(format!("poller panicked: {e}")))?;
        total.done += r.done;
        total.failed += r.failed;
        total.polls += r.polls;
        if total.first_failure.is_none() {
            total.first_failure = r.first_failure;
        }
    }
    let mut elapsed = started.elapsed();
    if let Some(ms) = args.started_at_ms {
        let since = UNIX_EPOCH + Duration::from_millis(ms);
        if let Ok(before) = start_wall.duration_since(since) {
            elapsed += before;
        }
    }
    let secs = elapsed.as_secs_f64();
    Ok(WaitReport {
        ids: job.ids.len(),
        done: total.done,
        failed: total.failed,
        elapsed_s: secs,
        per_sec: if secs > 0.0 {
            total.done as f64 / secs
        } else {
            0.0
        },
        polls: total.polls,
        first_failure: total.first_failure,
    })
}

async fn poller(job: Arc<Job>) -> PollerResult {
    let mut conn = Conn::new(job.target.clone());
    let mut result = PollerResult::default();
    let timeout = Duration::from_secs(30);
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        let Some(id) = job.ids.get(i) else {
            break;
        };
        let path = job.path_template.replace(ID_PLACEHOLDER, id);
        loop {
            if Instant::now() >= job.deadline {
                result.failed += 1;
                result
                    .first_failure
                    .get_or_insert_with(|| format!("{id}: timed out"));
                break;
            }
            result.polls += 1;
            let exchange = conn
                .send(
                    &Method::GET,
                    &path,
                    &job.headers,
                    bytes::Bytes::new(),
                    timeout,
                )
                .await;
            let value = match exchange {
                Ok(x) if x.status == 200 => conn::json_field(&x.body, &job.pointer),
                Ok(x) => Err(BenchError::Failed(format!(
                    "status {}: {}",
                    x.status,
                    String::from_utf8_lossy(&x.body[..x.body.len().min(300)])
                ))),
                Err(e) => Err(e),
            };
            match value {
                Ok(v) if v == job.until => {
                    result.done += 1;
                    break;
                }
                Ok(v) if job.fail_on.contains(&v) => {
                    result.failed += 1;
                    result
                        .first_failure
                        .get_or_insert_with(|| format!("{id}: {v}"));
                    break;
                }
                Ok(_) => tokio::time::sleep(job.interval).await,
                Err(e) => {
                    result.failed += 1;
                    result
                        .first_failure
                        .get_or_insert_with(|| format!("{id}: {e}"));
                    break;
                }
            }
        }
    }
    result
}
