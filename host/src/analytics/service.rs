//! Reading usage: the rows of a range merged into series of points per
//! group, and latency percentiles by provider and model.

use std::collections::BTreeMap;

use super::buckets::{Counts, MINUTE_MS};
use super::latency::{Latency, SketchError};
use crate::store::usage_buckets::{self, BucketRow, Resolution};
use crate::store::{Db, Tx};

/// Most points a usage query may return per group; a longer range needs a
/// coarser interval.
pub const MAX_POINTS: i64 = 10_080;

/// Longest range a query may cover (the minute buckets' retention).
pub const MAX_RANGE_MS: i64 = 31 * 24 * 60 * MINUTE_MS;

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The query's parameters do not make sense together.
    #[error("{field}: {message}")]
    Invalid {
        /// The parameter at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A stored sketch could not be read.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The length of a series' points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Interval {
    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::Minute => MINUTE_MS,
            Interval::Hour => 60 * MINUTE_MS,
            Interval::Day => 24 * 60 * MINUTE_MS,
        }
    }

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    /// The interval named `name`.
    pub fn parse(name: &str) -> Option<Interval> {
        match name {
            "minute" => Some(Interval::Minute),
            "hour" => Some(Interval::Hour),
            "day" => Some(Interval::Day),
            _ => None,
        }
    }
}

/// What usage may be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    /// The integration that answered.
    Provider,
    /// The model that answered.
    Model,
    /// The agent the task ran as.
    Agent,
    /// Where the work was submitted (`api`, `gateway`).
    Source,
}

impl Dimension {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Provider => "provider",
            Dimension::Model => "model",
            Dimension::Agent => "agent",
            Dimension::Source => "source",
        }
    }

    /// The dimension named `name`.
    pub fn parse(name: &str) -> Option<Dimension> {
        match name {
            "provider" => Some(Dimension::Provider),
            "model" => Some(Dimension::Model),
            "agent" => Some(Dimension::Agent),
            "source" => Some(Dimension::Source),
            _ => None,
        }
    }

    fn of(self, row: &BucketRow) -> String {
        match self {
            Dimension::Provider => row.provider.clone(),
            Dimension::Model => row.model.clone(),
            Dimension::Agent => row.agent_id.clone(),
            Dimension::Source => row.source.as_str().to_string(),
        }
    }
}

/// A time range, `[from, to)` in unix ms.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// Start, inclusive.
    pub from: i64,
    /// End, exclusive.
    pub to: i64,
}

impl Range {
    /// `[from, to)`, checked: ordered and at most [`MAX_RANGE_MS`] long.
    pub fn new(from: i64, to: i64) -> Result<Range, AnalyticsError> {
        if from >= to {
            return Err(AnalyticsError::Invalid {
                field: "from",
                message: "must be before `to`".into(),
            });
        }
        if to - from > MAX_RANGE_MS {
            return Err(AnalyticsError::Invalid {
                field: "to",
                message: "a range covers at most 31 days".into(),
            });
        }
        Ok(Range { from, to })
    }
}

/// Counters and latency merged over some buckets.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// The counters, added.
    pub counts: Counts,
    /// The latencies, merged.
    pub latency: Latency,
}

impl Totals {
    fn add(&mut self, row: &BucketRow) -> Result<(), SketchError> {
        self.counts.add(&row.counts);
        self.latency.merge(&Latency::decode(&row.latency)?)
    }
}

/// The usage of one group over time.
#[derive(Debug, Clone)]
pub struct Series {
    /// The group's value of each dimension asked for.
    pub group: BTreeMap<&'static str, String>,
    /// Its points: (start in unix ms, totals), oldest first; intervals with
    /// no usage have no point.
    pub points: Vec<(i64, Totals)>,
}

/// The organization's usage in `range`, per `interval`, one series per
/// group of `group_by` (one series in all when it is empty).
pub async fn usage(
    db: &Db,
    org_id: &str,
    range: Range,
    interval: Interval,
    group_by: &[Dimension],
) -> Result<Vec<Series>, AnalyticsError> {
    let step = interval.millis();
    if (range.to - range.from + step - 1) / step > MAX_POINTS {
        return Err(AnalyticsError::Invalid {
            field: "interval",
            message: format!(
                "the range has more than {MAX_POINTS} {}s; choose a coarser interval",
                interval.as_str()
            ),
        });
    }
    let rows = rows(db, org_id, range).await?;
    let mut groups: BTreeMap<Vec<String>, BTreeMap<i64, Totals>> = BTreeMap::new();
    for row in &rows {
        let key = group_by.iter().map(|d| d.of(row)).collect();
        let start = row.bucket_start - row.bucket_start.rem_euclid(step);
        groups
            .entry(key)
            .or_default()
            .entry(start)
            .or_default()
            .add(row)?;
    }
    Ok(groups
        .into_iter()
        .map(|(values, points)| Series {
            group: group_by.iter().map(|d| d.as_str()).zip(values).collect(),
            points: points.into_iter().collect(),
        })
        .collect())
}

/// The organization's totals in `range` per provider and model, busiest
/// first.
pub async fn by_model(
    db: &Db,
    org_id: &str,
    range: Range,
) -> Result<Vec<((String, String), Totals)>, AnalyticsError> {
    let rows = rows(db, org_id, range).await?;
    let mut groups: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for row in &rows {
        groups
            .entry((row.provider.clone(), row.model.clone()))
            .or_default()
            .add(row)?;
    }
    let mut out: Vec<_> = groups.into_iter().collect();
    out.sort_by_key(|(_, totals)| std::cmp::Reverse(totals.counts.requests));
    Ok(out)
}

async fn rows(db: &Db, org_id: &str, range: Range) -> Result<Vec<BucketRow>, AnalyticsError> {
    // Buckets that start in the range; a range's ends are rounded down to
    // the minute, the buckets' resolution.
    let from = range.from - range.from.rem_euclid(MINUTE_MS);
    let mut tx: Tx = db.tenant_read(org_id).await?;
    let rows = usage_buckets::range(&mut tx, org_id, Resolution::Minute, from, range.to).await?;
    tx.commit().await?;
    Ok(rows)
}
