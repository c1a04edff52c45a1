//! `GET /api/audit-logs`: the organization's audit trail for org_admins; any
//! organization's (or all) for platform admins.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::ApiQuery;
use crate::api::pagination;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::{self, audit_logs::AuditFilter, to_rfc3339};

/// Filters of `GET /api/audit-logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this user's actions.
    pub user_id: Option<String>,
    /// Only this action (e.g. `agent_created`).
    pub action: Option<String>,
    /// At or after this RFC 3339 time.
    pub from: Option<String>,
    /// Before this RFC 3339 time.
    pub to: Option<String>,
    /// Platform admins only: another organization's id, or `*` for all.
    pub org_id: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Id.
    pub id: String,
    /// Organization.
    pub org_id: Option<String>,
    /// Acting user.
    pub user_id: Option<String>,
    /// Action.
    pub action: String,
    /// Details, secrets redacted; amounts of money are exact decimals.
    /// Sent as stored (not re-read as `f64` numbers); null only if the
    /// stored text were not JSON.
    #[schema(value_type = Object)]
    pub payload: Option<Box<serde_json::value::RawValue>>,
    /// Client IP.
    pub ip_address: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of audit entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    /// All matching entries.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

fn parse_time(field: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            store::parse_rfc3339(v).ok_or_else(|| {
                ApiError::invalid_field(
                    field,
                    "must be an RFC 3339 time, e.g. 2025-01-31T12:00:00Z",
                )
            })
        })
        .transpose()
}

/// Read the audit log (org_admin: own organization; admin: any).
#[utoipa::path(get, path = "/api/audit-logs", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    let from = parse_time("from", &q.from)?;
    let to = parse_time("to", &q.to)?;
    let mut filter = AuditFilter {
        org_id: Some(p.org_id.clone()),
        user_id: q.user_id,
        action: q.action,
        from,
        to,
    };
    let cross_tenant = match q.org_id.as_deref() {
        None => false,
        Some(org) if org == p.org_id => false,
        Some(_) if !p.is_platform_admin() => return Err(ApiError::not_found("organization")),
        Some("*") => {
            filter.org_id = None;
            true
        }
        Some(org) => {
            filter.org_id = Some(org.to_string());
            true
        }
    };
    let mut tx = if cross_tenant {
        state.db.platform_read().await?
    } else {
        state.db.tenant_read(&p.org_id).await?
    };
    let (rows, total) = store::audit_logs::page(&mut tx, &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(AuditList {
        items: rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                org_id: r.org_id,
                user_id: r.user_id,
                action: r.action,
                payload: serde_json::value::RawValue::from_string(r.payload).ok(),
                ip_address: r.ip_address,
                user_agent: r.user_agent,
                created_at: to_rfc3339(r.created_at),
            })
            .collect(),
        total,
        limit,
        offset,
    }))
}
