//! Performance and costs, over the analytics API, for a time range (the
//! last hour, day, week or month): provider comparison side by side
//! (latency percentiles, success rate, fallback frequency) and latency by
//! provider over time; spend by provider, agent and day, the month's burn
//! and projection against the budgets and their alert thresholds. Every
//! table is exported as CSV from the same rows the page shows; latency
//! over time and spend per day are also drawn as charts ([`chart`]) from
//! those rows.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use http::{StatusCode, header};
use serde_json::Value;
use tracing::instrument;

use super::chart::{self, Series};
use super::html::{self, Sheet, esc};
use super::overview::ms;
use super::{Console, Draft, Failed, Session, budgets, enc};
use crate::auth::Permission;

/// A time range the pages offer: (value, label, length, the usage
/// series' interval).
const RANGES: &[(&str, &str, i64, &str)] = &[
    ("hour", "Last hour", 3600, "minute"),
    ("day", "Last day", 86_400, "hour"),
    ("week", "Last week", 7 * 86_400, "day"),
    ("month", "Last 30 days", 30 * 86_400, "day"),
];

/// The range `?range=` names (a day by default): its value, start and
/// interval.
fn range_of(
    q: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> (&'static str, DateTime<Utc>, &'static str) {
    let wanted = q.get("range").map(String::as_str).unwrap_or("day");
    let (name, _, secs, interval) = RANGES
        .iter()
        .find(|r| r.0 == wanted)
        .copied()
        .unwrap_or(RANGES[1]);
    (name, now - Duration::seconds(secs), interval)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A fraction (0–1) as a percentage with one decimal.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |f| format!("{:.1}%", f * 100.0))
}

/// The range selector (a form that loads the page for another range).
fn selector(action: &str, current: &str) -> String {
    let options: String = RANGES
        .iter()
        .map(|(value, label, _, _)| {
            let selected = if *value == current { " selected" } else { "" };
            format!(r#"<option value="{value}"{selected}>{label}</option>"#)
        })
        .collect();
    format!(
        r#"<form class="filters" method="get" action="{action}"><div><label for="f-range">Time range</label><select id="f-range" name="range">{options}</select></div><div><button type="submit">Show</button></div></form>"#
    )
}

/// What a page shows for its range: the range's name, its charts (HTML)
/// and its tables.
type Shown = (&'static str, String, Vec<Sheet>);

/// The tables and chart of the performance page.
async fn performance_sheets(
    console: &Console,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Shown, Failed> {
    let now = Utc::now();
    let (range, from, interval) = range_of(q, now);
    let span = format!("from={}&to={}", enc(&rfc3339(from)), enc(&rfc3339(now)));
    let latency_path = format!("/api/analytics/latency?{span}");
    let usage_path = format!("/api/analytics/usage?{span}&interval={interval}&group_by=provider");
    let (latency, usage) = tokio::join!(
        console.get(session, &latency_path),
        console.get(session, &usage_path),
    );
    let (latency, usage) = (latency?, usage?);
    let providers = latency["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                html::text(&m["provider"]),
                html::text(&m["model"]),
                html::text(&m["requests"]),
                percent(&m["success_rate"]),
                percent(&m["fallback_rate"]),
                ms(m["latency_ms"]["p50"].as_f64()),
                ms(m["latency_ms"]["p95"].as_f64()),
                ms(m["latency_ms"]["p99"].as_f64()),
                html::money(&m["cost_usd"]),
            ]
        })
        .collect();
    let mut over_time: Vec<Vec<String>> = Vec::new();
    let mut lines: Vec<Series> = Vec::new();
    for (n, series) in usage["series"].as_array().into_iter().flatten().enumerate() {
        let provider = series["group"]["provider"].as_str().unwrap_or("");
        for (pct, dashed) in [("p50", false), ("p95", true)] {
            let points = series["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((html::text(&p["start"]), p["latency_ms"][pct].as_f64()?)))
                .collect();
            lines.push(Series {
                name: format!("{provider} {pct}"),
                colour: n,
                dashed,
                points,
            });
        }
        for p in series["points"].as_array().into_iter().flatten() {
            let requests = p["requests"].as_i64().unwrap_or(0);
            let completed = p["completed"].as_i64().unwrap_or(0);
            over_time.push(vec![
                html::text(&p["start"]),
                provider.to_string(),
                requests.to_string(),
                super::overview::success_rate(completed, requests),
                html::text(&p["fallbacks"]),
                ms(p["latency_ms"]["p50"].as_f64()),
                ms(p["latency_ms"]["p95"].as_f64()),
                ms(p["latency_ms"]["p99"].as_f64()),
            ]);
        }
    }
    over_time.sort();
    let chart = chart::line_chart(
        "latency-chart",
        "Latency by provider over time",
        &format!(
            "p50 (solid) and p95 (dashed) latency in milliseconds per provider, one point per {interval}; the table below has the numbers."
        ),
        "ms",
        &lines,
    );
    Ok((
        range,
        chart,
        vec![
            Sheet {
                id: "providers",
                title: "Providers side by side",
                heads: vec![
                    ("Provider", ""),
                    ("Model", ""),
                    ("Requests", "num"),
                    ("Success rate", "num"),
                    ("Fallback rate", "num"),
                    ("p50", "num"),
                    ("p95", "num"),
                    ("p99", "num"),
                    ("Cost ($)", "num"),
                ],
                rows: providers,
            },
            Sheet {
                id: "latency-over-time",
                title: "Latency by provider over time",
                heads: vec![
                    ("Start", "mono"),
                    ("Provider", ""),
                    ("Requests", "num"),
                    ("Success rate", "num"),
                    ("Fallbacks", "num"),
                    ("p50", "num"),
                    ("p95", "num"),
                    ("p99", "num"),
                ],
                rows: over_time,
            },
        ],
    ))
}

/// The tables and chart of the costs page.
async fn cost_sheets(
    console: &Console,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Shown, Failed> {
    let now = Utc::now();
    let (range, from, _) = range_of(q, now);
    let costs_path = format!(
        "/api/analytics/costs?from={}&to={}",
        enc(&rfc3339(from)),
        enc(&rfc3339(now))
    );
    let (costs, budgets) = tokio::join!(
        console.get(session, &costs_path),
        console.get(session, "/api/budgets"),
    );
    let (costs, budgets) = (costs?, budgets?);
    let shares = |key: &str| -> Vec<Vec<String>> {
        costs[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let name = s["name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("(none)");
                vec![name.to_string(), html::money(&s["cost_usd"])]
            })
            .collect()
    };
    let spend = Series {
        name: "spend".into(),
        colour: 0,
        dashed: false,
        points: costs["by_day"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| Some((html::text(&d["day"]), d["cost_usd"].as_f64()?)))
            .collect(),
    };
    let chart = chart::line_chart(
        "spend-chart",
        "Spend per day",
        "Spend in US dollars per day (UTC) in the range; the table “By day” below has the numbers.",
        "$",
        &[spend],
    );
    let by_day = costs["by_day"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| vec![html::text(&d["day"]), html::money(&d["cost_usd"])])
        .collect();
    let summary = vec![
        vec![
            "Spent in the range".into(),
            html::money(&costs["total_usd"]),
        ],
        vec![
            "Month to date".into(),
            html::money(&costs["month_to_date_usd"]),
        ],
        vec![
            "Month-end projection (last 7 days' rate)".into(),
            html::money(&costs["projected_month_usd"]),
        ],
    ];
    let budget_rows = budgets["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let limit = b["limit_usd"].as_f64().unwrap_or(0.0);
            let spent = b["spent_usd"].as_f64().unwrap_or(0.0);
            let burn = if limit > 0.0 {
                format!("{:.1}%", spent * 100.0 / limit)
            } else {
                "—".into()
            };
            let thresholds: Vec<String> = b["alert_at"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .map(|f| format!("{:.0}%", f * 100.0))
                .collect();
            vec![
                html::text(&b["scope"]),
                html::text(&b["subject_id"]),
                html::text(&b["period"]),
                html::money(&b["limit_usd"]),
                html::money(&b["spent_usd"]),
                burn,
                html::money(&b["projected_usd"]),
                thresholds.join(" "),
                if b["hard"] == true { "hard" } else { "soft" }.into(),
            ]
        })
        .collect();
    let money_heads = |first: &'static str| vec![(first, ""), ("Cost ($)", "num")];
    Ok((
        range,
        chart,
        vec![
            Sheet {
                id: "summary",
                title: "Summary",
                heads: vec![("", ""), ("$", "num")],
                rows: summary,
            },
            Sheet {
                id: "by-provider",
                title: "By provider",
                heads: money_heads("Provider"),
                rows: shares("by_provider"),
            },
            Sheet {
                id: "by-agent",
                title: "By agent",
                heads: money_heads("Agent"),
                rows: shares("by_agent"),
            },
            Sheet {
                id: "by-day",
                title: "By day",
                heads: money_heads("Day (UTC)"),
                rows: by_day,
            },
            Sheet {
                id: "budgets",
                title: "Budgets this period",
                heads: vec![
                    ("Scope", ""),
                    ("Subject", "mono"),
                    ("Period", ""),
                    ("Limit ($)", "num"),
                    ("Spent ($)", "num"),
                    ("Burn", "num"),
                    ("Projected ($)", "num"),
                    ("Alert at", ""),
                    ("Kind", ""),
                ],
                rows: budget_rows,
            },
        ],
    ))
}

/// A page of sheets, or its CSV; `tail` (HTML, escaped already) follows
/// the sheets on the page.
fn render(
    session: &Session,
    (title, path): (&str, &str),
    sheets: Result<Shown, Failed>,
    q: &HashMap<String, String>,
    csv: bool,
    tail: &str,
) -> Response {
    let (range, charts, sheets) = match sheets {
        Ok(s) => s,
        Err(failed) if csv => return failed.into_response(),
        Err(failed) => {
            let (range, _, _) = range_of(q, Utc::now());
            let body = format!(
                "<h1>{}</h1>{}{}{tail}",
                esc(title),
                selector(path, range),
                html::failed_inline(&failed)
            );
            return (
                failed.status,
                html::page(Some(session), title, title, &body),
            )
                .into_response();
        }
    };
    if csv {
        let wanted = q.get("table").map(String::as_str).unwrap_or("");
        let Some(sheet) = sheets.iter().find(|s| s.id == wanted) else {
            return html::error_page(StatusCode::NOT_FOUND, "No such table on this page.");
        };
        let file = format!(
            "attachment; filename=\"vel-{}-{}-{range}.csv\"",
            path.trim_start_matches("/console/"),
            sheet.id
        );
        return (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, file),
            ],
            sheet.csv(),
        )
            .into_response();
    }
    let csv_base = format!("{path}.csv?range={range}");
    let mut body = format!("<h1>{}</h1>{}{charts}", esc(title), selector(path, range));
    for sheet in &sheets {
        body.push_str(&sheet.html(Some(&csv_base)));
    }
    body.push_str(tail);
    html::page(Some(session), title, title, &body).into_response()
}

/// `GET /console/performance`, and `/console/performance.csv?table=…`
/// for one of its tables.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn performance(
    State(console): State<Console>,
    session: Session,
    path: MatchedPath,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sheets = performance_sheets(&console, &session, &q).await;
    let csv = path.as_str().ends_with(".csv");
    render(
        &session,
        ("Performance", "/console/performance"),
        sheets,
        &q,
        csv,
        "",
    )
}

/// `GET /console/costs`, and `/console/costs.csv?table=…` for one of its
/// tables.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn costs(
    State(console): State<Console>,
    session: Session,
    path: MatchedPath,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let csv = path.as_str().ends_with(".csv");
    costs_page(&console, &session, &q, csv, Draft::none()).await
}

/// The costs page (or one of its tables as CSV), with the budget form for
/// those who may set budgets; `draft` is a budget form the API refused.
pub(crate) async fn costs_page(
    console: &Console,
    session: &Session,
    q: &HashMap<String, String>,
    csv: bool,
    draft: Draft<'_>,
) -> Response {
    let sheets = cost_sheets(console, session, q).await;
    let mut code = StatusCode::OK;
    let mut tail = draft.refusal(&mut code);
    if !csv && session.can(Permission::ManageBudgets) {
        tail.push_str(&budgets::form(session, draft));
    }
    let mut resp = render(session, ("Costs", "/console/costs"), sheets, q, csv, &tail);
    if code != StatusCode::OK && resp.status() == StatusCode::OK {
        *resp.status_mut() = code;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let now = Utc::now();
        let q = |r: &str| HashMap::from([("range".to_string(), r.to_string())]);
        assert_eq!(range_of(&q("hour"), now).0, "hour");
        assert_eq!(range_of(&q("hour"), now).1, now - Duration::hours(1));
        assert_eq!(range_of(&q("week"), now).2, "day");
        assert_eq!(range_of(&q("nonsense"), now).0, "day");
        assert_eq!(percent(&serde_json::json!(0.25)), "25.0%");
    }
}
