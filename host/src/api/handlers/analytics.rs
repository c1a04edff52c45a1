//! `/api/analytics`: an organization's usage over time and its latency
//! percentiles, read from the usage buckets (`crate::analytics`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::tasks::parse_time;
use crate::analytics::buckets::{Counts, DAY_MS, floor};
use crate::analytics::latency::RELATIVE_ERROR;
use crate::analytics::service::{self, Dimension, Interval, Range, Totals};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::ApiQuery;
use crate::auth::Principal;
use crate::money::Usd;
use crate::state::AppState;
use crate::store::{now_ms, to_rfc3339};

/// Query of `GET /api/analytics/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, inclusive (RFC 3339; default: a day before `to`).
    pub from: Option<String>,
    /// End, exclusive (RFC 3339; default: now).
    pub to: Option<String>,
    /// Comma-separated: `provider`, `model`, `agent`, `source` (default: none,
    /// one series).
    pub group_by: Option<String>,
    /// `minute`, `hour` (default) or `day`; at most 10,080 points (`from` is
    /// rounded down to the interval).
    pub interval: Option<String>,
}

/// Query of `GET /api/analytics/latency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Start, inclusive (RFC 3339; default: a day before `to`).
    pub from: Option<String>,
    /// End, exclusive (RFC 3339; default: now). At most 10,080 hours after
    /// `from`.
    pub to: Option<String>,
}

/// Latency percentiles in milliseconds, each within `relative_error` of the
/// true value; absent when nothing was measured.
#[derive(Debug, Serialize, ToSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    fn of(totals: &Totals) -> Percentiles {
        let q = |q| {
            totals
                .latency
                .quantile_ms(q)
                .map(|ms| (ms * 1000.0).round() / 1000.0)
        };
        Percentiles {
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// Counters of some finished requests and tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageCounts {
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
    /// Spent, in US dollars (exact).
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
}

impl From<&Counts> for UsageCounts {
    fn from(c: &Counts) -> Self {
        UsageCounts {
            requests: c.requests,
            completed: c.completed,
            failed: c.failed,
            cancelled: c.cancelled,
            fallbacks: c.fallbacks,
            cache_hits: c.cache_hits,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cost_usd: c.cost.usd(),
        }
    }
}

/// One interval of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePoint {
    /// Start of the interval (RFC 3339).
    pub start: String,
    /// Its counters.
    #[serde(flatten)]
    pub counts: UsageCounts,
    /// From submission to end, over the interval.
    pub latency_ms: Percentiles,
}

/// The usage of one group.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSeries {
    /// The group's value of each `group_by` dimension (empty: none
    /// answered, or no agent).
    #[schema(value_type = Object)]
    pub group: std::collections::BTreeMap<&'static str, String>,
    /// Intervals with usage, oldest first (intervals without any have no
    /// point).
    pub points: Vec<UsagePoint>,
}

/// Usage over time.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// The points' length.
    pub interval: &'static str,
    /// The dimensions the series are grouped by.
    pub group_by: Vec<&'static str>,
    /// Every percentile is within this fraction of the true value.
    pub relative_error: f64,
    /// One series per group.
    pub series: Vec<UsageSeries>,
}

/// Latency and outcomes of one provider and model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelLatency {
    /// Integration that answered; for a failure, the one tried last
    /// (empty: none was called).
    pub provider: String,
    /// Model that answered, or the one tried last.
    pub model: String,
    /// Its counters.
    #[serde(flatten)]
    pub counts: UsageCounts,
    /// Completed out of finished (0–1).
    pub success_rate: f64,
    /// Completions that needed a fallback, out of completions (0–1).
    pub fallback_rate: f64,
    /// From submission to end.
    pub latency_ms: Percentiles,
}

/// Latency by provider and model.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyReport {
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// Every percentile is within this fraction of the true value.
    pub relative_error: f64,
    /// Busiest first.
    pub items: Vec<ModelLatency>,
}

/// Spend of one provider or agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostShare {
    /// The provider or agent id (empty: none answered, or no agent).
    pub name: String,
    /// Spent, in US dollars (exact).
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
}

/// Spend of one UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayCost {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Spent, in US dollars (exact).
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
}

/// What the organization spent.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostReport {
    /// Start (RFC 3339, rounded down to the day).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// Spent in the range, in US dollars (exact).
    #[schema(value_type = f64)]
    pub total_usd: Usd,
    /// By provider, most first.
    pub by_provider: Vec<CostShare>,
    /// By agent, most first.
    pub by_agent: Vec<CostShare>,
    /// By UTC day, oldest first (days without spend are left out).
    pub by_day: Vec<DayCost>,
    /// Spent since the start of the current UTC month.
    #[schema(value_type = f64)]
    pub month_to_date_usd: Usd,
    /// The month's total if the last 7 days' daily average holds to its
    /// end.
    #[schema(value_type = f64)]
    pub projected_month_usd: Usd,
}

fn range(from: &Option<String>, to: &Option<String>) -> Result<Range, ApiError> {
    let to = parse_time("to", to)?.unwrap_or_else(now_ms);
    // A day by default.
    let from = parse_time("from", from)?.unwrap_or(to - DAY_MS);
    Ok(Range::new(from, to)?)
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The organization's usage over time: counters, cost and latency
/// percentiles per interval, one series per group.
#[utoipa::path(get, path = "/api/analytics/usage", tag = "analytics", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let range = range(&q.from, &q.to)?;
    let interval = match q.interval.as_deref() {
        None => Interval::Hour,
        Some(name) => Interval::parse(name).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "`interval` must be minute, hour or day")
        })?,
    };
    let mut group_by = Vec::new();
    for name in q.group_by.as_deref().unwrap_or("").split(',') {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let d = Dimension::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "`group_by` takes provider, model, agent and source, separated by commas",
            )
        })?;
        if !group_by.contains(&d) {
            group_by.push(d);
        }
    }
    let series = service::usage(&state.db, &p.org_id, range, interval, &group_by).await?;
    Ok(Json(UsageReport {
        from: to_rfc3339(range.from),
        to: to_rfc3339(range.to),
        interval: interval.as_str(),
        group_by: group_by.iter().map(|d| d.as_str()).collect(),
        relative_error: RELATIVE_ERROR,
        series: series
            .into_iter()
            .map(|s| UsageSeries {
                group: s.group,
                points: s
                    .points
                    .iter()
                    .map(|(start, totals)| UsagePoint {
                        start: to_rfc3339(*start),
                        counts: UsageCounts::from(&totals.counts),
                        latency_ms: Percentiles::of(totals),
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// Latency percentiles, success rate and fallback frequency by provider
/// and model.
#[utoipa::path(get, path = "/api/analytics/latency", tag = "analytics", params(RangeQuery),
    responses((status = 200, body = LatencyReport), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn latency(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<LatencyReport>, ApiError> {
    let range = range(&q.from, &q.to)?;
    let groups = service::by_model(&state.db, &p.org_id, range).await?;
    Ok(Json(LatencyReport {
        from: to_rfc3339(range.from),
        to: to_rfc3339(range.to),
        relative_error: RELATIVE_ERROR,
        items: groups
            .iter()
            .map(|((provider, model), totals)| {
                let c = &totals.counts;
                ModelLatency {
                    provider: provider.clone(),
                    model: model.clone(),
                    counts: UsageCounts::from(c),
                    success_rate: ratio(c.completed, c.requests),
                    fallback_rate: ratio(c.fallbacks, c.completed),
                    latency_ms: Percentiles::of(totals),
                }
            })
            .collect(),
    }))
}

/// Costs by provider, agent and day, the month to date and its projected
/// total.
#[utoipa::path(get, path = "/api/analytics/costs", tag = "analytics", params(RangeQuery),
    responses((status = 200, body = CostReport), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn costs(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<CostReport>, ApiError> {
    let range = range(&q.from, &q.to)?;
    let c = service::costs(&state.db, &p.org_id, range, now_ms()).await?;
    let shares = |v: Vec<(String, crate::money::Money)>| {
        v.into_iter()
            .map(|(name, cost)| CostShare {
                name,
                cost_usd: cost.usd(),
            })
            .collect()
    };
    Ok(Json(CostReport {
        from: to_rfc3339(floor(range.from, DAY_MS)),
        to: to_rfc3339(range.to),
        total_usd: c.total.usd(),
        by_provider: shares(c.by_provider),
        by_agent: shares(c.by_agent),
        by_day: c
            .by_day
            .into_iter()
            .map(|(start, cost)| DayCost {
                day: to_rfc3339(start)[..10].to_string(),
                cost_usd: cost.usd(),
            })
            .collect(),
        month_to_date_usd: c.month_to_date.usd(),
        projected_month_usd: c.projected_month.usd(),
    }))
}
