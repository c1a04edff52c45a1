//! Webhooks (`webhooks`), their durable outbox (`webhook_deliveries`) and
//! the log of delivery attempts (`webhook_attempts`). An event is queued
//! with one statement in the caller's transaction ([`enqueue`]); delivery
//! workers claim due rows under a lease as the task queue does ([`claim`],
//! [`heartbeat`], [`release_leases`]) and record each attempt only while
//! they still hold it ([`record_attempt`]).

use serde::Serialize;
use sqlx::{AnyConnection, FromRow};

use super::{Backend, leases, now_ms};

/// One stored webhook.
#[derive(Debug, Clone, FromRow)]
pub struct WebhookRow {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Subscribed event names between spaces (`" a.b c.d "`).
    pub events: String,
    /// For people.
    pub description: Option<String>,
    /// The signing secret, sealed with the master key.
    pub secret_ciphertext: String,
    /// A short non-reversible identifier of the secret.
    pub secret_fingerprint: String,
    /// The secret before the last rotation, sealed as the current one;
    /// deliveries are signed with it too until `previous_secret_expires_at`.
    pub previous_secret_ciphertext: Option<String>,
    /// Its fingerprint.
    pub previous_secret_fingerprint: Option<String>,
    /// Unix ms the previous secret stops signing.
    pub previous_secret_expires_at: Option<i64>,
    /// 1 when events are delivered.
    pub enabled: i64,
    /// Why it was disabled, when the server disabled it.
    pub disabled_reason: Option<String>,
    /// Deliveries that failed in a row.
    pub consecutive_failures: i64,
    /// Who created it.
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const WEBHOOK_COLUMNS: &str = "id, org_id, url, events, description, secret_ciphertext, \
     secret_fingerprint, previous_secret_ciphertext, previous_secret_fingerprint, \
     previous_secret_expires_at, enabled, disabled_reason, consecutive_failures, created_by, \
     created_at, updated_at";

impl WebhookRow {
    /// The previous secret (sealed) while it still signs at `now`.
    pub fn previous_secret(&self, now: i64) -> Option<&str> {
        match (
            &self.previous_secret_ciphertext,
            self.previous_secret_expires_at,
        ) {
            (Some(sealed), Some(until)) if until > now => Some(sealed.as_str()),
            _ => None,
        }
    }
}

/// Insert `w` as given.
pub async fn insert(conn: &mut AnyConnection, w: &WebhookRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    )))
    .bind(&w.id)
    .bind(&w.org_id)
    .bind(&w.url)
    .bind(&w.events)
    .bind(&w.description)
    .bind(&w.secret_ciphertext)
    .bind(&w.secret_fingerprint)
    .bind(&w.previous_secret_ciphertext)
    .bind(&w.previous_secret_fingerprint)
    .bind(w.previous_secret_expires_at)
    .bind(w.enabled)
    .bind(&w.disabled_reason)
    .bind(w.consecutive_failures)
    .bind(&w.created_by)
    .bind(w.created_at)
    .bind(w.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Webhook `id` of organization `org_id`.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The organization's webhooks, oldest first.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 ORDER BY created_at, id"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// Write `w`'s changeable fields (URL, events, description, state).
pub async fn update(conn: &mut AnyConnection, w: &WebhookRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET url = $1, events = $2, description = $3, enabled = $4, \
             disabled_reason = $5, consecutive_failures = $6, updated_at = $7 \
         WHERE org_id = $8 AND id = $9",
    )
    .bind(&w.url)
    .bind(&w.events)
    .bind(&w.description)
    .bind(w.enabled)
    .bind(&w.disabled_reason)
    .bind(w.consecutive_failures)
    .bind(w.updated_at)
    .bind(&w.org_id)
    .bind(&w.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Write `w`'s secrets (current and previous), as a rotation left them.
pub async fn set_secrets(conn: &mut AnyConnection, w: &WebhookRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET secret_ciphertext = $1, secret_fingerprint = $2, \
             previous_secret_ciphertext = $3, previous_secret_fingerprint = $4, \
             previous_secret_expires_at = $5, updated_at = $6 \
         WHERE org_id = $7 AND id = $8",
    )
    .bind(&w.secret_ciphertext)
    .bind(&w.secret_fingerprint)
    .bind(&w.previous_secret_ciphertext)
    .bind(&w.previous_secret_fingerprint)
    .bind(w.previous_secret_expires_at)
    .bind(w.updated_at)
    .bind(&w.org_id)
    .bind(&w.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forget previous secrets whose overlap ended before `now` (of every
/// organization: a platform transaction). Returns how many.
pub async fn forget_expired_secrets(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhooks SET previous_secret_ciphertext = NULL, \
             previous_secret_fingerprint = NULL, previous_secret_expires_at = NULL \
         WHERE previous_secret_expires_at <= $1",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Delete up to `limit` deliveries that ended before `before` (unix ms),
/// oldest first, of every organization (a platform transaction); their
/// attempts go with them. Pending deliveries are never deleted. Returns
/// how many deliveries went.
pub async fn delete_finished_before(
    conn: &mut AnyConnection,
    before: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE finished_at < $1 \
          ORDER BY finished_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Delete webhook `id` with its deliveries and their log. False when it
/// did not exist.
pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    for table in ["webhook_attempts", "webhook_deliveries"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE org_id = $1 AND webhook_id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    let done = sqlx::query("DELETE FROM webhooks WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// One more delivery of webhook `id` failed for good: count it and return
/// how many failed in a row.
pub async fn count_failure(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let n: Option<i64> = sqlx::query_scalar(
        "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, updated_at = $1 \
         WHERE org_id = $2 AND id = $3 RETURNING consecutive_failures",
    )
    .bind(now)
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// A delivery of webhook `id` succeeded: no failures in a row.
pub async fn reset_failures(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET consecutive_failures = 0 \
         WHERE org_id = $1 AND id = $2 AND consecutive_failures <> 0",
    )
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Disable webhook `id` for `reason`. False when it was disabled already.
pub async fn disable(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhooks SET enabled = 0, disabled_reason = $1, updated_at = $2 \
         WHERE org_id = $3 AND id = $4 AND enabled = 1",
    )
    .bind(reason)
    .bind(now)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An event as queued for delivery.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Its id, the same for every webhook told of it.
    pub event_id: &'a str,
    /// Its type (`task.completed`, …).
    pub event_type: &'a str,
    /// The JSON body to send.
    pub body: &'a str,
    /// Unix ms: queued at and due at.
    pub now: i64,
}

/// Columns a queued delivery is inserted with, and the values: `$1` event
/// id, `$2` type, `$3` body, `$4` now; `id` and `org_id` from `webhooks`.
const ENQUEUE: &str = "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, \
         event_type, body, status, attempts, next_attempt_at, claims, created_at, updated_at) \
     SELECT $1 || '.' || id, org_id, id, $1, $2, $3, 'pending', 0, $4, 0, $4, $4 FROM webhooks";

/// Queue `event` for every enabled webhook subscribed to its type, of
/// organization `org_id` or (`None`, in a platform transaction) of every
/// organization. Returns how many deliveries were queued.
pub async fn enqueue(
    conn: &mut AnyConnection,
    org_id: Option<&str>,
    event: &NewEvent<'_>,
) -> Result<u64, sqlx::Error> {
    let scope = match org_id {
        Some(_) => "AND org_id = $6",
        None => "",
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{ENQUEUE} WHERE enabled = 1 AND events LIKE $5 {scope}"
    )))
    .bind(event.event_id)
    .bind(event.event_type)
    .bind(event.body)
    .bind(event.now)
    .bind(format!("% {} %", event.event_type));
    if let Some(org_id) = org_id {
        query = query.bind(org_id);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Queue `event` for webhook `id` alone, whatever it subscribes to (a
/// test event). Returns the delivery's id, `None` when there is no such
/// webhook.
pub async fn enqueue_one(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    event: &NewEvent<'_>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "{ENQUEUE} WHERE org_id = $5 AND id = $6 RETURNING id"
    )))
    .bind(event.event_id)
    .bind(event.event_type)
    .bind(event.body)
    .bind(event.now)
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One queued delivery.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DeliveryRow {
    /// Its id.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// The webhook told.
    pub webhook_id: String,
    /// The event's id (`X-Vel-Event-Id`).
    pub event_id: String,
    /// The event's type (`X-Vel-Event`).
    pub event_type: String,
    /// The JSON body sent.
    pub body: String,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub status: String,
    /// Attempts recorded.
    pub attempts: i64,
    /// Unix ms of the next attempt, while pending.
    pub next_attempt_at: Option<i64>,
    /// Claims since the last recorded attempt.
    pub claims: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms it was delivered, failed for good or cancelled.
    pub finished_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, org_id, webhook_id, event_id, event_type, body, status, \
     attempts, next_attempt_at, claims, created_at, updated_at, finished_at";

#[derive(FromRow)]
struct Claimed {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    more_due: i64,
}

/// Claim the next due delivery for `owner` under a lease of `lease_ms`
/// (one nobody holds, claimed fewer than `max_claims` times since its last
/// attempt), and whether more are due.
pub async fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    lease_ms: i64,
    max_claims: i64,
) -> Result<Option<(DeliveryRow, bool)>, sqlx::Error> {
    let now = now_ms();
    let lock = match Backend::of(conn) {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let due = "status = 'pending' AND next_attempt_at <= $3 \
               AND (lease_expires_at IS NULL OR lease_expires_at < $3) AND claims < $4";
    let row: Option<Claimed> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2, \
             claims = claims + 1, updated_at = $3 \
         WHERE id = (SELECT id FROM webhook_deliveries WHERE {due} \
                     ORDER BY next_attempt_at, id LIMIT 1 {lock}) \
         RETURNING {DELIVERY_COLUMNS}, \
             CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries AS other \
                               WHERE other.id <> webhook_deliveries.id AND {due}) \
                  THEN 1 ELSE 0 END AS more_due"
    )))
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .bind(max_claims)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|c| (c.delivery, c.more_due != 0)))
}

/// Extend the leases `owner` holds on the deliveries in `ids`.
pub async fn heartbeat(
    conn: &mut AnyConnection,
    owner: &str,
    ids: &[String],
    lease_ms: i64,
) -> Result<(), sqlx::Error> {
    leases::extend(conn, "webhook_deliveries", "", owner, ids, lease_ms).await?;
    Ok(())
}

/// Make the leases `owner` holds expire now.
pub async fn release_leases(conn: &mut AnyConnection, owner: &str) -> Result<(), sqlx::Error> {
    leases::release(conn, "webhook_deliveries", "AND status = 'pending'", owner).await
}

/// Fail deliveries whose workers keep dying on them (claimed `max_claims`
/// times since their last attempt, the last lease run out). Returns their
/// ids.
pub async fn fail_exhausted(
    conn: &mut AnyConnection,
    max_claims: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_scalar(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = $1, updated_at = $1 \
         WHERE status = 'pending' AND claims >= $2 AND lease_expires_at < $1 RETURNING id",
    )
    .bind(now)
    .bind(max_claims)
    .fetch_all(conn)
    .await
}

/// One attempt to deliver, as logged.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AttemptRow {
    /// Text UUID.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// The webhook.
    pub webhook_id: String,
    /// The delivery.
    pub delivery_id: String,
    /// 1 for the first.
    pub attempt: i64,
    /// `delivered`, `http_error`, `timeout`, `connect_error` or `refused`.
    pub status: String,
    /// The receiver's HTTP status, when it answered.
    pub response_code: Option<i64>,
    /// The start of its answer's body (at most 1 KiB).
    pub response_body: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// From the start of the request to the end of the answer read.
    pub latency_ms: i64,
    /// Unix ms.
    pub created_at: i64,
}

const ATTEMPT_COLUMNS: &str = "id, org_id, webhook_id, delivery_id, attempt, status, \
     response_code, response_body, error, latency_ms, created_at";

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy)]
pub struct NextState<'a> {
    /// `pending` (another attempt at `next_attempt_at`), `delivered`,
    /// `failed` or `cancelled`.
    pub status: &'a str,
    /// When pending: the next attempt's time.
    pub next_attempt_at: Option<i64>,
    /// Unix ms.
    pub now: i64,
}

/// Record attempt `attempt` (none for a delivery cancelled without one)
/// of delivery `id` and move it to `next`, while `owner` holds it. False
/// (nothing written) when the lease was lost.
pub async fn record_attempt(
    conn: &mut AnyConnection,
    id: &str,
    owner: &str,
    attempt: Option<&AttemptRow>,
    next: NextState<'_>,
) -> Result<bool, sqlx::Error> {
    let finished = (next.status != "pending").then_some(next.now);
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
             attempts = attempts + $3, claims = 0, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $4, finished_at = $5 \
         WHERE id = $6 AND lease_owner = $7 AND status = 'pending'",
    )
    .bind(next.status)
    .bind(next.next_attempt_at)
    .bind(i64::from(attempt.is_some()))
    .bind(next.now)
    .bind(finished)
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    if let Some(a) = attempt {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&a.id)
        .bind(&a.org_id)
        .bind(&a.webhook_id)
        .bind(&a.delivery_id)
        .bind(a.attempt)
        .bind(&a.status)
        .bind(a.response_code)
        .bind(&a.response_body)
        .bind(&a.error)
        .bind(a.latency_ms)
        .bind(a.created_at)
        .execute(conn)
        .await?;
    }
    Ok(true)
}

/// Webhook `webhook_id`'s deliveries, newest first, a page of `limit`
/// after `offset`.
pub async fn deliveries(
    conn: &mut AnyConnection,
    org_id: &str,
    webhook_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
         WHERE org_id = $1 AND webhook_id = $2 \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    )))
    .bind(org_id)
    .bind(webhook_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many deliveries webhook `webhook_id` has.
pub async fn count_deliveries(
    conn: &mut AnyConnection,
    org_id: &str,
    webhook_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE org_id = $1 AND webhook_id = $2",
    )
    .bind(org_id)
    .bind(webhook_id)
    .fetch_one(conn)
    .await
}

/// The logged attempts of the deliveries `ids`, by delivery and attempt.
pub async fn attempts_of(
    conn: &mut AnyConnection,
    org_id: &str,
    ids: &[String],
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = leases::placeholders(2, ids.len());
    let mut query = sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts \
         WHERE org_id = $1 AND delivery_id IN ({list}) ORDER BY delivery_id, attempt"
    )))
    .bind(org_id);
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(conn).await
}
