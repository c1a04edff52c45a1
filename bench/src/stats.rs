//! Latency statistics over a fixed set of samples: the run records every
//! request's latency, so exact nearest-rank percentiles of a sorted vector
//! are cheap and need no histogram approximation.

use std::time::Duration;

use serde::Serialize;

/// Summary of a run's latencies, in microseconds, and its throughput.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Number of latency samples.
    pub count: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest request.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Samples per second of wall-clock time.
    pub requests_per_sec: f64,
}

/// Nearest-rank percentile (`p` in 0–100) of an ascending slice; `None` when empty.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

/// Summarise latencies given in nanoseconds, measured over `elapsed`.
pub(crate) fn summarize(mut nanos: Vec<u64>, elapsed: Duration) -> Summary {
    nanos.sort_unstable();
    let us = |p: f64| percentile(&nanos, p).map_or(0.0, |n| n as f64 / 1000.0);
    let count = nanos.len();
    let mean_us = if count == 0 {
        0.0
    } else {
        nanos.iter().map(|&n| n as f64).sum::<f64>() / count as f64 / 1000.0
    };
    let secs = elapsed.as_secs_f64();
    Summary {
        count,
        p50_us: us(50.0),
        p90_us: us(90.0),
        p95_us: us(95.0),
        p99_us: us(99.0),
        max_us: us(100.0),
        mean_us,
        requests_per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_converts_to_microseconds() {
        // Unsorted input: 10 samples of 1..=10 ms.
        let nanos: Vec<u64> = [5, 1, 9, 3, 7, 10, 2, 8, 4, 6]
            .iter()
            .map(|ms| ms * 1_000_000)
            .collect();
        let s = summarize(nanos, Duration::from_secs(2));
        assert_eq!(s.count, 10);
        assert_eq!(s.p50_us, 5_000.0);
        assert_eq!(s.p90_us, 9_000.0);
        assert_eq!(s.p95_us, 10_000.0);
        assert_eq!(s.p99_us, 10_000.0);
        assert_eq!(s.max_us, 10_000.0);
        assert_eq!(s.mean_us, 5_500.0);
        assert_eq!(s.requests_per_sec, 5.0);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = summarize(Vec::new(), Duration::ZERO);
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_us, 0.0);
        assert_eq!(s.requests_per_sec, 0.0);
    }
}
