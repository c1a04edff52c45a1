//! Retry and fallback decisions. Provider plugins report typed errors; this
//! module decides, the same way for every provider, whether to retry the
//! same provider (after a back-off that honours `Retry-After`), fall back to
//! the plan's next attempt, or fail the task.

use std::time::Duration;

/// How an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The provider throttled us; it may say when to come back.
    RateLimited {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The provider is down, answered 5xx, or the connection broke.
    Unavailable,
    /// The provider did not answer in time. Not retried on the same
    /// provider: the attempt had the integration's whole timeout, so one
    /// wall-clock limit ends it and the plan's next provider gets a turn.
    Timeout,
    /// The credential was refused: this provider cannot serve us now, another may.
    Auth,
    /// The plugin itself failed (trap, limit, bad output): try another provider.
    Plugin,
    /// Anything else the provider reported.
    Other,
    /// The request is wrong (or the content refused): no provider will do better.
    Terminal,
    /// The call could pass a hard budget and was not made: a cheaper step
    /// of the plan may fit.
    OverBudget,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Call the same provider again after this delay.
    Retry(Duration),
    /// Move on to the plan's next attempt.
    FallBack,
    /// Give up on the task.
    Fail,
}

/// Back-off settings: `max_retries` retries per provider, waiting
/// `base_delay × 2^n` before the n-th (100, 200, 400 ms by default). A
/// throttle that says when to come back (`Retry-After`) is retried once,
/// after that time, when it is short (at most `max_retry_after`, 2 s by
/// default); a longer one is not waited for: the plan falls back (the
/// model rests meanwhile), and a run that nothing else serves ends rate
/// limited, passing the time on to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one provider after its first failure.
    pub max_retries: u32,
    /// Delay before the first retry; it doubles each time.
    pub base_delay: Duration,
    /// The longest `Retry-After` worth waiting for; beyond it, fall back.
    pub max_retry_after: Duration,
    /// Retries of a throttle with a short `Retry-After`.
    pub retry_after_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(2),
            retry_after_retries: 1,
        }
    }
}

impl RetryPolicy {
    /// The back-off before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(1 << doublings)
    }

    /// Decide after `failures` consecutive failures of one provider, the last
    /// of which was `class`.
    pub fn decide(&self, class: FailureClass, failures: u32) -> Decision {
        let retryable = match class {
            FailureClass::RateLimited { .. } | FailureClass::Unavailable => true,
            FailureClass::Timeout
            | FailureClass::Auth
            | FailureClass::Plugin
            | FailureClass::OverBudget
            | FailureClass::Other => false,
            FailureClass::Terminal => return Decision::Fail,
        };
        if !retryable || failures > self.max_retries {
            return Decision::FallBack;
        }
        let backoff = self.backoff(failures);
        match class {
            FailureClass::RateLimited {
                retry_after: Some(after),
            } if after > self.max_retry_after || failures > self.retry_after_retries => {
                Decision::FallBack
            }
            FailureClass::RateLimited {
                retry_after: Some(after),
            } => Decision::Retry(after.max(backoff)),
            _ => Decision::Retry(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn unavailable_backs_off_100_200_400_then_falls_back() {
        let policy = RetryPolicy::default();
        let decisions: Vec<_> = (1..=4)
            .map(|n| policy.decide(FailureClass::Unavailable, n))
            .collect();
        assert_eq!(
            decisions,
            vec![
                Decision::Retry(MS(100)),
                Decision::Retry(MS(200)),
                Decision::Retry(MS(400)),
                Decision::FallBack,
            ]
        );
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let policy = RetryPolicy::default();
        let limited = |secs| FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(policy.decide(limited(2), 1), Decision::Retry(MS(2000)));
        assert_eq!(
            policy.decide(FailureClass::RateLimited { retry_after: None }, 2),
            Decision::Retry(MS(200))
        );
        assert_eq!(
            policy.decide(
                FailureClass::RateLimited {
                    retry_after: Some(MS(10))
                },
                1
            ),
            Decision::Retry(MS(100))
        );
        assert_eq!(policy.decide(limited(31), 1), Decision::FallBack);
    }

    #[test]
    fn a_short_retry_after_is_retried_once_a_longer_one_falls_back() {
        let policy = RetryPolicy::default();
        let limited = |ms| FailureClass::RateLimited {
            retry_after: Some(MS(ms)),
        };
        assert_eq!(policy.decide(limited(1000), 1), Decision::Retry(MS(1000)));
        assert_eq!(policy.decide(limited(2000), 1), Decision::Retry(MS(2000)));
        // Once only.
        assert_eq!(policy.decide(limited(1000), 2), Decision::FallBack);
        // Longer than worth waiting for inside a request.
        assert_eq!(policy.decide(limited(2001), 1), Decision::FallBack);
        // A throttle without a time backs off as an outage does.
        let unsaid = FailureClass::RateLimited { retry_after: None };
        assert_eq!(policy.decide(unsaid, 3), Decision::Retry(MS(400)));
        assert_eq!(policy.decide(unsaid, 4), Decision::FallBack);
    }

    #[test]
    fn terminal_fails_and_provider_specific_failures_fall_back_at_once() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.decide(FailureClass::Terminal, 1), Decision::Fail);
        for class in [
            FailureClass::Timeout,
            FailureClass::Auth,
            FailureClass::Plugin,
            FailureClass::Other,
        ] {
            assert_eq!(policy.decide(class, 1), Decision::FallBack, "{class:?}");
        }
    }
}
