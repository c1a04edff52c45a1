//! `cost-router`: a second, deliberately simple routing policy.
//!
//! Cheapest first by estimated cost, skipping open circuits, ties broken by
//! the lower observed median latency. A short example of a complete router.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    path: "../../wit",
    world: "router",
});

use exports::vel::plugins::routing::{
    Attempt, Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo,
};
use vel::plugins::types::CircuitState;

/// Completion tokens assumed when the task sets no `max-tokens`.
const DEFAULT_OUTPUT_TOKENS: u32 = 512;

/// The component's export.
struct CostRouter;

impl Guest for CostRouter {
    fn info() -> RouterInfo {
        RouterInfo {
            name: "cost-router".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Cheapest candidate first; skips open circuits".to_string(),
        }
    }

    fn route(task: TaskInfo, candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        plan(&task, &candidates)
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(CostRouter);

/// Estimated US dollars for the task on a candidate (prices are per 1K tokens).
fn estimated_cost(task: &TaskInfo, c: &Candidate) -> f64 {
    let output = task.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
    f64::from(task.estimated_input_tokens) / 1000.0 * c.input_price_per_1k
        + f64::from(output) / 1000.0 * c.output_price_per_1k
}

/// Cheapest usable candidate first.
fn plan(task: &TaskInfo, candidates: &[Candidate]) -> Result<Plan, RouteError> {
    let mut usable: Vec<(f64, &Candidate)> = candidates
        .iter()
        .filter(|c| c.circuit != CircuitState::Open)
        .map(|c| (estimated_cost(task, c), c))
        .collect();
    if let Some((_, c)) = usable.iter().find(|(cost, _)| !cost.is_finite()) {
        return Err(RouteError::InvalidInput(format!(
            "candidate {}/{} has a price that is not a number",
            c.provider, c.model
        )));
    }
    usable.sort_by(|(cost_a, a), (cost_b, b)| {
        cost_a.total_cmp(cost_b).then(
            (a.p50_latency_ms == 0, a.p50_latency_ms)
                .cmp(&(b.p50_latency_ms == 0, b.p50_latency_ms)),
        )
    });
    let Some((cheapest, first)) = usable.first() else {
        return Err(RouteError::NoCandidate(format!(
            "none of the {} candidates has a closed or half-open circuit",
            candidates.len()
        )));
    };
    Ok(Plan {
        reason: format!(
            "cheapest first: {}/{} at an estimated ${cheapest:.6}; {} skipped for open circuits",
            first.provider,
            first.model,
            candidates.len() - usable.len()
        ),
        attempts: usable
            .iter()
            .map(|(_, c)| Attempt {
                provider: c.provider.clone(),
                model: c.model.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use exports::vel::plugins::routing::Preference;
    use vel::plugins::types::{Features, Priority, TaskType};

    fn cand(model: &str, price: f64, p50: u32, circuit: CircuitState) -> Candidate {
        Candidate {
            provider: "p".into(),
            model: model.into(),
            input_price_per_1k: price,
            output_price_per_1k: price,
            good_for: vec![],
            circuit,
            p50_latency_ms: p50,
            p95_latency_ms: p50,
            error_rate: 0.0,
            remaining_budget: None,
            features: Features::empty(),
        }
    }

    fn task() -> TaskInfo {
        TaskInfo {
            id: "t".into(),
            organization_id: "o".into(),
            task_type: TaskType::General,
            priority: Priority::Low,
            requested_model: None,
            estimated_input_tokens: 100,
            max_tokens: None,
            prefer: Preference::Cost,
            metadata: "{}".into(),
            required_features: Features::empty(),
        }
    }

    #[test]
    fn cheapest_first_ties_by_latency_open_skipped() {
        let cands = [
            cand("dear", 0.01, 100, CircuitState::Closed),
            cand("cheap-slow", 0.001, 900, CircuitState::Closed),
            cand("cheap-fast", 0.001, 100, CircuitState::HalfOpen),
            cand("cheapest-but-open", 0.0001, 10, CircuitState::Open),
        ];
        let plan = plan(&task(), &cands).unwrap();
        let models: Vec<_> = plan.attempts.iter().map(|a| a.model.as_str()).collect();
        assert_eq!(models, ["cheap-fast", "cheap-slow", "dear"]);
        assert!(plan.reason.contains("1 skipped"), "{}", plan.reason);
    }

    #[test]
    fn nothing_usable_is_no_candidate() {
        let cands = [cand("a", 0.1, 1, CircuitState::Open)];
        assert!(matches!(
            plan(&task(), &cands),
            Err(RouteError::NoCandidate(_))
        ));
        assert!(matches!(
            plan(&task(), &[]),
            Err(RouteError::NoCandidate(_))
        ));
        let cands = [cand("nan", f64::NAN, 1, CircuitState::Closed)];
        assert!(matches!(
            plan(&task(), &cands),
            Err(RouteError::InvalidInput(_))
        ));
    }
}
