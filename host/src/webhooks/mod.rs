//! Webhooks: an organization's endpoints told of its events over HTTPS.
//!
//! Where an event happens (a task ends, a workflow awaits an approval or
//! ends, a budget passes a threshold, an alert is raised, a plugin version
//! goes live) [`emit`] queues one delivery per subscribed webhook in the
//! durable outbox, in the transaction of the change itself: the event is
//! committed with the change or not at all, and then delivered at least
//! once, across crashes and restarts. [`delivery`] works the outbox on the
//! durable queue (claim under a lease, heartbeat, rescue), signs each POST
//! ([`signature`]), connects only to destinations [`destination`] allows,
//! retries with exponential back-off, logs every attempt, and disables a
//! webhook that keeps failing, with an alert. [`service`] is what the API
//! does with webhooks.

pub mod delivery;
pub mod destination;
pub mod events;
pub mod service;
pub mod signature;

use std::time::Duration;

pub use events::EventType;

use serde_json::{Value, json};
use vel_runtime::AllowPrivate;

use crate::store::webhooks::{self as stored, NewEvent};
use crate::store::{new_id, now_ms, to_rfc3339};

/// How webhooks are checked and delivered (`VEL_WEBHOOK_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Accept `http://` URLs (`VEL_WEBHOOK_ALLOW_HTTP`, default false:
    /// `https` only).
    pub allow_http: bool,
    /// Restricted destinations (loopback, private, link-local, …) webhooks
    /// may still reach, and names that may resolve to them
    /// (`VEL_WEBHOOK_ALLOW_PRIVATE`, as `VEL_OUTBOUND_ALLOW_PRIVATE`;
    /// default none).
    pub allow_private: AllowPrivate,
    /// Longest one attempt may take, connection to the end of the answer
    /// read (`VEL_WEBHOOK_TIMEOUT_MS`, default 10,000).
    pub timeout: Duration,
    /// Attempts after the first when one fails (`VEL_WEBHOOK_RETRIES`,
    /// default 3).
    pub retries: u32,
    /// Wait before the first retry; it doubles for each next one
    /// (`VEL_WEBHOOK_RETRY_BASE_MS`, default 5,000).
    pub retry_base: Duration,
    /// Longest wait between two attempts (`VEL_WEBHOOK_RETRY_MAX_MS`,
    /// default 600,000).
    pub retry_max: Duration,
    /// Deliveries failing in a row after which a webhook is disabled, with
    /// an alert (`VEL_WEBHOOK_DISABLE_AFTER`, default 10).
    pub disable_after: u32,
    /// Deliveries this instance attempts at once (`VEL_WEBHOOK_WORKERS`,
    /// default 4; 0 delivers nothing here).
    pub workers: u32,
    /// Ended deliveries (with their attempts) older than this many days
    /// are deleted from the delivery log
    /// (`VEL_WEBHOOK_DELIVERY_RETENTION_DAYS`, default 30; 0 keeps them
    /// forever; run as often as the audit retention,
    /// `VEL_AUDIT_RETENTION_INTERVAL_MS`).
    pub delivery_retention_days: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_http: false,
            allow_private: AllowPrivate::default(),
            timeout: Duration::from_secs(10),
            retries: 3,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            disable_after: 10,
            workers: 4,
            delivery_retention_days: 30,
        }
    }
}

/// An event's id and the JSON body every webhook told of it receives:
/// `{"id","type","created_at","org_id","data"}` (`org_id` absent for a
/// platform event such as a platform plugin's activation).
pub fn event_body(event_id: &str, event: EventType, org_id: Option<&str>, data: Value) -> String {
    let mut body = json!({
        "id": event_id,
        "type": event.as_str(),
        "created_at": to_rfc3339(now_ms()),
        "data": data,
    });
    if let (Some(org_id), Some(obj)) = (org_id, body.as_object_mut()) {
        obj.insert("org_id".into(), json!(org_id));
    }
    body.to_string()
}

/// Queue `event` with `data` for every enabled webhook of `org_id`
/// subscribed to it (`None`: of every organization, in a platform
/// transaction), in `conn`'s transaction. Returns how many deliveries were
/// queued (on PostgreSQL the delivery workers of every instance are woken
/// when it commits; on SQLite a caller with [`Signals`] at hand wakes this
/// instance's, else they find them within their poll interval).
///
/// [`Signals`]: crate::orchestrator::signals::Signals
pub async fn emit(
    conn: &mut sqlx::AnyConnection,
    org_id: Option<&str>,
    event: EventType,
    data: Value,
) -> Result<u64, sqlx::Error> {
    let event_id = new_id();
    let body = event_body(&event_id, event, org_id, data);
    stored::enqueue(
        conn,
        org_id,
        &NewEvent {
            event_id: &event_id,
            event_type: event.as_str(),
            body: &body,
            now: now_ms(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribable_names_exclude_the_test_event() {
        assert_eq!(
            EventType::subscribable("task.completed"),
            Some(EventType::TaskCompleted)
        );
        assert_eq!(EventType::subscribable("webhook.test"), None);
        assert_eq!(EventType::subscribable("task.*"), None);
    }

    #[test]
    fn a_body_carries_the_id_type_and_organization() {
        let body: Value = serde_json::from_str(&event_body(
            "e1",
            EventType::TaskFailed,
            Some("o1"),
            json!({ "task_id": "t1" }),
        ))
        .expect("json");
        assert_eq!(body["id"], "e1");
        assert_eq!(body["type"], "task.failed");
        assert_eq!(body["org_id"], "o1");
        assert_eq!(body["data"]["task_id"], "t1");
        let platform: Value = serde_json::from_str(&event_body(
            "e2",
            EventType::PluginActivated,
            None,
            json!({}),
        ))
        .expect("json");
        assert!(platform.get("org_id").is_none());
    }
}
