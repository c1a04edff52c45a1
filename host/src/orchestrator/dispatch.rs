//! One request, from plan to answer: the router plugin orders the
//! organization's candidates, then provider plugins are called in plan
//! order — retried with back-off (honouring `Retry-After`), skipped while
//! their circuit is open, fallen back from on retryable errors, abandoned
//! on terminal ones. Every attempt is measured and priced.
//! The loop over the plan's steps is [`fallback`], which reaches providers
//! through a [`ProviderCaller`]; here that is the plugin runtime.
//!
//! This is shared by queued tasks and by the OpenAI-compatible gateway;
//! it touches no table itself; callers record what it reports.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;
use vel_runtime::types::{
    Attempt as PlannedStep, Candidate, CircuitState, CompletionRequest, CompletionResponse,
    Features, Message, Plan, Preference, Priority, ProviderError, RequestNeeds, ResponseFormat,
    Role, RouteError, TaskInfo, TaskType, ToolCallDelta, ToolChoice, ToolDefinition, feature_names,
    required_features,
};
use vel_runtime::{Delta, PluginError, PluginKind};

use super::breaker::BreakerConfig;
use super::catalog::{self, Catalog, Target};
use super::cost::Prices;
use super::fallback::{self, BUSY, CallOutcome, Limits, ProviderCaller, Step};
use super::observed::{BreakerKey, Observed, breaker_key};
use super::retry::{FailureClass, RetryPolicy};
use super::signals::{Signal, Signals};
use super::state::AttemptOutcome;
use super::tool_loop::CutOff;
use super::tools::ToolServers;
use crate::agents::named_by;
use crate::budgets::ledger::{DEFAULT_RESERVED_OUTPUT_TOKENS, Ledger, LedgerSettings, Reservation};
use crate::budgets::{Budget, Spender};
use crate::expiring_cache::ExpiringCache;
use crate::limits::RateLimiter;
use crate::money::Money;
use crate::plugins::Plugins;
use crate::plugins::provider_error;
use crate::plugins::registry::Deployed;
use crate::plugins::stats::error_kind as plugin_error_kind;
use crate::secrets::MasterKey;
use crate::store::{Db, now_ms, tasks::Attempt};

mod embed;
pub use embed::{EmbedJob, Embedded, embedding_targets};

/// The router used when neither the agent nor the organization names one.
pub const DEFAULT_ROUTER: &str = "default-router";

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Task id (or a request id for the gateway).
    pub id: String,
    /// Organization.
    pub org_id: String,
    /// Kind of work.
    pub task_type: TaskType,
    /// Urgency.
    pub priority: Priority,
    /// `model` or `integration/model` the caller asked for.
    pub requested_model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token cap.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Router plugin to ask first (the agent's policy); when absent, the
    /// organization's policy, then [`DEFAULT_ROUTER`].
    pub router: Option<String>,
    /// The agent's provider: only the integrations it names are candidates,
    /// unless `requested_model` names an integration itself.
    pub provider: Option<String>,
    /// Cost / latency / balanced.
    pub prefer: Preference,
    /// JSON object passed to the router and providers.
    pub metadata: serde_json::Value,
    /// Attempt numbers start after this (a rescued task keeps its history).
    pub first_attempt_seq: i64,
    /// What a streamed run does when an attempt fails after sending text,
    /// when the request chose; else the organization's setting, else
    /// [`StreamFailover::default`].
    pub stream_failover: Option<StreamFailover>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool to call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tools may be called in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// The form of the answer.
    pub response_format: ResponseFormat,
    /// Reproducible sampling (best effort).
    pub seed: Option<i64>,
    /// Return token log probabilities.
    pub logprobs: bool,
    /// With `logprobs`: this many most likely tokens per position.
    pub top_logprobs: Option<u8>,
    /// Whose budgets the run's provider calls spend.
    pub spender: Spender,
}

impl Job {
    /// The completion request for `model` with `messages` and `metadata`.
    fn completion_request(
        &self,
        model: &str,
        messages: Vec<Message>,
        metadata: String,
    ) -> CompletionRequest {
        CompletionRequest {
            model: model.to_string(),
            messages,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            task_type: self.task_type,
            metadata,
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            parallel_tool_calls: self.parallel_tool_calls,
            response_format: self.response_format.clone(),
            seed: self.seed,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
        }
    }

    /// What answering the job needs of a provider (tools, a JSON output
    /// mode, logprobs): only candidates with all of it are offered.
    pub fn required_features(&self) -> Features {
        required_features(RequestNeeds {
            messages: &self.messages,
            tools: !self.tools.is_empty(),
            tool_choice: self.tool_choice.is_some(),
            response_format: &self.response_format,
            logprobs: self.logprobs || self.top_logprobs.is_some(),
        })
    }
}

/// What a streamed run does when an attempt fails after some of its text
/// was streamed (a stream cannot take text back). Before any text, a
/// failed attempt always falls back as a plain one does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StreamFailover {
    /// End the run with `stream_interrupted`; the text sent is its partial
    /// output. Nothing is ever appended to it.
    #[default]
    Fail,
    /// Ask the next attempt to continue the text sent, given as the
    /// assistant's partial turn, and stream only the continuation; the
    /// answer is the text sent followed by the continuation.
    Continue,
}

impl StreamFailover {
    /// The mode named `name` (`fail`, `continue`).
    pub fn parse(name: &str) -> Option<StreamFailover> {
        match name {
            "fail" => Some(StreamFailover::Fail),
            "continue" => Some(StreamFailover::Continue),
            _ => None,
        }
    }

    /// Its name in headers, settings and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFailover::Fail => "fail",
            StreamFailover::Continue => "continue",
        }
    }

    /// The mode a run uses: the request's choice, else the organization's
    /// setting, else the default (`fail`).
    pub fn resolve(
        requested: Option<StreamFailover>,
        organization: Option<StreamFailover>,
    ) -> StreamFailover {
        requested.or(organization).unwrap_or_default()
    }
}

/// What a running job reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The plan the router made.
    Planned {
        /// Router that planned.
        router: String,
        /// Its version.
        router_version: String,
        /// `integration/model`, in order.
        attempts: Vec<String>,
        /// The router's explanation.
        reason: String,
        /// Why the router asked first did not plan, when another (the
        /// default router) did.
        fallback: Option<String>,
    },
    /// A provider call is starting.
    AttemptStarted {
        /// Attempt number.
        seq: i64,
        /// Integration name.
        provider: String,
        /// Model.
        model: String,
    },
    /// A provider call ended (or was skipped).
    AttemptFinished(Attempt),
    /// Streamed text of attempt `seq`.
    Delta {
        /// Attempt number.
        seq: i64,
        /// The text.
        text: String,
    },
    /// A streamed piece of a tool call of attempt `seq`.
    ToolCall {
        /// Attempt number.
        seq: i64,
        /// The piece.
        delta: ToolCallDelta,
    },
    /// The tool loop is calling a tool (a `tool_call` event).
    ToolStarted(super::tool_loop::ToolStarted),
    /// A tool call of the tool loop ended (a `tool_result` event).
    ToolFinished(super::tool_loop::ToolFinished),
}

/// A successful run.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The provider's answer.
    pub response: CompletionResponse,
    /// Integration name that answered.
    pub provider: String,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
    /// The router that planned the run.
    pub router: Option<RouterTrace>,
}

/// Which router planned a run, and whether it was a fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterTrace {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Why the router asked first did not plan, when another did.
    pub fallback: Option<String>,
}

impl RouterTrace {
    /// `name@version`, followed by `; fallback` when it was one (the
    /// gateway's `x-vel-router` header).
    pub fn header_value(&self) -> String {
        match self.fallback {
            Some(_) => format!("{}@{}; fallback", self.name, self.version),
            None => format!("{}@{}", self.name, self.version),
        }
    }
}

/// What kind of failure ended a run without an answer: the gateway's
/// error code and a failed task's error kind (`as_str`), and the one
/// thing the HTTP layer maps to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchKind {
    /// No integration could take the request (none active, or the
    /// caller's model names none).
    NoCandidate,
    /// Every routing policy failed to plan.
    RouterFailed,
    /// Every planned provider failed.
    AllAttemptsFailed,
    /// Every planned provider was at its share of the plugin instance pool.
    PluginBusy,
    /// The run took longer than its limit.
    DeadlineExceeded,
    /// The database could not answer.
    Storage,
    /// A provider refused the request as invalid (not retried).
    InvalidRequest,
    /// A provider refused the content (not retried).
    ContentFiltered,
    /// An attempt failed after some of its text was streamed, and the
    /// request's [`StreamFailover`] is `fail`.
    StreamInterrupted,
    /// Every planned call could pass a hard budget, so none was made.
    BudgetExceeded,
    /// Every provider that could serve is throttling (its answer was a 429,
    /// or its model rests after one) and nothing else failed: the caller
    /// may come back after [`DispatchError::retry_after`].
    RateLimited,
    /// An agent's model still asked for tools after its `max_tool_rounds`
    /// rounds of them (see [`super::tool_loop`]).
    ToolRoundsExceeded,
    /// A tool server of an agent's tool loop could not be listed or
    /// called (unreachable, timed out, broke the protocol, disabled):
    /// unlike a tool's own error, not something the model can act on.
    ToolServerFailed,
}

impl DispatchKind {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchKind::NoCandidate => "no_candidate",
            DispatchKind::RouterFailed => "router_failed",
            DispatchKind::AllAttemptsFailed => "all_attempts_failed",
            DispatchKind::PluginBusy => "plugin_busy",
            DispatchKind::DeadlineExceeded => "deadline_exceeded",
            DispatchKind::Storage => "storage",
            DispatchKind::InvalidRequest => "invalid_request",
            DispatchKind::ContentFiltered => "content_filtered",
            DispatchKind::StreamInterrupted => "stream_interrupted",
            DispatchKind::BudgetExceeded => "budget_exceeded",
            DispatchKind::RateLimited => "rate_limited",
            DispatchKind::ToolRoundsExceeded => "tool_rounds_exceeded",
            DispatchKind::ToolServerFailed => "tool_server_failed",
        }
    }

    /// The kind a terminal provider error (named by [`provider_error::kind`])
    /// ends the run with.
    pub fn terminal(provider_kind: &str) -> DispatchKind {
        if provider_kind == DispatchKind::ContentFiltered.as_str() {
            DispatchKind::ContentFiltered
        } else {
            DispatchKind::InvalidRequest
        }
    }
}

impl std::fmt::Display for DispatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run produced no answer.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DispatchError {
    /// What kind of failure.
    pub kind: DispatchKind,
    /// For people.
    pub message: String,
    /// What was tried.
    #[serde(skip)]
    pub attempts: Vec<Attempt>,
    /// [`DispatchKind::RateLimited`]: how long until the soonest throttled
    /// provider said it may be called again, when one said.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// Totals of a list of attempts: (input tokens, output tokens, cost); the
/// cost saturates rather than overflow.
pub fn totals(attempts: &[Attempt]) -> (i64, i64, Money) {
    attempts.iter().fold((0, 0, Money::ZERO), |(i, o, c), a| {
        (
            i + a.input_tokens,
            o + a.output_tokens,
            c.saturating_add(a.cost_nanos),
        )
    })
}

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Retries and back-off.
    pub retry: RetryPolicy,
    /// Breakers.
    pub breaker: BreakerConfig,
    /// Longest one run may take, every attempt, retry and fallback included.
    pub max_run: Duration,
    /// How budgets are leased and written.
    pub budgets: LedgerSettings,
}

/// Most steps of a plan that are tried; a router's plan is cut to this
/// after its repeated steps are dropped, so a plan cannot hold a worker
/// (or write attempt rows) without bound.
pub const MAX_PLAN_STEPS: usize = 16;

/// Plans and runs jobs; one per process, shared.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    plugins: Plugins,
    keys: Arc<MasterKey>,
    observed: Observed,
    ledger: Ledger,
    retry: RetryPolicy,
    max_run: Duration,
    /// Catalogues by organization.
    catalogs: ExpiringCache<Arc<Catalog>>,
    /// The organization's tool servers (MCP integrations).
    tools: ToolServers,
    /// Where the tokens of each run are counted (tokens per minute).
    limits: Arc<RateLimiter>,
    /// Audit writes of tool calls cut off by a cancellation.
    cut_off: CutOff,
}

/// How long a catalogue is reused without a change signal: changes made
/// through the API are seen at once (the handler forgets the catalogue here
/// and signals the other instances); this bound heals a missed signal.
pub const CATALOG_TTL: Duration = Duration::from_secs(10);

impl Dispatcher {
    /// A dispatcher over these plugins, keys and database, counting the
    /// tokens of its runs in `limits`.
    pub fn new(
        db: Db,
        plugins: Plugins,
        keys: Arc<MasterKey>,
        config: DispatchConfig,
        limits: Arc<RateLimiter>,
    ) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                limits,
                tools: ToolServers::new(db.clone(), plugins.clone(), keys.clone()),
                ledger: Ledger::new(db.clone(), db.origin().to_string(), config.budgets),
                db,
                plugins,
                keys,
                observed: Observed::new(config.breaker),
                retry: config.retry,
                max_run: config.max_run,
                catalogs: ExpiringCache::new(CATALOG_TTL),
                cut_off: CutOff::default(),
            }),
        }
    }

    /// The breakers and figures this process has gathered.
    pub fn observed(&self) -> &Observed {
        &self.inner.observed
    }

    /// Budget enforcement (its writer is started with the server).
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The plugins.
    pub fn plugins(&self) -> &Plugins {
        &self.inner.plugins
    }

    /// The organization's tool servers: listing and calling their tools.
    pub fn tools(&self) -> &ToolServers {
        &self.inner.tools
    }

    /// The audit writes of tool-loop calls cut off by a cancellation
    /// (what records a cancelled run settles them first).
    pub fn cut_off(&self) -> &CutOff {
        &self.inner.cut_off
    }

    /// The database (the tool loop's audit rows go there).
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The organization's catalogue: read from the database at most every
    /// [`CATALOG_TTL`], and again after [`Dispatcher::forget_catalog`].
    /// Concurrent misses wait for one read.
    pub async fn catalog(&self, org_id: &str) -> Result<Arc<Catalog>, DispatchError> {
        self.inner
            .catalogs
            .get_or_load(org_id, async || {
                Catalog::load(&self.inner.db, &self.inner.plugins, org_id)
                    .await
                    .map(Arc::new)
                    .map_err(|e| DispatchError {
                        kind: DispatchKind::Storage,
                        message: format!("could not read the integrations: {e}"),
                        attempts: Vec::new(),
                        retry_after: None,
                    })
            })
            .await
    }

    /// Forget the catalogues that changes announce, from this instance's
    /// handlers or, on PostgreSQL, from other instances.
    pub fn follow_changes(&self, signals: &Signals) {
        let mut rx = signals.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Signal::CatalogChanged(org_id)) => this.forget_catalog(&org_id),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        this.forget_all_catalogs();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Drop every cached catalogue: the live plugins changed.
    pub fn forget_all_catalogs(&self) {
        self.inner.catalogs.clear();
    }

    /// Drop the organization's cached catalogue: its integrations changed.
    pub fn forget_catalog(&self, org_id: &str) {
        self.inner.catalogs.forget(|org, _| org == org_id);
    }

    /// Plan `job` and call providers until one answers. With `stream`,
    /// providers stream and deltas are reported as [`Progress::Delta`].
    /// Dropping the future stops the call in flight and drops its upstream
    /// connection. The tokens of every attempt are counted against the
    /// spender's token limits before the answer is returned.
    pub async fn run(
        &self,
        job: &Job,
        stream: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> Result<Answer, DispatchError> {
        let result = self.plan_and_call(job, stream, progress).await;
        let attempts = match &result {
            Ok(answer) => &answer.attempts,
            Err(e) => &e.attempts,
        };
        self.charge_tokens(&job.org_id, &job.spender, attempts)
            .await;
        result
    }

    /// Count the tokens `attempts` read and wrote against the spender's
    /// token limits (a failure to count is logged, not the caller's).
    async fn charge_tokens(&self, org_id: &str, spender: &Spender, attempts: &[Attempt]) {
        let (input, output, _) = totals(attempts);
        let who = (
            org_id,
            spender.user_id.as_deref(),
            spender.api_key_id.as_deref(),
        );
        if let Err(e) = self.inner.limits.charge_tokens(who, input + output).await {
            tracing::warn!(error = %e, "counting tokens against the rate limits failed");
        }
    }

    async fn plan_and_call(
        &self,
        job: &Job,
        stream: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> Result<Answer, DispatchError> {
        let report = |p: Progress| {
            if let Some(tx) = progress {
                let _ = tx.send(p);
            }
        };
        let catalog = self.catalog(&job.org_id).await?;
        let (pinned, requested_model) = split_requested(&catalog, job.requested_model.as_deref());
        // The caller's `integration/model` wins over the agent's provider.
        let only: Option<Vec<&str>> = match (pinned, job.provider.as_deref()) {
            (Some(name), _) => Some(vec![name]),
            (None, Some(provider)) => Some(
                named_by(&catalog.targets, provider, |t| &t.integration)
                    .iter()
                    .map(|t| t.integration.name.as_str())
                    .collect(),
            ),
            (None, None) => None,
        };
        let budgets: Vec<Arc<Budget>> = catalog
            .budgets
            .iter()
            .filter(|b| b.applies_to(&job.spender))
            .cloned()
            .collect();
        let remaining = self.inner.ledger.remaining(&budgets).map(Money::to_usd_f64);
        let mut candidates = catalog.candidates(&self.inner.observed, only.as_deref(), remaining);
        if pinned.is_some()
            && let Some(model) = &requested_model
            && candidates.iter().any(|c| &c.model == model)
        {
            // `integration/model` pins exactly that pair.
            candidates.retain(|c| &c.model == model);
        }
        let needs = job.required_features();
        if needs != Features::empty() && !candidates.is_empty() {
            let lacking: Vec<String> = candidates
                .iter()
                .filter(|c| !c.features.contains(needs))
                .take(8)
                .map(|c| {
                    let missing = feature_names(needs & !c.features).join(", ");
                    format!("{}/{} lacks {missing}", c.provider, c.model)
                })
                .collect();
            candidates.retain(|c| c.features.contains(needs));
            if candidates.is_empty() {
                // The request needs what no offered model has: the caller's
                // request is at fault (400), naming what is missing.
                return Err(DispatchError {
                    kind: DispatchKind::InvalidRequest,
                    message: format!(
                        "no offered model supports what this request needs ({}): {}",
                        feature_names(needs).join(", "),
                        lacking.join("; ")
                    ),
                    attempts: Vec::new(),
                    retry_after: None,
                });
            }
        }
        if candidates.is_empty() {
            return Err(DispatchError {
                kind: DispatchKind::NoCandidate,
                message: match (pinned, job.provider.as_deref()) {
                    (Some(name), _) => {
                        format!("integration `{name}` is not active or has no models")
                    }
                    (None, Some(provider)) => format!(
                        "the agent's provider `{provider}` names no active integration with a \
                         loaded provider plugin"
                    ),
                    (None, None) => "the organization has no active integration with a loaded \
                                     provider plugin"
                        .into(),
                },
                attempts: Vec::new(),
                retry_after: None,
            });
        }
        let (router, plan, fallback) = self
            .plan(
                job,
                catalog.routing_policy.as_deref(),
                requested_model.as_deref(),
                &candidates,
            )
            .await
            .map_err(|e| over_budget(e, remaining, &candidates, job))
            .map_err(|e| resting_instead(e, &catalog, &candidates, &self.inner.observed))?;
        let trace = RouterTrace {
            name: router.name().to_string(),
            version: router.version().to_string(),
            fallback,
        };
        report(Progress::Planned {
            router: trace.name.clone(),
            router_version: trace.version.clone(),
            attempts: plan
                .attempts
                .iter()
                .map(|a| format!("{}/{}", a.provider, a.model))
                .collect(),
            reason: plan.reason.clone(),
            fallback: trace.fallback.clone(),
        });

        let steps: Vec<Step<&Target>> = plan
            .attempts
            .iter()
            .filter_map(|step| {
                let target = catalog.target(&step.provider)?;
                Some(Step {
                    integration_id: target.integration.id.clone(),
                    provider: target.integration.name.clone(),
                    plugin: target.deployed.label(),
                    model: step.model.clone(),
                    target,
                })
            })
            .collect();
        let caller = PluginCaller {
            inner: &self.inner,
            job,
            budgets: &budgets,
            stream,
            progress,
        };
        let limits = Limits {
            breakers: self.inner.observed.breakers(),
            retry: self.inner.retry,
            max_run: self.inner.max_run,
            after_text: StreamFailover::resolve(job.stream_failover, catalog.stream_failover),
        };
        let mut answer =
            fallback::run(&caller, &steps, job.first_attempt_seq, limits, progress).await?;
        answer.router = Some(trace);
        Ok(answer)
    }

    /// Ask the job's router, else the organization's, (falling back to
    /// [`DEFAULT_ROUTER`] when it is missing or fails) for a plan, keeping
    /// only attempts among the candidates. With the plan: why the router
    /// asked first did not plan, when another one did.
    async fn plan(
        &self,
        job: &Job,
        org_policy: Option<&str>,
        requested_model: Option<&str>,
        candidates: &[Candidate],
    ) -> Result<(Arc<Deployed>, Plan, Option<String>), DispatchError> {
        let task = TaskInfo {
            id: job.id.clone(),
            organization_id: job.org_id.clone(),
            task_type: job.task_type,
            priority: job.priority,
            requested_model: requested_model.map(str::to_string),
            estimated_input_tokens: estimate_tokens(&job.messages),
            max_tokens: job.max_tokens,
            prefer: job.prefer,
            metadata: job.metadata.to_string(),
            required_features: job.required_features(),
        };
        let mut notes = Vec::new();
        let mut routers = Vec::new();
        if let Some(name) = job.router.as_deref().or(org_policy)
            && name != DEFAULT_ROUTER
        {
            routers.push(name.to_string());
        }
        routers.push(DEFAULT_ROUTER.to_string());
        for name in routers {
            // Notes so far are the earlier routers' failures.
            let fallback = (!notes.is_empty()).then(|| notes.join("; "));
            // The fallback is always the platform's; a tenant cannot shadow it.
            let found = if name == DEFAULT_ROUTER {
                self.inner.plugins.lookup_platform(&name)
            } else {
                self.inner.plugins.lookup(&job.org_id, &name)
            };
            let Some(router) = found else {
                notes.push(format!("router `{name}` is not live"));
                continue;
            };
            if router.plugin.kind() != PluginKind::Router {
                notes.push(format!("`{name}` is not a router"));
                continue;
            }
            let span = tracing::info_span!("router_call", router = %router.label());
            let call = self
                .inner
                .plugins
                .runtime()
                .route(&router.plugin, &router.limits, &task, candidates)
                .instrument(span)
                .await;
            self.inner
                .plugins
                .stats()
                .record(&router.stats_key, &call, guest_route_error(&call));
            match call.result {
                Ok(Ok(mut plan)) => {
                    let planned = plan.attempts.len();
                    keep_offered_once(&mut plan.attempts, candidates);
                    if plan.attempts.is_empty() {
                        notes.push(format!("router `{name}` planned no offered candidate"));
                        continue;
                    }
                    if plan.attempts.len() < planned {
                        notes.push(format!(
                            "{} of {planned} planned steps kept: repeated, not offered, or past \
                             the limit of {MAX_PLAN_STEPS}",
                            plan.attempts.len()
                        ));
                    }
                    if !notes.is_empty() {
                        plan.reason = format!("{} ({})", plan.reason, notes.join("; "));
                    }
                    return Ok((router, plan, fallback));
                }
                Ok(Err(RouteError::NoCandidate(why))) => {
                    return Err(DispatchError {
                        kind: DispatchKind::NoCandidate,
                        message: format!("router `{name}`: {why}"),
                        attempts: Vec::new(),
                        retry_after: None,
                    });
                }
                Ok(Err(RouteError::InvalidInput(why))) => {
                    notes.push(format!("router `{name}` refused the input: {why}"));
                }
                Err(e) => {
                    tracing::warn!(router = %name, error = %e, "router plugin failed");
                    notes.push(format!("router `{name}` failed: {e}"));
                }
            }
        }
        Err(DispatchError {
            kind: DispatchKind::RouterFailed,
            message: notes.join("; "),
            attempts: Vec::new(),
            retry_after: None,
        })
    }
}

/// Calls providers through their plugins, for one job.
struct PluginCaller<'a> {
    inner: &'a Inner,
    job: &'a Job,
    /// The budgets that apply to the job.
    budgets: &'a [Arc<Budget>],
    stream: bool,
    progress: Option<&'a mpsc::UnboundedSender<Progress>>,
}

impl<'a> ProviderCaller for PluginCaller<'a> {
    type Target = &'a Target;

    fn call(
        &self,
        step: &Step<&'a Target>,
        seq: i64,
        sent: &str,
    ) -> impl Future<Output = CallOutcome> + Send {
        self.inner.call(
            (self.job, self.budgets),
            step.target,
            &step.model,
            (seq, sent),
            self.stream,
            self.progress,
        )
    }
}

impl Inner {
    /// Record, in the organization's audit log and off the request path,
    /// that this instance's breaker for `model` at `integration` opened or
    /// closed.
    fn breaker_event(
        &self,
        integration: &crate::store::integrations::Integration,
        model: &str,
        action: &'static str,
    ) {
        crate::audit::spawn_system(
            &self.db,
            Some(integration.org_id.clone()),
            action,
            serde_json::json!({
                "integration_id": integration.id,
                "integration": integration.name,
                "provider": integration.provider,
                "model": model,
                "instance": &*self.db.origin(),
            }),
        );
    }

    /// An attempt that ended before its provider was called: the breaker's
    /// probe, if it was one, is handed back, as the provider was not at
    /// fault.
    fn not_called(&self, key: &BreakerKey, attempt: Attempt, class: FailureClass) -> CallOutcome {
        self.observed.breakers().with(key, |b| b.release_probe());
        CallOutcome {
            attempt,
            result: Err(class),
            streamed: String::new(),
            streamed_tool_calls: false,
        }
    }

    /// One call of `target` for `model` as attempt `seq`, measured, priced
    /// and fed to its breaker and figures; `sent` is text earlier attempts
    /// streamed, which this one continues (see [`StreamFailover`]). Its
    /// worst case is reserved first in the job's `budgets`, and the call
    /// is not made when a hard one refuses.
    async fn call(
        &self,
        (job, budgets): (&Job, &[Arc<Budget>]),
        target: &Target,
        model: &str,
        (seq, sent): (i64, &str),
        stream: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> CallOutcome {
        let started_at = now_ms();
        let started = Instant::now();
        let integration = &target.integration;
        let breaker = breaker_key(&integration.id, model);
        let mut attempt = Attempt {
            seq,
            provider: integration.name.clone(),
            integration_id: Some(integration.id.clone()),
            plugin: target.deployed.label(),
            model: model.to_string(),
            outcome: AttemptOutcome::Error,
            error_kind: None,
            error_message: None,
            latency_ms: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: Money::ZERO,
            started_at,
        };
        let setup = match catalog::call_setup(integration, &target.deployed, &self.keys) {
            Ok(setup) => setup,
            Err(e) => {
                attempt.error_kind = Some(e.kind().into());
                attempt.error_message = Some(e.to_string());
                return self.not_called(&breaker, attempt, FailureClass::Plugin);
            }
        };
        let mut metadata = job.metadata.clone();
        if let Some(obj) = metadata.as_object_mut() {
            obj.insert("attempt".into(), serde_json::json!(seq));
            obj.insert("task_id".into(), serde_json::json!(job.id));
        }
        let mut messages = job.messages.clone();
        // Whitespace the continuation may repeat (see `continuation`).
        let mut repeat = if sent.is_empty() {
            String::new()
        } else {
            let prefill = target.deployed.capabilities.assistant_prefill;
            continuation(&mut messages, sent, prefill)
        };
        let request = job.completion_request(model, messages, metadata.to_string());
        let reservation = if budgets.is_empty() {
            Reservation::none(&self.ledger)
        } else {
            let worst = worst_case(target.prices(model), &request.messages, request.max_tokens);
            match self.ledger.reserve(budgets, worst).await {
                Ok(reservation) => reservation,
                Err(e) => {
                    attempt.outcome = AttemptOutcome::Skipped;
                    attempt.error_kind = Some(DispatchKind::BudgetExceeded.as_str().into());
                    attempt.error_message = Some(e.to_string());
                    return self.not_called(&breaker, attempt, FailureClass::OverBudget);
                }
            }
        };
        let limits = catalog::provider_limits(&target.deployed, integration);
        let key = setup.key.clone();
        let mut call = setup.into_call();
        let forward = if stream {
            let (tx, mut rx) = mpsc::unbounded_channel::<Delta>();
            call.deltas = Some(tx);
            let progress = progress.cloned();
            let mut repeat = repeat.clone();
            Some(tokio::spawn(async move {
                let mut streamed = String::new();
                let mut tool_calls = false;
                while let Some(delta) = rx.recv().await {
                    let text = match delta {
                        Delta::Text(text) => text,
                        Delta::ToolCall(delta) => {
                            tool_calls = true;
                            if let Some(p) = &progress {
                                let _ = p.send(Progress::ToolCall { seq, delta });
                            }
                            continue;
                        }
                    };
                    let text = without_repeat(&mut repeat, without_nul(text));
                    if text.is_empty() {
                        continue;
                    }
                    streamed.push_str(&text);
                    if let Some(p) = &progress {
                        let _ = p.send(Progress::Delta { seq, text });
                    }
                }
                (streamed, tool_calls)
            }))
        } else {
            None
        };
        let span = tracing::info_span!("provider_call", attempt = seq, provider = %integration.name, plugin = %target.deployed.label(), model = %model);
        let result = self
            .plugins
            .runtime()
            .complete(&target.deployed.plugin, &limits, call, &request)
            .instrument(span)
            .await;
        self.plugins.stats().record(
            &target.deployed.stats_key,
            &result,
            guest_provider_error(&result),
        );
        // The sender lives in the finished call's store, now dropped: the
        // forwarder drains what is left and ends.
        let (streamed, streamed_tool_calls) = match forward {
            Some(forward) => forward.await.unwrap_or_default(),
            None => (String::new(), false),
        };
        let latency = started.elapsed();
        attempt.latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        let class = match result.result {
            Ok(Ok(mut response)) => {
                response.text = without_repeat(&mut repeat, without_nul(response.text));
                let (input, output) = (
                    u64::from(response.usage.input_tokens),
                    u64::from(response.usage.output_tokens),
                );
                attempt.outcome = AttemptOutcome::Ok;
                attempt.input_tokens = i64::from(response.usage.input_tokens);
                attempt.output_tokens = i64::from(response.usage.output_tokens);
                attempt.cost_nanos = target.prices(model).cost(input, output);
                reservation.settle(attempt.cost_nanos);
                let closed = self
                    .observed
                    .breakers()
                    .with(&breaker, |b| b.record_success());
                if closed {
                    tracing::info!(integration = %integration.name, model, "circuit closed");
                    self.breaker_event(integration, model, "breaker_closed");
                }
                self.observed.record(&integration.id, model, latency, true);
                return CallOutcome {
                    attempt,
                    result: Ok(response),
                    streamed,
                    streamed_tool_calls,
                };
            }
            Ok(Err(e)) => {
                let (kind, message, class) = classify_provider_error(e);
                attempt.error_kind = Some(kind.into());
                attempt.error_message = Some(catalog::scrub_secret(key.as_deref(), &message));
                class
            }
            Err(e @ PluginError::Busy { .. }) => {
                // Not the provider's failure: no breaker, and retried later.
                attempt.error_kind = Some(BUSY.into());
                attempt.error_message = Some(e.to_string());
                self.observed
                    .breakers()
                    .with(&breaker, |b| b.release_probe());
                return CallOutcome {
                    attempt,
                    result: Err(FailureClass::RateLimited { retry_after: None }),
                    streamed,
                    streamed_tool_calls,
                };
            }
            Err(e) => {
                attempt.error_kind = Some(plugin_error_kind(&e).into());
                attempt.error_message = Some(catalog::scrub_secret(key.as_deref(), &e.to_string()));
                FailureClass::Plugin
            }
        };
        match class {
            FailureClass::Terminal => {
                // The request was at fault, not the provider.
                self.observed
                    .breakers()
                    .with(&breaker, |b| b.release_probe());
            }
            FailureClass::RateLimited {
                retry_after: Some(after),
            } => {
                // Throttled with a time to come back: not an outage; the
                // model rests until then, its circuit untouched.
                tracing::info!(integration = %integration.name, model, retry_after_ms = after.as_millis() as u64, "model throttled: resting");
                self.observed
                    .breakers()
                    .with(&breaker, |b| b.rest_until(Instant::now() + after));
                self.observed.record(&integration.id, model, latency, false);
            }
            _ => {
                let opened = self
                    .observed
                    .breakers()
                    .with(&breaker, |b| b.record_failure(Instant::now()));
                if opened {
                    tracing::warn!(integration = %integration.name, model, "circuit opened");
                    self.breaker_event(integration, model, "breaker_opened");
                }
                self.observed.record(&integration.id, model, latency, false);
            }
        }
        CallOutcome {
            attempt,
            result: Err(class),
            streamed,
            streamed_tool_calls,
        }
    }
}

/// A provider's typed error as (kind, message, retry class).
fn classify_provider_error(e: ProviderError) -> (&'static str, String, FailureClass) {
    let class = match &e {
        ProviderError::RateLimited(after) => FailureClass::RateLimited {
            retry_after: after.map(|ms| Duration::from_millis(u64::from(ms))),
        },
        ProviderError::Unavailable(_) => FailureClass::Unavailable,
        ProviderError::Timeout => FailureClass::Timeout,
        ProviderError::InvalidRequest(_) | ProviderError::ContentFiltered(_) => {
            FailureClass::Terminal
        }
        ProviderError::Auth(_) => FailureClass::Auth,
        ProviderError::Other(_) => FailureClass::Other,
    };
    let (kind, message) = provider_error::describe(e);
    (kind, message, class)
}

/// The kind of a provider's own error, for its statistics.
fn guest_provider_error(
    call: &vel_runtime::CallResult<Result<CompletionResponse, ProviderError>>,
) -> Option<&'static str> {
    match &call.result {
        Ok(Err(e)) => Some(provider_error::kind(e)),
        _ => None,
    }
}

/// The kind of a router's own refusal, for its statistics.
fn guest_route_error(
    call: &vel_runtime::CallResult<Result<Plan, RouteError>>,
) -> Option<&'static str> {
    match &call.result {
        Ok(Err(RouteError::NoCandidate(_))) => Some("no_candidate"),
        Ok(Err(RouteError::InvalidInput(_))) => Some("invalid_input"),
        _ => None,
    }
}

/// What a provider without assistant prefill is asked after the text
/// already sent, given as the assistant's turn.
pub const CONTINUE_INSTRUCTION: &str = "Your previous reply was cut off. Continue it from \
     exactly where it stops, as if you had not been interrupted: do not repeat any of it, add \
     no preamble or comment, and reply with only the rest of the answer.";

/// Make `messages` ask for the continuation of `sent`, the text earlier
/// attempts streamed. With `prefill` (the provider plugin's manifest
/// declares `assistant_prefill`), `sent` is the trailing assistant turn,
/// which the upstream continues natively; its trailing whitespace is left
/// out (Anthropic refuses a final assistant turn ending with whitespace)
/// and returned, since the continuation may begin by repeating it. Without
/// prefill, `sent` is the assistant's turn followed by a user turn with
/// [`CONTINUE_INSTRUCTION`], and nothing is returned.
fn continuation(messages: &mut Vec<Message>, sent: &str, prefill: bool) -> String {
    if prefill {
        let kept = sent.trim_end();
        // Only whitespace was sent: an empty turn is no prefill; the answer
        // starts over, less what it repeats of that whitespace.
        if !kept.is_empty() {
            messages.push(Message::text(Role::Assistant, kept.to_string()));
        }
        sent[kept.len()..].to_string()
    } else {
        messages.push(Message::text(Role::Assistant, sent.to_string()));
        messages.push(Message::text(Role::User, CONTINUE_INSTRUCTION.to_string()));
        String::new()
    }
}

/// `text` (the next piece of a continuation) without what it repeats of
/// `repeat`, the whitespace left out of a prefill: as much of `repeat` as
/// `text` begins with is dropped from both, and `repeat` is emptied at the
/// first difference, so only a leading repeat is ever dropped.
fn without_repeat(repeat: &mut String, mut text: String) -> String {
    if repeat.is_empty() {
        return text;
    }
    let same = repeat
        .char_indices()
        .zip(text.chars())
        .take_while(|((_, a), b)| a == b)
        .last()
        .map_or(0, |((i, c), _)| i + c.len_utf8());
    text.drain(..same);
    if text.is_empty() {
        repeat.drain(..same);
    } else {
        repeat.clear();
    }
    text
}

/// A provider's text with any NUL character replaced by U+FFFD: stored
/// text holds no NUL on either database (PostgreSQL's cannot), and an
/// upstream's is never a reason to lose its answer.
fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// Keeps the plan's steps that name an offered candidate, each once, in
/// the router's order, at most [`MAX_PLAN_STEPS`] of them.
fn keep_offered_once(steps: &mut Vec<PlannedStep>, candidates: &[Candidate]) {
    let mut seen = std::collections::HashSet::new();
    steps.retain(|a| {
        candidates
            .iter()
            .any(|c| c.provider == a.provider && c.model == a.model)
            && seen.insert((a.provider.clone(), a.model.clone()))
    });
    steps.truncate(MAX_PLAN_STEPS);
}

/// `integration/model` restricts candidates to that integration; a bare
/// model is passed to the router as the requested model.
fn split_requested<'a>(
    catalog: &Catalog,
    requested: Option<&'a str>,
) -> (Option<&'a str>, Option<String>) {
    let Some(requested) = requested.filter(|r| !r.is_empty() && *r != "auto") else {
        return (None, None);
    };
    if let Some((integration, model)) = requested.split_once('/')
        && catalog.target(integration).is_some()
    {
        return (Some(integration), Some(model.to_string()));
    }
    (None, Some(requested.to_string()))
}

/// About four characters per token, for the router's cost estimates.
fn estimate_tokens(messages: &[Message]) -> u32 {
    let chars: usize = messages.iter().map(|m| m.content.len()).sum();
    u32::try_from(chars / 4 + 1).unwrap_or(u32::MAX)
}

/// The most a call of `messages` capped at `max_tokens` at `prices` can
/// be expected to cost, for its budget reservation: every three bytes of
/// text a prompt token (no tokenizer counts fewer bytes per token for real
/// text) plus a few per message, and `max_tokens` completion tokens
/// ([`DEFAULT_RESERVED_OUTPUT_TOKENS`] when the request sets none).
fn worst_case(prices: Prices, messages: &[Message], max_tokens: Option<u32>) -> Money {
    let bytes: u64 = messages.iter().map(|m| m.content.len() as u64).sum();
    let prompt = bytes.div_ceil(3) + 4 * messages.len() as u64;
    let completion = max_tokens.unwrap_or(DEFAULT_RESERVED_OUTPUT_TOKENS);
    prices.cost(prompt, u64::from(completion))
}

/// A router that planned nothing because every candidate is refused now
/// (an open circuit, or a model resting after its provider throttled it)
/// while some of them only rest is a throttle, not a missing provider:
/// `rate_limited`, with the time until the soonest has rested.
fn resting_instead(
    e: DispatchError,
    catalog: &Catalog,
    candidates: &[Candidate],
    observed: &Observed,
) -> DispatchError {
    if e.kind != DispatchKind::NoCandidate
        || candidates.iter().any(|c| c.circuit != CircuitState::Open)
    {
        return e;
    }
    let now = Instant::now();
    let soonest = candidates
        .iter()
        .filter_map(|c| {
            let target = catalog.target(&c.provider)?;
            observed.resting(&target.integration.id, &c.model, now)
        })
        .min();
    match soonest {
        Some(after) => DispatchError {
            kind: DispatchKind::RateLimited,
            message: format!(
                "every candidate is rate limited by its provider or failing; the soonest may be \
                 called again in {} s ({})",
                after.as_secs_f64().ceil(),
                e.message
            ),
            attempts: e.attempts,
            retry_after: Some(after),
        },
        None => e,
    }
}

/// A router that planned nothing because no candidate fits the remaining
/// budget (as routers may: they see `remaining-budget`) is the budget's
/// refusal, not a missing provider: `budget_exceeded` when even the
/// cheapest candidate's worst case exceeds what is left.
fn over_budget(
    e: DispatchError,
    remaining: Option<f64>,
    candidates: &[Candidate],
    job: &Job,
) -> DispatchError {
    let Some(left) = remaining else {
        return e;
    };
    if e.kind != DispatchKind::NoCandidate {
        return e;
    }
    let left = Money::from_usd(left);
    let cheapest = candidates
        .iter()
        .map(|c| {
            let prices = Prices::from_declared_usd(c.input_price_per_1k, c.output_price_per_1k);
            worst_case(prices, &job.messages, job.max_tokens)
        })
        .min();
    match cheapest {
        Some(cheapest) if cheapest > left => DispatchError {
            kind: DispatchKind::BudgetExceeded,
            message: format!(
                "the cheapest candidate could cost up to ${} and the budget has ${} left ({})",
                cheapest.usd(),
                left.usd(),
                e.message
            ),
            attempts: e.attempts,
            retry_after: None,
        },
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(provider: &str, model: &str) -> Candidate {
        Candidate {
            provider: provider.into(),
            model: model.into(),
            input_price_per_1k: 0.0,
            output_price_per_1k: 0.0,
            good_for: Vec::new(),
            circuit: CircuitState::Closed,
            p50_latency_ms: 0,
            p95_latency_ms: 0,
            error_rate: 0.0,
            remaining_budget: None,
            features: Features::empty(),
        }
    }

    fn step(provider: &str, model: &str) -> PlannedStep {
        PlannedStep {
            provider: provider.into(),
            model: model.into(),
        }
    }

    #[test]
    fn a_continuation_is_a_prefill_or_an_instruction() {
        let question = Message::text(Role::User, "q");
        let mut messages = vec![question.clone()];
        let repeat = continuation(&mut messages, "Hello world!\n\n", true);
        assert_eq!(repeat, "\n\n");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].role, Role::Assistant);
        assert_eq!(messages[1].content, "Hello world!");

        let mut messages = vec![question];
        let repeat = continuation(&mut messages, "Hello world!\n\n", false);
        assert_eq!(repeat, "");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1].role, Role::Assistant);
        assert_eq!(messages[1].content, "Hello world!\n\n");
        assert_eq!(messages[2].role, Role::User);
        assert_eq!(messages[2].content, CONTINUE_INSTRUCTION);
    }

    #[test]
    fn a_continuation_does_not_repeat_the_whitespace_left_out_of_its_prefill() {
        // Repeated across pieces, then the text goes on.
        let mut repeat = "\n\n".to_string();
        assert_eq!(without_repeat(&mut repeat, "\n".into()), "");
        assert_eq!(without_repeat(&mut repeat, "\nNext".into()), "Next");
        assert_eq!(without_repeat(&mut repeat, "\n\nmore".into()), "\n\nmore");
        // Not repeated: nothing is dropped, later pieces included.
        let mut repeat = " ".to_string();
        assert_eq!(without_repeat(&mut repeat, "next".into()), "next");
        assert_eq!(without_repeat(&mut repeat, " word".into()), " word");
        // Partly repeated.
        let mut repeat = " \n".to_string();
        assert_eq!(without_repeat(&mut repeat, " x".into()), "x");
        assert_eq!(without_repeat(&mut repeat, "\ny".into()), "\ny");
    }

    #[test]
    fn provider_text_loses_its_nul_characters() {
        assert_eq!(without_nul("a\0b".into()), "a\u{FFFD}b");
        assert_eq!(without_nul("plain".into()), "plain");
    }

    #[test]
    fn a_plan_keeps_each_offered_step_once_and_at_most_the_limit() {
        let offered = [candidate("mock", "slow"), candidate("mock", "echo")];
        let mut plan = vec![step("mock", "slow"); 2_307];
        plan.insert(5, step("elsewhere", "x"));
        plan.push(step("mock", "echo"));
        keep_offered_once(&mut plan, &offered);
        assert_eq!(plan, [step("mock", "slow"), step("mock", "echo")]);

        let many: Vec<Candidate> = (0..40).map(|i| candidate("p", &format!("m{i}"))).collect();
        let mut plan: Vec<PlannedStep> = many.iter().map(|c| step("p", &c.model)).collect();
        keep_offered_once(&mut plan, &many);
        assert_eq!(plan.len(), MAX_PLAN_STEPS);
        assert_eq!(plan[0], step("p", "m0"));
    }

    #[test]
    fn a_terminal_provider_error_ends_the_run_with_its_own_kind() {
        for (error, kind) in [
            (
                ProviderError::ContentFiltered("no".into()),
                DispatchKind::ContentFiltered,
            ),
            (
                ProviderError::InvalidRequest("bad".into()),
                DispatchKind::InvalidRequest,
            ),
        ] {
            let (name, _, class) = classify_provider_error(error);
            assert_eq!(class, FailureClass::Terminal);
            assert_eq!(DispatchKind::terminal(name), kind);
            assert_eq!(name, kind.as_str());
        }
    }
}
