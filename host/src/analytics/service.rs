//! Reading usage: the rows of a range merged into series of points per
//! group, and latency percentiles by provider and model.

use std::collections::BTreeMap;

use super::buckets::{Counts, DAY_MS, HOUR_MS, MINUTE_MS, floor, month_of};
use super::latency::{Latency, SketchError};
use super::rollup::{DAYS_JOB, HOURS_JOB};
use crate::money::Money;
use crate::store::usage_buckets::{self, BucketRow, Resolution};
use crate::store::{Db, Tx, jobs};

/// Most points a usage query may return per group; a longer range needs a
/// coarser interval.
pub const MAX_POINTS: i64 = 10_080;

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
            Interval::Hour => HOUR_MS,
            Interval::Day => DAY_MS,
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
    /// `[from, to)`, checked: ordered.
    pub fn new(from: i64, to: i64) -> Result<Range, AnalyticsError> {
        if from >= to {
            return Err(AnalyticsError::Invalid {
                field: "from",
                message: "must be before `to`".into(),
            });
        }
        Ok(Range { from, to })
    }

    /// Refuse a range of more than [`MAX_POINTS`] intervals.
    fn check_points(self, interval: Interval) -> Result<(), AnalyticsError> {
        let step = interval.millis();
        if (self.to - floor(self.from, step) + step - 1) / step > MAX_POINTS {
            return Err(AnalyticsError::Invalid {
                field: "interval",
                message: format!(
                    "the range has more than {MAX_POINTS} {}s; choose a coarser interval or a shorter range",
                    interval.as_str()
                ),
            });
        }
        Ok(())
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

/// The organization's usage in `range` (its start rounded down to the
/// interval), per `interval`, one series per group of `group_by` (one
/// series in all when it is empty).
pub async fn usage(
    db: &Db,
    org_id: &str,
    range: Range,
    interval: Interval,
    group_by: &[Dimension],
) -> Result<Vec<Series>, AnalyticsError> {
    range.check_points(interval)?;
    let step = interval.millis();
    let rows = rows(db, org_id, range, interval).await?;
    let mut groups: BTreeMap<Vec<String>, BTreeMap<i64, Totals>> = BTreeMap::new();
    for row in &rows {
        let key = group_by.iter().map(|d| d.of(row)).collect();
        let start = floor(row.bucket_start, step);
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

/// The organization's totals in `range` (its start rounded down to the
/// hour) per provider and model, busiest first.
pub async fn by_model(
    db: &Db,
    org_id: &str,
    range: Range,
) -> Result<Vec<((String, String), Totals)>, AnalyticsError> {
    range.check_points(Interval::Hour)?;
    let rows = rows(db, org_id, range, Interval::Hour).await?;
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

/// The rows that cover `[from, to)` at `interval` (`from` rounded down to
/// it), each period read once at the coarsest resolution that holds it: day
/// rows before the days' roll-up watermark (daily series only), hour rows
/// before the hours' (hourly and daily), minute rows after.
async fn rows(
    db: &Db,
    org_id: &str,
    range: Range,
    interval: Interval,
) -> Result<Vec<BucketRow>, AnalyticsError> {
    let mut tx: Tx = db.tenant_read(org_id).await?;
    let mut rows = Vec::new();
    for (resolution, from, to) in segments(&mut tx, range, interval).await? {
        rows.extend(usage_buckets::range(&mut tx, org_id, resolution, from, to).await?);
    }
    tx.commit().await?;
    Ok(rows)
}

/// What [`rows`] reads, summed per provider, agent and day by the
/// database (what costs need).
async fn day_costs(
    db: &Db,
    org_id: &str,
    range: Range,
    interval: Interval,
) -> Result<Vec<usage_buckets::DayCost>, AnalyticsError> {
    let mut tx: Tx = db.tenant_read(org_id).await?;
    let mut out = Vec::new();
    for (resolution, from, to) in segments(&mut tx, range, interval).await? {
        out.extend(usage_buckets::costs_by_day(&mut tx, org_id, resolution, from, to).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// The (resolution, from, to) periods that cover `range` at `interval`
/// once each, as [`rows`] describes; empty periods left out.
async fn segments(
    tx: &mut Tx,
    range: Range,
    interval: Interval,
) -> Result<Vec<(Resolution, i64, i64)>, AnalyticsError> {
    let from = floor(range.from, interval.millis());
    let hours_done = jobs::watermark(tx, HOURS_JOB).await?;
    let days_done = jobs::watermark(tx, DAYS_JOB).await?;
    let mut segments = Vec::new();
    match interval {
        Interval::Minute => segments.push((Resolution::Minute, from, range.to)),
        Interval::Hour => {
            segments.push((Resolution::Hour, from, range.to.min(hours_done)));
            segments.push((Resolution::Minute, from.max(hours_done), range.to));
        }
        Interval::Day => {
            segments.push((Resolution::Day, from, range.to.min(days_done)));
            segments.push((
                Resolution::Hour,
                from.max(days_done),
                range.to.min(hours_done),
            ));
            segments.push((Resolution::Minute, from.max(hours_done), range.to));
        }
    }
    segments.retain(|(_, from, to)| from < to);
    Ok(segments)
}

/// What the organization spent: in a range by provider, agent and day, and
/// this month with a projection to its end.
#[derive(Debug, Clone, Default)]
pub struct Costs {
    /// Spent in the range.
    pub total: Money,
    /// By provider (empty: none answered), most first.
    pub by_provider: Vec<(String, Money)>,
    /// By agent (empty: no agent), most first.
    pub by_agent: Vec<(String, Money)>,
    /// By UTC day (its start in unix ms), oldest first.
    pub by_day: Vec<(i64, Money)>,
    /// Spent since the start of the current UTC month.
    pub month_to_date: Money,
    /// The month's total if the trailing 7 days' daily average holds to
    /// its end.
    pub projected_month: Money,
}

/// Days the projection's average covers.
const TRAILING_DAYS: i64 = 7;

/// The organization's costs in `range` (its start rounded down to the
/// day), and the current month's at `now`.
pub async fn costs(db: &Db, org_id: &str, range: Range, now: i64) -> Result<Costs, AnalyticsError> {
    range.check_points(Interval::Day)?;
    let day = DAY_MS;
    let mut by_provider: BTreeMap<String, Money> = BTreeMap::new();
    let mut by_agent: BTreeMap<String, Money> = BTreeMap::new();
    let mut by_day: BTreeMap<i64, Money> = BTreeMap::new();
    let mut total = Money::ZERO;
    for row in day_costs(db, org_id, range, Interval::Day).await? {
        let cost = row.cost;
        total = total.saturating_add(cost);
        let add = |m: &mut Money| *m = m.saturating_add(cost);
        add(by_provider.entry(row.provider).or_default());
        add(by_agent.entry(row.agent_id).or_default());
        add(by_day.entry(row.day_start).or_default());
    }
    let (month_start, month_end) = month_of(now);
    let spent = |rows: Vec<usage_buckets::DayCost>| rows.iter().map(|r| r.cost).sum::<Money>();
    let month_to_date =
        spent(day_costs(db, org_id, Range::new(month_start, now + 1)?, Interval::Day).await?);
    let window = TRAILING_DAYS * day;
    let trailing = spent(
        day_costs(
            db,
            org_id,
            Range::new(now - window, now + 1)?,
            Interval::Hour,
        )
        .await?,
    );
    // The trailing average per millisecond, over what is left of the month.
    let ahead = i128::from(trailing.nanos()) * i128::from(month_end - now) / i128::from(window);
    let projected = i128::from(month_to_date.nanos()) + ahead;
    let by_cost = |m: BTreeMap<String, Money>| {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
        v
    };
    Ok(Costs {
        total,
        by_provider: by_cost(by_provider),
        by_agent: by_cost(by_agent),
        by_day: by_day.into_iter().collect(),
        month_to_date,
        projected_month: Money::from_nanos(i64::try_from(projected).unwrap_or(i64::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_and_end_on_the_next_first() {
        // 2026-12-06T15:00:00Z.
        let now = 1_796_569_200_000;
        assert_eq!(month_of(now), (1_796_083_200_000, 1_798_761_600_000));
        // 2026-02-28T23:59:59.999Z: February of a common year.
        assert_eq!(
            month_of(1_772_323_199_999),
            (1_769_904_000_000, 1_772_323_200_000)
        );
    }
}
