//! The costs page's budget form: set (or change) the budget of the
//! organization, an agent, an API key or a user, per day or month
//! (`PUT /api/budgets/{scope}/{subject_id}/{period}`), for those who may
//! manage budgets. The page lists the budgets with their burn
//! ([`super::analytics`]).

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{Map, Value};
use tracing::instrument;

use super::html::{self, Control};
use super::{Console, Draft, Failed, Sent, Session, analytics, enc, given, number, redirect};

/// What a budget limits: (value, label).
const SCOPES: &[(&str, &str)] = &[
    ("organization", "The organization"),
    ("agent", "An agent"),
    ("api_key", "An API key"),
    ("user", "A user"),
];

/// Its period: (value, label).
const PERIODS: &[(&str, &str)] = &[("month", "Month (UTC)"), ("day", "Day (UTC)")];

/// Hard or soft: (value, label).
const KINDS: &[(&str, &str)] = &[
    ("hard", "Hard: refuse calls that could pass it"),
    ("soft", "Soft: alert only"),
];

/// The budget form (what was typed kept when the API refused it).
pub(crate) fn form(session: &Session, draft: Draft<'_>) -> String {
    let none = Value::Null;
    let or = |key: &str, default: &str| {
        let v = draft.value(key, &none);
        if v.is_empty() { default.to_string() } else { v }
    };
    let fields = [
        html::field(
            "budget-scope",
            "scope",
            "Limits",
            Control::Select(SCOPES),
            &or("scope", "organization"),
            true,
        ),
        html::field(
            "budget-subject",
            "subject_id",
            "Its id (blank for the organization)",
            Control::Input("text"),
            &draft.value("subject_id", &none),
            false,
        ),
        html::field(
            "budget-period",
            "period",
            "Per",
            Control::Select(PERIODS),
            &or("period", "month"),
            true,
        ),
        html::field(
            "budget-limit",
            "limit_usd",
            "Limit (US dollars)",
            Control::Input("text"),
            &draft.value("limit_usd", &none),
            true,
        ),
        html::field(
            "budget-kind",
            "kind",
            "Kind",
            Control::Select(KINDS),
            &or("kind", "hard"),
            true,
        ),
        html::field(
            "budget-alert-at",
            "alert_at",
            "Alert at (fractions, e.g. 0.8, 1)",
            Control::Input("text"),
            &draft.value("alert_at", &none),
            false,
        ),
    ]
    .concat();
    format!(
        "<h2>Set a budget</h2>{}",
        html::form(
            session,
            "/console/costs/budgets",
            "set-budget",
            &fields,
            "Save budget",
            false,
        )
    )
}

/// The API body of the form: numbers where they read as numbers, else
/// the text as typed, so that the API names the field it refuses.
fn body(form: &HashMap<String, String>) -> Value {
    let mut body = Map::new();
    body.insert(
        "limit_usd".into(),
        number(form, "limit_usd").unwrap_or(Value::Null),
    );
    body.insert(
        "hard".into(),
        Value::Bool(given(form, "kind") != Some("soft")),
    );
    if let Some(text) = given(form, "alert_at") {
        let parsed: Option<Vec<Value>> = text
            .split(',')
            .map(|f| f.trim().parse::<f64>().ok().map(Value::from))
            .collect();
        body.insert(
            "alert_at".into(),
            parsed.map_or_else(|| Value::from(text), Value::Array),
        );
    }
    Value::Object(body)
}

/// `POST /console/costs/budgets`: set the budget, then the costs page
/// (which lists it); the page with the API's reason and what was typed
/// when it refuses.
#[instrument(skip_all, fields(org = %session.principal.org_id))]
pub(crate) async fn set(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let scope = given(&form, "scope").unwrap_or("organization");
    let period = given(&form, "period").unwrap_or("month");
    let subject = match (given(&form, "subject_id"), scope) {
        (Some(id), _) => id.to_string(),
        (None, "organization") => session.principal.org_id.clone(),
        (None, _) => {
            // No address to send it to: refused here, in the API's words.
            if let Err(refused) = session.check_csrf(&form) {
                return axum::response::IntoResponse::into_response(refused);
            }
            let failed = Failed {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "invalid fields: subject_id".into(),
                details: vec![
                    "subject_id: the id of the agent, API key or user is required".into(),
                ],
            };
            let draft = Draft::sent(&form, &failed);
            return analytics::costs_page(&console, &session, &HashMap::new(), false, draft).await;
        }
    };
    let path = format!(
        "/api/budgets/{}/{}/{}",
        enc(scope),
        enc(&subject),
        enc(period)
    );
    match console
        .submit(&session, &form, Method::PUT, &path, Some(&body(&form)))
        .await
    {
        Sent::Done(_) => redirect("/console/costs"),
        Sent::Refused(failed) => {
            let draft = Draft::sent(&form, &failed);
            analytics::costs_page(&console, &session, &HashMap::new(), false, draft).await
        }
        Sent::Stop(resp) => resp,
    }
}
