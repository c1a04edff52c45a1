//! Embeddings through the dispatcher (`POST /v1/embeddings`): the
//! organization's providers that serve the model are asked in catalogue
//! order until one answers; each call is an attempt, priced, reserved
//! against the spender's budgets first, fed to the model's breaker and
//! counted against the token limits. There is no router: an embedding
//! model is one vector space, so only providers of that same model may
//! stand in for each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use vel_runtime::types::{
    EmbeddingError, EmbeddingInput, EmbeddingModel, EmbeddingRequest, EmbeddingResponse,
    ProviderError,
};

use super::{
    Attempt, AttemptOutcome, BUSY, DispatchError, DispatchKind, Dispatcher, FailureClass,
    breaker_key, classify_provider_error, plugin_error_kind,
};
use crate::budgets::ledger::Reservation;
use crate::budgets::{Budget, Spender};
use crate::money::Money;
use crate::orchestrator::catalog::{self, Catalog, Target};
use crate::orchestrator::cost::Prices;
use crate::store::now_ms;

/// One embedding request as the dispatcher runs it.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// Task id recording it.
    pub id: String,
    /// Organization.
    pub org_id: String,
    /// Whose budgets and token limits the calls spend.
    pub spender: Spender,
    /// `integration/model` or a bare model.
    pub model: String,
    /// The inputs, in order.
    pub inputs: Vec<EmbeddingInput>,
    /// Shorter vectors, where the model supports it.
    pub dimensions: Option<u32>,
    /// The end user's id, passed to the provider.
    pub user: Option<String>,
}

/// The vectors and how they were made.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One vector per input, in order.
    pub response: EmbeddingResponse,
    /// The integration that answered.
    pub provider: String,
    /// Every call made, in order.
    pub attempts: Vec<Attempt>,
}

/// The (integration, model) pairs that serve embedding model `model`
/// (`integration/model` pins one integration), in catalogue order.
pub fn embedding_targets<'c>(
    catalog: &'c Catalog,
    model: &str,
) -> Vec<(&'c Target, &'c EmbeddingModel)> {
    let served = |t: &'c Target, name: &str| {
        t.deployed
            .plugin
            .embedding_models()
            .iter()
            .find(|m| m.id == name)
            .map(|m| (t, m))
    };
    if let Some((integration, name)) = model.split_once('/')
        && let Some(target) = catalog.target(integration)
    {
        return served(target, name).into_iter().collect();
    }
    catalog
        .targets
        .iter()
        .filter_map(|t| served(t, model))
        .collect()
}

impl Dispatcher {
    /// Embed `job`'s inputs: each provider serving the model in turn until
    /// one answers. A request the provider calls invalid is not retried
    /// elsewhere (`invalid_request`); throttled everywhere is
    /// `rate_limited` with the soonest `Retry-After`; otherwise
    /// `all_attempts_failed`. The tokens read are counted against the
    /// spender's token limits.
    pub async fn embed(&self, job: &EmbedJob) -> Result<Embedded, DispatchError> {
        let catalog = self.catalog(&job.org_id).await?;
        let result = self.embed_on(&catalog, job).await;
        let attempts = match &result {
            Ok(done) => &done.attempts,
            Err(e) => &e.attempts,
        };
        self.charge_tokens(&job.org_id, &job.spender, attempts)
            .await;
        result
    }

    async fn embed_on(&self, catalog: &Catalog, job: &EmbedJob) -> Result<Embedded, DispatchError> {
        let targets = embedding_targets(catalog, &job.model);
        let budgets: Vec<Arc<Budget>> = catalog
            .budgets
            .iter()
            .filter(|b| b.applies_to(&job.spender))
            .cloned()
            .collect();
        let mut attempts = Vec::new();
        let mut soonest: Option<Duration> = None;
        let mut only_throttled = true;
        for (seq, (target, model)) in (1..).zip(targets.iter().copied()) {
            let key = breaker_key(&target.integration.id, &model.id);
            let now = Instant::now();
            let (resting, acquired) = self
                .inner
                .observed
                .breakers()
                .with(&key, |b| (b.resting(now), b.try_acquire(now)));
            if let Some(rest) = resting {
                // Throttled until then: like a 429 answered now.
                soonest = Some(soonest.map_or(rest, |s| s.min(rest)));
                continue;
            }
            if !acquired {
                only_throttled = false;
                continue;
            }
            let (attempt, result) = self.embed_once(job, &budgets, target, model, seq).await;
            attempts.push(attempt);
            match result {
                Ok(response) => {
                    return Ok(Embedded {
                        response,
                        provider: target.integration.name.clone(),
                        attempts,
                    });
                }
                Err(FailureClass::Terminal) => {
                    let message = attempts
                        .last()
                        .and_then(|a| a.error_message.clone())
                        .unwrap_or_default();
                    return Err(failure(
                        DispatchKind::InvalidRequest,
                        message,
                        attempts,
                        None,
                    ));
                }
                Err(FailureClass::RateLimited { retry_after }) => {
                    if let Some(after) = retry_after {
                        soonest = Some(soonest.map_or(after, |s| s.min(after)));
                    }
                }
                Err(FailureClass::OverBudget) => {}
                Err(_) => only_throttled = false,
            }
        }
        if attempts.is_empty() && !(only_throttled && soonest.is_some()) {
            return Err(failure(
                DispatchKind::NoCandidate,
                format!(
                    "no provider can serve `{}` now (every circuit is open)",
                    job.model
                ),
                attempts,
                None,
            ));
        }
        if !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| a.outcome == AttemptOutcome::Skipped)
        {
            let message = attempts
                .first()
                .and_then(|a| a.error_message.clone())
                .unwrap_or_default();
            return Err(failure(
                DispatchKind::BudgetExceeded,
                message,
                attempts,
                None,
            ));
        }
        if only_throttled {
            let message = format!("every provider of `{}` is throttling", job.model);
            return Err(failure(
                DispatchKind::RateLimited,
                message,
                attempts,
                soonest,
            ));
        }
        let message = attempts
            .iter()
            .map(|a| {
                format!(
                    "{}/{}: {}",
                    a.provider,
                    a.model,
                    a.error_message.as_deref().unwrap_or("failed")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(failure(
            DispatchKind::AllAttemptsFailed,
            message,
            attempts,
            None,
        ))
    }

    /// One call of `target` for `model` as attempt `seq`, measured, priced
    /// and fed to its breaker and figures.
    async fn embed_once(
        &self,
        job: &EmbedJob,
        budgets: &[Arc<Budget>],
        target: &Target,
        model: &EmbeddingModel,
        seq: i64,
    ) -> (Attempt, Result<EmbeddingResponse, FailureClass>) {
        let integration = &target.integration;
        let key = breaker_key(&integration.id, &model.id);
        let prices = Prices::from_declared_usd(model.input_price_per_1k, 0.0);
        let mut attempt = Attempt {
            seq,
            provider: integration.name.clone(),
            integration_id: Some(integration.id.clone()),
            plugin: target.deployed.label(),
            model: model.id.clone(),
            outcome: AttemptOutcome::Error,
            error_kind: None,
            error_message: None,
            latency_ms: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: Money::ZERO,
            started_at: now_ms(),
        };
        let setup = match catalog::call_setup(integration, &target.deployed, &self.inner.keys) {
            Ok(setup) => setup,
            Err(e) => {
                attempt.error_kind = Some(e.kind().into());
                attempt.error_message = Some(e.to_string());
                self.inner
                    .observed
                    .breakers()
                    .with(&key, |b| b.release_probe());
                return (attempt, Err(FailureClass::Plugin));
            }
        };
        let reservation = if budgets.is_empty() {
            Reservation::none(&self.inner.ledger)
        } else {
            match self
                .inner
                .ledger
                .reserve(budgets, worst_case(prices, &job.inputs))
                .await
            {
                Ok(reservation) => reservation,
                Err(e) => {
                    attempt.outcome = AttemptOutcome::Skipped;
                    attempt.error_kind = Some(DispatchKind::BudgetExceeded.as_str().into());
                    attempt.error_message = Some(e.to_string());
                    self.inner
                        .observed
                        .breakers()
                        .with(&key, |b| b.release_probe());
                    return (attempt, Err(FailureClass::OverBudget));
                }
            }
        };
        let request = EmbeddingRequest {
            model: model.id.clone(),
            inputs: job.inputs.clone(),
            dimensions: job.dimensions,
            user: job.user.clone(),
        };
        let limits = catalog::provider_limits(&target.deployed, integration);
        let secret = setup.key.clone();
        let started = Instant::now();
        let span = tracing::info_span!("embedding_call", attempt = seq, provider = %integration.name, plugin = %target.deployed.label(), model = %model.id);
        let result = self
            .inner
            .plugins
            .runtime()
            .embed(
                &target.deployed.plugin,
                &limits,
                setup.into_call(),
                &request,
            )
            .instrument(span)
            .await;
        let latency = started.elapsed();
        attempt.latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        let observed = &self.inner.observed;
        let class = match result.result {
            Ok(Ok(response)) if response.vectors.len() == job.inputs.len() => {
                attempt.outcome = AttemptOutcome::Ok;
                attempt.input_tokens = i64::from(response.usage.input_tokens);
                attempt.cost_nanos = prices.cost(u64::from(response.usage.input_tokens), 0);
                reservation.settle(attempt.cost_nanos);
                observed.breakers().with(&key, |b| b.record_success());
                observed.record(&integration.id, &model.id, latency, true);
                return (attempt, Ok(response));
            }
            Ok(Ok(response)) => {
                attempt.error_kind = Some("other".into());
                attempt.error_message = Some(format!(
                    "the provider returned {} vectors for {} inputs",
                    response.vectors.len(),
                    job.inputs.len()
                ));
                FailureClass::Other
            }
            Ok(Err(e)) => {
                let (kind, message, class) = classify_provider_error(provider_error(e));
                attempt.error_kind = Some(kind.into());
                attempt.error_message = Some(catalog::scrub_secret(secret.as_deref(), &message));
                class
            }
            Err(e @ vel_runtime::PluginError::Busy { .. }) => {
                attempt.error_kind = Some(BUSY.into());
                attempt.error_message = Some(e.to_string());
                observed.breakers().with(&key, |b| b.release_probe());
                return (
                    attempt,
                    Err(FailureClass::RateLimited { retry_after: None }),
                );
            }
            Err(e) => {
                attempt.error_kind = Some(plugin_error_kind(&e).into());
                attempt.error_message =
                    Some(catalog::scrub_secret(secret.as_deref(), &e.to_string()));
                FailureClass::Plugin
            }
        };
        match class {
            FailureClass::Terminal => observed.breakers().with(&key, |b| b.release_probe()),
            FailureClass::RateLimited {
                retry_after: Some(after),
            } => {
                observed
                    .breakers()
                    .with(&key, |b| b.rest_until(Instant::now() + after));
                observed.record(&integration.id, &model.id, latency, false);
            }
            _ => {
                observed
                    .breakers()
                    .with(&key, |b| b.record_failure(Instant::now()));
                observed.record(&integration.id, &model.id, latency, false);
            }
        }
        (attempt, Err(class))
    }
}

/// The embeddings interface's error as the completion error the
/// dispatcher classifies (the same cases).
fn provider_error(e: EmbeddingError) -> ProviderError {
    match e {
        EmbeddingError::RateLimited(ms) => ProviderError::RateLimited(ms),
        EmbeddingError::Unavailable(m) => ProviderError::Unavailable(m),
        EmbeddingError::Timeout => ProviderError::Timeout,
        EmbeddingError::InvalidRequest(m) => ProviderError::InvalidRequest(m),
        EmbeddingError::Auth(m) => ProviderError::Auth(m),
        EmbeddingError::Other(m) => ProviderError::Other(m),
    }
}

/// What the inputs could cost at most, for the budget reservation: every
/// three bytes of text a token, as for completions.
fn worst_case(prices: Prices, inputs: &[EmbeddingInput]) -> Money {
    let tokens: u64 = inputs
        .iter()
        .map(|input| match input {
            EmbeddingInput::Text(text) => (text.len() as u64).div_ceil(3),
            EmbeddingInput::Tokens(ids) => ids.len() as u64,
        })
        .sum();
    prices.cost(tokens, 0)
}

fn failure(
    kind: DispatchKind,
    message: String,
    attempts: Vec<Attempt>,
    retry_after: Option<Duration>,
) -> DispatchError {
    DispatchError {
        kind,
        message,
        attempts,
        retry_after,
    }
}
