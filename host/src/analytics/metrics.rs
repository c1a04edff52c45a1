//! Prometheus families of the work this instance finished: requests and
//! tasks by source and outcome, their tokens and cost, and the alerts it
//! raised, for `GET /metrics`.
//!
//! Label sets are bounded: `source` (api, gateway) and `status` have a
//! handful of values each. The organization is a label only when the
//! operator asks for it (`VEL_METRICS_ORG_LABEL`), as it multiplies the
//! series by the number of tenants. Every sample counted in a usage
//! bucket ([`super::buckets::Buckets::add`]) is counted here too, so the
//! two agree; the counters live in memory and start at zero with the
//! process, as Prometheus counters do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::buckets::Sample;
use crate::orchestrator::state::TaskSource;
use crate::plugins::stats::{escape_label, family};

/// Whether the organization is a label (`VEL_METRICS_ORG_LABEL`).
static ORG_LABEL: AtomicBool = AtomicBool::new(false);

/// Finished work by label set.
static WORK: LazyLock<Mutex<BTreeMap<WorkLabels, Totals>>> = LazyLock::new(Mutex::default);

/// An alert series' labels: the organization (when a label) and the kind.
type AlertLabels = (Option<String>, String);

/// Alerts raised by label set.
static ALERTS: LazyLock<Mutex<BTreeMap<AlertLabels, u64>>> = LazyLock::new(Mutex::default);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WorkLabels {
    org_id: Option<String>,
    source: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while counting leaves plain numbers behind.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Label series by organization from now on (`true`) or not.
pub fn set_org_label(on: bool) {
    ORG_LABEL.store(on, Ordering::Relaxed);
}

/// Whether series carry the organization.
pub fn org_label() -> bool {
    ORG_LABEL.load(Ordering::Relaxed)
}

fn org_of(org_id: &str) -> Option<String> {
    org_label().then(|| org_id.to_string())
}

/// Count a finished request or task (or a run's spend, status `spend`).
pub fn count(sample: &Sample) {
    let labels = WorkLabels {
        org_id: org_of(&sample.org_id),
        source: match sample.source {
            TaskSource::Api => "api",
            TaskSource::Gateway => "gateway",
        },
        status: sample.status.map_or("spend", |s| s.as_str()),
    };
    let mut work = lock(&WORK);
    let t = work.entry(labels).or_default();
    t.requests += u64::from(sample.status.is_some());
    t.input_tokens += u64::try_from(sample.input_tokens).unwrap_or(0);
    t.output_tokens += u64::try_from(sample.output_tokens).unwrap_or(0);
    t.cost_nanos = t.cost_nanos.saturating_add(sample.cost.nanos());
}

/// Count an alert of `kind` raised for `org_id`.
pub fn count_alert(org_id: &str, kind: &str) {
    *lock(&ALERTS)
        .entry((org_of(org_id), kind.to_string()))
        .or_default() += 1;
}

/// `{org_id="…",` when the organization is a label (for the first label).
fn org_prefix(org_id: Option<&str>, out: &mut String) {
    if let Some(org) = org_id {
        out.push_str("org_id=\"");
        escape_label(org, out);
        out.push_str("\",");
    }
}

/// Append the families in the text format.
pub fn render(out: &mut String) {
    let work: Vec<(WorkLabels, Totals)> =
        lock(&WORK).iter().map(|(k, v)| (k.clone(), *v)).collect();
    let alerts: Vec<(AlertLabels, u64)> =
        lock(&ALERTS).iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut labels = String::new();
    let mut with = |l: &WorkLabels, extra: &str| {
        labels.clear();
        labels.push('{');
        org_prefix(l.org_id.as_deref(), &mut labels);
        let _ = write!(
            labels,
            "source=\"{}\",status=\"{}\"{extra}}}",
            l.source, l.status
        );
        labels.clone()
    };
    family(
        out,
        "vel_requests_total",
        "counter",
        "Finished gateway requests and tasks, by source and outcome.",
    );
    for (l, t) in work.iter().filter(|(l, _)| l.status != "spend") {
        let _ = writeln!(out, "vel_requests_total{} {}", with(l, ""), t.requests);
    }
    family(
        out,
        "vel_tokens_total",
        "counter",
        "Prompt (input) and completion (output) tokens of finished work.",
    );
    for (l, t) in &work {
        let _ = writeln!(
            out,
            "vel_tokens_total{} {}",
            with(l, ",direction=\"input\""),
            t.input_tokens
        );
        let _ = writeln!(
            out,
            "vel_tokens_total{} {}",
            with(l, ",direction=\"output\""),
            t.output_tokens
        );
    }
    family(
        out,
        "vel_cost_usd_total",
        "counter",
        "What finished work cost, in US dollars.",
    );
    for (l, t) in &work {
        let _ = writeln!(
            out,
            "vel_cost_usd_total{} {}",
            with(l, ""),
            crate::money::Money::from_nanos(t.cost_nanos)
        );
    }
    family(
        out,
        "vel_alerts_total",
        "counter",
        "Alerts this instance raised, by kind.",
    );
    for ((org, kind), n) in &alerts {
        labels.clear();
        org_prefix(org.as_deref(), &mut labels);
        out.push_str("vel_alerts_total{");
        out.push_str(&labels);
        out.push_str("kind=\"");
        escape_label(kind, out);
        let _ = writeln!(out, "\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::money::Money;
    use crate::orchestrator::state::TaskStatus;

    fn sample(org: &str, status: Option<TaskStatus>) -> Sample {
        Sample {
            org_id: org.into(),
            finished_at: 0,
            provider: None,
            model: None,
            agent_id: None,
            source: TaskSource::Gateway,
            status,
            attempts: 1,
            cached: false,
            input_tokens: 3,
            output_tokens: 5,
            cost: Money::from_nanos(500),
            latency: Duration::from_millis(1),
        }
    }

    /// The value of the series whose line starts with `prefix`.
    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn finished_work_and_alerts_are_counted_with_bounded_labels() {
        // The counters are the process's: compare before and after.
        let mut before = String::new();
        render(&mut before);
        count(&sample("org-x", Some(TaskStatus::Failed)));
        count(&sample("org-x", Some(TaskStatus::Failed)));
        count(&sample("org-x", None));
        count_alert("org-x", "metrics_test");
        let mut after = String::new();
        render(&mut after);
        let failed = "vel_requests_total{source=\"gateway\",status=\"failed\"}";
        assert_eq!(value(&after, failed) - value(&before, failed), 2.0);
        let spend_out =
            "vel_tokens_total{source=\"gateway\",status=\"spend\",direction=\"output\"}";
        assert_eq!(value(&after, spend_out) - value(&before, spend_out), 5.0);
        assert!(
            !after.contains("vel_requests_total{source=\"gateway\",status=\"spend\""),
            "spend is no request"
        );
        assert_eq!(
            value(&after, "vel_alerts_total{kind=\"metrics_test\"}"),
            1.0
        );
        assert!(
            !after.contains("org-x"),
            "no organization label unless asked"
        );
        assert!(after.contains("# TYPE vel_cost_usd_total counter\n"));
    }
}
