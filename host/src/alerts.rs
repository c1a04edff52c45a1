//! Alerts the server raises itself (a budget's threshold passed, an
//! anomaly in an organization's traffic): the alert record a tenant admin
//! reads and acknowledges (`/api/alerts`), its audit entry and its
//! `alert.raised` webhook deliveries, written together in the caller's
//! transaction.

use crate::audit::{self, ClientInfo, Payload};
use crate::store::alerts::{self as stored, AlertRow};
use crate::store::new_id;

/// An alert to raise.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    /// The organization it concerns.
    pub org_id: &'a str,
    /// `budget_threshold`, `anomaly`.
    pub kind: &'a str,
    /// What it is about (a budget's id, `provider/metric`).
    pub subject: &'a str,
    /// For people.
    pub message: String,
    /// The figures behind it, stored with the alert and in the audit entry.
    pub details: Payload,
}

/// Write `alert` and an audit entry `action` for it, at `now`.
pub async fn raise(
    conn: &mut sqlx::AnyConnection,
    alert: NewAlert<'_>,
    action: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let id = new_id();
    crate::webhooks::events::alert_raised(
        conn,
        alert.org_id,
        &id,
        alert.kind,
        alert.subject,
        &alert.message,
    )
    .await?;
    stored::insert(
        conn,
        &AlertRow {
            id,
            org_id: alert.org_id.to_string(),
            kind: alert.kind.to_string(),
            subject: alert.subject.to_string(),
            message: alert.message,
            details: alert.details.clone().render(),
            created_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
        },
    )
    .await?;
    audit::record_for(
        conn,
        Some(alert.org_id),
        None,
        &ClientInfo::default(),
        action,
        alert.details,
    )
    .await
}
