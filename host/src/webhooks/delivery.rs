//! Delivering the outbox: the [`Runner`] for webhook deliveries on the
//! durable queue, so deliveries inherit its guarantees (one instance at a
//! time under a lease, rescue after a crash, hand-over at shutdown).
//!
//! A claimed delivery gets one attempt: a signed POST of its body to the
//! webhook's current URL, through a client that connects only to checked
//! addresses ([`super::destination`]), bounded by the per-attempt timeout,
//! reading at most 1 KiB of the answer. The attempt is logged and the
//! delivery moved on in one transaction, while the lease is still held: a
//! 2xx delivers it; anything else schedules the next attempt after an
//! exponential back-off, or fails it once the retries are spent. A webhook
//! whose deliveries fail `disable_after` times in a row is disabled and an
//! alert raised, in that same transaction. An instance that dies during an
//! attempt logs nothing; the lease runs out and the attempt is made again
//! (the receiver sees the same `X-Vel-Event-Id`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::destination::{GuardedResolver, is_refused, refused_literal};
use super::{WebhookConfig, signature};
use crate::alerts::NewAlert;
use crate::audit::Payload;
use crate::orchestrator::queue::{
    Claim, Lease, MAX_CLAIMS, Queue, QueueConfig, RunFuture, Runner, owner_name,
};
use crate::orchestrator::signals::{Signals, WorkKind};
use crate::secrets::MasterKey;
use crate::store::webhooks::{self as stored, AttemptRow, DeliveryRow, NextState, WebhookRow};
use crate::store::{Db, new_id, now_ms};

/// The most of an answer's body kept in the log, in bytes.
pub const MAX_LOGGED_BODY: usize = 1024;

/// The context a webhook's secret is sealed under (see
/// [`MasterKey::encrypt`]).
pub fn secret_context(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

/// This instance's delivery workers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliveries {
    queue: Queue<DeliveryRunner>,
}

impl Deliveries {
    /// Start `config.workers` delivery workers on the queue, with the
    /// tasks' `lease` and `poll_interval`.
    pub fn start(
        db: Db,
        keys: Arc<MasterKey>,
        signals: Signals,
        config: WebhookConfig,
        queue: QueueConfig,
    ) -> Result<Deliveries, reqwest::Error> {
        let runner = DeliveryRunner::new(db, keys, config.clone())?;
        let queue = QueueConfig {
            workers: config.workers,
            ..queue
        };
        Ok(Deliveries {
            queue: Queue::start(signals, queue, runner, owner_name()),
        })
    }

    /// Stop claiming, let attempts in flight end for up to `grace`, then
    /// stop them and hand their leases back.
    pub async fn shutdown(&self, grace: Duration) {
        self.queue.shutdown(grace).await;
    }
}

/// Attempts claimed deliveries.
#[derive(Debug)]
pub struct DeliveryRunner {
    db: Db,
    keys: Arc<MasterKey>,
    client: reqwest::Client,
    config: WebhookConfig,
}

impl DeliveryRunner {
    /// A runner reading webhooks from `db`, opening their secrets with
    /// `keys`.
    pub fn new(
        db: Db,
        keys: Arc<MasterKey>,
        config: WebhookConfig,
    ) -> Result<DeliveryRunner, reqwest::Error> {
        // reqwest is built without a default rustls provider; an error
        // only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(config.allow_private.clone()))
            .connect_timeout(config.timeout)
            .user_agent(concat!("vel-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(DeliveryRunner {
            db,
            keys,
            client,
            config,
        })
    }
}

impl Runner for DeliveryRunner {
    type Item = DeliveryRow;

    fn kind(&self) -> WorkKind {
        WorkKind::Webhooks
    }

    async fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claim<DeliveryRow>>, sqlx::Error> {
        let mut tx = self.db.platform_relaxed().await?;
        let claimed = stored::claim(&mut tx, owner, lease_ms, MAX_CLAIMS).await?;
        tx.commit().await?;
        Ok(claimed.map(|(d, more)| Claim {
            id: d.id.clone(),
            more,
            span: tracing::info_span!("webhook_delivery", delivery_id = %d.id,
                webhook_id = %d.webhook_id, org_id = %d.org_id, event = %d.event_type,
                attempt = d.attempts + 1),
            item: d,
        }))
    }

    async fn beat(
        &self,
        owner: &str,
        running: &[String],
        lease_ms: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.db.platform().await?;
        stored::heartbeat(&mut tx, owner, running, lease_ms).await?;
        let failed = stored::fail_exhausted(&mut tx, MAX_CLAIMS).await?;
        stored::forget_expired_secrets(&mut tx, now_ms()).await?;
        tx.commit().await?;
        for id in failed {
            tracing::warn!(delivery_id = %id, "webhook delivery failed: its workers kept stopping");
        }
        Ok(Vec::new())
    }

    async fn release(&self, owner: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.platform().await?;
        stored::release_leases(&mut tx, owner).await?;
        tx.commit().await
    }

    fn run<'a>(&'a self, item: DeliveryRow, lease: Lease<'a>) -> RunFuture<'a, DeliveryRow> {
        Box::pin(async move {
            self.deliver(item, lease.owner, lease.stop).await?;
            Ok(None)
        })
    }
}

/// How one attempt went.
#[derive(Debug)]
struct Outcome {
    /// `delivered`, `http_error`, `timeout`, `connect_error`, `refused`
    /// or `failed`.
    status: &'static str,
    code: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    latency: Duration,
}

impl Outcome {
    fn failed(status: &'static str, error: String, latency: Duration) -> Outcome {
        Outcome {
            status,
            code: None,
            body: None,
            error: Some(error),
            latency,
        }
    }
}

impl DeliveryRunner {
    async fn deliver(
        &self,
        d: DeliveryRow,
        owner: &str,
        stop: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let webhook = {
            let mut tx = self.db.tenant_read(&d.org_id).await?;
            let w = stored::get(&mut tx, &d.org_id, &d.webhook_id).await?;
            tx.commit().await?;
            w
        };
        let Some(webhook) = webhook.filter(|w| w.enabled == 1) else {
            // Disabled (or deleted) since: its queued events are dropped.
            let mut tx = self.db.tenant(&d.org_id).await?;
            let next = NextState {
                status: "cancelled",
                next_attempt_at: None,
                now: now_ms(),
            };
            stored::record_attempt(&mut tx, &d.id, owner, None, next).await?;
            tx.commit().await?;
            tracing::info!("webhook disabled: delivery cancelled");
            return Ok(());
        };
        let outcome = tokio::select! {
            outcome = self.attempt(&webhook, &d) => outcome,
            // Shutting down past the grace: the lease is handed back and
            // the attempt made again.
            () = stop.cancelled() => return Ok(()),
        };
        self.record(&webhook, &d, owner, outcome).await
    }

    /// One signed POST of the delivery's body.
    async fn attempt(&self, w: &WebhookRow, d: &DeliveryRow) -> Outcome {
        let started = Instant::now();
        let secret = match self
            .keys
            .decrypt(&w.secret_ciphertext, &secret_context(&w.id))
        {
            Ok(secret) => secret,
            Err(e) => {
                return Outcome::failed(
                    "failed",
                    format!("the signing secret cannot be read: {e}"),
                    started.elapsed(),
                );
            }
        };
        let mut secrets = vec![secret];
        // During a rotation's overlap the old secret signs too.
        if let Some(sealed) = w.previous_secret(now_ms()) {
            match self.keys.decrypt(sealed, &secret_context(&w.id)) {
                Ok(previous) => secrets.push(previous),
                Err(e) => {
                    tracing::warn!(error = %e, "the previous signing secret cannot be read; signing with the current one alone");
                }
            }
        }
        let url = match Url::parse(&w.url) {
            Ok(url) => url,
            Err(e) => return Outcome::failed("failed", format!("bad URL: {e}"), started.elapsed()),
        };
        if let Some(refused) = refused_literal(&url, &self.config.allow_private) {
            return Outcome::failed("refused", refused.to_string(), started.elapsed());
        }
        let timestamp = now_ms() / 1000;
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Vel-Event", &d.event_type)
            .header("X-Vel-Event-Id", &d.event_id)
            .header("X-Vel-Delivery", &d.id)
            .header(
                "X-Vel-Signature",
                signature::sign_with(&secrets, timestamp, d.body.as_bytes()),
            )
            .body(d.body.clone());
        let exchange = async {
            let response = request.send().await?;
            let code = response.status();
            Ok::<_, reqwest::Error>((code, read_capped(response).await))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Err(_) => Outcome::failed(
                "timeout",
                format!("no answer within {} ms", self.config.timeout.as_millis()),
                started.elapsed(),
            ),
            Ok(Err(e)) => {
                let latency = started.elapsed();
                if let Some(refused) = is_refused(&e) {
                    Outcome::failed("refused", refused, latency)
                } else if e.is_timeout() {
                    Outcome::failed("timeout", e.without_url().to_string(), latency)
                } else {
                    Outcome::failed("connect_error", error_chain(&e.without_url()), latency)
                }
            }
            Ok(Ok((code, body))) => Outcome {
                status: if code.is_success() {
                    "delivered"
                } else {
                    "http_error"
                },
                code: Some(code.as_u16()),
                body: Some(body),
                error: (!code.is_success()).then(|| format!("the receiver answered {code}")),
                latency: started.elapsed(),
            },
        }
    }

    /// Log the attempt and move the delivery on, while `owner` holds it;
    /// count a delivery failed for good against its webhook.
    async fn record(
        &self,
        w: &WebhookRow,
        d: &DeliveryRow,
        owner: &str,
        outcome: Outcome,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let attempt = d.attempts + 1;
        let delivered = outcome.status == "delivered";
        let next = if delivered {
            NextState {
                status: "delivered",
                next_attempt_at: None,
                now,
            }
        } else if attempt > i64::from(self.config.retries) {
            NextState {
                status: "failed",
                next_attempt_at: None,
                now,
            }
        } else {
            NextState {
                status: "pending",
                next_attempt_at: Some(now + backoff_ms(&self.config, attempt)),
                now,
            }
        };
        let row = AttemptRow {
            id: new_id(),
            org_id: d.org_id.clone(),
            webhook_id: d.webhook_id.clone(),
            delivery_id: d.id.clone(),
            attempt,
            status: outcome.status.to_string(),
            response_code: outcome.code.map(i64::from),
            response_body: outcome.body,
            error: outcome.error.clone(),
            latency_ms: i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX),
            created_at: now,
        };
        let mut tx = self.db.tenant(&d.org_id).await?;
        if !stored::record_attempt(&mut tx, &d.id, owner, Some(&row), next).await? {
            tx.rollback().await?;
            tracing::info!("webhook delivery taken over before its attempt was recorded");
            return Ok(());
        }
        let mut disabled = false;
        if delivered {
            stored::reset_failures(&mut tx, &d.org_id, &w.id).await?;
        } else if next.status == "failed" {
            let in_a_row = stored::count_failure(&mut tx, &d.org_id, &w.id, now).await?;
            if in_a_row >= i64::from(self.config.disable_after) {
                disabled = self.disable(&mut tx, w, in_a_row, now).await?;
            }
        }
        tx.commit().await?;
        tracing::info!(
            status = outcome.status,
            code = outcome.code,
            latency_ms = row.latency_ms,
            delivery = next.status,
            error = outcome.error.as_deref(),
            disabled,
            "webhook delivery attempted"
        );
        Ok(())
    }

    /// Disable `w` after `in_a_row` failed deliveries and raise an alert.
    async fn disable(
        &self,
        tx: &mut sqlx::AnyConnection,
        w: &WebhookRow,
        in_a_row: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let reason = format!("{in_a_row} deliveries in a row failed");
        if !stored::disable(tx, &w.org_id, &w.id, &reason, now).await? {
            return Ok(false);
        }
        let message = format!(
            "webhook `{}` was disabled: {reason}; fix the receiver and enable it again",
            w.id
        );
        crate::alerts::raise(
            tx,
            NewAlert {
                org_id: &w.org_id,
                kind: "webhook_disabled",
                subject: &w.id,
                message,
                details: Payload::from(json!({
                    "webhook_id": w.id,
                    "failed_deliveries": in_a_row,
                })),
            },
            "webhook_disabled",
            now,
        )
        .await?;
        tracing::warn!(webhook_id = %w.id, in_a_row, "webhook disabled: its deliveries keep failing");
        Ok(true)
    }
}

/// The wait after failed attempt `attempt` (1 for the first): the base,
/// doubled for each attempt since, at most the configured maximum.
pub fn backoff_ms(config: &WebhookConfig, attempt: i64) -> i64 {
    let base = i64::try_from(config.retry_base.as_millis()).unwrap_or(i64::MAX);
    let max = i64::try_from(config.retry_max.as_millis()).unwrap_or(i64::MAX);
    let doublings = u32::try_from((attempt - 1).clamp(0, 62)).unwrap_or(62);
    base.saturating_mul(1_i64 << doublings).min(max)
}

/// The start of an answer's body: at most [`MAX_LOGGED_BODY`] bytes, as
/// text (cut at a character boundary); the rest is not read.
async fn read_capped(mut response: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < MAX_LOGGED_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(MAX_LOGGED_BODY);
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    while text.len() > MAX_LOGGED_BODY {
        text.pop();
    }
    text
}

/// An error with its sources, `: `-separated (reqwest's own message alone
/// says only "error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_maximum() {
        let config = WebhookConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            ..WebhookConfig::default()
        };
        let waits: Vec<i64> = (1..=5).map(|n| backoff_ms(&config, n)).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(backoff_ms(&config, 1_000), 500);
    }
}
