//! Benchmarks: the list with a new benchmark's form (a built-in suite or
//! prompts of one's own, the targets, the repetitions), and a benchmark's
//! figures by target (latency, cost, ratings) with its verdicts — each
//! pair of targets compared by Welch's t-test, as
//! `GET /api/benchmarks/{id}` reports them.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Map, Value};
use tracing::instrument;

use super::html::{self, Control, Sheet, esc, t};
use super::{Console, Draft, Id, Sent, Session, enc, given, number, redirect};
use crate::auth::Permission;

/// The built-in suites the form offers: (value, label); blank for the
/// prompts typed.
const SUITES: &[(&str, &str)] = &[
    ("", "My prompts (below)"),
    ("code_generation", "Built-in: code generation"),
    ("reasoning", "Built-in: reasoning"),
    ("research", "Built-in: research"),
];

/// Benchmarks a page shows.
const PAGE_SIZE: i64 = 50;

/// `GET /console/benchmarks`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_page(&console, &session, &q, Draft::none()).await
}

async fn list_page(
    console: &Console,
    session: &Session,
    q: &HashMap<String, String>,
    draft: Draft<'_>,
) -> Response {
    let page = q
        .get("page")
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1);
    let path = format!(
        "/api/benchmarks?limit={PAGE_SIZE}&offset={}",
        (page - 1) * PAGE_SIZE
    );
    let mut body = String::from("<h1>Benchmarks</h1>");
    let mut code = match console.get(session, &path).await {
        Ok(list) => {
            let rows: String = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let id = html::text(&b["id"]);
                    let targets: Vec<String> = b["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(html::text)
                        .collect();
                    format!(
                        r#"<tr data-benchmark="{id}"><td class="mono hide-narrow">{created}</td><td><a href="/console/benchmarks/{href}">{name}</a></td><td>{status}</td><td>{targets}</td><td class="num">{ended} / {runs}</td></tr>"#,
                        id = esc(&id),
                        href = enc(&id),
                        created = t(&b["created_at"]),
                        name = t(&b["name"]),
                        status = html::status(&b["status"]),
                        targets = esc(&targets.join(", ")),
                        ended = t(&b["ended"]),
                        runs = t(&b["runs"]),
                    )
                })
                .collect();
            if rows.is_empty() {
                body.push_str(r#"<p id="no-benchmarks">No benchmarks yet (start one below, with <code>POST /api/benchmarks</code> or with <code>vel bench</code>).</p>"#);
            } else {
                body.push_str(&html::table(
                    "benchmarks",
                    &[
                        ("Created", "hide-narrow"),
                        ("Name", ""),
                        ("Status", ""),
                        ("Targets", ""),
                        ("Runs ended", "num"),
                    ],
                    &rows,
                ));
            }
            StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    body.push_str(&draft.refusal(&mut code));
    if session.can(Permission::ExecuteTask) {
        body.push_str("<h2>New benchmark</h2>");
        body.push_str(&create_form(session, draft));
    }
    (
        code,
        html::page(Some(session), "Benchmarks", "Benchmarks", &body),
    )
        .into_response()
}

/// The new benchmark's form (what was typed kept when the API refused it).
fn create_form(session: &Session, draft: Draft<'_>) -> String {
    let none = Value::Null;
    let mut repetitions = draft.value("repetitions", &none);
    if repetitions.is_empty() && draft.failed.is_none() {
        repetitions = "3".into();
    }
    let fields = [
        html::field(
            "bench-name",
            "name",
            "Name",
            Control::Input("text"),
            &draft.value("name", &none),
            false,
        ),
        html::field(
            "bench-suite",
            "suite",
            "Prompts",
            Control::Select(SUITES),
            &draft.value("suite", &none),
            false,
        ),
        html::field(
            "bench-repetitions",
            "repetitions",
            "Runs of each prompt on each target",
            Control::Input("number"),
            &repetitions,
            false,
        ),
        html::field(
            "bench-prompts",
            "prompts",
            "My prompts, one a line",
            Control::TextArea,
            &draft.value("prompts", &none),
            false,
        ),
        html::field(
            "bench-targets",
            "targets",
            "Targets, one a line (integration/model)",
            Control::TextArea,
            &draft.value("targets", &none),
            true,
        ),
    ]
    .concat();
    html::form(
        session,
        "/console/benchmarks",
        "new-benchmark",
        &fields,
        "Start benchmark",
        false,
    )
}

/// The non-blank lines of a text area.
fn lines(form: &HashMap<String, String>, key: &str) -> Vec<Value> {
    given(form, key)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(Value::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /console/benchmarks`: start one (`POST /api/benchmarks`), then
/// its page; the list with the API's reason and what was typed when it
/// refuses.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn create(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut body = Map::new();
    if let Some(name) = given(&form, "name") {
        body.insert("name".into(), Value::from(name));
    }
    if let Some(suite) = given(&form, "suite") {
        body.insert("suite".into(), Value::from(suite));
    } else {
        body.insert("prompts".into(), Value::Array(lines(&form, "prompts")));
    }
    body.insert("targets".into(), Value::Array(lines(&form, "targets")));
    if let Some(n) = number(&form, "repetitions") {
        body.insert("repetitions".into(), n);
    }
    let body = Value::Object(body);
    let sent = console.submit(
        &session,
        &form,
        Method::POST,
        "/api/benchmarks",
        Some(&body),
    );
    match sent.await {
        Sent::Done(created) => redirect(&format!(
            "/console/benchmarks/{}",
            enc(&html::text(&created["id"]))
        )),
        Sent::Refused(failed) => {
            list_page(
                &console,
                &session,
                &HashMap::new(),
                Draft::sent(&form, &failed),
            )
            .await
        }
        Sent::Stop(resp) => resp,
    }
}

/// A summary's mean, or a dash.
fn mean(summary: &Value, digits: usize) -> String {
    summary["mean"]
        .as_f64()
        .map_or_else(|| "—".into(), |m| format!("{m:.digits$}"))
}

/// `GET /console/benchmarks/{id}`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn detail(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): Id,
) -> Response {
    let b = match console
        .get(&session, &format!("/api/benchmarks/{}", enc(&id)))
        .await
    {
        Ok(b) => b,
        Err(failed) => return failed.into_response(),
    };
    let mut body = html::heading("/console/benchmarks", "Benchmarks", &b["name"]);
    body.push_str(&html::facts(&[
        ("Status", html::status(&b["status"])),
        ("Task type", t(&b["task_type"])),
        ("Prompts", t(&b["prompt_count"])),
        ("Repetitions", t(&b["repetitions"])),
        (
            "Runs ended",
            format!("{} / {}", t(&b["ended"]), t(&b["runs"])),
        ),
        ("Cost ($)", esc(&html::money(&b["cost_usd"]))),
        ("Created", t(&b["created_at"])),
        ("Finished", t(&b["finished_at"])),
    ]));
    let verdicts: Vec<Vec<String>> = b["comparisons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                html::text(&c["metric"]),
                html::text(&c["sentence"]),
                c["p_value"]
                    .as_f64()
                    .map_or_else(|| "—".into(), |p| format!("{p:.4}")),
                if c["significant"] == true {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            ]
        })
        .collect();
    let targets: Vec<Vec<String>> = b["by_target"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                html::text(&f["target"]),
                html::text(&f["runs"]),
                html::text(&f["completed"]),
                html::text(&f["failed"]),
                mean(&f["latency_ms"], 0),
                f["latency_ms"]["p95"]
                    .as_f64()
                    .map_or_else(|| "—".into(), |v| format!("{v:.0}")),
                html::money(&f["cost_usd"]),
                mean(&f["rating"], 2),
            ]
        })
        .collect();
    let sheets = [
        Sheet {
            id: "verdicts",
            title: "Verdicts",
            heads: vec![
                ("Metric", ""),
                ("Verdict", ""),
                ("p", "num"),
                ("Significant", ""),
            ],
            rows: verdicts,
        },
        Sheet {
            id: "targets",
            title: "By target",
            heads: vec![
                ("Target", ""),
                ("Runs", "num"),
                ("Completed", "num"),
                ("Failed", "num"),
                ("Mean latency (ms)", "num"),
                ("p95 (ms)", "num"),
                ("Cost ($)", "num"),
                ("Mean rating", "num"),
            ],
            rows: targets,
        },
    ];
    for sheet in &sheets {
        body.push_str(&sheet.html(None));
    }
    html::page(Some(&session), "Benchmark", "Benchmarks", &body).into_response()
}
