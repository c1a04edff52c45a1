//! `/api/budgets`: spend limits per organization, agent, API key or user
//! and day or month, read with the current period's spend and projection
//! (`crate::budgets`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ClientInfo};
use crate::auth::Principal;
use crate::budgets::service::{self, BudgetKey, BudgetSpec, BudgetStatus};
use crate::budgets::{Period, Scope};
use crate::money::Usd;
use crate::state::AppState;
use crate::store::to_rfc3339;

/// Body of `PUT /api/budgets/{scope}/{subject_id}/{period}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    /// Most the subject may spend per period, in US dollars (more than 0,
    /// at most 1,000,000,000).
    pub limit_usd: f64,
    /// Refuse provider calls that could pass the limit (default true);
    /// false only alerts.
    pub hard: Option<bool>,
    /// Fractions of the limit at which to alert, once per period each
    /// (default `[0.8, 1.0]`; at most 10, each in (0, 1]).
    pub alert_at: Option<Vec<f64>>,
}

/// A budget with its current period's spend.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    /// Budget id.
    pub id: String,
    /// What it limits.
    pub scope: Scope,
    /// The organization, agent, API key or user limited.
    pub subject_id: String,
    /// `day` or `month` (UTC).
    pub period: Period,
    /// Limit per period, in US dollars.
    #[schema(value_type = f64)]
    pub limit_usd: Usd,
    /// Whether calls that could pass it are refused.
    pub hard: bool,
    /// Alert thresholds, as fractions of the limit.
    pub alert_at: Vec<f64>,
    /// The current period's start (RFC 3339).
    pub period_start: String,
    /// Its end (RFC 3339).
    pub period_end: String,
    /// Spent this period (written by every instance within a fraction of a
    /// second of each call).
    #[schema(value_type = f64)]
    pub spent_usd: Usd,
    /// Left of the limit this period.
    #[schema(value_type = f64)]
    pub remaining_usd: Usd,
    /// Projected spend at the period's end, at this period's rate so far.
    #[schema(value_type = f64)]
    pub projected_usd: Usd,
    /// Thresholds that have alerted this period.
    pub alerted: Vec<f64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<BudgetStatus> for BudgetView {
    fn from(s: BudgetStatus) -> Self {
        let b = s.budget;
        let alerted = usize::try_from(s.alerted).unwrap_or(0);
        BudgetView {
            alerted: b.alert_at.iter().take(alerted).copied().collect(),
            id: b.id,
            scope: b.scope,
            subject_id: b.subject_id,
            period: b.period,
            limit_usd: b.limit.usd(),
            hard: b.hard,
            alert_at: b.alert_at,
            period_start: to_rfc3339(s.period_start),
            period_end: to_rfc3339(s.period_end),
            spent_usd: s.spent.usd(),
            remaining_usd: s.remaining.usd(),
            projected_usd: s.projected.usd(),
            created_at: to_rfc3339(b.created_at),
            updated_at: to_rfc3339(b.updated_at),
        }
    }
}

/// The organization's budgets.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetList {
    /// Every budget, by scope, subject and period.
    pub items: Vec<BudgetView>,
}

/// The organization's budgets with their spend (viewer and above).
#[utoipa::path(get, path = "/api/budgets", tag = "budgets",
    responses((status = 200, body = BudgetList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<BudgetList>, ApiError> {
    let items = service::list(&state, &p).await?;
    Ok(Json(BudgetList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// One budget with its spend (viewer and above).
#[utoipa::path(get, path = "/api/budgets/{scope}/{subject_id}/{period}", tag = "budgets",
    params(("scope" = Scope, Path, description = "organization, agent, api_key or user"),
           ("subject_id" = String, Path, description = "The organization's, agent's, API key's or user's id"),
           ("period" = Period, Path, description = "day or month (UTC)")),
    responses((status = 200, body = BudgetView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((scope, subject_id, period)): ApiPath<(String, String, String)>,
) -> Result<Json<BudgetView>, ApiError> {
    let key = BudgetKey::parse(&scope, &subject_id, &period)?;
    Ok(Json(service::get(&state, &p, &key).await?.into()))
}

/// Set a budget (org_admin): a hard one refuses, before any upstream
/// request, provider calls whose worst-case cost could pass it; every
/// budget alerts at its thresholds once per period.
#[utoipa::path(put, path = "/api/budgets/{scope}/{subject_id}/{period}", tag = "budgets",
    request_body = SetBudget,
    params(("scope" = Scope, Path, description = "organization, agent, api_key or user"),
           ("subject_id" = String, Path, description = "The organization's, agent's, API key's or user's id"),
           ("period" = Period, Path, description = "day or month (UTC)")),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, description = "No such subject in the organization", body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((scope, subject_id, period)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<SetBudget>,
) -> Result<Json<BudgetView>, ApiError> {
    let key = BudgetKey::parse(&scope, &subject_id, &period)?;
    let spec = BudgetSpec {
        limit_usd: body.limit_usd,
        hard: body.hard,
        alert_at: body.alert_at,
    };
    Ok(Json(
        service::set(&state, &p, &client, &key, spec).await?.into(),
    ))
}

/// Delete a budget (org_admin).
#[utoipa::path(delete, path = "/api/budgets/{scope}/{subject_id}/{period}", tag = "budgets",
    params(("scope" = Scope, Path, description = "organization, agent, api_key or user"),
           ("subject_id" = String, Path, description = "The organization's, agent's, API key's or user's id"),
           ("period" = Period, Path, description = "day or month (UTC)")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((scope, subject_id, period)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = BudgetKey::parse(&scope, &subject_id, &period)?;
    service::delete(&state, &p, &client, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
