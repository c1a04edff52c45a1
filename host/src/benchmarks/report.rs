//! What a benchmark found, computed from its tasks when it is read: every
//! run, figures by target, and once it completed each pair of targets
//! compared on latency, cost and ratings by Welch's t-test ([`super::stats`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::service::BenchmarkError;
use super::stats::{self, ALPHA, Summary};
use super::{Layout, MAX_RUNS, Place};
use crate::batches::BatchStatus;
use crate::money::{Money, Usd};
use crate::orchestrator::state::TaskStatus;
use crate::state::AppState;
use crate::store::batches::{self, Batch, ItemResult};
use crate::store::benchmarks::{self, Benchmark};

/// One run of a benchmark and its outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Run {
    /// Its index (what a rating names).
    pub run: usize,
    /// The target it ran on.
    pub target: String,
    /// Index of its prompt.
    pub prompt: usize,
    /// Its repetition, from 0.
    pub repetition: usize,
    /// The task it ran as.
    pub task_id: String,
    /// The task's status; `queued` while it waits for its turn, `not_run`
    /// when the benchmark's batch was cancelled first.
    pub status: String,
    /// Milliseconds from the task's start to its end, once completed.
    pub latency_ms: Option<i64>,
    /// US dollars over its provider calls.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// `integration/model` that answered.
    pub answered_by: Option<String>,
    /// The answer's text, once completed.
    pub output: Option<String>,
    /// The error's kind, once failed.
    pub error_kind: Option<String>,
    /// Its ratings (1–5), one per person who rated it.
    pub ratings: Vec<i64>,
}

/// What one target did over its runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetFigures {
    /// `integration/model`.
    pub target: String,
    /// Its runs.
    pub runs: usize,
    /// Those completed.
    pub completed: usize,
    /// Those failed.
    pub failed: usize,
    /// Those cancelled or never run.
    pub cancelled: usize,
    /// Those queued or running.
    pub unfinished: usize,
    /// Failed runs by error kind.
    pub errors: BTreeMap<String, usize>,
    /// Latency of the completed runs, in milliseconds.
    pub latency_ms: Option<Summary>,
    /// Cost of the completed runs, in US dollars each.
    pub cost_per_run_usd: Option<Summary>,
    /// US dollars over all its runs.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Prompt tokens over all its runs.
    pub input_tokens: i64,
    /// Completion tokens over all its runs.
    pub output_tokens: i64,
    /// Its outputs' ratings (1–5).
    pub rating: Option<Summary>,
}

/// What two targets are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Milliseconds per completed run (lower is better).
    Latency,
    /// US dollars per completed run (lower is better).
    Cost,
    /// Ratings of the outputs (higher is better).
    Rating,
}

impl Metric {
    /// The sentence's verb for the better target, and whether a lower
    /// mean is better.
    fn words(self) -> (&'static str, &'static str, bool) {
        match self {
            Metric::Latency => ("is faster than", "latency", true),
            Metric::Cost => ("is cheaper than", "cost", true),
            Metric::Rating => ("is rated higher than", "ratings", false),
        }
    }
}

/// Two targets compared on one metric by Welch's t-test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comparison {
    /// What is compared.
    pub metric: Metric,
    /// The first target.
    pub a: String,
    /// The second target.
    pub b: String,
    /// The first target's mean (ms, US dollars or points).
    pub mean_a: f64,
    /// The second target's mean.
    pub mean_b: f64,
    /// Welch's t statistic (none when neither sample varies).
    pub t: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `p_value` < 0.05.
    pub significant: bool,
    /// The better target when the difference is significant.
    pub better: Option<String>,
    /// In words: "mock/echo is faster than mock/slow, p = 0.003".
    pub sentence: String,
}

/// What a benchmark found so far.
#[derive(Debug)]
pub struct Report {
    /// The benchmark.
    pub benchmark: Benchmark,
    /// Its batch (status, concurrency, end).
    pub batch: Batch,
    /// Every run, in order.
    pub runs: Vec<Run>,
    /// Figures by target, in the benchmark's order.
    pub targets: Vec<TargetFigures>,
    /// Each pair of targets on each metric with enough data; only once
    /// the benchmark completed.
    pub comparisons: Vec<Comparison>,
    /// US dollars over every run.
    pub cost: Money,
}

/// Benchmark `id` of `org_id` and what it found.
pub async fn read(state: &AppState, org_id: &str, id: &str) -> Result<Report, BenchmarkError> {
    let mut tx = state.db.tenant_read(org_id).await?;
    let benchmark = benchmarks::get(&mut tx, org_id, id)
        .await?
        .ok_or(BenchmarkError::NotFound)?;
    let batch = batches::get(&mut tx, org_id, &benchmark.batch_id)
        .await?
        .ok_or(BenchmarkError::NotFound)?;
    let results = batches::results(&mut tx, org_id, &batch.id, -1, MAX_RUNS as i64).await?;
    let ratings = benchmarks::ratings(&mut tx, org_id, id).await?;
    tx.commit().await?;
    Ok(analyse(benchmark, batch, &results, &ratings))
}

/// The runs, figures and comparisons of `benchmark` from its batch's
/// `results` and the `ratings` of its runs.
fn analyse(
    benchmark: Benchmark,
    batch: Batch,
    results: &[ItemResult],
    ratings: &HashMap<i64, Vec<i64>>,
) -> Report {
    let layout = Layout {
        targets: benchmark.targets.len(),
        prompts: benchmark.prompts.len(),
        repetitions: usize::try_from(benchmark.repetitions).unwrap_or(0),
    };
    let runs: Vec<Run> = results
        .iter()
        .filter_map(|r| {
            let index = usize::try_from(r.index).ok()?;
            let place = layout.place(index)?;
            Some(run(index, &benchmark, &batch, r, place, ratings))
        })
        .collect();
    let targets: Vec<TargetFigures> = benchmark
        .targets
        .iter()
        .map(|t| figures(t, runs.iter().filter(|r| &r.target == t)))
        .collect();
    let comparisons = if batch.status == BatchStatus::Completed {
        compare(&benchmark.targets, &runs)
    } else {
        Vec::new()
    };
    let cost = results.iter().map(|r| r.cost).sum();
    Report {
        benchmark,
        batch,
        runs,
        targets,
        comparisons,
        cost,
    }
}

fn run(
    index: usize,
    benchmark: &Benchmark,
    batch: &Batch,
    r: &ItemResult,
    place: Place,
    ratings: &HashMap<i64, Vec<i64>>,
) -> Run {
    let status = match r.status {
        Some(s) => s.as_str().to_string(),
        None if batch.status == BatchStatus::Cancelled => "not_run".into(),
        None => "queued".into(),
    };
    let completed = r.status == Some(TaskStatus::Completed);
    let latency_ms = match (completed, r.started_at, r.finished_at) {
        (true, Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    let field = |json: &Option<String>, key: &str| {
        json.as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_string))
    };
    Run {
        run: index,
        target: benchmark.targets[place.target].clone(),
        prompt: place.prompt,
        repetition: place.repetition,
        task_id: r.task_id.clone(),
        status,
        latency_ms,
        cost_usd: r.cost.usd(),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        answered_by: match (&r.provider, &r.model) {
            (Some(p), Some(m)) => Some(format!("{p}/{m}")),
            _ => None,
        },
        output: if completed {
            field(&r.result, "text")
        } else {
            None
        },
        error_kind: if r.status == Some(TaskStatus::Failed) {
            Some(field(&r.error, "kind").unwrap_or_else(|| "unknown".into()))
        } else {
            None
        },
        ratings: ratings.get(&r.index).cloned().unwrap_or_default(),
    }
}

fn figures<'a>(target: &str, runs: impl Iterator<Item = &'a Run>) -> TargetFigures {
    let mut f = TargetFigures {
        target: target.to_string(),
        runs: 0,
        completed: 0,
        failed: 0,
        cancelled: 0,
        unfinished: 0,
        errors: BTreeMap::new(),
        latency_ms: None,
        cost_per_run_usd: None,
        cost_usd: Money::ZERO.usd(),
        input_tokens: 0,
        output_tokens: 0,
        rating: None,
    };
    let mut cost = Money::ZERO;
    let (mut latencies, mut costs, mut ratings) = (Vec::new(), Vec::new(), Vec::new());
    for r in runs {
        f.runs += 1;
        match r.status.as_str() {
            "completed" => f.completed += 1,
            "failed" => f.failed += 1,
            "cancelled" | "not_run" => f.cancelled += 1,
            _ => f.unfinished += 1,
        }
        if let Some(kind) = &r.error_kind {
            *f.errors.entry(kind.clone()).or_default() += 1;
        }
        let run_cost = r.cost_usd.0;
        cost = cost.saturating_add(run_cost);
        f.input_tokens += r.input_tokens;
        f.output_tokens += r.output_tokens;
        if let Some(ms) = r.latency_ms {
            latencies.push(ms as f64);
            costs.push(run_cost.to_usd_f64());
        }
        ratings.extend(r.ratings.iter().map(|v| *v as f64));
    }
    f.cost_usd = cost.usd();
    f.latency_ms = stats::summary(&latencies);
    f.cost_per_run_usd = stats::summary(&costs);
    f.rating = stats::summary(&ratings);
    f
}

/// Each pair of targets on each metric both have enough data for.
fn compare(targets: &[String], runs: &[Run]) -> Vec<Comparison> {
    let samples = |target: &str, metric: Metric| -> Vec<f64> {
        let mine = runs.iter().filter(|r| r.target == target);
        match metric {
            Metric::Latency => mine
                .filter_map(|r| r.latency_ms)
                .map(|v| v as f64)
                .collect(),
            Metric::Cost => mine
                .filter(|r| r.latency_ms.is_some())
                .map(|r| r.cost_usd.0.to_usd_f64())
                .collect(),
            Metric::Rating => mine
                .flat_map(|r| r.ratings.iter().map(|v| *v as f64))
                .collect(),
        }
    };
    let mut out = Vec::new();
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            for metric in [Metric::Latency, Metric::Cost, Metric::Rating] {
                let (xa, xb) = (samples(a, metric), samples(b, metric));
                if let Some(c) = comparison(metric, a, b, &xa, &xb) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `a` and `b` compared on `metric` by their samples `xa` and `xb`; `None`
/// unless each has two values.
fn comparison(metric: Metric, a: &str, b: &str, xa: &[f64], xb: &[f64]) -> Option<Comparison> {
    let test = stats::welch(xa, xb)?;
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (mean_a, mean_b) = (mean(xa), mean(xb));
    let (verb, noun, lower_is_better) = metric.words();
    let significant = test.p_value < ALPHA && mean_a != mean_b;
    let a_better = (mean_a < mean_b) == lower_is_better;
    let (better, worse) = if a_better { (a, b) } else { (b, a) };
    let p = stats::format_p(test.p_value);
    let sentence = if significant {
        format!("{better} {verb} {worse}, {p}")
    } else {
        format!("no significant difference in {noun} between {a} and {b}, {p}")
    };
    Some(Comparison {
        metric,
        a: a.to_string(),
        b: b.to_string(),
        mean_a,
        mean_b,
        t: test.t,
        df: test.df,
        p_value: test.p_value,
        significant,
        better: significant.then(|| better.to_string()),
        sentence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_names_the_better_target_in_words() {
        let fast = [10.0, 12.0, 11.0, 13.0, 9.0];
        let slow = [100.0, 104.0, 98.0, 101.0, 99.0];
        let c = comparison(Metric::Latency, "mock/slow", "mock/echo", &slow, &fast).unwrap();
        assert!(c.significant && c.p_value < 0.001, "{c:?}");
        assert_eq!(c.better.as_deref(), Some("mock/echo"));
        assert_eq!(c.sentence, "mock/echo is faster than mock/slow, p < 0.001");
        let (good, bad) = ([4.0, 5.0, 5.0, 4.0], [1.0, 2.0, 2.0, 1.0]);
        let c = comparison(Metric::Rating, "x/b", "x/a", &bad, &good).unwrap();
        assert_eq!(c.better.as_deref(), Some("x/a"), "{c:?}");
        assert_eq!(c.sentence, "x/a is rated higher than x/b, p < 0.001");
        let same = comparison(Metric::Cost, "x/a", "x/b", &[1.0, 2.0], &[2.0, 1.0]).unwrap();
        assert!(!same.significant && same.better.is_none());
        assert_eq!(
            same.sentence,
            "no significant difference in cost between x/a and x/b, p = 1.000"
        );
        assert!(comparison(Metric::Cost, "x/a", "x/b", &[1.0], &[2.0, 3.0]).is_none());
    }
}
