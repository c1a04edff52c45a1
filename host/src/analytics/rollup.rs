//! The roll-up: minute rows into hour rows, hour rows into day rows, and
//! rows past their retention deleted. Every instance runs it; each period
//! is rolled up by exactly one of them, because the transaction that rolls
//! a period up first moves the job's watermark from the value it read
//! (`store::jobs::advance`), and a loser rolls its transaction back.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use super::buckets::{Counts, DAY_MS, HOUR_MS, MINUTE_MS, floor};
use super::latency::{Latency, SketchError};
use crate::orchestrator::state::TaskSource;
use crate::store::usage_buckets::{self, BucketRow, Resolution};
use crate::store::{Db, jobs, now_ms};

/// Minute rows are rolled up this long after their hour ended, so that
/// rows written a little late (the gateway recorder's linger, a slow
/// transaction) are in.
pub const GRACE_MS: i64 = 5 * MINUTE_MS;

/// Periods one pass rolls up at most per level (a backlog is caught up
/// over several passes).
const MAX_PERIODS: usize = 48;

/// The job that rolls minutes into hours.
pub const HOURS_JOB: &str = "usage_hours";
/// The job that rolls hours into days.
pub const DAYS_JOB: &str = "usage_days";

/// How often the roll-up runs and how long rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupConfig {
    /// Time between passes (`VEL_USAGE_ROLLUP_INTERVAL_MS`, default 60 s).
    pub interval: Duration,
    /// How long minute rows are kept (`VEL_USAGE_MINUTE_RETENTION_HOURS`,
    /// default 7 days).
    pub minute_retention: Duration,
    /// How long hour rows are kept (`VEL_USAGE_HOUR_RETENTION_DAYS`,
    /// default 90 days). Day rows are kept.
    pub hour_retention: Duration,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// A stored sketch could not be read.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Hours rolled up.
    pub hours: usize,
    /// Days rolled up.
    pub days: usize,
    /// Rows deleted past their retention.
    pub deleted: u64,
}

/// One level of the roll-up.
struct Level {
    job: &'static str,
    from: Resolution,
    to: Resolution,
    step: i64,
}

const HOURS: Level = Level {
    job: HOURS_JOB,
    from: Resolution::Minute,
    to: Resolution::Hour,
    step: HOUR_MS,
};

const DAYS: Level = Level {
    job: DAYS_JOB,
    from: Resolution::Hour,
    to: Resolution::Day,
    step: DAY_MS,
};

/// Run a pass, then the anomaly check (`super::anomaly`), every
/// `config.interval` for as long as the process lives.
pub fn start(db: Db, config: RollupConfig) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut ticks = tokio::time::interval(config.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match pass(&db, &config, now_ms()).await {
                    Ok(p) if p != Pass::default() => {
                        tracing::debug!(
                            hours = p.hours,
                            days = p.days,
                            deleted = p.deleted,
                            "usage rolled up"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "usage roll-up failed; retrying next pass")
                    }
                }
                if let Err(e) = super::anomaly::pass(&db, now_ms()).await {
                    tracing::warn!(error = %e, "anomaly check failed; retrying next pass");
                }
            }
        }
        .instrument(tracing::info_span!("usage_rollup")),
    )
}

/// One pass at `now`: hours, then days, then retention.
pub async fn pass(db: &Db, config: &RollupConfig, now: i64) -> Result<Pass, RollupError> {
    let hours = roll(db, &HOURS, floor(now - GRACE_MS, HOUR_MS), now).await?;
    let mut tx = db.platform().await?;
    let hours_done = jobs::watermark(&mut tx, HOURS_JOB).await?;
    tx.commit().await?;
    let days = roll(db, &DAYS, floor(hours_done, DAY_MS), now).await?;

    // Only rows already rolled up are deleted.
    let mut tx = db.platform().await?;
    let days_done = jobs::watermark(&mut tx, DAYS_JOB).await?;
    let minutes_before = (now - millis(config.minute_retention)).min(hours_done);
    let hours_before = (now - millis(config.hour_retention)).min(days_done);
    let mut deleted =
        usage_buckets::delete_before(&mut tx, Resolution::Minute, minutes_before).await?;
    deleted += usage_buckets::delete_before(&mut tx, Resolution::Hour, hours_before).await?;
    tx.commit().await?;
    Ok(Pass {
        hours,
        days,
        deleted,
    })
}

/// Roll `level` up for every period that ends by `horizon`; returns how
/// many this instance did.
async fn roll(db: &Db, level: &Level, horizon: i64, now: i64) -> Result<usize, RollupError> {
    let mut done = 0;
    while done < MAX_PERIODS {
        let mut tx = db.platform().await?;
        let watermark = jobs::watermark(&mut tx, level.job).await?;
        let period = if watermark > 0 {
            watermark
        } else {
            // The first period is the one of the earliest row.
            match usage_buckets::earliest(&mut tx, level.from).await? {
                Some(first) => floor(first, level.step),
                None => break,
            }
        };
        if period + level.step > horizon {
            break;
        }
        // Claim the period first: on PostgreSQL another instance's claim
        // waits here for this commit, then finds the watermark moved.
        if !jobs::advance(&mut tx, level.job, watermark, period + level.step, now).await? {
            break;
        }
        let rows =
            usage_buckets::range_all(&mut tx, level.from, period, period + level.step).await?;
        let merged = merge(&rows, level.to, period, now)?;
        usage_buckets::insert(&mut tx, &merged).await?;
        tx.commit().await?;
        done += 1;
    }
    Ok(done)
}

/// What a merged row is the row of.
type Key = (String, String, String, String, TaskSource);

/// `rows` merged into one row of `resolution` starting at `start` per
/// organization, provider, model, agent and source.
fn merge(
    rows: &[BucketRow],
    resolution: Resolution,
    start: i64,
    now: i64,
) -> Result<Vec<BucketRow>, SketchError> {
    let mut merged: HashMap<Key, (Counts, Latency)> = HashMap::new();
    for row in rows {
        let key = (
            row.org_id.clone(),
            row.provider.clone(),
            row.model.clone(),
            row.agent_id.clone(),
            row.source,
        );
        let (counts, latency) = merged.entry(key).or_default();
        counts.add(&row.counts);
        latency.merge(&Latency::decode(&row.latency)?)?;
    }
    Ok(merged
        .into_iter()
        .map(
            |((org_id, provider, model, agent_id, source), (counts, latency))| BucketRow {
                org_id,
                resolution,
                bucket_start: start,
                provider,
                model,
                agent_id,
                source,
                counts,
                latency: latency.encode(),
                created_at: now,
            },
        )
        .collect())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
