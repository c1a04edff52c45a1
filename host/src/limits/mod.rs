//! Rate limits per organization, user and API key: requests per minute and
//! per hour (every authenticated request, checked by the access guard),
//! tasks per hour (task submissions and gateway requests) and tokens per
//! minute, held across instances by [`counter::Counter`]. A request over
//! any limit that applies to it gets 429 with `Retry-After`.
//!
//! Tokens per minute work as OpenAI's do: a task submission or gateway
//! request is refused while the current minute's tokens are used up, and
//! the tokens a run actually used (prompt and completion of every attempt,
//! as the providers report them) are counted when it ends
//! ([`RateLimiter::charge_tokens`], called by the dispatcher). Nothing is
//! reserved at admission, so the requests in flight when a window fills may
//! take it past the limit by their own tokens (on all instances together);
//! the window then stays shut until it resets.

pub mod counter;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use self::counter::{Admitted, Counter, Full};
use crate::auth::Principal;
use crate::expiring_cache::ExpiringCache;
use crate::store::Db;
use crate::store::rate_limit_rules::{self as store, RuleRow};

/// How long an organization's rules are trusted without reading them again
/// (a change applies at once on the instance that made it).
pub const RULES_TTL: Duration = Duration::from_secs(2);

/// A kind of limit, with its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Authenticated requests per minute.
    RequestsPerMinute,
    /// Authenticated requests per hour.
    RequestsPerHour,
    /// Tasks submitted per hour.
    TasksPerHour,
    /// Tokens (prompt and completion) used per minute.
    TokensPerMinute,
}

impl Kind {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "requests_per_minute",
            Kind::RequestsPerHour => "requests_per_hour",
            Kind::TasksPerHour => "tasks_per_hour",
            Kind::TokensPerMinute => "tokens_per_minute",
        }
    }

    /// The window's length, ms.
    pub fn window_ms(self) -> i64 {
        match self {
            Kind::RequestsPerMinute | Kind::TokensPerMinute => 60_000,
            Kind::RequestsPerHour | Kind::TasksPerHour => 3_600_000,
        }
    }

    /// Start (unix ms) of the window `now` falls in.
    pub fn window_start(self, now: i64) -> i64 {
        now - now.rem_euclid(self.window_ms())
    }
}

/// One subject's limits; `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Authenticated requests per minute (1–1,000,000).
    #[serde(default)]
    pub requests_per_minute: Option<i64>,
    /// Authenticated requests per hour (1–100,000,000).
    #[serde(default)]
    pub requests_per_hour: Option<i64>,
    /// Tasks submitted per hour, REST and gateway (1–100,000,000).
    #[serde(default)]
    pub tasks_per_hour: Option<i64>,
    /// Unfinished tasks and workflows submitted through the REST API at
    /// once (1–100,000; for a user, at most the operator's
    /// `VEL_MAX_UNFINISHED_TASKS`). Not for API keys: tasks are counted by
    /// user.
    #[serde(default)]
    pub concurrent_tasks: Option<i64>,
    /// Tokens (prompt and completion, as the providers report them) used
    /// per minute by tasks and gateway requests (1–1,000,000,000). A
    /// request is refused while the minute's tokens are used up; a run's
    /// tokens are counted when it ends.
    #[serde(default)]
    pub tokens_per_minute: Option<i64>,
}

impl Limits {
    fn of(row: &RuleRow) -> Limits {
        Limits {
            requests_per_minute: row.requests_per_minute,
            requests_per_hour: row.requests_per_hour,
            tasks_per_hour: row.tasks_per_hour,
            concurrent_tasks: row.concurrent_tasks,
            tokens_per_minute: row.tokens_per_minute,
        }
    }

    /// The limit of `kind`.
    pub fn get(&self, kind: Kind) -> Option<i64> {
        match kind {
            Kind::RequestsPerMinute => self.requests_per_minute,
            Kind::RequestsPerHour => self.requests_per_hour,
            Kind::TasksPerHour => self.tasks_per_hour,
            Kind::TokensPerMinute => self.tokens_per_minute,
        }
    }
}

/// Whose limits: the organization, a user in it, or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole organization.
    Organization,
    /// One user in the organization (their tokens and keys together).
    User,
    /// One API key.
    ApiKey,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Organization => "organization",
            Scope::User => "user",
            Scope::ApiKey => "api_key",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "organization" => Scope::Organization,
            "user" => Scope::User,
            "api_key" => Scope::ApiKey,
            _ => return None,
        })
    }
}

/// One subject's rule: its limits and the name its windows are counted
/// under (made once, when the rules are read).
#[derive(Debug, Clone)]
struct Rule {
    limits: Limits,
    subject: Arc<str>,
}

/// An organization's rules by scope, looked up by `&str`.
#[derive(Debug, Default)]
pub struct OrgRules {
    organization: Option<Rule>,
    users: HashMap<String, Rule>,
    keys: HashMap<String, Rule>,
}

/// A limit that applies to a request: whose, which subject key counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whose limit.
    pub scope: Scope,
    /// The counter's subject (`o:<org>`, `u:<org>:<user>`, `k:<key>`).
    pub subject: Arc<str>,
    /// Its limits.
    pub limits: Limits,
}

/// The limits that apply to one request: the organization's, the user's
/// (or the operator's default), the API key's; without an allocation.
pub type AppliedSet = [Option<Applied>; 3];

/// The counters' subject of `scope`'s `id` in `org_id`.
fn subject_of(scope: Scope, org_id: &str, id: &str) -> Arc<str> {
    match scope {
        Scope::Organization => format!("o:{org_id}"),
        Scope::User => format!("u:{org_id}:{id}"),
        Scope::ApiKey => format!("k:{id}"),
    }
    .into()
}

/// Whole seconds from now until `at` (unix ms), rounded up: what
/// `Retry-After` and the reset headers say.
pub fn seconds_until(at: i64) -> i64 {
    let wait_ms = (at - crate::store::now_ms()).max(0);
    (wait_ms + 999) / 1000
}

/// The tightest admission of a request, for the response's headers.
pub type Tightest = Option<Admitted>;

/// A request over one of its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded: {} {} of {limit}", .scope.as_str(), .kind.as_str())]
pub struct Exceeded {
    /// Whose limit.
    pub scope: Scope,
    /// Which.
    pub kind: Kind,
    /// The limit.
    pub limit: i64,
    /// Unix ms the window ends.
    pub resets_at: i64,
}

/// Why a check could not answer or refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over a limit.
    #[error(transparent)]
    Exceeded(#[from] Exceeded),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// The rate limiter: rules (cached per organization) and the counters.
#[derive(Debug)]
pub struct RateLimiter {
    db: Db,
    rules: ExpiringCache<Arc<OrgRules>>,
    counter: Counter,
    /// Requests per hour for a user without a rule of their own
    /// (`VEL_DEFAULT_USER_REQUESTS_PER_HOUR`).
    default_user_per_hour: Option<i64>,
}

impl RateLimiter {
    /// A limiter on `db` with the operator's default per-user hourly limit.
    pub fn new(db: Db, default_user_per_hour: Option<i64>) -> RateLimiter {
        RateLimiter {
            counter: Counter::new(db.clone()),
            db,
            rules: ExpiringCache::new(RULES_TTL),
            default_user_per_hour,
        }
    }

    /// Start handing back idle slices.
    pub fn start(&self) {
        self.counter.start();
    }

    /// Forget an organization's cached rules (they changed).
    pub fn forget(&self, org_id: &str) {
        self.rules.forget(|key, _| key == org_id);
    }

    async fn rules(&self, org_id: &str) -> Result<Arc<OrgRules>, sqlx::Error> {
        self.rules
            .get_or_load(org_id, async || {
                let mut tx = self.db.tenant_read(org_id).await?;
                let rows = store::of_org(&mut tx, org_id).await?;
                tx.commit().await?;
                let mut rules = OrgRules::default();
                for row in &rows {
                    let Some(scope) = Scope::parse(&row.scope) else {
                        continue;
                    };
                    let rule = Rule {
                        limits: Limits::of(row),
                        subject: subject_of(scope, org_id, &row.subject_id),
                    };
                    match scope {
                        Scope::Organization => rules.organization = Some(rule),
                        Scope::User => {
                            rules.users.insert(row.subject_id.clone(), rule);
                        }
                        Scope::ApiKey => {
                            rules.keys.insert(row.subject_id.clone(), rule);
                        }
                    }
                }
                Ok(Arc::new(rules))
            })
            .await
    }

    /// The limits that apply to the requests of `user_id` (if any) with
    /// `api_key_id` (if any) in `org_id`: the organization's, the user's
    /// (or the operator's default), and the API key's.
    fn applied_in(
        &self,
        rules: &OrgRules,
        org_id: &str,
        user_id: Option<&str>,
        api_key_id: Option<&str>,
    ) -> AppliedSet {
        let applied = |scope: Scope, rule: &Rule| Applied {
            scope,
            subject: rule.subject.clone(),
            limits: rule.limits,
        };
        let organization = rules
            .organization
            .as_ref()
            .map(|r| applied(Scope::Organization, r));
        let user = user_id.and_then(|id| match rules.users.get(id) {
            Some(rule) => Some(applied(Scope::User, rule)),
            None => self.default_user_per_hour.map(|per_hour| Applied {
                scope: Scope::User,
                subject: subject_of(Scope::User, org_id, id),
                limits: Limits {
                    requests_per_hour: Some(per_hour),
                    ..Limits::default()
                },
            }),
        });
        let key = api_key_id
            .and_then(|id| rules.keys.get(id))
            .map(|r| applied(Scope::ApiKey, r));
        [organization, user, key]
    }

    /// The limits that apply to `p`'s requests: the organization's, the
    /// user's (or the operator's default), and the API key's.
    pub async fn applied(&self, p: &Principal) -> Result<AppliedSet, sqlx::Error> {
        let rules = self.rules(&p.org_id).await?;
        Ok(self.applied_in(&rules, &p.org_id, Some(&p.user_id), p.api_key_id()))
    }

    /// Count one authenticated request of `p` against every request limit
    /// that applies; the tightest admission, or the limit it exceeds.
    pub async fn admit_request(&self, p: &Principal) -> Result<Tightest, LimitError> {
        let applied = self.applied(p).await?;
        self.admit(&applied, &[Kind::RequestsPerMinute, Kind::RequestsPerHour])
            .await
    }

    /// The caps on `p`'s unfinished tasks: their own and their
    /// organization's (`concurrent_tasks`), where set.
    pub async fn task_caps(&self, p: &Principal) -> Result<TaskCaps, sqlx::Error> {
        let rules = self.rules(&p.org_id).await?;
        Ok(TaskCaps {
            user: rules
                .users
                .get(&p.user_id)
                .and_then(|r| r.limits.concurrent_tasks),
            organization: rules
                .organization
                .as_ref()
                .and_then(|r| r.limits.concurrent_tasks),
        })
    }

    /// Admit one task submission (or gateway request) of `p`: refused
    /// while a token limit's current minute is used up (counting nothing:
    /// its tokens are counted when it ends), else counted against every
    /// task limit. The tightest token limit, for the `x-ratelimit-*-tokens`
    /// headers.
    pub async fn admit_task(&self, p: &Principal) -> Result<Tightest, LimitError> {
        let applied = self.applied(p).await?;
        let now = crate::store::now_ms();
        let mut tokens: Tightest = None;
        for a in applied.iter().flatten() {
            let Some(limit) = a.limits.tokens_per_minute else {
                continue;
            };
            let kind = Kind::TokensPerMinute;
            match self.counter.room(&a.subject, kind, limit, now).await? {
                Ok(room) => {
                    if tokens.is_none_or(|t| room.remaining < t.remaining) {
                        tokens = Some(room);
                    }
                }
                Err(Full { limit, resets_at }) => {
                    return Err(Exceeded {
                        scope: a.scope,
                        kind,
                        limit,
                        resets_at,
                    }
                    .into());
                }
            }
        }
        self.admit(&applied, &[Kind::TasksPerHour]).await?;
        Ok(tokens)
    }

    /// What is left of the tightest token limit of `p`'s requests as this
    /// instance last saw it (after [`RateLimiter::admit_task`], without a
    /// query unless the rules are to be read again); `None` without one.
    pub async fn tokens_left(&self, p: &Principal) -> Result<Tightest, sqlx::Error> {
        let applied = self.applied(p).await?;
        Ok(applied
            .iter()
            .flatten()
            .filter_map(|a| {
                let limit = a.limits.tokens_per_minute?;
                self.counter.peek(&a.subject, Kind::TokensPerMinute, limit)
            })
            .min_by_key(|t| t.remaining))
    }

    /// Count `tokens` used by a run of `user_id` (with `api_key_id`) in
    /// `org_id` against every token limit that applies (past the limit if
    /// need be: they were used). Without a token limit, no query (the
    /// rules are cached).
    pub async fn charge_tokens(
        &self,
        (org_id, user_id, api_key_id): (&str, Option<&str>, Option<&str>),
        tokens: i64,
    ) -> Result<(), sqlx::Error> {
        if tokens <= 0 {
            return Ok(());
        }
        let rules = self.rules(org_id).await?;
        for a in self
            .applied_in(&rules, org_id, user_id, api_key_id)
            .iter()
            .flatten()
        {
            if a.limits.tokens_per_minute.is_some() {
                self.counter
                    .charge(&a.subject, Kind::TokensPerMinute, tokens)
                    .await?;
            }
        }
        Ok(())
    }

    async fn admit(&self, applied: &AppliedSet, kinds: &[Kind]) -> Result<Tightest, LimitError> {
        // At most one taken per limit and kind: 3 limits, 2 kinds.
        let mut taken: [Option<(&str, Kind)>; 6] = [None; 6];
        let mut n_taken = 0;
        let mut tightest: Tightest = None;
        let now = crate::store::now_ms();
        for a in applied.iter().flatten() {
            for &kind in kinds {
                let Some(limit) = a.limits.get(kind) else {
                    continue;
                };
                match self.counter.admit(&a.subject, kind, limit, now).await? {
                    Ok(admitted) => {
                        if let Some(slot) = taken.get_mut(n_taken) {
                            *slot = Some((&*a.subject, kind));
                            n_taken += 1;
                        }
                        if tightest.is_none_or(|t| admitted.remaining < t.remaining) {
                            tightest = Some(admitted);
                        }
                    }
                    Err(Full { limit, resets_at }) => {
                        for (subject, kind) in taken.into_iter().flatten() {
                            self.counter.refund(subject, kind, now);
                        }
                        return Err(Exceeded {
                            scope: a.scope,
                            kind,
                            limit,
                            resets_at,
                        }
                        .into());
                    }
                }
            }
        }
        Ok(tightest)
    }

    /// Counts of `p`'s current windows: for each limit that applies, how
    /// many were admitted across instances (slices other instances hold
    /// unused count as admitted until handed back).
    pub async fn usage(&self, p: &Principal) -> Result<Vec<Usage>, sqlx::Error> {
        let applied = self.applied(p).await?;
        let now = crate::store::now_ms();
        let mut out = Vec::new();
        let mut tx = self.db.platform_read().await?;
        for a in applied.iter().flatten() {
            for kind in [
                Kind::RequestsPerMinute,
                Kind::RequestsPerHour,
                Kind::TasksPerHour,
                Kind::TokensPerMinute,
            ] {
                let Some(limit) = a.limits.get(kind) else {
                    continue;
                };
                let start = kind.window_start(now);
                let counted = store::granted(&mut tx, (&*a.subject, kind.as_str(), start)).await?;
                let used = (counted - self.counter.unused(&a.subject, kind)).max(0);
                out.push(Usage {
                    scope: a.scope,
                    kind: kind.as_str(),
                    limit,
                    used,
                    remaining: (limit - used).max(0),
                    resets_at: crate::store::to_rfc3339(start + kind.window_ms()),
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Caps on unfinished work at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCaps {
    /// The user's own.
    pub user: Option<i64>,
    /// Their organization's, all users together.
    pub organization: Option<i64>,
}

impl TaskCaps {
    /// The user's cap under the operator's `max_unfinished`.
    pub fn user_limit(&self, max_unfinished: u32) -> u32 {
        self.user
            .and_then(|c| u32::try_from(c).ok())
            .map_or(max_unfinished, |c| c.min(max_unfinished))
    }
}

/// One limit's current window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    /// Whose limit.
    pub scope: Scope,
    /// `requests_per_minute`, `requests_per_hour`, `tasks_per_hour` or
    /// `tokens_per_minute`.
    pub kind: &'static str,
    /// The limit.
    pub limit: i64,
    /// Admitted (tokens: used) in the current window.
    pub used: i64,
    /// Left in the current window.
    pub remaining: i64,
    /// RFC 3339 time the window ends.
    pub resets_at: String,
}
