//! `/api/webhooks`: an organization's endpoints told of its events
//! (org_admin), each delivery signed (`X-Vel-Signature`), retried, and
//! logged (`crate::webhooks`; docs/webhooks.md).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::pagination::{PageQuery, bounds};
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::webhooks::{AttemptRow, WebhookRow};
use crate::store::{now_ms, to_rfc3339};
use crate::webhooks::service::{
    self, DeliveryLog, NewWebhook, WebhookError, WebhookPatch, events_of,
};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> ApiError {
        match e {
            WebhookError::Invalid(e) => e.into(),
            WebhookError::NotFound => ApiError::not_found("webhook"),
            WebhookError::Disabled => ApiError::conflict_code("webhook_disabled", e.to_string()),
            WebhookError::Secret(e) => e.into(),
            WebhookError::Storage(e) => e.into(),
        }
    }
}

/// Body of `POST /api/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: an `https` URL (`http` only when the
    /// server allows it) of a public address (the server may allow
    /// private ones).
    pub url: String,
    /// Event types: `task.completed`, `task.failed`,
    /// `workflow.awaiting_approval`, `workflow.completed`,
    /// `workflow.failed`, `budget.threshold`, `alert.raised`,
    /// `plugin.activated`.
    pub events: Vec<String>,
    /// For people (at most 200 characters).
    pub description: Option<String>,
}

/// Body of `PATCH /api/webhooks/{id}`: what is present changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// A new URL.
    pub url: Option<String>,
    /// New event types (replacing the old).
    pub events: Option<Vec<String>>,
    /// A new description (empty clears it).
    pub description: Option<String>,
    /// `true` enables it again (its failure count starts over); `false`
    /// stops its deliveries.
    pub enabled: Option<bool>,
}

/// Body of `POST /api/webhooks/{id}/rotate-secret` (`{}` for the
/// defaults).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long deliveries are signed with the old secret too, in seconds
    /// (default 86400, a day; at most 604800; 0 drops the old secret at
    /// once).
    pub overlap_seconds: Option<u64>,
}

/// A webhook. Its secret is shown only by `POST /api/webhooks` and
/// `POST /api/webhooks/{id}/rotate-secret`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// Id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event types subscribed to.
    pub events: Vec<String>,
    /// For people.
    pub description: Option<String>,
    /// Whether events are delivered.
    pub enabled: bool,
    /// Why it is disabled (deliveries failing in a row, or an
    /// administrator).
    pub disabled_reason: Option<String>,
    /// Deliveries that failed in a row.
    pub consecutive_failures: i64,
    /// `sha256:` and the start of the secret's digest, to tell secrets apart.
    pub secret_fingerprint: String,
    /// The fingerprint of the secret the last rotation replaced, while
    /// deliveries are still signed with it too.
    pub previous_secret_fingerprint: Option<String>,
    /// Until when the previous secret signs too (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<WebhookRow> for WebhookView {
    fn from(r: WebhookRow) -> Self {
        let signing = r.previous_secret(now_ms()).is_some();
        WebhookView {
            events: events_of(&r),
            previous_secret_fingerprint: r.previous_secret_fingerprint.filter(|_| signing),
            previous_secret_expires_at: r
                .previous_secret_expires_at
                .filter(|_| signing)
                .map(to_rfc3339),
            id: r.id,
            url: r.url,
            description: r.description,
            enabled: r.enabled == 1,
            disabled_reason: r.disabled_reason,
            consecutive_failures: r.consecutive_failures,
            secret_fingerprint: r.secret_fingerprint,
            created_at: to_rfc3339(r.created_at),
            updated_at: to_rfc3339(r.updated_at),
        }
    }
}

/// A webhook just created, or its secret just rotated, with its signing
/// secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The key of every delivery's HMAC-SHA256 signature (`whsec_…`); keep
    /// it, it is never shown again.
    pub secret: String,
}

/// The organization's webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<WebhookView>,
}

/// A test event queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    /// The event's id (`X-Vel-Event-Id`).
    pub event_id: String,
    /// The delivery's id (see the delivery log).
    pub delivery_id: String,
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: i64,
    /// `delivered` (a 2xx answer), `http_error` (another answer),
    /// `timeout`, `connect_error`, `refused` (destination not allowed) or
    /// `failed`.
    pub status: String,
    /// The receiver's HTTP status, when it answered.
    pub response_code: Option<i64>,
    /// The start of its answer (at most 1 KiB).
    pub response_body: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// From sending to the end of the answer read, in milliseconds.
    pub latency_ms: i64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        AttemptView {
            attempt: a.attempt,
            status: a.status,
            response_code: a.response_code,
            response_body: a.response_body,
            error: a.error,
            latency_ms: a.latency_ms,
            created_at: to_rfc3339(a.created_at),
        }
    }
}

/// One event's delivery to the webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Id.
    pub id: String,
    /// The event's id (`X-Vel-Event-Id`).
    pub event_id: String,
    /// The event's type (`X-Vel-Event`).
    pub event_type: String,
    /// `pending`, `delivered`, `failed` (retries spent) or `cancelled`
    /// (the webhook was disabled).
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    pub body: Value,
    /// RFC 3339.
    pub created_at: String,
    /// When it was delivered, failed or cancelled (RFC 3339).
    pub finished_at: Option<String>,
    /// Every attempt, first first.
    pub log: Vec<AttemptView>,
}

impl From<DeliveryLog> for DeliveryView {
    fn from(l: DeliveryLog) -> Self {
        let d = l.delivery;
        DeliveryView {
            body: serde_json::from_str(&d.body).unwrap_or(Value::Null),
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(to_rfc3339),
            created_at: to_rfc3339(d.created_at),
            finished_at: d.finished_at.map(to_rfc3339),
            log: l.attempts.into_iter().map(Into::into).collect(),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// Deliveries in all.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// Create a webhook (org_admin); its signing secret is in this answer and
/// never again.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ErrorBody),
              (status = 422, description = "Bad URL, refused destination or unknown event type", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let new = NewWebhook {
        url: body.url,
        events: body.events,
        description: body.description,
    };
    let (row, secret) = service::create(&state, &p, &client, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: row.into(),
            secret,
        }),
    ))
}

/// The organization's webhooks (org_admin).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<WebhookList>, ApiError> {
    let rows = service::list(&state, &p).await?;
    Ok(Json(WebhookList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// One webhook (org_admin).
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(service::get(&state, &p, &id).await?.into()))
}

/// Change a webhook's URL, events, description, or enable or disable it
/// (org_admin).
#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let patch = WebhookPatch {
        url: body.url,
        events: body.events,
        description: body.description,
        enabled: body.enabled,
    };
    Ok(Json(
        service::update(&state, &p, &client, &id, patch)
            .await?
            .into(),
    ))
}

/// Delete a webhook with its queued deliveries and their log (org_admin).
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    service::delete(&state, &p, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send the webhook a `webhook.test` event (org_admin), delivered as any
/// other event.
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 202, body = TestQueued), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "The webhook is disabled", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    let (event_id, delivery_id) = service::test(&state, &p, &client, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestQueued {
            event_id,
            delivery_id,
        }),
    ))
}

/// Give the webhook a new signing secret, shown in this answer and never
/// again (org_admin). For the overlap (a day unless the body says
/// otherwise) deliveries carry a signature by each secret
/// (`t=…,v1=<new>,v1=<old>`), so the receiver can switch without losing
/// a delivery.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks",
    request_body = RotateSecret,
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = CreatedWebhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, description = "Overlap out of range", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<Json<CreatedWebhook>, ApiError> {
    let overlap = body
        .overlap_seconds
        .map_or(service::DEFAULT_SECRET_OVERLAP, Duration::from_secs);
    let (row, secret) = service::rotate_secret(&state, &p, &client, &id, overlap).await?;
    Ok(Json(CreatedWebhook {
        webhook: row.into(),
        secret,
    }))
}

/// The webhook's deliveries, newest first, each with its attempts
/// (org_admin).
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), PageQuery),
    responses((status = 200, body = DeliveryList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let (limit, offset) = bounds(q.limit, q.offset)?;
    let (logs, total) = service::deliveries(&state, &p, &id, limit, offset).await?;
    Ok(Json(DeliveryList {
        items: logs.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}
