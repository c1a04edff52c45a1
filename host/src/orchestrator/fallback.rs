//! The dispatch loop: a plan's steps called in order, each retried with
//! back-off while its errors are retryable, skipped while its circuit is
//! open or its model rests after a throttle, fallen back from otherwise,
//! the whole run bounded by a deadline. A run that ends with every
//! provider throttling (and nothing else failing) is
//! [`DispatchKind::RateLimited`], with the soonest time one may serve
//! again.
//! What reaches a provider is behind [`ProviderCaller`]: the plugin runtime
//! in service, a script in the unit tests.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vel_runtime::types::CompletionResponse;

use super::breaker::Breakers;
use super::dispatch::{Answer, DispatchError, DispatchKind, Progress, StreamFailover};
use super::observed::{BreakerKey, breaker_key};
use super::retry::{Decision, FailureClass, RetryPolicy};
use super::state::AttemptOutcome;
use crate::money::Money;
use crate::store::{now_ms, tasks::Attempt};

/// The attempt error kind of a provider plugin at its share of the pool.
pub(crate) const BUSY: &str = "busy";

/// The attempt error kind of a step skipped because its model rests after
/// its provider throttled it.
pub(crate) const RESTING: &str = "resting";

/// One step of a plan, resolved to the integration that serves it.
#[derive(Debug, Clone)]
pub(crate) struct Step<T> {
    /// Integration id: the key of its breaker.
    pub(crate) integration_id: String,
    /// Integration name.
    pub(crate) provider: String,
    /// Provider plugin (`name@version`).
    pub(crate) plugin: String,
    /// Model.
    pub(crate) model: String,
    /// What the caller needs to reach it.
    pub(crate) target: T,
}

impl<T> Step<T> {
    /// The key of its breaker: its integration and model.
    pub(crate) fn breaker_key(&self) -> BreakerKey {
        breaker_key(&self.integration_id, &self.model)
    }
}

/// The result of one provider call.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    /// The attempt as recorded.
    pub(crate) attempt: Attempt,
    /// The answer, or how the call failed.
    pub(crate) result: Result<CompletionResponse, FailureClass>,
    /// Text the call streamed (before it failed, when it did).
    pub(crate) streamed: String,
    /// Whether it streamed pieces of tool calls (which no other attempt
    /// can continue).
    pub(crate) streamed_tool_calls: bool,
}

/// Calls one provider for one attempt.
pub(crate) trait ProviderCaller {
    /// What a [`Step`] carries for the caller.
    type Target;

    /// Call `step` as attempt `seq`, continuing `sent` (text earlier
    /// attempts streamed, empty unless [`StreamFailover::Continue`]):
    /// measured, priced, and fed to the step's breaker (a success, a
    /// failure, or a probe handed back when the provider was not at fault).
    fn call(
        &self,
        step: &Step<Self::Target>,
        seq: i64,
        sent: &str,
    ) -> impl Future<Output = CallOutcome> + Send;
}

/// How the loop retries and how long it may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// The breakers, by (integration id, model).
    pub(crate) breakers: &'a Breakers<BreakerKey>,
    /// Retries and back-off.
    pub(crate) retry: RetryPolicy,
    /// Longest the whole loop may take.
    pub(crate) max_run: Duration,
    /// What follows an attempt that failed after streaming text.
    pub(crate) after_text: StreamFailover,
}

/// Call `steps` in order until one answers, numbering attempts after
/// `first_seq` and reporting them to `progress`.
pub(crate) async fn run<C: ProviderCaller>(
    caller: &C,
    steps: &[Step<C::Target>],
    first_seq: i64,
    limits: Limits<'_>,
    progress: Option<&mpsc::UnboundedSender<Progress>>,
) -> Result<Answer, DispatchError> {
    let report = |p: Progress| {
        if let Some(tx) = progress {
            let _ = tx.send(p);
        }
    };
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut seq = first_seq;
    let mut last_error: Option<(String, String)> = None;
    // Text streamed by failed attempts, which the next one continues.
    let mut sent = String::new();
    // Throttles: whether any step was throttled, whether anything else
    // failed, and the soonest time a throttled step may serve again.
    let mut throttled = false;
    let mut failed_otherwise = false;
    let mut resume: Option<Instant> = None;
    let deadline = tokio::time::Instant::now() + limits.max_run;
    let out_of_time = |attempts: Vec<Attempt>| DispatchError {
        kind: DispatchKind::DeadlineExceeded,
        message: format!(
            "the run took longer than its limit of {} s",
            limits.max_run.as_secs_f64()
        ),
        attempts,
        retry_after: None,
    };
    for step in steps {
        let mut failures = 0u32;
        let key = step.breaker_key();
        // When this step's provider last said it may be called again.
        let mut step_resume: Option<Instant> = None;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(out_of_time(attempts));
            }
            seq += 1;
            // `Some(rest)` refused: `Some(Some(left))` resting, `Some(None)` open.
            let refused = limits.breakers.with(&key, |b| {
                let now = Instant::now();
                match b.resting(now) {
                    Some(left) => Some(Some(left)),
                    None => (!b.try_acquire(now)).then_some(None),
                }
            });
            if let Some(rest) = refused {
                let skipped = match rest {
                    Some(left) => {
                        throttled = true;
                        step_resume = Some(Instant::now() + left);
                        resting_attempt(seq, step, left)
                    }
                    None => skipped_attempt(seq, step),
                };
                last_error = Some((
                    skipped.error_kind.clone().unwrap_or_default(),
                    skipped.error_message.clone().unwrap_or_default(),
                ));
                report(Progress::AttemptFinished(skipped.clone()));
                attempts.push(skipped);
                break;
            }
            report(Progress::AttemptStarted {
                seq,
                provider: step.provider.clone(),
                model: step.model.clone(),
            });
            let call = caller.call(step, seq, &sent);
            let Ok(outcome) = tokio::time::timeout_at(deadline, call).await else {
                // The call in flight was dropped, its upstream connection with it.
                limits.breakers.with(&key, |b| b.release_probe());
                return Err(out_of_time(attempts));
            };
            let attempt = outcome.attempt.clone();
            report(Progress::AttemptFinished(attempt.clone()));
            attempts.push(attempt);
            let class = match outcome.result {
                Ok(mut response) => {
                    response.text.insert_str(0, &sent);
                    return Ok(Answer {
                        response,
                        provider: step.provider.clone(),
                        attempts,
                        router: None,
                    });
                }
                Err(class) => class,
            };
            last_error = Some((
                outcome.attempt.error_kind.clone().unwrap_or_default(),
                outcome.attempt.error_message.clone().unwrap_or_default(),
            ));
            sent.push_str(&outcome.streamed);
            // Streamed tool calls cannot be continued by another attempt.
            if outcome.streamed_tool_calls
                || (!sent.is_empty() && limits.after_text == StreamFailover::Fail)
            {
                let (kind, message) = last_error.unwrap_or_default();
                return Err(DispatchError {
                    kind: DispatchKind::StreamInterrupted,
                    message: format!(
                        "the provider failed after part of the answer was streamed \
                         ({kind}: {message}); the stream ends with that part"
                    ),
                    attempts,
                    retry_after: None,
                });
            }
            match class {
                FailureClass::RateLimited { retry_after } => {
                    // The plugin pool being full is nobody's throttle.
                    if outcome.attempt.error_kind.as_deref() != Some(BUSY) {
                        throttled = true;
                        if let Some(after) = retry_after {
                            step_resume = Some(Instant::now() + after);
                        }
                    }
                }
                _ => failed_otherwise = true,
            }
            failures += 1;
            match limits.retry.decide(class, failures) {
                Decision::Retry(delay) => {
                    if tokio::time::Instant::now() + delay >= deadline {
                        // A throttle is not waited out past the run's
                        // deadline: the plan's next step may serve, and
                        // otherwise the caller learns when to come back.
                        if matches!(class, FailureClass::RateLimited { .. }) {
                            break;
                        }
                        return Err(out_of_time(attempts));
                    }
                    tracing::debug!(
                        attempt = seq,
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Decision::FallBack => break,
                Decision::Fail => {
                    let (kind, message) = last_error.unwrap_or_default();
                    return Err(DispatchError {
                        kind: DispatchKind::terminal(&kind),
                        message,
                        attempts,
                        retry_after: None,
                    });
                }
            }
        }
        if let Some(at) = step_resume {
            resume = Some(resume.map_or(at, |r| r.min(at)));
        }
    }
    let message = match &last_error {
        Some((kind, message)) => {
            format!("every planned provider failed; the last error was {kind}: {message}")
        }
        None => "the plan named no callable integration".into(),
    };
    // Every provider was at its share of the instance pool: the caller
    // is over its capacity (429), nothing failed. Every call could pass a
    // hard budget: none was made (402).
    let all = |kind: &str| {
        !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| a.error_kind.as_deref() == Some(kind))
    };
    // Every provider called throttled and nothing else failed: the
    // caller may come back when the soonest of them said (429).
    let kind = if all(BUSY) {
        DispatchKind::PluginBusy
    } else if all(DispatchKind::BudgetExceeded.as_str()) {
        DispatchKind::BudgetExceeded
    } else if throttled && !failed_otherwise {
        DispatchKind::RateLimited
    } else {
        DispatchKind::AllAttemptsFailed
    };
    let retry_after = match kind {
        DispatchKind::RateLimited => resume.map(|at| at.saturating_duration_since(Instant::now())),
        _ => None,
    };
    let message = match (kind, &last_error) {
        (DispatchKind::BudgetExceeded, Some((_, why))) => why.clone(),
        (DispatchKind::RateLimited, Some((kind, why))) => format!(
            "every planned provider is rate limited{}; the last error was {kind}: {why}",
            retry_after
                .map(|d| format!(", the soonest for {} s more", d.as_secs_f64().ceil()))
                .unwrap_or_default()
        ),
        _ => message,
    };
    Err(DispatchError {
        kind,
        message,
        attempts,
        retry_after,
    })
}

/// A step skipped because its model rests `left` longer after its
/// provider throttled it.
fn resting_attempt<T>(seq: i64, step: &Step<T>, left: Duration) -> Attempt {
    let mut attempt = skipped_attempt(seq, step);
    attempt.error_kind = Some(RESTING.into());
    attempt.error_message = Some(format!(
        "`{}/{}` was throttled by its provider and rests for {:.1} s more",
        step.provider,
        step.model,
        left.as_secs_f64()
    ));
    attempt
}

fn skipped_attempt<T>(seq: i64, step: &Step<T>) -> Attempt {
    Attempt {
        seq,
        provider: step.provider.clone(),
        integration_id: Some(step.integration_id.clone()),
        plugin: step.plugin.clone(),
        model: step.model.clone(),
        outcome: AttemptOutcome::Skipped,
        error_kind: Some("circuit_open".into()),
        error_message: Some(format!(
            "the circuit of `{}/{}` is open after repeated failures",
            step.provider, step.model
        )),
        latency_ms: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_nanos: Money::ZERO,
        started_at: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use vel_runtime::types::{FinishReason, Usage};

    use super::*;
    use crate::orchestrator::breaker::BreakerConfig;

    /// Answers each call with the next scripted result (after streaming
    /// the next scripted text, none when there is none), and notes which
    /// steps it was asked to call and the text each was to continue.
    struct Script {
        results: Mutex<VecDeque<Result<(), (&'static str, FailureClass)>>>,
        streams: Mutex<VecDeque<&'static str>>,
        called: Mutex<Vec<(String, i64)>>,
        continued: Mutex<Vec<String>>,
    }

    impl Script {
        fn new(results: Vec<Result<(), (&'static str, FailureClass)>>) -> Script {
            Script {
                results: Mutex::new(results.into()),
                streams: Mutex::new(VecDeque::new()),
                called: Mutex::new(Vec::new()),
                continued: Mutex::new(Vec::new()),
            }
        }

        fn streaming(self, streams: Vec<&'static str>) -> Script {
            *self.streams.lock().unwrap() = streams.into();
            self
        }

        fn called(&self) -> Vec<(String, i64)> {
            self.called.lock().unwrap().clone()
        }
    }

    impl ProviderCaller for Script {
        type Target = ();

        fn call(
            &self,
            step: &Step<()>,
            seq: i64,
            sent: &str,
        ) -> impl Future<Output = CallOutcome> + Send {
            self.called
                .lock()
                .unwrap()
                .push((step.provider.clone(), seq));
            self.continued.lock().unwrap().push(sent.to_string());
            let streamed = self.streams.lock().unwrap().pop_front().unwrap_or("");
            let next = self.results.lock().unwrap().pop_front().unwrap();
            let mut attempt = skipped_attempt(seq, step);
            attempt.error_kind = None;
            attempt.error_message = None;
            let result = match next {
                Ok(()) => {
                    attempt.outcome = AttemptOutcome::Ok;
                    Ok(CompletionResponse {
                        text: format!("{streamed}from {}", step.provider),
                        model: step.model.clone(),
                        usage: Usage {
                            input_tokens: 1,
                            output_tokens: 1,
                        },
                        finish_reason: FinishReason::Stop,
                        tool_calls: Vec::new(),
                        logprobs: None,
                    })
                }
                Err((kind, class)) => {
                    attempt.outcome = AttemptOutcome::Error;
                    attempt.error_kind = Some(kind.into());
                    attempt.error_message = Some(format!("{kind} from {}", step.provider));
                    Err(class)
                }
            };
            std::future::ready(CallOutcome {
                attempt,
                result,
                streamed: streamed.to_string(),
                streamed_tool_calls: false,
            })
        }
    }

    fn step(provider: &str) -> Step<()> {
        model_of(provider, "m")
    }

    fn model_of(provider: &str, model: &str) -> Step<()> {
        Step {
            integration_id: format!("id-{provider}"),
            provider: provider.into(),
            plugin: "scripted@1.0.0".into(),
            model: model.into(),
            target: (),
        }
    }

    fn limits(breakers: &Breakers<BreakerKey>) -> Limits<'_> {
        Limits {
            breakers,
            retry: RetryPolicy {
                base_delay: Duration::from_millis(1),
                ..RetryPolicy::default()
            },
            max_run: Duration::from_secs(10),
            after_text: StreamFailover::Fail,
        }
    }

    fn outcomes(attempts: &[Attempt]) -> Vec<(&str, &str)> {
        attempts
            .iter()
            .map(|a| (a.provider.as_str(), a.outcome.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn a_retryable_error_is_retried_then_falls_back_to_the_next_step() {
        let breakers = Breakers::new(BreakerConfig::default());
        let down = ("unavailable", FailureClass::Unavailable);
        let script = Script::new(vec![Err(down), Err(down), Err(down), Err(down), Ok(())]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let steps = [step("a"), step("b")];
        let answer = run(&script, &steps, 4, limits(&breakers), Some(&tx))
            .await
            .unwrap();
        assert_eq!(answer.provider, "b");
        assert_eq!(answer.response.text, "from b");
        // One call and three retries of `a`, numbered after the first seq.
        assert_eq!(
            script.called(),
            [("a", 5), ("a", 6), ("a", 7), ("a", 8), ("b", 9)].map(|(p, s)| (p.to_string(), s))
        );
        assert_eq!(
            outcomes(&answer.attempts),
            [
                ("a", "error"),
                ("a", "error"),
                ("a", "error"),
                ("a", "error"),
                ("b", "ok")
            ]
        );
        drop(tx);
        let mut reported = 0;
        while let Some(p) = rx.recv().await {
            reported += usize::from(matches!(p, Progress::AttemptFinished(_)));
        }
        assert_eq!(reported, 5);
    }

    #[tokio::test]
    async fn a_terminal_error_fails_the_run_without_falling_back() {
        let breakers = Breakers::new(BreakerConfig::default());
        let script = Script::new(vec![Err(("invalid_request", FailureClass::Terminal))]);
        let steps = [step("a"), step("b")];
        let error = run(&script, &steps, 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::InvalidRequest);
        assert_eq!(error.message, "invalid_request from a");
        assert_eq!(outcomes(&error.attempts), [("a", "error")]);
        assert_eq!(script.called().len(), 1);
    }

    #[tokio::test]
    async fn an_open_circuit_is_skipped_and_busy_everywhere_is_plugin_busy() {
        let breakers = Breakers::new(BreakerConfig::default());
        let now = Instant::now();
        while breakers.with(&breaker_key("id-a", "m"), |b| !b.record_failure(now)) {}
        let script = Script::new(vec![Ok(())]);
        let steps = [step("a"), step("b")];
        let answer = run(&script, &steps, 0, limits(&breakers), None)
            .await
            .unwrap();
        assert_eq!(answer.provider, "b");
        assert_eq!(outcomes(&answer.attempts), [("a", "skipped"), ("b", "ok")]);
        assert_eq!(
            answer.attempts[0].error_kind.as_deref(),
            Some("circuit_open")
        );
        assert_eq!(script.called(), [("b".to_string(), 2)]);

        let busy = (BUSY, FailureClass::Plugin);
        let script = Script::new(vec![Err(busy)]);
        let error = run(&script, &[step("c")], 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::PluginBusy);
    }

    #[tokio::test]
    async fn text_streamed_before_a_failure_ends_the_run_or_is_continued() {
        let breakers = Breakers::new(BreakerConfig::default());
        let down = ("unavailable", FailureClass::Unavailable);
        let steps = [step("a"), step("b")];

        // Before any text, a failure is retried and fallen back from.
        let script = Script::new(vec![Err(down), Ok(())]).streaming(vec!["", ""]);
        let answer = run(&script, &steps, 0, limits(&breakers), None)
            .await
            .unwrap();
        assert_eq!(answer.response.text, "from a");

        // `fail`: nothing follows the text.
        let script = Script::new(vec![Err(down), Ok(())]).streaming(vec!["half "]);
        let error = run(&script, &steps, 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::StreamInterrupted);
        assert_eq!(script.called().len(), 1);

        // `continue`: each attempt continues all the text sent before it,
        // and the answer is that text followed by the last attempt's.
        let mut limits = limits(&breakers);
        limits.after_text = StreamFailover::Continue;
        let script = Script::new(vec![Err(down), Err(down), Ok(())])
            .streaming(vec!["one ", "two ", "three "]);
        let answer = run(&script, &steps, 0, limits, None).await.unwrap();
        assert_eq!(answer.response.text, "one two three from a");
        assert_eq!(*script.continued.lock().unwrap(), ["", "one ", "one two "]);
    }

    #[tokio::test]
    async fn a_throttle_longer_than_the_run_has_left_falls_back_without_waiting() {
        let breakers = Breakers::new(BreakerConfig::default());
        let limits = Limits {
            max_run: Duration::from_millis(500),
            ..limits(&breakers)
        };
        let throttled = FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        };
        let script = Script::new(vec![Err(("rate_limited", throttled)), Ok(())]);
        let started = Instant::now();
        let answer = run(&script, &[step("a"), step("b")], 0, limits, None)
            .await
            .unwrap();
        assert_eq!(outcomes(&answer.attempts), [("a", "error"), ("b", "ok")]);
        assert!(started.elapsed() < Duration::from_millis(500));

        // Nothing else to serve: rate limited, with the time to come back.
        let script = Script::new(vec![Err(("rate_limited", throttled))]);
        let error = run(&script, &[step("c")], 0, limits, None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::RateLimited, "{}", error.message);
        assert!(
            error
                .retry_after
                .is_some_and(|d| d <= Duration::from_secs(1))
        );
    }

    #[tokio::test]
    async fn a_resting_model_is_skipped_and_throttles_alone_end_the_run_rate_limited() {
        let breakers = Breakers::new(BreakerConfig::default());
        let now = Instant::now();
        breakers.with(&breaker_key("id-a", "m"), |b| {
            b.rest_until(now + Duration::from_secs(30))
        });
        // Another model of the same integration is served.
        let script = Script::new(vec![Ok(())]);
        let steps = [model_of("a", "m"), model_of("a", "echo")];
        let answer = run(&script, &steps, 0, limits(&breakers), None)
            .await
            .unwrap();
        assert_eq!(outcomes(&answer.attempts), [("a", "skipped"), ("a", "ok")]);
        assert_eq!(answer.attempts[0].error_kind.as_deref(), Some(RESTING));
        assert_eq!(answer.response.model, "echo");

        // Only the resting model: no call, and the caller may come back
        // when it has rested.
        let script = Script::new(vec![]);
        let error = run(&script, &[step("a")], 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::RateLimited);
        let after = error.retry_after.expect("a time to come back");
        assert!(after <= Duration::from_secs(30) && after > Duration::from_secs(28));
        assert!(script.called().is_empty());

        // A throttle beyond the longest wait falls back; with the resting
        // model, the soonest of the two is the time to come back.
        let long = FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        };
        let script = Script::new(vec![Err(("rate_limited", long))]);
        let error = run(&script, &[step("b"), step("a")], 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::RateLimited, "{}", error.message);
        assert!(error.retry_after.unwrap() <= Duration::from_secs(30));
        assert_eq!(
            outcomes(&error.attempts),
            [("b", "error"), ("a", "skipped")]
        );

        // Anything else failing too: every attempt failed, no throttle to wait for.
        let down = ("unavailable", FailureClass::Unavailable);
        let script = Script::new(vec![
            Err(("rate_limited", long)),
            Err(down),
            Err(down),
            Err(down),
            Err(down),
        ]);
        let error = run(&script, &[step("b"), step("c")], 0, limits(&breakers), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, DispatchKind::AllAttemptsFailed);
        assert_eq!(error.retry_after, None);
    }
}
