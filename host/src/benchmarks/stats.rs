//! The statistics of a benchmark: a sample's summary (mean, standard
//! deviation, percentiles) and Welch's t-test between two samples, its
//! p-value from the Student t distribution of `statrs`.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};
use utoipa::ToSchema;

/// A difference with a p-value below this is called significant.
pub const ALPHA: f64 = 0.05;

/// A sample's summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Summary {
    /// Values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for fewer than two values.
    pub stddev: f64,
    /// Least value.
    pub min: f64,
    /// Median (linear interpolation between the closest ranks).
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Greatest value.
    pub max: f64,
}

/// Arithmetic mean and sample variance (n − 1; 0 for one value).
fn mean_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, variance)
}

/// The `q` quantile (0–1) of sorted `values`, interpolated linearly
/// between the closest ranks (as numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The summary of `values`; `None` when there are none.
pub fn summary(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (mean, variance) = mean_variance(values);
    Some(Summary {
        count: values.len(),
        mean,
        stddev: variance.sqrt(),
        min: sorted[0],
        p50: quantile(&sorted, 0.50),
        p95: quantile(&sorted, 0.95),
        p99: quantile(&sorted, 0.99),
        max: sorted[sorted.len() - 1],
    })
}

/// Welch's t-test of two samples' means (unequal variances).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// The statistic: (mean a − mean b) / its standard error; `None` when
    /// neither sample varies (the standard error is 0).
    pub t: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom (`None` as for `t`).
    pub df: Option<f64>,
    /// Two-sided p-value: the chance of a difference at least this large
    /// if the means were equal. Without variance it is 1 for equal means
    /// and 0 for different ones.
    pub p_value: f64,
}

/// Welch's t-test of `a` against `b`; `None` unless each has at least two
/// values.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (ma, va) = mean_variance(a);
    let (mb, vb) = mean_variance(b);
    let (sa, sb) = (va / a.len() as f64, vb / b.len() as f64);
    let se2 = sa + sb;
    if se2 <= 0.0 || !se2.is_finite() {
        return Some(Welch {
            t: None,
            df: None,
            p_value: if ma == mb { 1.0 } else { 0.0 },
        });
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2.powi(2) / (sa.powi(2) / (a.len() - 1) as f64 + sb.powi(2) / (b.len() - 1) as f64);
    let p_value = StudentsT::new(0.0, 1.0, df)
        .map(|dist| (2.0 * dist.sf(t.abs())).clamp(0.0, 1.0))
        .ok()?;
    Some(Welch {
        t: Some(t),
        df: Some(df),
        p_value,
    })
}

/// A p-value as a sentence states it: `p = 0.021`, or `p < 0.001`.
pub fn format_p(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn welch_matches_the_textbook_example() {
        // Wikipedia's "Welch's t-test", example 1 (scipy.stats.ttest_ind
        // with equal_var=False gives t = -2.4554, df = 24.9885,
        // p = 0.02138).
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a, &b).unwrap();
        assert!(close(w.t.unwrap(), -2.455_356, 1e-5), "{w:?}");
        assert!(close(w.df.unwrap(), 24.988_529, 1e-5), "{w:?}");
        assert!(close(w.p_value, 0.021_378, 1e-5), "{w:?}");
        // Symmetric.
        let back = welch(&b, &a).unwrap();
        assert!(close(back.t.unwrap(), 2.455_356, 1e-5));
        assert!(close(back.p_value, w.p_value, 1e-12));
    }

    #[test]
    fn the_p_value_is_the_t_distributions_two_sided_tail() {
        // Equal variances and sizes: df = 2n - 2, so t at the table's
        // 97.5 % quantile of t(10) (2.228139) gives p = 0.05.
        // Variance 3.5 each, so the standard error is sqrt(7 / 6).
        let shift = 2.228_139 * (7.0f64 / 6.0).sqrt();
        let a = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let b: Vec<f64> = a.iter().map(|v| v + shift).collect();
        let w = welch(&a, &b).unwrap();
        assert!(close(w.df.unwrap(), 10.0, 1e-9), "{w:?}");
        assert!(close(w.t.unwrap(), -2.228_139, 1e-5), "{w:?}");
        assert!(close(w.p_value, 0.05, 1e-5), "{w:?}");
    }

    #[test]
    fn degenerate_samples() {
        assert_eq!(welch(&[1.0], &[1.0, 2.0]), None);
        let same = welch(&[2.0, 2.0], &[2.0, 2.0, 2.0]).unwrap();
        assert_eq!((same.t, same.p_value), (None, 1.0));
        let apart = welch(&[2.0, 2.0], &[3.0, 3.0]).unwrap();
        assert_eq!(apart.p_value, 0.0);
    }

    #[test]
    fn summaries_interpolate_percentiles() {
        assert_eq!(summary(&[]), None);
        let one = summary(&[7.0]).unwrap();
        assert_eq!(
            (one.mean, one.stddev, one.p50, one.p99),
            (7.0, 0.0, 7.0, 7.0)
        );
        // numpy.percentile([1..=10], [50, 95, 99]) = 5.5, 9.55, 9.91.
        let values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let s = summary(&values).unwrap();
        assert_eq!((s.count, s.min, s.max), (10, 1.0, 10.0));
        assert!(close(s.mean, 5.5, 1e-12));
        assert!(close(s.stddev, 3.027_650, 1e-6), "{s:?}");
        assert!(close(s.p50, 5.5, 1e-12));
        assert!(close(s.p95, 9.55, 1e-12));
        assert!(close(s.p99, 9.91, 1e-12));
    }

    #[test]
    fn p_values_read_as_people_write_them() {
        assert_eq!(format_p(0.0031), "p = 0.003");
        assert_eq!(format_p(0.0004), "p < 0.001");
        assert_eq!(format_p(0.5), "p = 0.500");
    }
}
