//! Setting rate limits: validated, checked to name a subject of the
//! organization, audited, and live at once on this instance (within
//! [`super::RULES_TTL`] on the others).

use serde_json::json;

use super::{Limits, RateLimiter, Scope};
use crate::audit::{self, ClientInfo};
use crate::auth::Principal;
use crate::store::rate_limit_rules::{self as rules, RuleRow};
use crate::store::{self, Tx, now_ms};
use crate::validation::{FieldErrors, Invalid};

/// Why a change of limits was refused.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The input is wrong; every problem by field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such user or key in the organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

fn check(limits: &Limits) -> Result<(), Invalid> {
    let mut errors = FieldErrors::new();
    for (field, value, max) in [
        ("requests_per_minute", limits.requests_per_minute, 1_000_000),
        ("requests_per_hour", limits.requests_per_hour, 100_000_000),
        ("tasks_per_hour", limits.tasks_per_hour, 100_000_000),
        ("concurrent_tasks", limits.concurrent_tasks, 100_000),
        ("tokens_per_minute", limits.tokens_per_minute, 1_000_000_000),
    ] {
        if let Some(v) = value {
            errors.check(
                (1..=max).contains(&v),
                field,
                &format!("must be between 1 and {max}, or null for no limit"),
            );
        }
    }
    errors.finish()
}

/// Replace the limits of `scope`'s `subject_id` in `org_id` (within `tx`,
/// opened for that organization); every limit left out is lifted.
pub async fn set(
    limiter: &RateLimiter,
    mut tx: Tx,
    (who, client): (&Principal, &ClientInfo),
    (org_id, scope, subject_id): (&str, Scope, &str),
    limits: Limits,
) -> Result<Limits, SetError> {
    check(&limits)?;
    if scope == Scope::ApiKey && limits.concurrent_tasks.is_some() {
        return Err(Invalid::field(
            "concurrent_tasks",
            "is set per user or organization: tasks are counted by user",
        )
        .into());
    }
    match scope {
        Scope::Organization => {}
        Scope::User => {
            store::organizations::get_member(&mut tx, org_id, subject_id)
                .await?
                .ok_or(SetError::NotFound("member"))?;
        }
        Scope::ApiKey => {
            store::api_keys::get(&mut tx, org_id, subject_id)
                .await?
                .ok_or(SetError::NotFound("API key"))?;
        }
    }
    let row = RuleRow {
        org_id: org_id.to_string(),
        scope: scope.as_str().to_string(),
        subject_id: subject_id.to_string(),
        requests_per_minute: limits.requests_per_minute,
        requests_per_hour: limits.requests_per_hour,
        tasks_per_hour: limits.tasks_per_hour,
        concurrent_tasks: limits.concurrent_tasks,
        tokens_per_minute: limits.tokens_per_minute,
        updated_at: now_ms(),
    };
    rules::upsert(&mut tx, &row).await?;
    audit::record_for(
        &mut tx,
        Some(org_id),
        Some(&who.user_id),
        client,
        "rate_limits_set",
        json!({ "scope": scope, "subject_id": subject_id, "limits": limits }),
    )
    .await?;
    tx.commit().await?;
    limiter.forget(org_id);
    Ok(limits)
}
