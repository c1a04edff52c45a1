//! `/api/alerts`: what needs a tenant admin's attention (budget
//! thresholds passed), newest first, and acknowledging one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::tasks::parse_time;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiPath, ApiQuery, ClientInfo};
use crate::api::pagination::bounds;
use crate::audit;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::alerts::{self, AlertFilter, AlertRow};
use crate::store::{now_ms, to_rfc3339};

/// Query of `GET /api/alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Only this kind (`budget_threshold`).
    pub kind: Option<String>,
    /// `true`: only acknowledged ones; `false`: only open ones.
    pub acknowledged: Option<bool>,
    /// At or after this RFC 3339 time.
    pub from: Option<String>,
    /// Before this RFC 3339 time.
    pub to: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

/// One alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alert {
    /// Id.
    pub id: String,
    /// `budget_threshold`.
    pub kind: String,
    /// What it is about (a budget's id).
    pub subject: String,
    /// For people.
    pub message: String,
    /// The figures behind it (for a budget: scope, subject, period,
    /// threshold, limit and spend in US dollars).
    #[schema(value_type = Object)]
    pub details: Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once acknowledged.
    pub acknowledged_at: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
}

impl From<AlertRow> for Alert {
    fn from(r: AlertRow) -> Self {
        Alert {
            details: serde_json::from_str(&r.details).unwrap_or_else(|_| json!({})),
            id: r.id,
            kind: r.kind,
            subject: r.subject,
            message: r.message,
            created_at: to_rfc3339(r.created_at),
            acknowledged_at: r.acknowledged_at.map(to_rfc3339),
            acknowledged_by: r.acknowledged_by,
        }
    }
}

/// A page of alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    pub items: Vec<Alert>,
    /// Page size used.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// The organization's alerts, newest first (viewer and above).
#[utoipa::path(get, path = "/api/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let (limit, offset) = bounds(q.limit, q.offset)?;
    let filter = AlertFilter {
        kind: q.kind,
        acknowledged: q.acknowledged,
        from: parse_time("from", &q.from)?,
        to: parse_time("to", &q.to)?,
    };
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let rows = alerts::list(&mut tx, &p.org_id, &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(AlertList {
        items: rows.into_iter().map(Into::into).collect(),
        limit,
        offset,
    }))
}

/// Acknowledge an alert (agent_manager and above); acknowledging it again
/// keeps the first acknowledgement.
#[utoipa::path(post, path = "/api/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Alert>, ApiError> {
    let mut tx = state.db.tenant(&p.org_id).await?;
    let Some(alert) = alerts::acknowledge(&mut tx, &p.org_id, &id, &p.user_id, now_ms()).await?
    else {
        return Err(ApiError::not_found("alert"));
    };
    audit::record(
        &mut tx,
        &p,
        &client,
        "alert_acknowledged",
        json!({ "alert_id": alert.id, "kind": alert.kind }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(alert.into()))
}
