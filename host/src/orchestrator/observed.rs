//! What this instance has seen of each provider: a circuit breaker and a
//! rolling window of latencies and failures per (integration, model), so
//! one failing or throttled model of an integration leaves its other
//! models served. Routers receive these figures with every candidate, so a
//! slow or failing provider is ranked down before its breaker opens.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vel_runtime::types::CircuitState;

use super::breaker::{BreakerConfig, Breakers, Circuit};

/// Calls remembered per (integration, model).
const WINDOW: usize = 100;

/// Latency percentiles and error rate of recent calls.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Median latency of successful calls, ms (0: unknown).
    pub p50_ms: u32,
    /// 95th percentile latency of successful calls, ms (0: unknown).
    pub p95_ms: u32,
    /// Share of failed calls, 0–1.
    pub error_rate: f32,
}

#[derive(Debug, Default)]
struct Window {
    /// (latency, succeeded), oldest first.
    calls: VecDeque<(Duration, bool)>,
    /// The figures of `calls`, kept current by [`Window::push`]: every
    /// request reads them for each candidate, a call changes them once.
    figures: Figures,
}

impl Window {
    fn push(&mut self, latency: Duration, ok: bool) {
        if self.calls.len() == WINDOW {
            self.calls.pop_front();
        }
        self.calls.push_back((latency, ok));
        self.figures = self.compute();
    }

    fn compute(&self) -> Figures {
        if self.calls.is_empty() {
            return Figures::default();
        }
        let mut ok: Vec<Duration> = self
            .calls
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| *d)
            .collect();
        ok.sort_unstable();
        let pct = |p: usize| {
            ok.get((ok.len().saturating_sub(1)) * p / 100)
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
                .unwrap_or(0)
        };
        let failed = self.calls.len() - ok.len();
        Figures {
            p50_ms: pct(50),
            p95_ms: pct(95),
            error_rate: failed as f32 / self.calls.len() as f32,
        }
    }
}

/// The key of a breaker: (integration id, model).
pub type BreakerKey = (String, String);

/// The breaker key of `model` at integration `integration_id`.
pub fn breaker_key(integration_id: &str, model: &str) -> BreakerKey {
    (integration_id.to_owned(), model.to_owned())
}

/// Breakers and figures of one instance, shared by every task it runs.
#[derive(Debug)]
pub struct Observed {
    breakers: Breakers<BreakerKey>,
    /// Windows by integration id, then model.
    windows: Mutex<HashMap<String, HashMap<String, Window>>>,
}

impl Observed {
    /// Nothing observed yet; breakers with `config`.
    pub fn new(config: BreakerConfig) -> Observed {
        Observed {
            breakers: Breakers::new(config),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The breakers, keyed by (integration id, model).
    pub fn breakers(&self) -> &Breakers<BreakerKey> {
        &self.breakers
    }

    /// The circuit of an integration's model, as routers see it: a resting
    /// model (throttled, see [`Circuit::Resting`]) reads open, since it
    /// cannot be called now.
    pub fn circuit(&self, integration_id: &str, model: &str, now: Instant) -> CircuitState {
        match self
            .breakers
            .circuit(&breaker_key(integration_id, model), now)
        {
            Circuit::Closed => CircuitState::Closed,
            Circuit::HalfOpen => CircuitState::HalfOpen,
            Circuit::Open | Circuit::Resting => CircuitState::Open,
        }
    }

    /// How long an integration's model still rests after its provider
    /// throttled it, if it does.
    pub fn resting(&self, integration_id: &str, model: &str, now: Instant) -> Option<Duration> {
        self.breakers
            .with(&breaker_key(integration_id, model), |b| b.resting(now))
    }

    /// Remember one call's latency and outcome.
    pub fn record(&self, integration_id: &str, model: &str, latency: Duration, ok: bool) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference: the keys are copied only for a new window.
        if let Some(window) = windows
            .get_mut(integration_id)
            .and_then(|models| models.get_mut(model))
        {
            window.push(latency, ok);
            return;
        }
        windows
            .entry(integration_id.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_default()
            .push(latency, ok);
    }

    /// Recent figures of (integration, model).
    pub fn figures(&self, integration_id: &str, model: &str) -> Figures {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .get(integration_id)
            .and_then(|models| models.get(model))
            .map(|w| w.figures)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_the_window() {
        let observed = Observed::new(BreakerConfig::default());
        assert_eq!(observed.figures("i", "m"), Figures::default());
        for ms in 1..=100 {
            observed.record("i", "m", Duration::from_millis(ms), true);
        }
        let f = observed.figures("i", "m");
        assert_eq!((f.p50_ms, f.p95_ms, f.error_rate), (50, 95, 0.0));
        for _ in 0..50 {
            observed.record("i", "m", Duration::from_millis(5), false);
        }
        let f = observed.figures("i", "m");
        assert!((f.error_rate - 0.5).abs() < f32::EPSILON, "{f:?}");
        // The window slid: the 50 oldest (fastest) successes are gone.
        assert_eq!(f.p50_ms, 75);
    }

    #[test]
    fn one_models_circuit_leaves_the_others_closed() {
        let observed = Observed::new(BreakerConfig::default());
        let now = Instant::now();
        let key = breaker_key("i", "rate-limited");
        while observed.breakers().with(&key, |b| !b.record_failure(now)) {}
        assert_eq!(
            observed.circuit("i", "rate-limited", now),
            CircuitState::Open
        );
        assert_eq!(observed.circuit("i", "echo", now), CircuitState::Closed);
        observed.breakers().with(&breaker_key("i", "slow"), |b| {
            b.rest_until(now + Duration::from_secs(2))
        });
        assert_eq!(observed.circuit("i", "slow", now), CircuitState::Open);
        assert_eq!(
            observed.resting("i", "slow", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(observed.resting("i", "echo", now), None);
    }
}
