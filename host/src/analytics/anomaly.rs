//! Anomaly alerts: each finished minute of an organization's traffic
//! compared with its last hour, per provider.
//!
//! For every organization and provider, a minute's p95 latency, cost per
//! completed task and failures, and the organization's failures, are
//! compared with the same figure over the previous [`BASELINE_MINUTES`]
//! minutes that had traffic: above the mean plus [`SIGMAS`] standard
//! deviations is an anomaly. A minute whose error rate passes
//! [`ERROR_RATE_LIMIT`], the organization's or a provider's, is one too,
//! whatever came before. A failed request counts against the provider
//! tried last (see [`super::buckets::Sample`]). The standard deviation counts as at least a
//! tenth of the mean, so a very steady series does not alert on a wobble,
//! and a figure needs [`MIN_HISTORY`] minutes of history and
//! [`MIN_REQUESTS`] requests in its minute to be judged. An alert is not
//! raised again for the same organization and subject within
//! [`COOL_DOWN_MS`].
//!
//! Every instance runs the check; each minute is checked by one of them,
//! claimed through the `anomaly_minutes` watermark as the roll-up claims
//! its periods.

use std::collections::BTreeMap;

use serde_json::json;

use super::buckets::{Counts, MINUTE_MS, floor};
use super::latency::{Latency, SketchError};
use crate::alerts::NewAlert;
use crate::audit;
use crate::store::alerts;
use crate::store::usage_buckets::{self, BucketRow, Resolution};
use crate::store::{Db, jobs, to_rfc3339};

/// The job that checks minutes.
pub const ANOMALY_JOB: &str = "anomaly_minutes";
/// Minutes of history a minute is compared with.
pub const BASELINE_MINUTES: i64 = 60;
/// How far above the mean, in standard deviations, is an anomaly.
pub const SIGMAS: f64 = 3.0;
/// The least standard deviation counted, in the figure's unit (a
/// failure, a millisecond, a nano-dollar): a series that never moved
/// alerts only on a change of more than three units.
pub const MIN_SIGMA: f64 = 1.0;
/// Minutes of history (with traffic) a figure needs to be judged.
pub const MIN_HISTORY: usize = 10;
/// Requests a minute needs for its figures to be judged.
pub const MIN_REQUESTS: i64 = 5;
/// An error rate above this is an anomaly whatever the history.
pub const ERROR_RATE_LIMIT: f64 = 0.10;
/// How long the same alert is not raised again.
pub const COOL_DOWN_MS: i64 = 15 * MINUTE_MS;
/// A minute is checked once this long after it ended, so that late
/// writers (the gateway recorder's linger) are in.
pub const CHECK_DELAY_MS: i64 = 2 * MINUTE_MS;
/// The most minutes one pass checks; a longer backlog is skipped (old
/// anomalies are no longer news).
const MAX_MINUTES: i64 = 10;

/// How a figure compares with its history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The minute's value.
    pub value: f64,
    /// The history's mean.
    pub mean: f64,
    /// The history's standard deviation (at least a tenth of the mean).
    pub sigma: f64,
    /// What the value had to pass.
    pub threshold: f64,
}

/// `current` judged against `history`: `Some` when it is above the mean
/// plus [`SIGMAS`] standard deviations, with at least [`MIN_HISTORY`]
/// values of history.
pub fn above_baseline(history: &[f64], current: f64) -> Option<Verdict> {
    if history.len() < MIN_HISTORY {
        return None;
    }
    let n = history.len() as f64;
    let mean = history.iter().sum::<f64>() / n;
    let variance = history.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sigma = variance.sqrt().max(mean.abs() / 10.0).max(MIN_SIGMA);
    let threshold = mean + SIGMAS * sigma;
    (current > threshold).then_some(Verdict {
        value: current,
        mean,
        sigma,
        threshold,
    })
}

/// One minute of one organization and provider, merged.
#[derive(Debug, Default)]
struct Minute {
    counts: Counts,
    latency: Latency,
}

/// A figure of a minute, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    /// p95 latency in ms.
    LatencyP95,
    /// Cost per completed task, nano-dollars.
    CostPerTask,
    /// Failed requests (the organization's or the provider's).
    Failures,
}

impl Metric {
    fn as_str(self) -> &'static str {
        match self {
            Metric::LatencyP95 => "latency_p95_ms",
            Metric::CostPerTask => "cost_per_task_nanos",
            Metric::Failures => "failures",
        }
    }

    /// The figure of `m`, when it has enough traffic to say.
    fn of(self, m: &Minute) -> Option<f64> {
        if m.counts.requests < MIN_REQUESTS {
            return None;
        }
        match self {
            Metric::LatencyP95 => m.latency.quantile_ms(0.95),
            Metric::CostPerTask => (m.counts.completed > 0)
                .then(|| m.counts.cost.nanos() as f64 / m.counts.completed as f64),
            Metric::Failures => Some(m.counts.failed as f64),
        }
    }
}

/// An anomaly found in a minute.
#[derive(Debug, Clone, PartialEq)]
struct Finding {
    org_id: String,
    /// `provider/metric`, or `organization/…` for the whole organization.
    subject: String,
    message: String,
    details: serde_json::Value,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    /// A stored sketch could not be read.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Check every finished minute not yet checked, at `now`; returns the
/// alerts raised.
pub async fn pass(db: &Db, now: i64) -> Result<usize, AnomalyError> {
    let horizon = floor(now - CHECK_DELAY_MS, MINUTE_MS);
    let mut count = 0;
    let mut raised = Vec::new();
    loop {
        let mut tx = db.platform().await?;
        let watermark = jobs::watermark(&mut tx, ANOMALY_JOB).await?;
        let minute = watermark.max(horizon - MAX_MINUTES * MINUTE_MS);
        if minute >= horizon {
            break;
        }
        if !jobs::advance(&mut tx, ANOMALY_JOB, watermark, minute + MINUTE_MS, now).await? {
            break;
        }
        let from = minute - BASELINE_MINUTES * MINUTE_MS;
        let rows =
            usage_buckets::range_all(&mut tx, Resolution::Minute, from, minute + MINUTE_MS).await?;
        for finding in check(&rows, minute)? {
            let subject_kind = "anomaly";
            let last =
                alerts::latest(&mut tx, &finding.org_id, subject_kind, &finding.subject).await?;
            if last.is_some_and(|at| now - at < COOL_DOWN_MS) {
                continue;
            }
            crate::alerts::raise(
                &mut tx,
                NewAlert {
                    org_id: &finding.org_id,
                    kind: subject_kind,
                    subject: &finding.subject,
                    message: finding.message.clone(),
                    details: audit::Payload::from(finding.details.clone()),
                },
                "anomaly_detected",
                now,
            )
            .await?;
            tracing::warn!(org_id = %finding.org_id, subject = %finding.subject, "{}", finding.message);
            raised.push(finding.org_id.clone());
        }
        tx.commit().await?;
        for org_id in raised.drain(..) {
            super::metrics::count_alert(&org_id, "anomaly");
            count += 1;
        }
    }
    Ok(count)
}

/// The anomalies of `minute` among `rows` (that minute and its history).
fn check(rows: &[BucketRow], minute: i64) -> Result<Vec<Finding>, SketchError> {
    // (org, provider) → minute → merged; provider "" holds requests no
    // provider answered. The organization's totals under `None`.
    let mut series: BTreeMap<(String, Option<String>), BTreeMap<i64, Minute>> = BTreeMap::new();
    for row in rows {
        let latency = Latency::decode(&row.latency)?;
        for provider in [Some(row.provider.clone()), None] {
            let m = series
                .entry((row.org_id.clone(), provider))
                .or_default()
                .entry(row.bucket_start)
                .or_default();
            m.counts.add(&row.counts);
            m.latency.merge(&latency)?;
        }
    }
    let mut findings = Vec::new();
    for ((org_id, provider), minutes) in &series {
        let Some(now) = minutes.get(&minute) else {
            continue;
        };
        let history: Vec<&Minute> = minutes
            .iter()
            .filter(|(start, _)| **start < minute)
            .map(|(_, m)| m)
            .collect();
        let (who, metrics): (&str, &[Metric]) = match provider {
            Some(p) if p.is_empty() => continue,
            Some(p) => (
                p.as_str(),
                &[Metric::LatencyP95, Metric::CostPerTask, Metric::Failures],
            ),
            None => ("organization", &[Metric::Failures]),
        };
        for metric in metrics {
            let Some(value) = metric.of(now) else {
                continue;
            };
            let past: Vec<f64> = history.iter().filter_map(|m| metric.of(m)).collect();
            if let Some(v) = above_baseline(&past, value) {
                findings.push(Finding {
                    org_id: org_id.clone(),
                    subject: format!("{who}/{}", metric.as_str()),
                    message: format!(
                        "{who}: {} was {:.1} in the minute from {}, above its last hour's {:.1} \
                         + {SIGMAS}σ ({:.1})",
                        metric.as_str(),
                        v.value,
                        to_rfc3339(minute),
                        v.mean,
                        v.threshold
                    ),
                    details: json!({
                        "provider": provider,
                        "metric": metric.as_str(),
                        "minute": to_rfc3339(minute),
                        "value": v.value,
                        "mean": v.mean,
                        "sigma": v.sigma,
                        "threshold": v.threshold,
                    }),
                });
            }
        }
        if now.counts.requests >= MIN_REQUESTS {
            let rate = now.counts.failed as f64 / now.counts.requests as f64;
            if rate > ERROR_RATE_LIMIT {
                let whose = match provider {
                    Some(p) => format!("provider {p}'s"),
                    None => "the organization's".into(),
                };
                findings.push(Finding {
                    org_id: org_id.clone(),
                    subject: format!("{who}/error_rate"),
                    message: format!(
                        "{:.0} % of {whose} {} requests failed in the minute from {}",
                        rate * 100.0,
                        now.counts.requests,
                        to_rfc3339(minute)
                    ),
                    details: json!({
                        "provider": provider,
                        "metric": "error_rate",
                        "minute": to_rfc3339(minute),
                        "value": rate,
                        "requests": now.counts.requests,
                        "failed": now.counts.failed,
                        "threshold": ERROR_RATE_LIMIT,
                    }),
                });
            }
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::money::Money;
    use crate::orchestrator::state::TaskSource;

    /// A deterministic stream of numbers in [0, 1) (xorshift).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Roughly normal: the sum of twelve uniforms, centred.
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.next()).sum::<f64>() - 6.0
        }
    }

    #[test]
    fn steady_noise_rarely_alerts_and_a_spike_is_caught_at_once() {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        // 10,000 minutes of latency around 100 ms with σ 10 ms, each judged
        // against the hour before it.
        let series: Vec<f64> = (0..10_000).map(|_| 100.0 + 10.0 * noise.normal()).collect();
        let judged = series.len() - BASELINE_MINUTES as usize;
        let alerts = (BASELINE_MINUTES as usize..series.len())
            .filter(|&i| {
                above_baseline(&series[i - BASELINE_MINUTES as usize..i], series[i]).is_some()
            })
            .count();
        let rate = alerts as f64 / judged as f64;
        assert!(rate < 0.05, "false positives: {rate}");
        // A spike to two and a half times the level is caught in its
        // first minute, and in the second.
        let history = &series[series.len() - 60..];
        assert!(above_baseline(history, 250.0).is_some());
        let mut after: Vec<f64> = history[1..].to_vec();
        after.push(250.0);
        assert!(above_baseline(&after, 250.0).is_some());
        // Too little history says nothing.
        assert_eq!(above_baseline(&history[..MIN_HISTORY - 1], 1e9), None);
    }

    fn row(org: &str, provider: &str, start: i64, ok: i64, failed: i64, ms: u64) -> BucketRow {
        let mut latency = Latency::default();
        for _ in 0..(ok + failed) {
            latency.add(Duration::from_millis(ms));
        }
        BucketRow {
            org_id: org.into(),
            resolution: Resolution::Minute,
            bucket_start: start,
            provider: provider.into(),
            model: "m".into(),
            agent_id: String::new(),
            source: TaskSource::Gateway,
            counts: Counts {
                requests: ok + failed,
                completed: ok,
                failed,
                cost: Money::from_nanos(500 * ok),
                ..Counts::default()
            },
            latency: latency.encode(),
            created_at: start,
        }
    }

    #[test]
    fn a_slow_provider_and_a_failing_minute_are_found_per_organization() {
        let minute = 100 * MINUTE_MS;
        let mut rows = Vec::new();
        for i in 1..=30 {
            let start = minute - i * MINUTE_MS;
            rows.push(row("a", "p", start, 20, 0, 100 + (i as u64 % 7)));
            rows.push(row("b", "p", start, 20, 0, 100 + (i as u64 % 5)));
        }
        // In the minute checked, `a`'s provider is five times slower and
        // a third of `b`'s requests fail.
        rows.push(row("a", "p", minute, 20, 0, 500));
        rows.push(row("b", "p", minute, 20, 10, 100));
        let found = check(&rows, minute).unwrap();
        let subjects: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.org_id.as_str(), f.subject.as_str()))
            .collect();
        assert_eq!(
            subjects,
            [
                ("a", "p/latency_p95_ms"),
                ("b", "organization/failures"),
                ("b", "organization/error_rate"),
                ("b", "p/failures"),
                ("b", "p/error_rate"),
            ]
        );
    }

    #[test]
    fn a_failing_provider_is_named_when_the_organization_is_not_alarming() {
        // Two providers of one organization: `bad` fails a quarter of its
        // requests in the minute checked while `good` carries four times
        // its traffic, so the organization's error rate (5 %) stays below
        // the limit and its failures within its history's noise.
        let minute = 100 * MINUTE_MS;
        let mut rows = Vec::new();
        for i in 1..=30 {
            let start = minute - i * MINUTE_MS;
            rows.push(row("a", "good", start, 80, (i % 2) * 4, 100));
            rows.push(row("a", "bad", start, 20, 0, 100));
        }
        rows.push(row("a", "good", minute, 80, 0, 100));
        rows.push(row("a", "bad", minute, 15, 5, 100));
        let found = check(&rows, minute).unwrap();
        let subjects: Vec<&str> = found.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["bad/failures", "bad/error_rate"], "{found:?}");
        let rate = &found[1];
        assert_eq!(rate.details["provider"], "bad");
        assert!(
            rate.message.contains("provider bad's 20 requests"),
            "{}",
            rate.message
        );
    }
}
