//! What callers do with budgets: set one (org_admin), read them with the
//! current period's spend and a projection, delete one. A change is
//! audited in the transaction that makes it and reaches every instance's
//! dispatcher with the catalogue's change signal.

use serde_json::json;

use super::{Budget, Period, Scope};
use crate::audit::{self, ClientInfo};
use crate::auth::{Forbidden, Permission, Principal};
use crate::money::Money;
use crate::state::AppState;
use crate::store::{self, Tx, budgets as stored, new_id, now_ms};
use crate::validation::{FieldErrors, Invalid};

/// The highest limit a budget may have, in dollars.
pub const MAX_LIMIT_USD: f64 = 1e9;
/// Most alert thresholds per budget.
pub const MAX_THRESHOLDS: usize = 10;
/// Thresholds when none are given: 80 % and 100 %.
pub const DEFAULT_ALERT_AT: [f64; 2] = [0.8, 1.0];

/// Why a budget operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The input is wrong; every problem by field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller's role is too weak.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No such budget (or subject) in the caller's organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// Which budget: its scope, subject and period, as the path names them.
#[derive(Debug, Clone)]
pub struct BudgetKey {
    /// What it limits.
    pub scope: Scope,
    /// The organization, agent, API key or user.
    pub subject_id: String,
    /// Its period.
    pub period: Period,
}

impl BudgetKey {
    /// Parse the path's names; unknown ones are a 404 (no such budget can
    /// exist), as for any other path that names nothing.
    pub fn parse(scope: &str, subject_id: &str, period: &str) -> Result<BudgetKey, BudgetError> {
        match (Scope::parse(scope), Period::parse(period)) {
            (Some(scope), Some(period)) => Ok(BudgetKey {
                scope,
                subject_id: subject_id.to_string(),
                period,
            }),
            _ => Err(BudgetError::NotFound("budget")),
        }
    }
}

/// A budget as set: its limit in dollars, whether hard, its thresholds.
#[derive(Debug, Clone)]
pub struct BudgetSpec {
    /// Limit per period, in dollars.
    pub limit_usd: f64,
    /// Refuse calls that could pass it (default true).
    pub hard: Option<bool>,
    /// Alert thresholds as fractions of the limit (default 0.8 and 1.0).
    pub alert_at: Option<Vec<f64>>,
}

/// A budget with its current period's spend.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    /// The budget.
    pub budget: Budget,
    /// Unix ms the current period started.
    pub period_start: i64,
    /// Unix ms it ends.
    pub period_end: i64,
    /// Spend written so far this period (every instance writes what it
    /// settled within a fraction of a second).
    pub spent: Money,
    /// Left of the limit (zero when passed).
    pub remaining: Money,
    /// The spend at the period's end if it goes on at this period's rate
    /// so far (measured over at least an hour).
    pub projected: Money,
    /// How many thresholds alerted this period.
    pub alerted: i64,
}

/// Set the budget `key` of the caller's organization to `spec`.
pub async fn set(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    key: &BudgetKey,
    spec: BudgetSpec,
) -> Result<BudgetStatus, BudgetError> {
    who.require(Permission::ManageBudgets)?;
    let alert_at = checked(&spec)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    check_subject(&mut tx, who, key).await?;
    let now = now_ms();
    let budget = stored::upsert(
        &mut tx,
        &Budget {
            id: new_id(),
            org_id: who.org_id.clone(),
            scope: key.scope,
            subject_id: key.subject_id.clone(),
            period: key.period,
            limit: Money::from_usd(spec.limit_usd),
            hard: spec.hard.unwrap_or(true),
            alert_at,
            created_at: now,
            updated_at: now,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        who,
        client,
        "budget_set",
        audit::Payload::from(json!({
            "budget_id": budget.id,
            "scope": budget.scope.as_str(),
            "subject_id": budget.subject_id,
            "period": budget.period.as_str(),
            "hard": budget.hard,
            "alert_at": budget.alert_at,
        }))
        .usd("limit_usd", Some(budget.limit)),
    )
    .await?;
    let status = status_of(&mut tx, budget, now).await?;
    state.commit_catalog_change(tx, &who.org_id).await?;
    Ok(status)
}

/// The budget `key` of the caller's organization (viewer and above).
pub async fn get(
    state: &AppState,
    who: &Principal,
    key: &BudgetKey,
) -> Result<BudgetStatus, BudgetError> {
    who.require(Permission::ViewAnalytics)?;
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let budget = stored::get(&mut tx, &who.org_id, key.scope, &key.subject_id, key.period)
        .await?
        .ok_or(BudgetError::NotFound("budget"))?;
    let status = status_of(&mut tx, budget, now_ms()).await?;
    tx.commit().await?;
    Ok(status)
}

/// Every budget of the caller's organization (viewer and above).
pub async fn list(state: &AppState, who: &Principal) -> Result<Vec<BudgetStatus>, BudgetError> {
    who.require(Permission::ViewAnalytics)?;
    let now = now_ms();
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let mut out = Vec::new();
    for budget in stored::list(&mut tx, &who.org_id).await? {
        out.push(status_of(&mut tx, budget, now).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// Delete the budget `key` of the caller's organization.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    key: &BudgetKey,
) -> Result<(), BudgetError> {
    who.require(Permission::ManageBudgets)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let budget = stored::get(&mut tx, &who.org_id, key.scope, &key.subject_id, key.period)
        .await?
        .ok_or(BudgetError::NotFound("budget"))?;
    stored::delete(&mut tx, &who.org_id, &budget.id).await?;
    audit::record(
        &mut tx,
        who,
        client,
        "budget_deleted",
        json!({
            "budget_id": budget.id,
            "scope": budget.scope.as_str(),
            "subject_id": budget.subject_id,
            "period": budget.period.as_str(),
        }),
    )
    .await?;
    state.commit_catalog_change(tx, &who.org_id).await?;
    Ok(())
}

/// The thresholds of `spec`, sorted and deduplicated, after checking
/// every field.
fn checked(spec: &BudgetSpec) -> Result<Vec<f64>, Invalid> {
    let mut errors = FieldErrors::new();
    errors.check(
        spec.limit_usd.is_finite() && spec.limit_usd > 0.0 && spec.limit_usd <= MAX_LIMIT_USD,
        "limit_usd",
        "must be more than 0 and at most 1000000000",
    );
    errors.check(
        Money::from_usd(spec.limit_usd) > Money::ZERO,
        "limit_usd",
        "must be at least one nano-dollar (0.000000001)",
    );
    let mut alert_at = spec
        .alert_at
        .clone()
        .unwrap_or_else(|| DEFAULT_ALERT_AT.to_vec());
    errors.check(
        alert_at.len() <= MAX_THRESHOLDS,
        "alert_at",
        "must hold at most 10 thresholds",
    );
    for (i, f) in alert_at.iter().enumerate() {
        errors.check(
            f.is_finite() && *f > 0.0 && *f <= 1.0,
            &format!("alert_at[{i}]"),
            "must be a fraction of the limit, more than 0 and at most 1",
        );
    }
    errors.finish()?;
    alert_at.sort_by(f64::total_cmp);
    alert_at.dedup();
    Ok(alert_at)
}

/// The budget's subject must be the organization itself or one of its
/// agents, API keys or members.
async fn check_subject(tx: &mut Tx, who: &Principal, key: &BudgetKey) -> Result<(), BudgetError> {
    let org = who.org_id.as_str();
    let id = key.subject_id.as_str();
    let exists = match key.scope {
        Scope::Organization => id == org,
        Scope::Agent => store::agents::get(tx, org, id).await?.is_some(),
        Scope::ApiKey => store::api_keys::get(tx, org, id).await?.is_some(),
        Scope::User => store::organizations::get_member(tx, org, id)
            .await?
            .is_some(),
    };
    if exists {
        Ok(())
    } else {
        Err(BudgetError::NotFound(match key.scope {
            Scope::Organization => "organization",
            Scope::Agent => "agent",
            Scope::ApiKey => "API key",
            Scope::User => "member",
        }))
    }
}

/// The budget with its period's spend at `now`.
async fn status_of(tx: &mut Tx, budget: Budget, now: i64) -> Result<BudgetStatus, sqlx::Error> {
    let (period_start, period_end) = budget.period.bounds(now);
    let spend = stored::period_spend(tx, &budget.id, period_start).await?;
    let remaining = Money::from_nanos((budget.limit.nanos() - spend.spent.nanos()).max(0));
    Ok(BudgetStatus {
        projected: projection(spend.spent, period_start, period_end, now),
        remaining,
        spent: spend.spent,
        alerted: spend.alerted,
        period_start,
        period_end,
        budget,
    })
}

/// Shortest stretch a projection extrapolates from.
const MIN_PROJECTION_MS: i64 = 60 * 60 * 1000;

/// `spent` over `[start, now)` extrapolated to `end` at the same rate,
/// the elapsed time counted as at least [`MIN_PROJECTION_MS`] so that a
/// period's first minutes do not project wildly.
fn projection(spent: Money, start: i64, end: i64, now: i64) -> Money {
    let elapsed = (now - start).max(MIN_PROJECTION_MS);
    let length = end - start;
    if elapsed >= length {
        return spent;
    }
    let projected = i128::from(spent.nanos()) * i128::from(length) / i128::from(elapsed);
    Money::from_nanos(i64::try_from(projected).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projection_extrapolates_the_rate_so_far() {
        let day = 24 * 60 * 60 * 1000;
        // Half the day gone, 5 spent: 10 by its end.
        assert_eq!(
            projection(Money::from_nanos(5), 0, day, day / 2),
            Money::from_nanos(10)
        );
        // A minute in: counted as an hour.
        assert_eq!(
            projection(Money::from_nanos(1), 0, day, 60_000),
            Money::from_nanos(24)
        );
        assert_eq!(
            projection(Money::from_nanos(7), 0, day, day),
            Money::from_nanos(7)
        );
    }

    #[test]
    fn thresholds_are_checked_sorted_and_deduplicated() {
        let spec = |limit: f64, alert_at: Vec<f64>| BudgetSpec {
            limit_usd: limit,
            hard: None,
            alert_at: Some(alert_at),
        };
        assert_eq!(
            checked(&spec(5.0, vec![1.0, 0.5, 0.5])).unwrap(),
            [0.5, 1.0]
        );
        let bad = checked(&spec(-1.0, vec![0.0, 2.0, f64::NAN])).unwrap_err();
        let fields: Vec<&str> = bad.0.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["alert_at[0]", "alert_at[1]", "alert_at[2]", "limit_usd"]
        );
    }
}
