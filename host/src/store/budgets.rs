//! Budgets, their spend per period, and the instances' leases of them
//! (see `crate::budgets` for what they mean). Values are written as given.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::budgets::{Budget, Period, Scope};
use crate::money::Money;

const COLUMNS: &str =
    "id, org_id, scope, subject_id, period, limit_nanos, hard, alert_at, created_at, updated_at";

fn budget_from_row(row: &AnyRow) -> Result<Budget, sqlx::Error> {
    let scope: String = row.try_get("scope")?;
    let period: String = row.try_get("period")?;
    let alert_at: String = row.try_get("alert_at")?;
    let decode = |column: &str, what: String| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: what.into(),
    };
    Ok(Budget {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        scope: Scope::parse(&scope).ok_or_else(|| decode("scope", scope.clone()))?,
        subject_id: row.try_get("subject_id")?,
        period: Period::parse(&period).ok_or_else(|| decode("period", period.clone()))?,
        limit: Money::from_nanos(row.try_get("limit_nanos")?),
        hard: row.try_get::<i64, _>("hard")? != 0,
        alert_at: serde_json::from_str(&alert_at).map_err(|e| decode("alert_at", e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The organization's budgets, by scope, subject and period.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<Budget>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE org_id = $1 ORDER BY scope, subject_id, period"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(budget_from_row).collect()
}

/// The budget of `scope`/`subject_id` for `period`.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    scope: Scope,
    subject_id: &str,
    period: Period,
) -> Result<Option<Budget>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets \
         WHERE org_id = $1 AND scope = $2 AND subject_id = $3 AND period = $4"
    )))
    .bind(org_id)
    .bind(scope.as_str())
    .bind(subject_id)
    .bind(period.as_str())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(budget_from_row).transpose()
}

/// Insert `b`, or replace the limit, hardness and thresholds of the budget
/// with its scope, subject and period (keeping that one's id and creation
/// time); the stored budget.
pub async fn upsert(conn: &mut AnyConnection, b: &Budget) -> Result<Budget, sqlx::Error> {
    let alert_at = serde_json::to_string(&b.alert_at).unwrap_or_else(|_| "[]".into());
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO budgets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (org_id, scope, subject_id, period) DO UPDATE SET \
         limit_nanos = excluded.limit_nanos, hard = excluded.hard, \
         alert_at = excluded.alert_at, updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    )))
    .bind(&b.id)
    .bind(&b.org_id)
    .bind(b.scope.as_str())
    .bind(&b.subject_id)
    .bind(b.period.as_str())
    .bind(b.limit.nanos())
    .bind(i64::from(b.hard))
    .bind(alert_at)
    .bind(b.created_at)
    .bind(b.updated_at)
    .fetch_one(conn)
    .await?;
    budget_from_row(&row)
}

/// Delete the budget with this id; whether it existed.
pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM budgets WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What a budget's period has spent and how many thresholds have alerted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodSpend {
    /// Spend settled so far.
    pub spent: Money,
    /// How many of the budget's thresholds have alerted.
    pub alerted: i64,
}

/// The spend of `budget_id`'s period starting at `period_start` (zero
/// when nothing was spent).
pub async fn period_spend(
    conn: &mut AnyConnection,
    budget_id: &str,
    period_start: i64,
) -> Result<PeriodSpend, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT spent_nanos, alerted FROM budget_periods \
         WHERE budget_id = $1 AND period_start = $2",
    )
    .bind(budget_id)
    .bind(period_start)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or_else(PeriodSpend::default, |(spent, alerted)| PeriodSpend {
            spent: Money::from_nanos(spent),
            alerted,
        }),
    )
}

/// Add `amount` to the period's spend; the spend after it.
pub async fn add_spend(
    conn: &mut AnyConnection,
    org_id: &str,
    budget_id: &str,
    period_start: i64,
    amount: Money,
) -> Result<PeriodSpend, sqlx::Error> {
    let (spent, alerted): (i64, i64) = sqlx::query_as(
        "INSERT INTO budget_periods (budget_id, org_id, period_start, spent_nanos, alerted) \
         VALUES ($1, $2, $3, $4, 0) \
         ON CONFLICT (budget_id, period_start) DO UPDATE SET \
         spent_nanos = budget_periods.spent_nanos + excluded.spent_nanos \
         RETURNING spent_nanos, alerted",
    )
    .bind(budget_id)
    .bind(org_id)
    .bind(period_start)
    .bind(amount.nanos())
    .fetch_one(conn)
    .await?;
    Ok(PeriodSpend {
        spent: Money::from_nanos(spent),
        alerted,
    })
}

/// Move the period's alerted count from `from` to `to`; false when another
/// writer moved it first (its alerts are raised already).
pub async fn raise_alerted(
    conn: &mut AnyConnection,
    budget_id: &str,
    period_start: i64,
    from: i64,
    to: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE budget_periods SET alerted = $1 \
         WHERE budget_id = $2 AND period_start = $3 AND alerted = $4",
    )
    .bind(to)
    .bind(budget_id)
    .bind(period_start)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the leases of a budget's period hold: this holder's amount (zero
/// when it holds none or it lapsed) and the sum of every other live lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leases {
    /// The holder's own live lease.
    pub mine: Money,
    /// Every other holder's live leases.
    pub others: Money,
}

/// The live leases of the period at `now`, after deleting lapsed ones.
pub async fn leases(
    conn: &mut AnyConnection,
    budget_id: &str,
    period_start: i64,
    holder: &str,
    now: i64,
) -> Result<Leases, sqlx::Error> {
    sqlx::query("DELETE FROM budget_leases WHERE budget_id = $1 AND expires_at <= $2")
        .bind(budget_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT holder, amount_nanos FROM budget_leases \
         WHERE budget_id = $1 AND period_start = $2",
    )
    .bind(budget_id)
    .bind(period_start)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .fold(Leases::default(), |mut l, (who, amount)| {
            let amount = Money::from_nanos(amount);
            if who == holder {
                l.mine = amount;
            } else {
                l.others = l.others.saturating_add(amount);
            }
            l
        }))
}

/// Add `amount` to the holder's lease (creating it), live until `expires_at`.
pub async fn extend_lease(
    conn: &mut AnyConnection,
    org_id: &str,
    budget_id: &str,
    period_start: i64,
    holder: &str,
    amount: Money,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO budget_leases (budget_id, org_id, period_start, holder, amount_nanos, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (budget_id, period_start, holder) DO UPDATE SET \
         amount_nanos = budget_leases.amount_nanos + excluded.amount_nanos, \
         expires_at = excluded.expires_at",
    )
    .bind(budget_id)
    .bind(org_id)
    .bind(period_start)
    .bind(holder)
    .bind(amount.nanos())
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Take `amount` off the holder's lease (not below zero) and keep it live
/// until `expires_at`; false when the holder has no lease any more (it
/// lapsed and was deleted).
pub async fn shrink_lease(
    conn: &mut AnyConnection,
    budget_id: &str,
    period_start: i64,
    holder: &str,
    amount: Money,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE budget_leases SET \
         amount_nanos = CASE WHEN amount_nanos > $1 THEN amount_nanos - $1 ELSE 0 END, \
         expires_at = $2 \
         WHERE budget_id = $3 AND period_start = $4 AND holder = $5",
    )
    .bind(amount.nanos())
    .bind(expires_at)
    .bind(budget_id)
    .bind(period_start)
    .bind(holder)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
