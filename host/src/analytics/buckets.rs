//! One-minute usage buckets, built in memory from finished requests and
//! tasks and written as rows.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::AnyConnection;

use super::latency::Latency;
use crate::money::Money;
use crate::orchestrator::state::{TaskSource, TaskStatus};
use crate::store::now_ms;
use crate::store::tasks::{Finish, Task};
use crate::store::usage_buckets::{self, BucketRow, Resolution};

/// A minute bucket's length.
pub const MINUTE_MS: i64 = 60_000;
/// An hour bucket's length.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// A UTC day bucket's length.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// `t` (unix ms) rounded down to a multiple of `step`: the start of its
/// bucket.
pub fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

/// The UTC month `now` falls in, as `[start, end)` in unix ms.
pub fn month_of(now: i64) -> (i64, i64) {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let today = Utc
        .timestamp_millis_opt(now)
        .single()
        .unwrap_or_default()
        .date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
    let next = if today.month() == 12 {
        NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
    }
    .unwrap_or(today);
    let ms = |d: NaiveDate| {
        d.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    };
    (ms(first), ms(next))
}

/// One finished request or task, as analytics counts it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Organization.
    pub org_id: String,
    /// Unix ms it ended: the minute it counts in.
    pub finished_at: i64,
    /// Integration that answered; for a failure, the last one tried
    /// (`None` when none was).
    pub provider: Option<String>,
    /// Model that answered, or the last one tried.
    pub model: Option<String>,
    /// Agent it ran as.
    pub agent_id: Option<String>,
    /// Where it was submitted.
    pub source: TaskSource,
    /// How it ended; `None` for the spend of a run whose task was counted
    /// already (a cancelled task's run, recorded after its cancellation):
    /// its tokens and cost add, nothing else does.
    pub status: Option<TaskStatus>,
    /// Provider calls made (more than one that ended in an answer is a
    /// fallback).
    pub attempts: usize,
    /// Answered from the response cache.
    pub cached: bool,
    /// Totals over its attempts.
    pub input_tokens: i64,
    /// Totals over its attempts.
    pub output_tokens: i64,
    /// Totals over its attempts.
    pub cost: Money,
    /// From submission to its end.
    pub latency: Duration,
}

impl Sample {
    /// A queued task that ended as `finish` says, `now` (unix ms).
    pub fn task(task: &Task, finish: &Finish, now: i64) -> Sample {
        let (provider, model) = match (&finish.provider, &finish.last_tried) {
            (None, Some((provider, model))) => (Some(provider.clone()), Some(model.clone())),
            _ => (finish.provider.clone(), finish.model.clone()),
        };
        Sample {
            org_id: task.org_id.clone(),
            finished_at: now,
            provider,
            model,
            agent_id: task.agent_id.clone(),
            source: task.source,
            status: Some(finish.status),
            attempts: finish.attempts,
            cached: finish.cached,
            input_tokens: finish.input_tokens,
            output_tokens: finish.output_tokens,
            cost: finish.cost_nanos,
            latency: Duration::from_millis(u64::try_from(now - task.created_at).unwrap_or(0)),
        }
    }
}

/// Count one sample, in the caller's transaction (a queued task's end is
/// counted exactly when it is written).
pub async fn record(conn: &mut AnyConnection, sample: &Sample) -> Result<(), sqlx::Error> {
    let mut buckets = Buckets::default();
    buckets.add(sample);
    usage_buckets::insert(conn, &buckets.into_rows(now_ms())).await
}

/// What a bucket is the bucket of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    org_id: String,
    start: i64,
    provider: String,
    model: String,
    agent_id: String,
    source: TaskSource,
}

/// The counters of a bucket; they add.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Finished requests and tasks.
    pub requests: i64,
    /// Those that completed.
    pub completed: i64,
    /// Those that failed.
    pub failed: i64,
    /// Those cancelled.
    pub cancelled: i64,
    /// Completed by another attempt than the first.
    pub fallbacks: i64,
    /// Answered from the response cache.
    pub cache_hits: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Spent.
    pub cost: Money,
}

impl Counts {
    /// Add `other`'s counts.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.fallbacks += other.fallbacks;
        self.cache_hits += other.cache_hits;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost = self.cost.saturating_add(other.cost);
    }

    fn of(sample: &Sample) -> Counts {
        let completed = sample.status == Some(TaskStatus::Completed);
        Counts {
            requests: i64::from(sample.status.is_some()),
            completed: i64::from(completed),
            failed: i64::from(sample.status == Some(TaskStatus::Failed)),
            cancelled: i64::from(sample.status == Some(TaskStatus::Cancelled)),
            fallbacks: i64::from(completed && sample.attempts > 1),
            cache_hits: i64::from(sample.cached),
            input_tokens: sample.input_tokens,
            output_tokens: sample.output_tokens,
            cost: sample.cost,
        }
    }
}

/// Samples gathered into one-minute buckets, ready to write.
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<Key, (Counts, Latency)>,
}

impl Buckets {
    /// Count `sample` in its minute's bucket (and in this instance's
    /// Prometheus counters, [`super::metrics`]).
    pub fn add(&mut self, sample: &Sample) {
        super::metrics::count(sample);
        let key = Key {
            org_id: sample.org_id.clone(),
            start: floor(sample.finished_at, MINUTE_MS),
            provider: sample.provider.clone().unwrap_or_default(),
            model: sample.model.clone().unwrap_or_default(),
            agent_id: sample.agent_id.clone().unwrap_or_default(),
            source: sample.source,
        };
        let (counts, latency) = self.buckets.entry(key).or_default();
        counts.add(&Counts::of(sample));
        if sample.status.is_some() {
            latency.add(sample.latency);
        }
    }

    /// The rows to write, one per bucket touched.
    pub fn into_rows(self, now: i64) -> Vec<BucketRow> {
        self.buckets
            .into_iter()
            .map(|(key, (counts, latency))| BucketRow {
                org_id: key.org_id,
                resolution: Resolution::Minute,
                bucket_start: key.start,
                provider: key.provider,
                model: key.model,
                agent_id: key.agent_id,
                source: key.source,
                counts,
                latency: latency.encode(),
                created_at: now,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(org: &str, at: i64, status: TaskStatus, attempts: usize) -> Sample {
        Sample {
            org_id: org.into(),
            finished_at: at,
            provider: Some("mock".into()),
            model: Some("echo".into()),
            agent_id: None,
            source: TaskSource::Gateway,
            status: Some(status),
            attempts,
            cached: false,
            input_tokens: 3,
            output_tokens: 5,
            cost: Money::from_nanos(7),
            latency: Duration::from_millis(2),
        }
    }

    #[test]
    fn samples_of_one_minute_share_a_bucket_and_counts_add() {
        let mut buckets = Buckets::default();
        buckets.add(&sample("a", 120_000, TaskStatus::Completed, 1));
        buckets.add(&sample("a", 179_999, TaskStatus::Completed, 2));
        buckets.add(&sample("a", 179_999, TaskStatus::Failed, 3));
        buckets.add(&sample("a", 180_000, TaskStatus::Completed, 1));
        buckets.add(&sample("b", 150_000, TaskStatus::Cancelled, 0));
        let mut rows = buckets.into_rows(0);
        rows.sort_by(|x, y| (&x.org_id, x.bucket_start).cmp(&(&y.org_id, y.bucket_start)));
        let starts: Vec<_> = rows
            .iter()
            .map(|r| (r.org_id.as_str(), r.bucket_start))
            .collect();
        assert_eq!(starts, [("a", 120_000), ("a", 180_000), ("b", 120_000)]);
        let first = rows[0].counts;
        assert_eq!(
            first,
            Counts {
                requests: 3,
                completed: 2,
                failed: 1,
                cancelled: 0,
                fallbacks: 1,
                cache_hits: 0,
                input_tokens: 9,
                output_tokens: 15,
                cost: Money::from_nanos(21),
            }
        );
        assert_eq!(Latency::decode(&rows[0].latency).unwrap().count(), 3);
        assert_eq!(rows[2].counts.cancelled, 1);
    }
}
