//! The overview: tasks per minute over the last hour, today's success
//! rate and latency percentiles, spend today and this month against the
//! organization's budgets, open alerts. Every figure is read from the
//! analytics, budgets and alerts API (rollups, not a scan of tasks).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::Value;
use tracing::instrument;

use super::html::{self, esc};
use super::{Console, Failed, Session, enc};

/// The figures of the overview, as the page shows them (the browser
/// tests compute the same from the API).
#[derive(Debug, Default)]
pub(crate) struct Figures {
    /// Finished tasks per minute over the last 60 minutes.
    pub(crate) per_minute: f64,
    /// Finished in the last 60 minutes, per minute, oldest first.
    pub(crate) minutes: Vec<i64>,
    /// Finished today (UTC).
    pub(crate) today: i64,
    /// Completed today.
    pub(crate) completed: i64,
    /// Latency percentiles today.
    pub(crate) p50: Option<f64>,
    /// 95th.
    pub(crate) p95: Option<f64>,
    /// 99th.
    pub(crate) p99: Option<f64>,
    /// Spent today, as the API writes it.
    pub(crate) spend_today: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The success rate as shown: completed over finished, one decimal.
pub(crate) fn success_rate(completed: i64, finished: i64) -> String {
    if finished == 0 {
        return "—".into();
    }
    let rate = completed as f64 * 100.0 / finished as f64;
    format!("{rate:.1}%")
}

/// A latency as shown.
pub(crate) fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{v:.0} ms"))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The usage figures from the API.
async fn figures(
    console: &Console,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<Figures, Failed> {
    let today = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now);
    let hour_from = now - Duration::minutes(60);
    let day_path = format!(
        "/api/analytics/usage?interval=day&from={}&to={}",
        enc(&rfc3339(today)),
        enc(&rfc3339(now))
    );
    let hour_path = format!(
        "/api/analytics/usage?interval=minute&from={}&to={}",
        enc(&rfc3339(hour_from)),
        enc(&rfc3339(now))
    );
    // Both at once: neither waits for the other.
    let (day, hour) = tokio::join!(
        console.get(session, &day_path),
        console.get(session, &hour_path)
    );
    let (day, hour) = (day?, hour?);
    let mut f = Figures::default();
    if let Some(point) = day["series"][0]["points"].as_array().and_then(|p| p.last()) {
        f.today = int(&point["requests"]);
        f.completed = int(&point["completed"]);
        f.p50 = point["latency_ms"]["p50"].as_f64();
        f.p95 = point["latency_ms"]["p95"].as_f64();
        f.p99 = point["latency_ms"]["p99"].as_f64();
        f.spend_today = html::money(&point["cost_usd"]);
    } else {
        f.spend_today = "0".into();
    }
    let start = hour_from.timestamp() / 60;
    f.minutes = vec![0; 60];
    for point in hour["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["points"].as_array().into_iter().flatten())
    {
        let at = point["start"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp() / 60 - start);
        if let Some(i) = at.and_then(|i| usize::try_from(i).ok())
            && let Some(slot) = f.minutes.get_mut(i.min(59))
        {
            *slot += int(&point["requests"]);
        }
    }
    f.per_minute = f.minutes.iter().sum::<i64>() as f64 / 60.0;
    Ok(f)
}

/// Bars of the tasks finished each minute, as inline SVG.
fn chart(minutes: &[i64]) -> String {
    let max = minutes.iter().copied().max().unwrap_or(0).max(1);
    let bars: String = minutes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let h = (*n as f64 / max as f64 * 90.0).max(1.0);
            format!(
                r#"<rect x="{}" y="{:.1}" width="8" height="{h:.1}"><title>{n}</title></rect>"#,
                i * 10 + 1,
                95.0 - h
            )
        })
        .collect();
    format!(
        r##"<svg class="chart" viewBox="0 0 600 100" role="img" aria-label="Tasks finished per minute over the last hour">{bars}<line x1="0" y1="95" x2="600" y2="95" stroke="#d0d7de"/></svg>"##
    )
}

fn card(id: &str, label: &str, value: &str, sub: &str) -> String {
    format!(
        r#"<div class="card"><div class="label">{}</div><div class="value" data-metric="{id}">{}</div><div class="sub">{}</div></div>"#,
        esc(label),
        esc(value),
        esc(sub)
    )
}

/// A budget's use as a bar, or a note that none is set.
fn budget(id: &str, label: &str, spent: &str, budget: Option<&Value>) -> String {
    match budget {
        Some(b) => {
            let limit = b["limit_usd"].as_f64().unwrap_or(0.0);
            let used = b["spent_usd"].as_f64().unwrap_or(0.0);
            let share = if limit > 0.0 { used / limit } else { 0.0 };
            let pct = (share * 100.0).clamp(0.0, 100.0);
            format!(
                r#"<div class="card"><div class="label">{label}</div><div class="value" data-metric="{id}">${spent}</div>
<div class="sub">of <span data-metric="{id}-limit">${limit}</span> ({pct:.0}%)</div>
<meter min="0" max="{limit_n}" high="{limit_n}" value="{used}" aria-label="{pct:.0}% of the budget">{pct:.0}%</meter></div>"#,
                label = esc(label),
                spent = esc(spent),
                limit = esc(&html::money(&b["limit_usd"])),
                limit_n = limit,
            )
        }
        None => format!(
            r#"<div class="card"><div class="label">{}</div><div class="value" data-metric="{id}">${}</div><div class="sub">no budget set</div></div>"#,
            esc(label),
            esc(spent)
        ),
    }
}

/// `GET /console`: the overview.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn page(State(console): State<Console>, session: Session) -> Response {
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let costs_path = format!(
        "/api/analytics/costs?from={}&to={}",
        enc(&rfc3339(month_start)),
        enc(&rfc3339(now))
    );
    let (figures, costs, budgets, alerts) = tokio::join!(
        figures(&console, &session, now),
        console.get(&session, &costs_path),
        console.get(&session, "/api/budgets"),
        console.get(&session, "/api/alerts?acknowledged=false&limit=100"),
    );
    let mut body = String::from("<h1>Overview</h1>");
    match &figures {
        Ok(f) => {
            body.push_str(r#"<h2>Tasks</h2><div class="cards">"#);
            body.push_str(&card(
                "per-minute",
                "Tasks per minute",
                &format!("{:.2}", f.per_minute),
                "last 60 minutes",
            ));
            body.push_str(&card(
                "today",
                "Tasks today",
                &f.today.to_string(),
                "finished, UTC day",
            ));
            body.push_str(&card(
                "success-rate",
                "Success rate",
                &success_rate(f.completed, f.today),
                "completed of finished today",
            ));
            body.push_str(&card("p50", "Latency p50", &ms(f.p50), "today"));
            body.push_str(&card("p95", "Latency p95", &ms(f.p95), "today"));
            body.push_str(&card("p99", "Latency p99", &ms(f.p99), "today"));
            body.push_str("</div>");
            body.push_str(&chart(&f.minutes));
        }
        Err(failed) => {
            body.push_str("<h2>Tasks</h2>");
            body.push_str(&html::failed_inline(failed));
        }
    }
    body.push_str("<h2>Spend</h2>");
    let org = &session.principal.org_id;
    let org_budget = |period: &str| -> Option<Value> {
        budgets.as_ref().ok().and_then(|b| {
            b["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|b| {
                        b["scope"] == "organization"
                            && b["subject_id"] == org.as_str()
                            && b["period"] == period
                    })
                    .cloned()
            })
        })
    };
    match (&figures, &costs) {
        (Ok(f), Ok(c)) => {
            body.push_str(r#"<div class="cards">"#);
            body.push_str(&budget(
                "spend-today",
                "Spent today",
                &f.spend_today,
                org_budget("day").as_ref(),
            ));
            body.push_str(&budget(
                "spend-month",
                "Spent this month",
                &html::money(&c["month_to_date_usd"]),
                org_budget("month").as_ref(),
            ));
            body.push_str(&card(
                "projected-month",
                "Month-end projection",
                &format!("${}", html::money(&c["projected_month_usd"])),
                "at the last 7 days' rate",
            ));
            body.push_str("</div>");
        }
        (Err(failed), _) | (_, Err(failed)) => body.push_str(&html::failed_inline(failed)),
    }
    if let Err(failed) = &budgets {
        body.push_str(&html::failed_inline(failed));
    }
    body.push_str("<h2>Open alerts</h2>");
    match &alerts {
        Ok(a) => {
            let items = a["items"].as_array().cloned().unwrap_or_default();
            let count = if items.len() >= 100 {
                "100+".to_string()
            } else {
                items.len().to_string()
            };
            body.push_str(&format!(
                r#"<p><span data-metric="open-alerts">{}</span> open · <a href="/console/alerts">all alerts</a></p>"#,
                esc(&count)
            ));
            if !items.is_empty() {
                body.push_str("<ul>");
                for alert in items.iter().take(5) {
                    body.push_str(&format!(
                        "<li>{} <span class=\"sub\">{}</span></li>",
                        html::t(&alert["message"]),
                        html::t(&alert["created_at"])
                    ));
                }
                body.push_str("</ul>");
            }
        }
        Err(failed) => body.push_str(&html::failed_inline(failed)),
    }
    html::page(Some(&session), "Overview", "Overview", &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_figures() {
        assert_eq!(success_rate(0, 0), "—");
        assert_eq!(success_rate(2, 3), "66.7%");
        assert_eq!(ms(Some(12.4)), "12 ms");
        assert_eq!(ms(None), "—");
        assert!(chart(&[0, 3, 1]).contains("<title>3</title>"));
    }
}
