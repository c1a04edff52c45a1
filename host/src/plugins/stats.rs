//! Call statistics per plugin version, kept in memory by this instance:
//! calls, errors by kind, limit hits by limit, and call durations. They back
//! `GET /api/plugins/{name}/stats` (JSON, [`PluginStats::snapshot`]) and the
//! plugin part of `GET /metrics` ([`PluginStats::render_prometheus`]).
//!
//! Durations: every version keeps a ring of its last [`WINDOW`] call
//! durations, from which p50/p95 are computed exactly when asked (a sort of
//! at most 1024 numbers), plus the all-time count and sum behind the mean and
//! the summary's `_sum`/`_count`. A ring is exact and recent where a
//! log-scale histogram would be approximate and all-time; its cost is a
//! bounded 8 KiB per version that has been called.
//!
//! The Prometheus text is written here rather than through the `metrics` and
//! `metrics-exporter-prometheus` crates: the JSON endpoint needs the same
//! numbers read back per plugin, which a global recorder does not offer, and
//! the exporter's summaries are its own sketches over its own windows. One
//! store, rendered two ways, keeps both views the same; the text format is
//! small (HELP/TYPE lines, escaped label values).
//!
//! Recording is one short critical section on a mutex: one hash lookup by
//! the borrowed key, a few additions and one store into the ring. A key is
//! cloned only on its first call; an error kind's name only the first time
//! it is seen for that version.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use utoipa::ToSchema;
use vel_runtime::{CallResult, Limit, PluginError, PluginKind};

/// How many recent call durations each version keeps for its quantiles.
pub const WINDOW: usize = 1024;

/// Which plugin version a call ran on: the unit statistics are kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatsKey {
    /// The owning organization; `None` for a platform plugin.
    pub org_id: Option<String>,
    /// Plugin name.
    pub name: String,
    /// Version number.
    pub version: String,
    /// The plugin's kind.
    pub kind: PluginKind,
}

impl StatsKey {
    /// The `scope` label: `platform` or the organization id.
    fn scope(&self) -> &str {
        self.org_id.as_deref().unwrap_or("platform")
    }
}

/// The process's call statistics; cheap to clone (shared inside).
#[derive(Clone, Debug, Default)]
pub struct PluginStats {
    inner: Arc<Mutex<HashMap<StatsKey, Entry>>>,
}

/// One version's call statistics, as `GET /api/plugins/{name}/stats`
/// answers them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VersionStats {
    /// Version number.
    pub version: String,
    /// Calls since this instance started.
    pub calls: u64,
    /// Failed calls by error kind: the sandbox's (`limit_exceeded`, `trap`,
    /// `panic`, …) or the plugin's own (`unavailable`, `no_candidate`, …).
    pub errors: BTreeMap<String, u64>,
    /// Calls stopped by a limit, by limit (`wall_time`, `memory`, `fuel`, …).
    pub limit_hits: BTreeMap<String, u64>,
    /// Median duration of the last 1024 calls, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile duration of the last 1024 calls, in milliseconds.
    pub p95_ms: f64,
    /// Mean duration of all calls, in milliseconds.
    pub mean_ms: f64,
}

impl PluginStats {
    /// Counts one call of `key`: its duration, and its error if it failed.
    /// `guest_error` is the kind of the plugin's own error answer (e.g.
    /// `unavailable`, `no_candidate`); a sandbox error in `result` takes
    /// precedence, so a call counts as at most one error.
    pub fn record<T>(&self, key: &StatsKey, result: &CallResult<T>, guest_error: Option<&str>) {
        let nanos = u64::try_from(result.stats.duration.as_nanos()).unwrap_or(u64::MAX);
        let (error, limit) = match &result.result {
            Err(e) => (Some(error_kind(e)), e.limit()),
            Ok(_) => (guest_error, None),
        };
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(key) {
            entry.add(nanos, error, limit);
            return;
        }
        map.entry(key.clone()).or_default().add(nanos, error, limit);
    }

    /// Every version of one plugin (`org_id` `None` for the platform's),
    /// sorted by version (semver order; unparsable versions last).
    pub fn snapshot(&self, org_id: Option<&str>, name: &str) -> Vec<VersionStats> {
        let copies: Vec<(StatsKey, Entry)> = self
            .lock()
            .iter()
            .filter(|(k, _)| k.org_id.as_deref() == org_id && k.name == name)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut rows: Vec<(StatsKey, Summary)> = copies
            .into_iter()
            .map(|(k, e)| (k, Summary::of(e)))
            .collect();
        rows.sort_by(|(a, _), (b, _)| version_order(&a.version, &b.version));
        rows.into_iter()
            .map(|(key, s)| VersionStats {
                mean_ms: round_ms(s.mean_nanos()),
                version: key.version,
                calls: s.calls,
                errors: s.errors,
                limit_hits: s
                    .limit_hits
                    .into_iter()
                    .map(|(l, n)| (l.to_string(), n))
                    .collect(),
                p50_ms: round_ms(s.p50_nanos),
                p95_ms: round_ms(s.p95_nanos),
            })
            .collect()
    }

    /// Forgets the statistics of one version (when it is deleted), so
    /// `/metrics` stops reporting it.
    pub fn forget(&self, org_id: Option<&str>, name: &str, version: &str) {
        self.lock().retain(|k, _| {
            !(k.org_id.as_deref() == org_id && k.name == name && k.version == version)
        });
    }

    /// Appends the plugin metric families, in the Prometheus text format
    /// 0.0.4, to `out`: `vel_plugin_calls_total`, `vel_plugin_errors_total`,
    /// `vel_plugin_limit_hits_total` and the summary
    /// `vel_plugin_call_duration_seconds`.
    pub fn render_prometheus(&self, out: &mut String) {
        let copies: Vec<(StatsKey, Entry)> = self
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut rows: Vec<(StatsKey, Summary)> = copies
            .into_iter()
            .map(|(k, e)| (k, Summary::of(e)))
            .collect();
        rows.sort_by(|(a, _), (b, _)| {
            (a.org_id.is_some(), a.scope(), &a.name, a.kind.as_str())
                .cmp(&(b.org_id.is_some(), b.scope(), &b.name, b.kind.as_str()))
                .then_with(|| version_order(&a.version, &b.version))
        });
        let rows: Vec<(String, Summary)> =
            rows.into_iter().map(|(key, s)| (labels(&key), s)).collect();

        family(
            out,
            "vel_plugin_calls_total",
            "counter",
            "Plugin calls, per plugin version.",
        );
        for (labels, s) in &rows {
            let _ = writeln!(out, "vel_plugin_calls_total{{{labels}}} {}", s.calls);
        }

        family(
            out,
            "vel_plugin_errors_total",
            "counter",
            "Failed plugin calls, per plugin version and error kind.",
        );
        for (labels, s) in &rows {
            for (error, n) in &s.errors {
                let _ = write!(out, "vel_plugin_errors_total{{{labels},error=\"");
                escape_label(error, out);
                let _ = writeln!(out, "\"}} {n}");
            }
        }

        family(
            out,
            "vel_plugin_limit_hits_total",
            "counter",
            "Plugin calls stopped by a limit, per plugin version and limit.",
        );
        for (labels, s) in &rows {
            for (limit, n) in &s.limit_hits {
                let _ = writeln!(
                    out,
                    "vel_plugin_limit_hits_total{{{labels},limit=\"{limit}\"}} {n}"
                );
            }
        }

        let name = "vel_plugin_call_duration_seconds";
        family(
            out,
            name,
            "summary",
            "Plugin call duration; quantiles over each version's last 1024 calls.",
        );
        for (labels, s) in &rows {
            let _ = writeln!(
                out,
                "{name}{{{labels},quantile=\"0.5\"}} {}",
                seconds(s.p50_nanos)
            );
            let _ = writeln!(
                out,
                "{name}{{{labels},quantile=\"0.95\"}} {}",
                seconds(s.p95_nanos)
            );
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(s.sum_nanos));
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.calls);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StatsKey, Entry>> {
        // Counters stay meaningful even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A sandbox error's kind name, as counted in `errors`.
pub fn error_kind(e: &PluginError) -> &'static str {
    match e {
        PluginError::LimitExceeded { .. } => "limit_exceeded",
        PluginError::Trap { .. } => "trap",
        PluginError::Panic { .. } => "panic",
        PluginError::HttpRequestDenied { .. } => "http_request_denied",
        PluginError::DestinationDenied { .. } => "destination_denied",
        PluginError::WrongKind { .. } => "wrong_kind",
        PluginError::Busy { .. } => "busy",
        PluginError::Instantiate(_) => "instantiate",
        PluginError::Host(_) => "host",
    }
}

/// A limit's name as serde writes it (`wall_time`, `memory`, …).
pub fn limit_name(limit: Limit) -> &'static str {
    LIMIT_NAMES[limit_index(limit)]
}

/// Appends `value` escaped for a Prometheus label value: backslash, double
/// quote and newline.
pub fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Every limit, in [`limit_index`] order.
const LIMITS: [Limit; 9] = [
    Limit::Memory,
    Limit::Fuel,
    Limit::CpuTime,
    Limit::WallTime,
    Limit::InputSize,
    Limit::OutputSize,
    Limit::LogVolume,
    Limit::Stack,
    Limit::Deltas,
];

/// The serde names of [`LIMITS`], in the same order.
const LIMIT_NAMES: [&str; 9] = [
    "memory",
    "fuel",
    "cpu_time",
    "wall_time",
    "input_size",
    "output_size",
    "log_volume",
    "stack",
    "deltas",
];

fn limit_index(limit: Limit) -> usize {
    match limit {
        Limit::Memory => 0,
        Limit::Fuel => 1,
        Limit::CpuTime => 2,
        Limit::WallTime => 3,
        Limit::InputSize => 4,
        Limit::OutputSize => 5,
        Limit::LogVolume => 6,
        Limit::Stack => 7,
        Limit::Deltas => 8,
    }
}

/// One version's running totals.
#[derive(Debug, Clone, Default)]
struct Entry {
    calls: u64,
    sum_nanos: u64,
    /// The last [`WINDOW`] durations; grows to `WINDOW`, then `next` is the
    /// oldest slot, overwritten by the next call.
    recent: Vec<u64>,
    next: usize,
    errors: BTreeMap<String, u64>,
    limit_hits: [u64; LIMITS.len()],
}

impl Entry {
    fn add(&mut self, nanos: u64, error: Option<&str>, limit: Option<Limit>) {
        self.calls += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        if self.recent.len() < WINDOW {
            self.recent.push(nanos);
        } else if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = nanos;
            self.next = (self.next + 1) % WINDOW;
        }
        if let Some(kind) = error {
            match self.errors.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    self.errors.insert(kind.to_owned(), 1);
                }
            }
        }
        if let Some(limit) = limit {
            self.limit_hits[limit_index(limit)] += 1;
        }
    }
}

/// An entry reduced to what both views report, computed outside the lock.
struct Summary {
    calls: u64,
    sum_nanos: u64,
    p50_nanos: u64,
    p95_nanos: u64,
    errors: BTreeMap<String, u64>,
    /// Only the limits hit, by name (sorted).
    limit_hits: BTreeMap<&'static str, u64>,
}

impl Summary {
    fn of(entry: Entry) -> Summary {
        let mut recent = entry.recent;
        recent.sort_unstable();
        let limit_hits = LIMITS
            .iter()
            .zip(entry.limit_hits)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (limit_name(*l), n))
            .collect();
        Summary {
            calls: entry.calls,
            sum_nanos: entry.sum_nanos,
            p50_nanos: quantile(&recent, 0.5),
            p95_nanos: quantile(&recent, 0.95),
            errors: entry.errors,
            limit_hits,
        }
    }

    fn mean_nanos(&self) -> u64 {
        self.sum_nanos.checked_div(self.calls).unwrap_or(0)
    }
}

/// Nearest-rank quantile of sorted values; 0 when there are none.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Semver order, unparsable versions after parsable ones, then by text.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| semver::Version::parse(v).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `plugin="…",version="…",kind="…",scope="…"`, escaped.
fn labels(key: &StatsKey) -> String {
    let mut s = String::with_capacity(64);
    for (i, (label, value)) in [
        ("plugin", key.name.as_str()),
        ("version", key.version.as_str()),
        ("kind", key.kind.as_str()),
        ("scope", key.scope()),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            s.push(',');
        }
        s.push_str(label);
        s.push_str("=\"");
        escape_label(value, &mut s);
        s.push('"');
    }
    s
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Milliseconds, to the microsecond.
fn round_ms(nanos: u64) -> f64 {
    (nanos as f64 / 1e3).round() / 1e3
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vel_runtime::CallStats;

    use super::*;

    fn key(org: Option<&str>, name: &str, version: &str) -> StatsKey {
        StatsKey {
            org_id: org.map(str::to_string),
            name: name.into(),
            version: version.into(),
            kind: PluginKind::Provider,
        }
    }

    fn call(ms: u64, result: Result<(), PluginError>) -> CallResult<()> {
        CallResult {
            result,
            stats: CallStats {
                duration: Duration::from_millis(ms),
                ..CallStats::default()
            },
        }
    }

    fn limit(limit: Limit) -> Result<(), PluginError> {
        Err(PluginError::LimitExceeded { limit, max: 1 })
    }

    #[test]
    fn snapshot_counts_calls_errors_limits_and_durations() {
        let stats = PluginStats::default();
        let k = key(None, "shout", "1.0.0");
        for ms in 1..=100 {
            stats.record(&k, &call(ms, Ok(())), None);
        }
        stats.record(&k, &call(100, Ok(())), Some("unavailable"));
        stats.record(&k, &call(100, Ok(())), Some("unavailable"));
        stats.record(&k, &call(100, limit(Limit::WallTime)), None);
        // A sandbox error wins over a guest error passed with it.
        stats.record(&k, &call(100, limit(Limit::Fuel)), Some("other"));
        let trap = Err(PluginError::Trap {
            message: "x".into(),
        });
        stats.record(&k, &call(100, trap), None);

        let snap = stats.snapshot(None, "shout");
        assert_eq!(snap.len(), 1);
        let v = &snap[0];
        assert_eq!(v.version, "1.0.0");
        assert_eq!(v.calls, 105);
        let errors: Vec<(&str, u64)> = v.errors.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            errors,
            [("limit_exceeded", 2), ("trap", 1), ("unavailable", 2)]
        );
        let hits: Vec<(&str, u64)> = v.limit_hits.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(hits, [("fuel", 1), ("wall_time", 1)]);
        // 105 samples: 1..=100 then five of 100.
        assert_eq!(v.p50_ms, 53.0);
        assert_eq!(v.p95_ms, 100.0);
        let mean = (5050.0 + 500.0) / 105.0;
        assert!((v.mean_ms - mean).abs() < 0.001, "{}", v.mean_ms);
    }

    #[test]
    fn snapshot_is_per_plugin_and_scope_sorted_by_semver() {
        let stats = PluginStats::default();
        for version in ["1.10.0", "1.2.0", "1.9.0"] {
            stats.record(&key(None, "shout", version), &call(1, Ok(())), None);
        }
        stats.record(&key(Some("org1"), "shout", "5.0.0"), &call(1, Ok(())), None);
        stats.record(&key(None, "other", "1.0.0"), &call(1, Ok(())), None);

        let versions: Vec<String> = stats
            .snapshot(None, "shout")
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, ["1.2.0", "1.9.0", "1.10.0"]);
        let org = stats.snapshot(Some("org1"), "shout");
        assert_eq!(org.len(), 1);
        assert_eq!(org[0].version, "5.0.0");
        assert!(stats.snapshot(Some("org2"), "shout").is_empty());

        stats.forget(None, "shout", "1.9.0");
        assert_eq!(stats.snapshot(None, "shout").len(), 2);
        assert_eq!(stats.snapshot(Some("org1"), "shout").len(), 1);
    }

    #[test]
    fn quantiles_cover_only_the_last_window_of_calls() {
        let stats = PluginStats::default();
        let k = key(None, "slow", "1.0.0");
        for _ in 0..WINDOW {
            stats.record(&k, &call(1000, Ok(())), None);
        }
        for _ in 0..WINDOW {
            stats.record(&k, &call(2, Ok(())), None);
        }
        let v = &stats.snapshot(None, "slow")[0];
        assert_eq!(v.calls, 2 * WINDOW as u64);
        assert_eq!((v.p50_ms, v.p95_ms), (2.0, 2.0));
        assert_eq!(v.mean_ms, 501.0);
        // Half the window replaced: the old durations show in p95 only.
        for _ in 0..WINDOW / 2 {
            stats.record(&k, &call(1000, Ok(())), None);
        }
        let v = &stats.snapshot(None, "slow")[0];
        assert_eq!((v.p50_ms, v.p95_ms), (2.0, 1000.0));
    }

    #[test]
    fn prometheus_text_has_families_and_escaped_labels() {
        let stats = PluginStats::default();
        let odd = key(Some("org\"1\\\n"), "shout", "1.0.0");
        stats.record(&odd, &call(10, Ok(())), None);
        stats.record(&odd, &call(30, limit(Limit::Memory)), None);
        stats.record(&odd, &call(20, Ok(())), Some("no\"candidate"));
        let platform = StatsKey {
            kind: PluginKind::Router,
            ..key(None, "pick", "0.1.0")
        };
        stats.record(&platform, &call(4, Ok(())), None);

        let mut out = String::new();
        stats.render_prometheus(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        let odd_labels = r#"plugin="shout",version="1.0.0",kind="provider",scope="org\"1\\\n""#;
        let pick = r#"plugin="pick",version="0.1.0",kind="router",scope="platform""#;
        for expected in [
            "# HELP vel_plugin_calls_total Plugin calls, per plugin version.".to_string(),
            "# TYPE vel_plugin_calls_total counter".into(),
            "# TYPE vel_plugin_errors_total counter".into(),
            "# TYPE vel_plugin_limit_hits_total counter".into(),
            "# TYPE vel_plugin_call_duration_seconds summary".into(),
            format!("vel_plugin_calls_total{{{odd_labels}}} 3"),
            format!("vel_plugin_calls_total{{{pick}}} 1"),
            format!(r#"vel_plugin_errors_total{{{odd_labels},error="limit_exceeded"}} 1"#),
            format!(r#"vel_plugin_errors_total{{{odd_labels},error="no\"candidate"}} 1"#),
            format!(r#"vel_plugin_limit_hits_total{{{odd_labels},limit="memory"}} 1"#),
            format!(r#"vel_plugin_call_duration_seconds{{{odd_labels},quantile="0.5"}} 0.02"#),
            format!(r#"vel_plugin_call_duration_seconds{{{odd_labels},quantile="0.95"}} 0.03"#),
            format!("vel_plugin_call_duration_seconds_sum{{{odd_labels}}} 0.06"),
            format!("vel_plugin_call_duration_seconds_count{{{odd_labels}}} 3"),
            format!(r#"vel_plugin_call_duration_seconds{{{pick},quantile="0.5"}} 0.004"#),
        ] {
            assert!(
                lines.contains(&expected.as_str()),
                "missing {expected:?} in\n{out}"
            );
        }
        // Platform rows come first; no raw newline leaked into a label.
        let first = lines
            .iter()
            .position(|l| l.starts_with("vel_plugin_calls_total{"));
        assert_eq!(
            first.map(|i| lines[i]),
            Some(format!("vel_plugin_calls_total{{{pick}}} 1").as_str())
        );
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("# ") || l.starts_with("vel_plugin_")),
            "{out}"
        );
        // Each family's HELP/TYPE appears once.
        assert_eq!(out.matches("# TYPE vel_plugin_calls_total").count(), 1);
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("pick") && l.contains("error="))
        );
    }

    #[test]
    fn empty_stats_render_only_family_headers() {
        let mut out = String::new();
        PluginStats::default().render_prometheus(&mut out);
        assert_eq!(out.lines().count(), 8);
        assert!(out.lines().all(|l| l.starts_with("# ")));
    }

    #[test]
    fn limit_names_match_the_runtime_serde_names() {
        for (i, limit) in LIMITS.iter().enumerate() {
            assert_eq!(limit_index(*limit), i);
            let serde = serde_json::to_value(limit).ok();
            assert_eq!(
                serde.as_ref().and_then(|v| v.as_str()),
                Some(limit_name(*limit))
            );
        }
    }

    #[test]
    fn quantile_uses_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.95), 7);
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(quantile(&values, 0.5), 10);
        assert_eq!(quantile(&values, 0.95), 19);
    }
}
