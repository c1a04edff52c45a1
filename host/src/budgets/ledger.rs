//! Budget enforcement on the hot path, bounded across instances.
//!
//! Before a provider call, [`Ledger::reserve`] sets aside the call's
//! worst-case cost in every hard budget that applies; after it,
//! [`Reservation::settle`] replaces that with the actual cost (dropping an
//! unsettled reservation releases it). Reservations come from this
//! instance's **lease** of each budget: a slice of the budget's remaining
//! room that the database granted it, so a reservation is a few memory
//! operations and the database is asked only when the lease runs short.
//!
//! The database keeps the bound. A grant runs serialised per budget and
//! gives a lease only while `spent + every live lease ≤ limit`; settled
//! spend moves from the lease to `spent` when it is written (every
//! [`LedgerSettings::flush_every`], one transaction per budget, the
//! lease shrinking by the same amount). So the money reserved by all
//! instances together never exceeds the limit, and spend passes it only by
//! what calls cost beyond their worst-case estimate. A lease lives for
//! [`LedgerSettings::lease_ttl`] and is renewed while its instance lives;
//! a dead instance's lease lapses and its room returns. An idle lease is
//! handed back, so room does not stay parked on an instance that no longer
//! uses it. Soft budgets take no lease: their spend is only counted, for
//! alerts.
//!
//! When a settled spend passes one of a budget's alert thresholds, the
//! write that records it raises the alert once per period across
//! instances (`alerted` moves only from the value read): an alert record,
//! an audit entry and a log line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use super::Budget;
use crate::alerts::NewAlert;
use crate::analytics::metrics;
use crate::audit;
use crate::money::Money;
use crate::plugins::stats::{escape_label, family};
use crate::store::{Db, budgets as store, now_ms};

/// How the ledger leases and writes.
#[derive(Debug, Clone, Copy)]
pub struct LedgerSettings {
    /// How long a lease lives without renewal.
    pub lease_ttl: Duration,
    /// How often settled spend is written and leases renewed.
    pub flush_every: Duration,
    /// How long a lease may sit unused before its free part is handed back.
    pub idle_return: Duration,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            lease_ttl: Duration::from_secs(30),
            flush_every: Duration::from_millis(200),
            idle_return: Duration::from_secs(2),
        }
    }
}

/// A grant asks for at least this fraction (1 / n) of the room left, so a
/// busy instance rarely asks twice while the room is wide, and the slices
/// shrink as the room does.
const GRANT_SHARE: i64 = 8;

/// Output tokens a call without `max_tokens` is assumed to produce at
/// most, for its reservation (its actual cost is what is spent).
pub const DEFAULT_RESERVED_OUTPUT_TOKENS: u32 = 4_096;

/// A call refused because it could pass a hard budget.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the call could cost up to ${worst} and the {scope} budget `{budget_id}` has ${remaining} of \
     its {period} limit of ${limit} left"
)]
pub struct Refused {
    /// The budget that refused.
    pub budget_id: String,
    /// Its scope's name.
    pub scope: &'static str,
    /// Its period's name.
    pub period: &'static str,
    /// Its limit (dollars).
    pub limit: crate::money::Usd,
    /// What was left when it refused (dollars).
    pub remaining: crate::money::Usd,
    /// The call's worst-case cost (dollars).
    pub worst: crate::money::Usd,
}

/// The failure to reach the database while granting a lease: the call is
/// refused too (a hard budget is not skipped because it cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// The budget has no room for the call.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The lease could not be granted.
    #[error("the budget could not be checked: {0}")]
    Storage(#[from] sqlx::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    budget_id: String,
    period_start: i64,
}

/// This instance's view of one budget's period.
#[derive(Debug)]
struct Account {
    budget: Arc<Budget>,
    /// What this instance's lease holds in the database.
    lease: Money,
    /// Worst cases of the calls in flight.
    reserved: Money,
    /// Spend settled here and not yet written.
    unflushed: Money,
    /// The room outside every lease when last seen.
    room_outside: Money,
    /// Unix ms the lease lapses.
    expires_at: i64,
    /// Unix ms of the last reservation or settlement.
    last_active: i64,
    /// One grant at a time per account.
    granting: Arc<tokio::sync::Mutex<()>>,
}

impl Account {
    fn new(budget: Arc<Budget>, now: i64) -> Account {
        Account {
            room_outside: budget.limit,
            budget,
            lease: Money::ZERO,
            reserved: Money::ZERO,
            unflushed: Money::ZERO,
            expires_at: 0,
            last_active: now,
            granting: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// What the lease can still hand out.
    fn available(&self) -> i64 {
        self.lease.nanos() - self.reserved.nanos() - self.unflushed.nanos()
    }

    /// Whether `worst` can be reserved from the lease now.
    fn can_take(&self, worst: Money, now: i64, ttl_ms: i64) -> bool {
        self.available() >= worst.nanos() && self.expires_at - now > ttl_ms / 4
    }
}

/// Budget enforcement for this instance; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    holder: String,
    settings: LedgerSettings,
    accounts: Mutex<HashMap<Key, Account>>,
    dirty: Notify,
    /// Calls refused, by organization (when a metrics label) and scope.
    refusals: Mutex<BTreeMap<(Option<String>, &'static str), u64>>,
}

/// Money set aside for one call in the budgets that apply to it; settle it
/// with the call's cost, or drop it to release it.
#[derive(Debug)]
pub struct Reservation {
    ledger: Ledger,
    /// Each account and the worst case reserved in it (zero in soft ones).
    held: Vec<(Key, Money)>,
    settled: bool,
}

impl Reservation {
    /// A reservation in no budget (none applies).
    pub fn none(ledger: &Ledger) -> Reservation {
        Reservation {
            ledger: ledger.clone(),
            held: Vec::new(),
            settled: true,
        }
    }

    /// Replace the reservation with the call's actual cost.
    pub fn settle(mut self, cost: Money) {
        self.settled = true;
        if self.held.is_empty() {
            return;
        }
        let now = now_ms();
        {
            let mut accounts = self.ledger.lock();
            for (key, worst) in &self.held {
                if let Some(a) = accounts.get_mut(key) {
                    a.reserved = Money::from_nanos(a.reserved.nanos() - worst.nanos());
                    a.unflushed = a.unflushed.saturating_add(cost);
                    a.last_active = now;
                }
            }
        }
        if cost > Money::ZERO {
            self.ledger.inner.dirty.notify_one();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut accounts = self.ledger.lock();
        for (key, worst) in &self.held {
            if let Some(a) = accounts.get_mut(key) {
                a.reserved = Money::from_nanos(a.reserved.nanos() - worst.nanos());
            }
        }
    }
}

impl Ledger {
    /// A ledger writing to `db`, its leases held as `holder` (this instance).
    pub fn new(db: Db, holder: String, settings: LedgerSettings) -> Ledger {
        Ledger {
            inner: Arc::new(Inner {
                db,
                holder,
                settings,
                accounts: Mutex::new(HashMap::new()),
                dirty: Notify::new(),
                refusals: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Account>> {
        // A panic while holding the lock leaves plain numbers behind.
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.settings.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Set aside `worst` in each of `budgets` (those that apply to the
    /// call), or refuse when a hard one has no room for it.
    pub async fn reserve(
        &self,
        budgets: &[Arc<Budget>],
        worst: Money,
    ) -> Result<Reservation, ReserveError> {
        let mut reservation = Reservation {
            ledger: self.clone(),
            held: Vec::with_capacity(budgets.len()),
            settled: false,
        };
        for budget in budgets {
            let now = now_ms();
            let key = Key {
                budget_id: budget.id.clone(),
                period_start: budget.period.bounds(now).0,
            };
            if !budget.hard {
                self.account(&key, budget, now);
                reservation.held.push((key, Money::ZERO));
                continue;
            }
            // Dropping `reservation` on refusal releases what it holds.
            self.take(&key, budget, worst).await?;
            reservation.held.push((key, worst));
        }
        Ok(reservation)
    }

    /// Make sure the account exists (with the budget as configured now).
    fn account(&self, key: &Key, budget: &Arc<Budget>, now: i64) {
        account_in(&mut self.lock(), key, budget, now);
    }

    /// Reserve `worst` in one hard budget's account, growing its lease
    /// when it is short.
    async fn take(
        &self,
        key: &Key,
        budget: &Arc<Budget>,
        worst: Money,
    ) -> Result<(), ReserveError> {
        let ttl = self.ttl_ms();
        let gate = {
            let now = now_ms();
            let mut accounts = self.lock();
            let a = account_in(&mut accounts, key, budget, now);
            if a.can_take(worst, now, ttl) {
                a.reserved = a.reserved.saturating_add(worst);
                a.last_active = now;
                return Ok(());
            }
            a.granting.clone()
        };
        let _one_grant = gate.lock().await;
        // Another call may have grown the lease meanwhile.
        let shortfall = {
            let now = now_ms();
            let mut accounts = self.lock();
            let a = account_in(&mut accounts, key, budget, now);
            if a.can_take(worst, now, ttl) {
                a.reserved = a.reserved.saturating_add(worst);
                a.last_active = now;
                return Ok(());
            }
            Money::from_nanos((worst.nanos() - a.available()).max(0))
        };
        self.grant(key, budget, shortfall, worst).await
    }

    /// Ask the database for at least `shortfall` more lease (and a renewed
    /// one), then reserve `worst`.
    async fn grant(
        &self,
        key: &Key,
        budget: &Arc<Budget>,
        shortfall: Money,
        worst: Money,
    ) -> Result<(), ReserveError> {
        let now = now_ms();
        let expires_at = now.saturating_add(self.ttl_ms());
        let mut tx = self
            .inner
            .db
            .tenant_serialised(&budget.org_id, &budget.id)
            .await?;
        let spend = store::period_spend(&mut tx, &budget.id, key.period_start).await?;
        let leases = store::leases(
            &mut tx,
            &budget.id,
            key.period_start,
            &self.inner.holder,
            now,
        )
        .await?;
        let room = budget.limit.nanos()
            - spend.spent.nanos()
            - leases.others.nanos()
            - leases.mine.nanos();
        if room < shortfall.nanos() {
            tx.rollback().await?;
            let mut accounts = self.lock();
            let remaining = accounts.get_mut(key).map_or(room.max(0), |a| {
                a.room_outside = Money::from_nanos(room.max(0));
                // What the refusal can see: the room outside every lease
                // plus what this instance's lease has free.
                room.max(0) + a.available().max(0)
            });
            let org = metrics::org_label().then(|| budget.org_id.clone());
            *self
                .inner
                .refusals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry((org, budget.scope.as_str()))
                .or_default() += 1;
            return Err(Refused {
                budget_id: budget.id.clone(),
                scope: budget.scope.as_str(),
                period: budget.period.as_str(),
                limit: budget.limit.usd(),
                remaining: Money::from_nanos(remaining).usd(),
                worst: worst.usd(),
            }
            .into());
        }
        let grant = shortfall.nanos().max(room / GRANT_SHARE).min(room);
        store::extend_lease(
            &mut tx,
            &budget.org_id,
            &budget.id,
            key.period_start,
            &self.inner.holder,
            Money::from_nanos(grant),
            expires_at,
        )
        .await?;
        tx.commit().await?;
        let mut accounts = self.lock();
        let a = account_in(&mut accounts, key, budget, now);
        if leases.mine.nanos() == 0 && a.lease.nanos() > 0 {
            // Our lapsed lease was deleted: what we thought we held is gone.
            a.lease = Money::ZERO;
        }
        a.lease = a.lease.saturating_add(Money::from_nanos(grant));
        a.expires_at = expires_at;
        a.room_outside = Money::from_nanos(room - grant);
        a.reserved = a.reserved.saturating_add(worst);
        a.last_active = now;
        Ok(())
    }

    /// The least room any of `budgets` (those hard ones that apply to a
    /// call) has left as this instance last saw it, for routers; `None`
    /// when no hard budget applies.
    pub fn remaining(&self, budgets: &[Arc<Budget>]) -> Option<Money> {
        if !budgets.iter().any(|b| b.hard) {
            return None;
        }
        let now = now_ms();
        let accounts = self.lock();
        budgets
            .iter()
            .filter(|b| b.hard)
            .map(|b| {
                let key = Key {
                    budget_id: b.id.clone(),
                    period_start: b.period.bounds(now).0,
                };
                accounts.get(&key).map_or(b.limit, |a| {
                    Money::from_nanos(a.room_outside.nanos() + a.available().max(0))
                })
            })
            .min()
    }

    /// Append this instance's budget families in the Prometheus text
    /// format: refusals by scope, and (when series carry the organization)
    /// each hard budget's room left as this instance sees it.
    pub fn render_prometheus(&self, out: &mut String) {
        let refusals: Vec<((Option<String>, &'static str), u64)> = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        family(
            out,
            "vel_budget_refusals_total",
            "counter",
            "Provider calls refused because they could pass a hard budget, by the budget's scope.",
        );
        for ((org, scope), n) in refusals {
            out.push_str("vel_budget_refusals_total{");
            if let Some(org) = org {
                out.push_str("org_id=\"");
                escape_label(&org, out);
                out.push_str("\",");
            }
            let _ = writeln!(out, "scope=\"{scope}\"}} {n}");
        }
        if !metrics::org_label() {
            return;
        }
        let mut rows: Vec<(Arc<Budget>, Money)> = {
            let accounts = self.lock();
            accounts
                .values()
                .filter(|a| a.budget.hard)
                .map(|a| {
                    let left = a.room_outside.nanos() + a.available().max(0);
                    (a.budget.clone(), Money::from_nanos(left))
                })
                .collect()
        };
        rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        family(
            out,
            "vel_budget_remaining_usd",
            "gauge",
            "Room left in each hard budget's current period, as this instance last saw it.",
        );
        for (b, left) in rows {
            out.push_str("vel_budget_remaining_usd{org_id=\"");
            escape_label(&b.org_id, out);
            out.push_str("\",budget_id=\"");
            escape_label(&b.id, out);
            let _ = writeln!(
                out,
                "\",scope=\"{}\",period=\"{}\"}} {left}",
                b.scope.as_str(),
                b.period.as_str()
            );
        }
    }

    /// Write settled spend, renew and hand back leases, raise alerts: every
    /// [`LedgerSettings::flush_every`] and whenever a settlement asks,
    /// until the process ends.
    pub fn start(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = this.inner.dirty.notified() => {}
                    _ = tokio::time::sleep(this.inner.settings.flush_every) => {}
                }
                if let Err(e) = this.flush().await {
                    tracing::warn!(error = %e, "budget spend could not be written; retrying");
                }
                // Settlements in the meantime wait for the next round.
                tokio::time::sleep(this.inner.settings.flush_every / 4).await;
            }
        });
    }

    /// One round of writing (see [`Ledger::start`]); public for tests that
    /// need the spend written now.
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let ttl = self.ttl_ms();
        let idle_ms = i64::try_from(self.inner.settings.idle_return.as_millis()).unwrap_or(0);
        // What to write, per account: (key, budget, spend, lease handed
        // back). The part handed back leaves the local lease at once, so no
        // call can reserve it while it is being returned.
        let work: Vec<(Key, Arc<Budget>, Money, Money)> = {
            let mut accounts = self.lock();
            accounts.retain(|key, a| {
                let (_, end) = a.budget.period.bounds(key.period_start);
                let busy =
                    a.lease > Money::ZERO || a.reserved > Money::ZERO || a.unflushed > Money::ZERO;
                busy || (now < end && now - a.last_active < ttl)
            });
            accounts
                .iter_mut()
                .filter_map(|(key, a)| {
                    let idle = a.reserved == Money::ZERO && now - a.last_active >= idle_ms;
                    let give_back = if idle {
                        Money::from_nanos(a.available().max(0))
                    } else {
                        Money::ZERO
                    };
                    let renew = a.lease > Money::ZERO && a.expires_at - now < ttl / 2;
                    if a.unflushed == Money::ZERO && give_back == Money::ZERO && !renew {
                        return None;
                    }
                    a.lease = Money::from_nanos(a.lease.nanos() - give_back.nanos());
                    Some((key.clone(), a.budget.clone(), a.unflushed, give_back))
                })
                .collect()
        };
        let mut first_error = None;
        for (key, budget, spent, give_back) in work {
            if let Err(e) = self.write(&key, &budget, spent, give_back, now).await {
                // Still held in the database: hand it back another time.
                if let Some(a) = self.lock().get_mut(&key) {
                    a.lease = a.lease.saturating_add(give_back);
                }
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Write one account's settled spend and lease change in one
    /// transaction serialised with the budget's grants.
    async fn write(
        &self,
        key: &Key,
        budget: &Budget,
        spent: Money,
        give_back: Money,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let expires_at = now.saturating_add(self.ttl_ms());
        let mut tx = self
            .inner
            .db
            .tenant_serialised(&budget.org_id, &budget.id)
            .await?;
        let mut raised = Vec::new();
        if spent > Money::ZERO {
            let after =
                store::add_spend(&mut tx, &budget.org_id, &budget.id, key.period_start, spent)
                    .await?;
            let reached = i64::try_from(budget.thresholds_reached(after.spent)).unwrap_or(0);
            if reached > after.alerted
                && store::raise_alerted(
                    &mut tx,
                    &budget.id,
                    key.period_start,
                    after.alerted,
                    reached,
                )
                .await?
            {
                for i in after.alerted..reached {
                    let fraction = budget.alert_at[usize::try_from(i).unwrap_or(0)];
                    raised.push(fraction);
                    alert(
                        &mut tx,
                        budget,
                        key.period_start,
                        fraction,
                        after.spent,
                        now,
                    )
                    .await?;
                }
            }
        }
        let had_lease =
            give_back > Money::ZERO || self.lock().get(key).is_some_and(|a| a.lease > Money::ZERO);
        let kept = if had_lease {
            store::shrink_lease(
                &mut tx,
                &budget.id,
                key.period_start,
                &self.inner.holder,
                spent.saturating_add(give_back),
                expires_at,
            )
            .await?
        } else {
            false
        };
        tx.commit().await?;
        for fraction in raised {
            metrics::count_alert(&budget.org_id, "budget_threshold");
            tracing::warn!(
                org_id = %budget.org_id,
                budget_id = %budget.id,
                scope = budget.scope.as_str(),
                threshold = fraction,
                "budget threshold reached"
            );
        }
        let mut accounts = self.lock();
        if let Some(a) = accounts.get_mut(key) {
            a.unflushed = Money::from_nanos(a.unflushed.nanos() - spent.nanos());
            a.lease = if kept {
                Money::from_nanos((a.lease.nanos() - spent.nanos()).max(0))
            } else {
                Money::ZERO
            };
            if kept {
                a.expires_at = expires_at;
            }
        }
        Ok(())
    }
}

/// The account of `key` among `accounts`, created when missing, with the
/// budget as configured now.
fn account_in<'a>(
    accounts: &'a mut HashMap<Key, Account>,
    key: &Key,
    budget: &Arc<Budget>,
    now: i64,
) -> &'a mut Account {
    let a = accounts
        .entry(key.clone())
        .or_insert_with(|| Account::new(budget.clone(), now));
    if a.budget != *budget {
        a.budget = budget.clone();
    }
    a
}

/// Record that `budget`'s period passed `fraction` of its limit: an alert
/// and an audit entry, in the transaction that recorded the spend.
async fn alert(
    conn: &mut sqlx::AnyConnection,
    budget: &Budget,
    period_start: i64,
    fraction: f64,
    spent: Money,
    now: i64,
) -> Result<(), sqlx::Error> {
    let percent = (fraction * 100.0).round();
    let message = format!(
        "the {} budget `{}` reached {percent} % of its {} limit of ${} (spent ${})",
        budget.scope.as_str(),
        budget.id,
        budget.period.as_str(),
        budget.limit.usd(),
        spent.usd(),
    );
    let details = audit::Payload::from(json!({
        "budget_id": budget.id,
        "scope": budget.scope.as_str(),
        "subject_id": budget.subject_id,
        "period": budget.period.as_str(),
        "period_start": crate::store::to_rfc3339(period_start),
        "threshold": fraction,
        "hard": budget.hard,
    }))
    .usd("limit_usd", Some(budget.limit))
    .usd("spent_usd", Some(spent));
    crate::webhooks::events::budget_threshold(conn, budget, period_start, fraction, spent).await?;
    crate::alerts::raise(
        conn,
        NewAlert {
            org_id: &budget.org_id,
            kind: "budget_threshold",
            subject: &budget.id,
            message,
            details,
        },
        "budget_threshold_reached",
        now,
    )
    .await
}
