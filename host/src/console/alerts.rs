//! Alerts: the history (open or acknowledged), and acknowledging one.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::instrument;

use super::html::{self, esc, t};
use super::{Console, Session, enc, redirect};
use crate::auth::Permission;

/// Alerts a page shows.
const PAGE_SIZE: i64 = 50;

/// `GET /console/alerts`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn list(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let show = match q.get("show").map(String::as_str) {
        Some("open") => "open",
        Some("acknowledged") => "acknowledged",
        _ => "all",
    };
    let page = q
        .get("page")
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1);
    let mut path = format!(
        "/api/alerts?limit={PAGE_SIZE}&offset={}",
        (page - 1) * PAGE_SIZE
    );
    match show {
        "open" => path.push_str("&acknowledged=false"),
        "acknowledged" => path.push_str("&acknowledged=true"),
        _ => {}
    }
    let options: String = ["all", "open", "acknowledged"]
        .iter()
        .map(|o| {
            let selected = if *o == show { " selected" } else { "" };
            format!(r#"<option value="{o}"{selected}>{o}</option>"#)
        })
        .collect();
    let mut body = format!(
        r#"<h1>Alerts</h1><form class="filters" method="get" action="/console/alerts">
<div><label for="f-show">Show</label><select id="f-show" name="show">{options}</select></div>
<div><button type="submit">Filter</button></div></form>"#
    );
    let may = session.can(Permission::AcknowledgeAlerts);
    let code = match console.get(&session, &path).await {
        Ok(list) => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                body.push_str("<p>No alerts.</p>");
            } else {
                body.push_str(r#"<div class="table-wrap"><table id="alerts"><thead><tr><th scope="col">Raised</th><th scope="col">Message</th><th scope="col" class="hide-narrow">Kind</th><th scope="col">Acknowledged</th></tr></thead><tbody>"#);
                for a in &items {
                    let id = html::text(&a["id"]);
                    let ack = if a["acknowledged_at"].is_null() {
                        if may {
                            html::button(
                                &session,
                                &format!("/console/alerts/{}/acknowledge", enc(&id)),
                                "Acknowledge",
                                "secondary",
                                &[],
                            )
                        } else {
                            "open".to_string()
                        }
                    } else {
                        format!(
                            "{} by {}",
                            t(&a["acknowledged_at"]),
                            t(&a["acknowledged_by"])
                        )
                    };
                    body.push_str(&format!(
                        r#"<tr data-alert="{id}"><td class="mono">{created}</td><td>{message}</td><td class="hide-narrow">{kind}</td><td>{ack}</td></tr>"#,
                        id = esc(&id),
                        created = t(&a["created_at"]),
                        message = t(&a["message"]),
                        kind = t(&a["kind"]),
                    ));
                }
                body.push_str("</tbody></table></div>");
            }
            let more = items.len() as i64 == PAGE_SIZE;
            body.push_str(r#"<nav class="pager" aria-label="Pages">"#);
            let link = |p: i64| {
                let p = p.to_string();
                esc(&html::href(
                    "/console/alerts",
                    &[("show", show), ("page", p.as_str())],
                ))
            };
            if page > 1 {
                body.push_str(&format!(
                    r#"<a href="{}" rel="prev">Previous</a>"#,
                    link(page - 1)
                ));
            }
            body.push_str(&format!("<span>Page {page}</span>"));
            if more {
                body.push_str(&format!(
                    r#"<a href="{}" rel="next">Next</a>"#,
                    link(page + 1)
                ));
            }
            body.push_str("</nav>");
            http::StatusCode::OK
        }
        Err(failed) => {
            body.push_str(&html::failed_inline(&failed));
            failed.status
        }
    };
    (code, html::page(Some(&session), "Alerts", "Alerts", &body)).into_response()
}

/// `POST /console/alerts/{id}/acknowledge`.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn acknowledge(
    State(console): State<Console>,
    session: Session,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return refused.into_response();
    }
    match console
        .post(
            &session,
            &format!("/api/alerts/{}/acknowledge", enc(&id)),
            &json!({}),
        )
        .await
    {
        Ok(_) => redirect("/console/alerts"),
        Err(failed) => failed.into_response(),
    }
}
