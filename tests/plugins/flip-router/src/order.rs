//! The ordering `flip-router` plans with, free of host calls so it runs in
//! native tests.

use crate::exports::vel::plugins::routing::{Attempt, Candidate, Plan, RouteError};
use crate::vel::plugins::types::CircuitState;

/// The plugin name (what a manifest must say).
pub const NAME: &str = "flip-router";
/// The plugin version: the `v2` feature builds the second release.
pub const VERSION: &str = if cfg!(feature = "v2") {
    "2.0.0"
} else {
    "1.0.0"
};
/// Whether providers are ordered Z to A (v2) rather than A to Z (v1).
const DESCENDING: bool = cfg!(feature = "v2");
/// How this version orders providers, for the info and the plan's reason.
pub const DIRECTION: &str = if DESCENDING {
    "descending"
} else {
    "ascending"
};

/// Every candidate whose circuit is not open, ordered by provider name
/// (ascending in v1, descending in v2), then by model ascending.
pub fn plan(candidates: &[Candidate]) -> Result<Plan, RouteError> {
    if candidates.is_empty() {
        return Err(RouteError::NoCandidate(format!(
            "{NAME} {VERSION}: no candidates"
        )));
    }
    let mut usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.circuit != CircuitState::Open)
        .collect();
    if usable.is_empty() {
        return Err(RouteError::NoCandidate(format!(
            "{NAME} {VERSION}: every candidate's circuit is open"
        )));
    }
    usable.sort_by(|a, b| {
        let by_provider = a.provider.cmp(&b.provider);
        let by_provider = if DESCENDING {
            by_provider.reverse()
        } else {
            by_provider
        };
        by_provider.then_with(|| a.model.cmp(&b.model))
    });
    Ok(Plan {
        attempts: usable
            .into_iter()
            .map(|c| Attempt {
                provider: c.provider.clone(),
                model: c.model.clone(),
            })
            .collect(),
        reason: format!("{NAME} {VERSION}: {DIRECTION} by provider"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vel::plugins::types::Features;

    fn candidate(provider: &str, model: &str, circuit: CircuitState) -> Candidate {
        Candidate {
            provider: provider.into(),
            model: model.into(),
            input_price_per_1k: 0.001,
            output_price_per_1k: 0.002,
            good_for: vec![],
            circuit,
            p50_latency_ms: 0,
            p95_latency_ms: 0,
            error_rate: 0.0,
            remaining_budget: None,
            features: Features::empty(),
        }
    }

    #[test]
    fn orders_usable_candidates_by_provider_then_model() {
        let plan = plan(&[
            candidate("beta", "b-2", CircuitState::Closed),
            candidate("alpha", "a-1", CircuitState::HalfOpen),
            candidate("gamma", "g-1", CircuitState::Open),
            candidate("beta", "b-1", CircuitState::Closed),
        ])
        .unwrap();
        let order: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| format!("{}/{}", a.provider, a.model))
            .collect();
        let expected = if DESCENDING {
            ["beta/b-1", "beta/b-2", "alpha/a-1"]
        } else {
            ["alpha/a-1", "beta/b-1", "beta/b-2"]
        };
        assert_eq!(order, expected);
        assert_eq!(
            plan.reason,
            format!("flip-router {VERSION}: {DIRECTION} by provider")
        );
    }

    #[test]
    fn no_candidate_when_none_is_usable() {
        assert!(matches!(plan(&[]), Err(RouteError::NoCandidate(_))));
        assert!(matches!(
            plan(&[candidate("alpha", "a-1", CircuitState::Open)]),
            Err(RouteError::NoCandidate(m)) if m.contains("open")
        ));
    }
}
