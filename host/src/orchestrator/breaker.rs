//! Circuit breakers, one per integration and model: after `threshold`
//! failures within `window` the circuit opens and calls are refused; after
//! `cool_down` one probe call is let through (half-open); its success closes
//! the circuit, its failure opens it again.
//!
//! A provider that throttles and says when to come back (a 429 with
//! `Retry-After`) is not failing: that model rests until then
//! ([`Breaker::rest_until`]) and is refused meanwhile, without counting a
//! failure or opening the circuit.
//!
//! Time is passed in, never read here, so behaviour is deterministic and the
//! tests need no sleeps.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker settings (5 failures in 60 s, 30 s cool-down by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the circuit.
    pub threshold: usize,
    /// How far back failures count.
    pub window: Duration,
    /// How long an open circuit refuses calls before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// What a breaker currently allows; routers see it on each candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls flow.
    Closed,
    /// Cool-down over: one probe may go.
    HalfOpen,
    /// Calls are refused.
    Open,
    /// The provider throttled this model and said when to come back:
    /// calls are refused until then, though nothing failed.
    Resting,
}

#[derive(Debug, Clone)]
enum State {
    Closed { failures: VecDeque<Instant> },
    Open { since: Instant },
    HalfOpen { probing: bool },
}

/// One circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// Until when the provider asked not to be called (its `Retry-After`).
    resting_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: State::Closed {
                failures: VecDeque::new(),
            },
            resting_until: None,
        }
    }

    /// The circuit as of `now` (an open circuit past its cool-down reads
    /// half-open; a resting model reads [`Circuit::Resting`] unless its
    /// circuit is open anyway).
    pub fn circuit(&self, now: Instant) -> Circuit {
        let circuit = match &self.state {
            State::Closed { .. } => Circuit::Closed,
            State::Open { since } if now.duration_since(*since) >= self.config.cool_down => {
                Circuit::HalfOpen
            }
            State::Open { .. } => Circuit::Open,
            State::HalfOpen { .. } => Circuit::HalfOpen,
        };
        if circuit != Circuit::Open && self.resting(now).is_some() {
            Circuit::Resting
        } else {
            circuit
        }
    }

    /// How long the model still rests as of `now`, if it does.
    pub fn resting(&self, now: Instant) -> Option<Duration> {
        self.resting_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// The provider throttled this model until `until` (its `Retry-After`):
    /// calls are refused until then. Not a failure: the circuit is left as
    /// it is, and a probe that met the throttle is handed back.
    pub fn rest_until(&mut self, until: Instant) {
        self.resting_until = Some(self.resting_until.map_or(until, |u| u.max(until)));
        self.release_probe();
    }

    /// Ask to make a call at `now`. `true` means go ahead (and, when
    /// half-open, this call is the probe); `false` means the circuit is
    /// open or the model is resting.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if self.resting(now).is_some() {
            return false;
        }
        match &mut self.state {
            State::Closed { .. } => true,
            State::Open { since } => {
                if now.duration_since(*since) >= self.config.cool_down {
                    self.state = State::HalfOpen { probing: true };
                    true
                } else {
                    false
                }
            }
            State::HalfOpen { probing } => {
                if *probing {
                    false
                } else {
                    *probing = true;
                    true
                }
            }
        }
    }

    /// Record a successful call: the circuit closes and old failures are
    /// forgotten. Returns `true` when this success closed an open (or
    /// half-open) circuit.
    pub fn record_success(&mut self) -> bool {
        self.resting_until = None;
        let was_open = !matches!(self.state, State::Closed { .. });
        self.state = State::Closed {
            failures: VecDeque::new(),
        };
        was_open
    }

    /// Record a failed call at `now`. Returns `true` when this failure opened the circuit.
    pub fn record_failure(&mut self, now: Instant) -> bool {
        match &mut self.state {
            State::Closed { failures } => {
                failures.push_back(now);
                while let Some(first) = failures.front() {
                    if now.duration_since(*first) > self.config.window {
                        failures.pop_front();
                    } else {
                        break;
                    }
                }
                if failures.len() >= self.config.threshold {
                    self.state = State::Open { since: now };
                    true
                } else {
                    false
                }
            }
            State::HalfOpen { .. } => {
                self.state = State::Open { since: now };
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Give back a probe that ended without a verdict (e.g. the task was cancelled).
    pub fn release_probe(&mut self) {
        if let State::HalfOpen { probing } = &mut self.state {
            *probing = false;
        }
    }
}

/// The breakers of one process, keyed by (integration, model) or any key the caller picks.
#[derive(Debug, Default)]
pub struct Breakers<K> {
    config: BreakerConfig,
    map: Mutex<HashMap<K, Breaker>>,
}

impl<K: Hash + Eq> Breakers<K> {
    /// An empty set with these settings.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Run `f` on the breaker for `key`, creating it closed if needed.
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Breaker) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the state is still usable.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference: the key is copied only for a new breaker.
        if let Some(breaker) = map.get_mut(key) {
            return f(breaker);
        }
        let config = self.config;
        f(map
            .entry(key.to_owned())
            .or_insert_with(|| Breaker::new(config)))
    }

    /// The circuit for `key` as of `now`.
    pub fn circuit<Q>(&self, key: &Q, now: Instant) -> Circuit
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.with(key, |b| b.circuit(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn opens_after_five_failures_within_a_minute() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..4 {
            assert!(!b.record_failure(t0 + secs(i * 10)));
            assert_eq!(b.circuit(t0 + secs(i * 10)), Circuit::Closed);
        }
        assert!(b.record_failure(t0 + secs(40)));
        assert_eq!(b.circuit(t0 + secs(41)), Circuit::Open);
        assert!(!b.try_acquire(t0 + secs(41)));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..4 {
            b.record_failure(t0 + secs(i));
        }
        // 61 s after the first: only the three recent ones plus this one count.
        assert!(!b.record_failure(t0 + secs(62)));
        assert_eq!(b.circuit(t0 + secs(62)), Circuit::Closed);
    }

    #[test]
    fn half_open_after_cool_down_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..5 {
            b.record_failure(t0);
        }
        assert!(!b.try_acquire(t0 + secs(29)));
        assert_eq!(b.circuit(t0 + secs(30)), Circuit::HalfOpen);
        assert!(b.try_acquire(t0 + secs(30)));
        assert!(!b.try_acquire(t0 + secs(30)), "only one probe at a time");
        // The probe fails: open again, for a new cool-down.
        assert!(b.record_failure(t0 + secs(31)));
        assert!(!b.try_acquire(t0 + secs(60)));
        assert!(b.try_acquire(t0 + secs(61)));
        // This probe succeeds: closed.
        b.record_success();
        assert_eq!(b.circuit(t0 + secs(61)), Circuit::Closed);
        assert!(b.try_acquire(t0 + secs(61)));
    }

    #[test]
    fn released_probe_can_be_taken_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..5 {
            b.record_failure(t0);
        }
        assert!(b.try_acquire(t0 + secs(30)));
        b.release_probe();
        assert!(b.try_acquire(t0 + secs(30)));
    }

    #[test]
    fn a_throttled_model_rests_without_failing() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.rest_until(t0 + secs(7));
        assert_eq!(b.circuit(t0), Circuit::Resting);
        assert_eq!(b.resting(t0 + secs(2)), Some(secs(5)));
        assert!(!b.try_acquire(t0 + secs(6)));
        // A shorter Retry-After does not cut the rest short.
        b.rest_until(t0 + secs(3));
        assert!(!b.try_acquire(t0 + secs(6)));
        // Rested: calls flow again, and nothing counted as a failure.
        assert_eq!(b.circuit(t0 + secs(7)), Circuit::Closed);
        assert!(b.try_acquire(t0 + secs(7)));
        for i in 0..4 {
            assert!(!b.record_failure(t0 + secs(8 + i)));
        }
        assert!(
            b.record_failure(t0 + secs(12)),
            "the fifth failure opens it"
        );

        // A probe that meets a throttle is handed back; the circuit stays
        // half-open and the next probe goes once the rest is over.
        assert!(b.try_acquire(t0 + secs(42)));
        b.rest_until(t0 + secs(44));
        assert_eq!(b.circuit(t0 + secs(43)), Circuit::Resting);
        assert!(!b.try_acquire(t0 + secs(43)));
        assert!(b.try_acquire(t0 + secs(44)));
        assert!(b.record_success());
        assert_eq!(b.resting(t0 + secs(44)), None);
    }

    #[test]
    fn breakers_are_independent_per_key() {
        let t0 = Instant::now();
        let breakers = Breakers::new(BreakerConfig::default());
        for _ in 0..5 {
            breakers.with(&("mock", "rate-limited"), |b| b.record_failure(t0));
        }
        assert_eq!(
            breakers.circuit(&("mock", "rate-limited"), t0),
            Circuit::Open
        );
        assert_eq!(breakers.circuit(&("mock", "echo"), t0), Circuit::Closed);
        assert_eq!(
            breakers.circuit(&("groq", "rate-limited"), t0),
            Circuit::Closed
        );
    }
}
