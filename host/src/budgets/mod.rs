//! Spend limits: what an organization, or one of its agents, API keys or
//! users, may spend per UTC day or month, enforced before every provider
//! call and alerted on at chosen fractions of the limit.
//!
//! - [`Budget`] is one limit as configured; the organization's budgets
//!   ride along with its catalogue (`crate::orchestrator::catalog`), so the
//!   hot path reads them from memory and a change reaches every instance
//!   with the catalogue's change signal.
//! - [`ledger::Ledger`] reserves a call's worst-case cost before the call,
//!   settles it to the actual cost afterwards, and keeps the spend within
//!   the limit across instances with leases on the database.
//! - [`service`] is what the API does: set, read (with spend and a
//!   projection), delete.

pub mod ledger;
pub mod service;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analytics::buckets::{DAY_MS, floor, month_of};
use crate::money::Money;

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything the organization spends.
    Organization,
    /// What one agent's tasks spend.
    Agent,
    /// What requests made with one API key spend.
    ApiKey,
    /// What one user's requests and tasks spend.
    User,
}

impl Scope {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Organization => "organization",
            Scope::Agent => "agent",
            Scope::ApiKey => "api_key",
            Scope::User => "user",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Some(match name {
            "organization" => Scope::Organization,
            "agent" => Scope::Agent,
            "api_key" => Scope::ApiKey,
            "user" => Scope::User,
            _ => return None,
        })
    }
}

/// How long a budget's spend accumulates before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Period {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The period named `name`.
    pub fn parse(name: &str) -> Option<Period> {
        Some(match name {
            "day" => Period::Day,
            "month" => Period::Month,
            _ => return None,
        })
    }

    /// The period `now` (unix ms) falls in, as `[start, end)`.
    pub fn bounds(self, now: i64) -> (i64, i64) {
        match self {
            Period::Day => {
                let start = floor(now, DAY_MS);
                (start, start + DAY_MS)
            }
            Period::Month => month_of(now),
        }
    }
}

/// One spend limit, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Row id.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// What it limits.
    pub scope: Scope,
    /// The organization, agent, API key or user limited.
    pub subject_id: String,
    /// How long its spend accumulates.
    pub period: Period,
    /// The most it allows per period.
    pub limit: Money,
    /// Whether calls that would pass it are refused (otherwise it only alerts).
    pub hard: bool,
    /// Fractions of the limit at which an alert is raised, ascending, in (0, 1].
    pub alert_at: Vec<f64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Who a provider call spends for: the budgets of these subjects (and the
/// organization's) apply to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spender {
    /// The user who made the request or submitted the task.
    pub user_id: Option<String>,
    /// The agent the task runs for.
    pub agent_id: Option<String>,
    /// The API key the request was made with.
    pub api_key_id: Option<String>,
}

impl Budget {
    /// Whether this budget limits spending by `spender`.
    pub fn applies_to(&self, spender: &Spender) -> bool {
        let subject = match self.scope {
            Scope::Organization => return true,
            Scope::Agent => spender.agent_id.as_deref(),
            Scope::ApiKey => spender.api_key_id.as_deref(),
            Scope::User => spender.user_id.as_deref(),
        };
        subject == Some(self.subject_id.as_str())
    }

    /// How many of [`Budget::alert_at`]'s thresholds `spent` has reached.
    pub fn thresholds_reached(&self, spent: Money) -> usize {
        self.alert_at
            .iter()
            .filter(|f| spent >= Money::from_usd(**f * self.limit.to_usd_f64()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(scope: Scope, subject: &str) -> Budget {
        Budget {
            id: "b".into(),
            org_id: "o".into(),
            scope,
            subject_id: subject.into(),
            period: Period::Day,
            limit: Money::from_nanos(1_000),
            hard: true,
            alert_at: vec![0.8, 1.0],
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_budget_applies_to_its_subject_only() {
        let spender = Spender {
            user_id: Some("u".into()),
            agent_id: Some("a".into()),
            api_key_id: None,
        };
        assert!(budget(Scope::Organization, "o").applies_to(&spender));
        assert!(budget(Scope::User, "u").applies_to(&spender));
        assert!(budget(Scope::Agent, "a").applies_to(&spender));
        assert!(!budget(Scope::Agent, "other").applies_to(&spender));
        assert!(!budget(Scope::ApiKey, "k").applies_to(&spender));
    }

    #[test]
    fn thresholds_count_from_the_lowest() {
        let b = budget(Scope::Organization, "o");
        assert_eq!(b.thresholds_reached(Money::from_nanos(799)), 0);
        assert_eq!(b.thresholds_reached(Money::from_nanos(800)), 1);
        assert_eq!(b.thresholds_reached(Money::from_nanos(1_000)), 2);
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        // 2026-12-06T17:00:00Z
        let now = 1_796_576_400_000;
        assert_eq!(
            Period::Day.bounds(now),
            (1_796_515_200_000, 1_796_601_600_000)
        );
        assert_eq!(
            Period::Month.bounds(now),
            (1_796_083_200_000, 1_798_761_600_000)
        );
    }
}
