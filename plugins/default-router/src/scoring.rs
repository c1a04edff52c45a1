//! The figures candidates are compared by: estimated cost, latency and a
//! balanced blend of price, speed and reliability.

use crate::exports::vel::plugins::routing::{Candidate, TaskInfo};
use std::cmp::Ordering;

/// Completion tokens assumed when the task sets no `max-tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 512;

/// Estimated US dollars for the task on this candidate:
/// `input/1000 × input price + output/1000 × output price`, where the output
/// is `max-tokens` when set (an upper bound) or [`DEFAULT_OUTPUT_TOKENS`].
pub fn estimated_cost(task: &TaskInfo, c: &Candidate) -> f64 {
    let output = task.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
    f64::from(task.estimated_input_tokens) / 1000.0 * c.input_price_per_1k
        + f64::from(output) / 1000.0 * c.output_price_per_1k
}

/// Latency order: known latencies first (0 means not yet observed), then
/// lower p50, then lower p95.
pub fn by_latency(a: &Candidate, b: &Candidate) -> Ordering {
    (a.p50_latency_ms == 0, a.p50_latency_ms, a.p95_latency_ms).cmp(&(
        b.p50_latency_ms == 0,
        b.p50_latency_ms,
        b.p95_latency_ms,
    ))
}

/// Weights of the balanced score; they add up to 1.
const COST_WEIGHT: f64 = 0.4;
const LATENCY_WEIGHT: f64 = 0.3;
const ERROR_WEIGHT: f64 = 0.3;

/// The balanced score of a candidate among `all`, lower is better:
/// `0.4 × cost / highest cost + 0.3 × p50 / highest p50 + 0.3 × error rate`.
/// An unknown latency (0) counts as 0.5, the middle of the range.
pub fn balanced_score(task: &TaskInfo, c: &Candidate, all: &[&Candidate]) -> f64 {
    let max_cost = all
        .iter()
        .map(|o| estimated_cost(task, o))
        .fold(0.0_f64, f64::max);
    let max_p50 = all.iter().map(|o| o.p50_latency_ms).max().unwrap_or(0);
    let cost = if max_cost > 0.0 {
        estimated_cost(task, c) / max_cost
    } else {
        0.0
    };
    let latency = if c.p50_latency_ms == 0 || max_p50 == 0 {
        0.5
    } else {
        f64::from(c.p50_latency_ms) / f64::from(max_p50)
    };
    let errors = f64::from(c.error_rate.clamp(0.0, 1.0));
    COST_WEIGHT * cost + LATENCY_WEIGHT * latency + ERROR_WEIGHT * errors
}
