//! `vel-bench http`: a fixed number of requests spread over N workers, each
//! with its own keep-alive connection sending sequentially, every request's
//! latency recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Serialize;
use tokio::sync::Barrier;
use tracing::Instrument as _;

use crate::conn::{self, BenchError, Conn, Target};
use crate::stats::{self, Summary};

/// Placeholder in the body replaced by the request's number (0-based, warm-up
/// requests numbered after the measured ones), so that every request can differ.
pub(crate) const SEQ_PLACEHOLDER: &str = "{{n}}";

/// Arguments of `vel-bench http`.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// Target URL (plain http://).
    #[arg(long)]
    pub url: String,
    /// HTTP method (default: POST with a body, GET without).
    #[arg(long)]
    pub method: Option<Method>,
    /// Request body; `{{n}}` is replaced by the request number.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Extra header `Name: value` (repeatable). A body defaults to
    /// `content-type: application/json`.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Concurrent workers, each with its own keep-alive connection.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub concurrency: usize,
    /// Measured requests (in total, over all workers).
    #[arg(long, short = 'n')]
    pub requests: u64,
    /// Unmeasured requests sent first, on the same connections.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Status every response must have; any other fails the run.
    #[arg(long, default_value_t = 200)]
    pub expect_status: u16,
    /// Per-request timeout.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Write the field at `--id-pointer` of each measured response to this
    /// file, one per line in request order (e.g. the ids of created objects).
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
    /// JSON pointer of the id in each response body.
    #[arg(long, default_value = "/id")]
    pub id_pointer: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Result of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Target URL.
    pub url: String,
    /// Method used.
    pub method: String,
    /// Workers (connections).
    pub concurrency: usize,
    /// Warm-up requests sent before measuring.
    pub warmup: u64,
    /// Wall-clock time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Latencies and throughput of the measured requests that got a response.
    #[serde(flatten)]
    pub latency: Summary,
    /// Responses with the expected status (warm-up included).
    pub ok: u64,
    /// Responses with another status, by status (warm-up included).
    pub unexpected: BTreeMap<u16, u64>,
    /// Requests without a response (connection errors, timeouts; warm-up included).
    pub errors: u64,
    /// Connections opened (equals `concurrency` when keep-alive held).
    pub connects: u64,
    /// First failure seen, for diagnosis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

impl Report {
    /// Whether every request got the expected status.
    pub(crate) fn passed(&self) -> bool {
        self.errors == 0 && self.unexpected.is_empty()
    }

    /// Human-readable form.
    pub(crate) fn render(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "{} {}\n  requests {} (warm-up {}), concurrency {}, {:.3} s, {:.1} req/s\n  \
             latency µs: p50 {:.1}  p90 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}\n  \
             ok {}, unexpected {:?}, errors {}, connections {}",
            self.method,
            self.url,
            l.count,
            self.warmup,
            self.concurrency,
            self.elapsed_s,
            l.requests_per_sec,
            l.p50_us,
            l.p90_us,
            l.p95_us,
            l.p99_us,
            l.max_us,
            l.mean_us,
            self.ok,
            self.unexpected,
            self.errors,
            self.connects,
        );
        if let Some(f) = &self.first_failure {
            out.push_str(&format!("\n  first failure: {f}"));
        }
        out
    }
}

/// What every worker sends.
struct Plan {
    target: Target,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<String>,
    templated: bool,
    expect: u16,
    timeout: Duration,
    id_pointer: Option<String>,
    requests: u64,
    warmup: u64,
}

impl Plan {
    fn body(&self, n: u64) -> Bytes {
        match &self.body {
            None => Bytes::new(),
            Some(b) if self.templated => Bytes::from(b.replace(SEQ_PLACEHOLDER, &n.to_string())),
            Some(b) => Bytes::from(b.clone()),
        }
    }
}

/// What one worker saw.
#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u64>,
    ok: u64,
    unexpected: BTreeMap<u16, u64>,
    errors: u64,
    connects: u64,
    first_failure: Option<String>,
    ids: Vec<(u64, String)>,
}

impl WorkerResult {
    fn fail(&mut self, what: String) {
        if self.first_failure.is_none() {
            self.first_failure = Some(what);
        }
    }
}

/// Run the load described by `args`.
pub(crate) async fn run(args: HttpArgs) -> Result<Report, BenchError> {
    let (target, path) = conn::parse_url(&args.url).await?;
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f).map_err(|e| BenchError::File(f.display().to_string(), e))?,
        ),
        (None, None) => None,
    };
    let mut headers = conn::parse_headers(&args.headers)?;
    if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let method = args.method.clone().unwrap_or(if body.is_some() {
        Method::POST
    } else {
        Method::GET
    });
    let concurrency = args.concurrency.max(1);
    let plan = Arc::new(Plan {
        target,
        method: method.clone(),
        path,
        headers,
        templated: body.as_deref().is_some_and(|b| b.contains(SEQ_PLACEHOLDER)),
        body,
        expect: args.expect_status,
        timeout: Duration::from_millis(args.timeout_ms),
        id_pointer: args.ids_out.as_ref().map(|_| args.id_pointer.clone()),
        requests: args.requests,
        warmup: args.warmup,
    });

    let warm_counter = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let span = tracing::info_span!("worker", w);
        workers.push(tokio::spawn(
            worker(
                plan.clone(),
                warm_counter.clone(),
                counter.clone(),
                barrier.clone(),
            )
            .instrument(span),
        ));
    }
    // Every worker is connected and warmed up once it reaches the barrier.
    barrier.wait().await;
    let started = Instant::now();
    let mut total = WorkerResult::default();
    for handle in workers {
        let r = handle
            .await
            .map_err(|e| BenchError::Failed(format!("worker panicked: {e}")))?;
        total.latencies.extend(r.latencies);
        total.ok += r.ok;
        for (status, n) in r.unexpected {
            *total.unexpected.entry(status).or_default() += n;
        }
        total.errors += r.errors;
        total.connects += r.connects;
        if total.first_failure.is_none() {
            total.first_failure = r.first_failure;
        }
        total.ids.extend(r.ids);
    }
    let elapsed = started.elapsed();

    if let Some(out) = &args.ids_out {
        total.ids.sort_unstable_by_key(|(n, _)| *n);
        let mut text = String::with_capacity(total.ids.len() * 40);
        for (_, id) in &total.ids {
            text.push_str(id);
            text.push('\n');
        }
        std::fs::write(out, text).map_err(|e| BenchError::File(out.display().to_string(), e))?;
    }

    Ok(Report {
        url: args.url,
        method: method.to_string(),
        concurrency,
        warmup: args.warmup,
        elapsed_s: elapsed.as_secs_f64(),
        latency: stats::summarize(total.latencies, elapsed),
        ok: total.ok,
        unexpected: total.unexpected,
        errors: total.errors,
        connects: total.connects,
        first_failure: total.first_failure,
    })
}

/// One worker: connect, take warm-up requests until none are left, meet the
/// others at the barrier, then take measured requests until none are left.
async fn worker(
    plan: Arc<Plan>,
    warm_counter: Arc<AtomicU64>,
    counter: Arc<AtomicU64>,
    barrier: Arc<Barrier>,
) -> WorkerResult {
    let mut conn = Conn::new(plan.target.clone());
    let mut result = WorkerResult::default();
    if let Err(e) = conn.ensure_open().await {
        result.fail(e.to_string());
    }
    loop {
        let n = warm_counter.fetch_add(1, Ordering::Relaxed);
        if n >= plan.warmup {
            break;
        }
        one(&plan, &mut conn, plan.requests + n, false, &mut result).await;
    }
    barrier.wait().await;
    loop {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if n >= plan.requests {
            break;
        }
        one(&plan, &mut conn, n, true, &mut result).await;
    }
    result.connects = conn.connects;
    result
}

/// Send request number `n` and account for its outcome.
async fn one(plan: &Plan, conn: &mut Conn, n: u64, measured: bool, result: &mut WorkerResult) {
    let sent = conn
        .send(
            &plan.method,
            &plan.path,
            &plan.headers,
            plan.body(n),
            plan.timeout,
        )
        .await;
    let exchange = match sent {
        Ok(x) => x,
        Err(e) => {
            result.errors += 1;
            result.fail(format!("request {n}: {e}"));
            return;
        }
    };
    if measured {
        result
            .latencies
            .push(u64::try_from(exchange.latency.as_nanos()).unwrap_or(u64::MAX));
    }
    if exchange.status != plan.expect {
        *result.unexpected.entry(exchange.status).or_default() += 1;
        let body = String::from_utf8_lossy(&exchange.body[..exchange.body.len().min(300)]);
        result.fail(format!("request {n}: status {}: {body}", exchange.status));
        return;
    }
    result.ok += 1;
    if let (true, Some(pointer)) = (measured, &plan.id_pointer) {
        match conn::json_field(&exchange.body, pointer) {
            Ok(id) => result.ids.push((n, id)),
            Err(e) => {
                result.errors += 1;
                result.fail(format!("request {n}: {e}"));
            }
        }
    }
}
