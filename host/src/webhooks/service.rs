//! What callers do with webhooks (the handlers let org_admins in): create one (its signing
//! secret generated, sealed, and shown this once), list, read, change,
//! rotate its secret, delete, send a test event, read the delivery log. Every change is
//! audited in the transaction that makes it.

use std::time::Duration;

use serde_json::json;

use super::delivery::secret_context;
use super::destination::{check_resolved, check_url};
use super::{EventType, event_body, signature};
use crate::audit::{self, ClientInfo};
use crate::auth::Principal;
use crate::orchestrator::signals::WorkKind;
use crate::secrets::{SecretError, fingerprint};
use crate::state::AppState;
use crate::store::webhooks::{self as stored, AttemptRow, DeliveryRow, NewEvent, WebhookRow};
use crate::store::{Tx, new_id, now_ms, to_rfc3339};
use crate::validation::{FieldErrors, Invalid, check_text};

/// Most event types one webhook subscribes to.
pub const MAX_EVENTS: usize = 32;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// How long the old secret signs too after a rotation, unless the caller
/// says otherwise: a day.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(86_400);
/// The longest overlap a rotation may ask for: a week.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(7 * 86_400);

/// Why a webhook operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The input is wrong; every problem by field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such webhook in the caller's organization.
    #[error("webhook not found")]
    NotFound,
    /// The webhook is disabled: it is sent nothing, a test event included.
    #[error("the webhook is disabled; enable it first")]
    Disabled,
    /// The secret could not be sealed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// A webhook to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Where to POST.
    pub url: String,
    /// Event types subscribed to.
    pub events: Vec<String>,
    /// For people.
    pub description: Option<String>,
}

/// A change to a webhook: what is `Some` is set.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// A new description (empty clears it).
    pub description: Option<String>,
    /// Enable (its failure count starts again) or disable.
    pub enabled: Option<bool>,
}

/// A delivery with its logged attempts.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// Its attempts, first first.
    pub attempts: Vec<AttemptRow>,
}

/// The event types of a stored subscription list.
pub fn events_of(row: &WebhookRow) -> Vec<String> {
    row.events.split_whitespace().map(str::to_string).collect()
}

/// Create a webhook in the caller's organization; returns it with its
/// secret, which is never shown again.
pub async fn create(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    new: NewWebhook,
) -> Result<(WebhookRow, String), WebhookError> {
    let mut errors = FieldErrors::new();
    let url = checked_url(state, &mut errors, &new.url).await;
    let events = checked_events(&mut errors, &new.events);
    let description = checked_description(&mut errors, new.description.as_deref());
    errors.finish()?;
    let id = new_id();
    let secret = signature::new_secret();
    let now = now_ms();
    let row = WebhookRow {
        secret_ciphertext: state.keys.encrypt(&secret, &secret_context(&id))?,
        secret_fingerprint: fingerprint(&secret),
        previous_secret_ciphertext: None,
        previous_secret_fingerprint: None,
        previous_secret_expires_at: None,
        id,
        org_id: who.org_id.clone(),
        url: url.unwrap_or_default(),
        events,
        description,
        enabled: 1,
        disabled_reason: None,
        consecutive_failures: 0,
        created_by: Some(who.user_id.clone()),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.tenant(&who.org_id).await?;
    stored::insert(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "webhook_created",
        json!({ "webhook_id": row.id, "destination": destination(&row.url), "events": events_of(&row) }),
    )
    .await?;
    tx.commit().await?;
    Ok((row, secret))
}

/// The caller's organization's webhooks.
pub async fn list(state: &AppState, who: &Principal) -> Result<Vec<WebhookRow>, WebhookError> {
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let rows = stored::list(&mut tx, &who.org_id).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Webhook `id` of the caller's organization.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<WebhookRow, WebhookError> {
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let row = found(&mut tx, who, id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Change webhook `id`.
pub async fn update(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    patch: WebhookPatch,
) -> Result<WebhookRow, WebhookError> {
    let mut errors = FieldErrors::new();
    let url = match &patch.url {
        Some(raw) => checked_url(state, &mut errors, raw).await,
        None => None,
    };
    let events = patch
        .events
        .as_ref()
        .map(|events| checked_events(&mut errors, events));
    let description = patch
        .description
        .as_deref()
        .map(|d| checked_description(&mut errors, Some(d)));
    errors.finish()?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let mut row = found(&mut tx, who, id).await?;
    if let Some(url) = url {
        row.url = url;
    }
    if let Some(events) = events {
        row.events = events;
    }
    if let Some(description) = description {
        row.description = description;
    }
    match patch.enabled {
        Some(true) if row.enabled == 0 => {
            row.enabled = 1;
            row.disabled_reason = None;
            row.consecutive_failures = 0;
        }
        Some(false) if row.enabled == 1 => {
            row.enabled = 0;
            row.disabled_reason = Some("disabled by an administrator".into());
        }
        _ => {}
    }
    row.updated_at = now_ms();
    stored::update(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "webhook_updated",
        json!({ "webhook_id": row.id, "destination": destination(&row.url),
                "events": events_of(&row), "enabled": row.enabled == 1,
                "changed": changed_fields(&patch) }),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Give webhook `id` a new signing secret; returns the webhook and the
/// secret, which is never shown again. For `overlap` after now, deliveries
/// are signed with the old secret as well (a second `v1=`), so receivers
/// can switch without losing one; an overlap of zero drops the old secret
/// at once. A secret older than the current one is dropped: two at most.
pub async fn rotate_secret(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    overlap: Duration,
) -> Result<(WebhookRow, String), WebhookError> {
    let mut errors = FieldErrors::new();
    errors.check(
        overlap <= MAX_SECRET_OVERLAP,
        "overlap_seconds",
        "must be at most 604800 (7 days)",
    );
    errors.finish()?;
    let secret = signature::new_secret();
    let now = now_ms();
    let mut tx = state.db.tenant(&who.org_id).await?;
    let mut row = found(&mut tx, who, id).await?;
    let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
    let old_fingerprint = row.secret_fingerprint.clone();
    if overlap_ms > 0 {
        row.previous_secret_ciphertext = Some(row.secret_ciphertext.clone());
        row.previous_secret_fingerprint = Some(old_fingerprint.clone());
        row.previous_secret_expires_at = Some(now.saturating_add(overlap_ms));
    } else {
        row.previous_secret_ciphertext = None;
        row.previous_secret_fingerprint = None;
        row.previous_secret_expires_at = None;
    }
    row.secret_ciphertext = state.keys.encrypt(&secret, &secret_context(&row.id))?;
    row.secret_fingerprint = fingerprint(&secret);
    row.updated_at = now;
    stored::set_secrets(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "webhook_secret_rotated",
        json!({ "webhook_id": row.id, "secret_fingerprint": row.secret_fingerprint,
                "previous_secret_fingerprint": old_fingerprint,
                "previous_secret_expires_at": row.previous_secret_expires_at.map(to_rfc3339) }),
    )
    .await?;
    tx.commit().await?;
    Ok((row, secret))
}

/// Delete webhook `id` with its queued deliveries and their log.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
) -> Result<(), WebhookError> {
    let mut tx = state.db.tenant(&who.org_id).await?;
    let row = found(&mut tx, who, id).await?;
    stored::delete(&mut tx, &who.org_id, id).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "webhook_deleted",
        json!({ "webhook_id": row.id, "destination": destination(&row.url) }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Queue a `webhook.test` event for webhook `id` alone; returns the
/// event's id and the delivery's.
pub async fn test(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
) -> Result<(String, String), WebhookError> {
    let mut tx = state.db.tenant(&who.org_id).await?;
    let row = found(&mut tx, who, id).await?;
    if row.enabled == 0 {
        return Err(WebhookError::Disabled);
    }
    let event_id = new_id();
    let data = json!({ "webhook_id": row.id, "message": "a test event from vel" });
    let body = event_body(&event_id, EventType::WebhookTest, Some(&who.org_id), data);
    let event = NewEvent {
        event_id: &event_id,
        event_type: EventType::WebhookTest.as_str(),
        body: &body,
        now: now_ms(),
    };
    let delivery_id = stored::enqueue_one(&mut tx, &who.org_id, id, &event)
        .await?
        .ok_or(WebhookError::NotFound)?;
    audit::record(
        &mut tx,
        who,
        client,
        "webhook_tested",
        json!({ "webhook_id": row.id, "event_id": event_id }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish_due(WorkKind::Webhooks);
    Ok((event_id, delivery_id))
}

/// Webhook `id`'s deliveries, newest first, each with its attempts; and
/// how many there are in all.
pub async fn deliveries(
    state: &AppState,
    who: &Principal,
    id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeliveryLog>, i64), WebhookError> {
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    found(&mut tx, who, id).await?;
    let rows = stored::deliveries(&mut tx, &who.org_id, id, limit, offset).await?;
    let total = stored::count_deliveries(&mut tx, &who.org_id, id).await?;
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let mut attempts = stored::attempts_of(&mut tx, &who.org_id, &ids).await?;
    tx.commit().await?;
    let logs = rows
        .into_iter()
        .map(|delivery| {
            let (mine, rest): (Vec<AttemptRow>, Vec<AttemptRow>) = attempts
                .drain(..)
                .partition(|a| a.delivery_id == delivery.id);
            attempts = rest;
            DeliveryLog {
                delivery,
                attempts: mine,
            }
        })
        .collect();
    Ok((logs, total))
}

async fn found(tx: &mut Tx, who: &Principal, id: &str) -> Result<WebhookRow, WebhookError> {
    stored::get(tx, &who.org_id, id)
        .await?
        .ok_or(WebhookError::NotFound)
}

/// The URL when it passes every check (the resolved addresses included).
async fn checked_url(state: &AppState, errors: &mut FieldErrors, raw: &str) -> Option<String> {
    let config = &state.config.webhooks;
    let url = check_url(errors, "url", raw, config)?;
    let mut resolved = FieldErrors::new();
    check_resolved(&mut resolved, "url", &url, &config.allow_private).await;
    match resolved.finish() {
        Ok(()) => Some(url.to_string()),
        Err(Invalid(problems)) => {
            for (field, messages) in problems {
                for m in messages {
                    errors.add(&field, &m);
                }
            }
            None
        }
    }
}

/// The subscription list as stored (`" a b "`, sorted, each once).
fn checked_events(errors: &mut FieldErrors, events: &[String]) -> String {
    errors.check(
        !events.is_empty(),
        "events",
        "must name at least one event type",
    );
    errors.check(
        events.len() <= MAX_EVENTS,
        "events",
        "must name at most 32 event types",
    );
    let mut names = Vec::new();
    for (i, name) in events.iter().enumerate() {
        match EventType::subscribable(name) {
            Some(e) => names.push(e.as_str()),
            None => errors.add(
                &format!("events[{i}]"),
                &format!("unknown event type `{name}`; one of: {}", known_events()),
            ),
        }
    }
    names.sort_unstable();
    names.dedup();
    format!(" {} ", names.join(" "))
}

/// The event types a webhook may subscribe to, comma-separated.
pub fn known_events() -> String {
    EventType::ALL
        .iter()
        .filter(|e| **e != EventType::WebhookTest)
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn checked_description(errors: &mut FieldErrors, description: Option<&str>) -> Option<String> {
    let d = description.map(str::trim).filter(|d| !d.is_empty())?;
    check_text(errors, "description", d, MAX_DESCRIPTION_CHARS);
    Some(d.to_string())
}

/// The URL as audited: scheme, host, port and path, never its query
/// (where receivers often put a token of their own).
fn destination(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => String::new(),
    }
}

fn changed_fields(patch: &WebhookPatch) -> Vec<&'static str> {
    [
        ("url", patch.url.is_some()),
        ("events", patch.events.is_some()),
        ("description", patch.description.is_some()),
        ("enabled", patch.enabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}
