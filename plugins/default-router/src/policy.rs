//! The routing policy: which candidates are usable, and in what order.
//!
//! 1. Candidates whose circuit is `open` are skipped, and so are those whose
//!    estimated cost exceeds the tenant's remaining budget.
//! 2. The rest are grouped, best group first:
//!    the requested model (when the task names one); the task type's
//!    preferred models ([`preferred_models`]); models whose `good-for` lists
//!    the task type; everything else. Half-open candidates come after all of
//!    those (in the same group order), so a probing provider is tried last.
//! 3. Within a group, candidates are ordered by the task's preference
//!    (see [`crate::scoring`]): `cost` (cheapest, then fastest), `latency`
//!    (fastest p50, then p95, then cheapest) or `balanced` (blend score).

use crate::exports::vel::plugins::routing::{
    Attempt, Candidate, Plan, Preference, RouteError, TaskInfo,
};
use crate::scoring::{balanced_score, by_latency, estimated_cost};
use crate::vel::plugins::types::{CircuitState, TaskType};
use std::cmp::Ordering;

/// The seeds' policy: the models each task type goes to first, best first.
pub fn preferred_models(task_type: TaskType) -> &'static [&'static str] {
    match task_type {
        TaskType::Reasoning => &["gpt-4o"],
        TaskType::CodeGeneration => &["llama-3.1-70b", "llama-3.1-70b-versatile"],
        TaskType::Research => &["sonar", "sonar-large", "sonar-pro"],
        TaskType::Light => &["gpt-4o-mini"],
        TaskType::General => &[],
    }
}

/// Why a candidate sits where it does; earlier variants go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Requested,
    /// Position in [`preferred_models`].
    Preferred(usize),
    GoodFor,
    Rest,
}

/// A usable candidate with what it is sorted by.
struct Ranked<'a> {
    candidate: &'a Candidate,
    half_open: bool,
    group: Group,
    cost: f64,
    score: f64,
}

/// Order `candidates` into a fallback chain for `task`.
pub fn plan(task: &TaskInfo, candidates: &[Candidate]) -> Result<Plan, RouteError> {
    if candidates.is_empty() {
        return Err(RouteError::NoCandidate(
            "no candidates were offered".to_string(),
        ));
    }
    validate(candidates)?;

    let mut skipped = Vec::new();
    let mut usable: Vec<&Candidate> = Vec::new();
    for c in candidates {
        if usable
            .iter()
            .any(|u| u.provider == c.provider && u.model == c.model)
        {
            continue;
        }
        if c.circuit == CircuitState::Open {
            skipped.push(format!("{}/{} (circuit open)", c.provider, c.model));
            continue;
        }
        let cost = estimated_cost(task, c);
        if let Some(budget) = c.remaining_budget
            && cost > budget
        {
            skipped.push(format!(
                "{}/{} (estimated ${cost:.6} exceeds the remaining budget ${budget:.6})",
                c.provider, c.model
            ));
            continue;
        }
        usable.push(c);
    }
    if usable.is_empty() {
        return Err(RouteError::NoCandidate(format!(
            "every candidate was skipped: {}",
            skipped.join(", ")
        )));
    }

    let preferred = preferred_models(task.task_type);
    let mut ranked: Vec<Ranked> = usable
        .iter()
        .map(|c| Ranked {
            candidate: c,
            half_open: c.circuit == CircuitState::HalfOpen,
            group: group_of(task, preferred, c),
            cost: estimated_cost(task, c),
            score: balanced_score(task, c, &usable),
        })
        .collect();
    ranked.sort_by(|a, b| {
        (a.half_open, a.group)
            .cmp(&(b.half_open, b.group))
            .then_with(|| by_preference(task.prefer, a, b))
    });

    let reason = explain(task, &ranked, &skipped);
    Ok(Plan {
        attempts: ranked
            .iter()
            .map(|r| Attempt {
                provider: r.candidate.provider.clone(),
                model: r.candidate.model.clone(),
            })
            .collect(),
        reason,
    })
}

/// Refuses figures no real candidate can have.
fn validate(candidates: &[Candidate]) -> Result<(), RouteError> {
    for c in candidates {
        let prices_ok = [c.input_price_per_1k, c.output_price_per_1k]
            .iter()
            .all(|p| p.is_finite() && *p >= 0.0);
        if !prices_ok {
            return Err(RouteError::InvalidInput(format!(
                "candidate {}/{}: prices must be finite and not negative",
                c.provider, c.model
            )));
        }
        if !c.error_rate.is_finite() {
            return Err(RouteError::InvalidInput(format!(
                "candidate {}/{}: error-rate must be a number between 0 and 1",
                c.provider, c.model
            )));
        }
    }
    Ok(())
}

fn group_of(task: &TaskInfo, preferred: &[&str], c: &Candidate) -> Group {
    if task.requested_model.as_deref() == Some(c.model.as_str()) {
        Group::Requested
    } else if let Some(i) = preferred.iter().position(|m| *m == c.model) {
        Group::Preferred(i)
    } else if c.good_for.contains(&task.task_type) {
        Group::GoodFor
    } else {
        Group::Rest
    }
}

fn by_preference(prefer: Preference, a: &Ranked, b: &Ranked) -> Ordering {
    let cheaper = a.cost.total_cmp(&b.cost);
    let faster = by_latency(a.candidate, b.candidate);
    match prefer {
        Preference::Cost => cheaper.then(faster),
        Preference::Latency => faster.then(cheaper),
        Preference::Balanced => a.score.total_cmp(&b.score).then(cheaper),
    }
}

/// The plan's reason, for people and the audit log.
fn explain(task: &TaskInfo, ranked: &[Ranked], skipped: &[String]) -> String {
    let first = &ranked[0];
    let why_first = match first.group {
        Group::Requested => "the requested model".to_string(),
        Group::Preferred(_) => {
            format!("the preferred model for {}", task_type_name(task.task_type))
        }
        Group::GoodFor => format!("good for {}", task_type_name(task.task_type)),
        Group::Rest => format!("the best by {}", preference_name(task.prefer)),
    };
    let mut reason = format!(
        "{} task: {}/{} first ({why_first})",
        task_type_name(task.task_type),
        first.candidate.provider,
        first.candidate.model
    );
    if ranked.len() > 1 {
        let rest: Vec<String> = ranked[1..]
            .iter()
            .map(|r| {
                let probing = if r.half_open { " [half-open]" } else { "" };
                format!("{}/{}{probing}", r.candidate.provider, r.candidate.model)
            })
            .collect();
        reason.push_str(&format!(
            "; fallback ordered by {}: {}",
            preference_name(task.prefer),
            rest.join(", ")
        ));
    }
    if !skipped.is_empty() {
        reason.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    reason
}

fn task_type_name(t: TaskType) -> &'static str {
    match t {
        TaskType::Reasoning => "reasoning",
        TaskType::CodeGeneration => "code-generation",
        TaskType::Research => "research",
        TaskType::Light => "light",
        TaskType::General => "general",
    }
}

fn preference_name(p: Preference) -> &'static str {
    match p {
        Preference::Balanced => "balanced score",
        Preference::Cost => "cost",
        Preference::Latency => "latency",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vel::plugins::types::{Features, Priority};

    fn task(task_type: TaskType, prefer: Preference) -> TaskInfo {
        TaskInfo {
            id: "t1".into(),
            organization_id: "org".into(),
            task_type,
            priority: Priority::Medium,
            requested_model: None,
            estimated_input_tokens: 1000,
            max_tokens: Some(1000),
            prefer,
            metadata: "{}".into(),
            required_features: Features::empty(),
        }
    }

    fn cand(
        provider: &str,
        model: &str,
        price: (f64, f64),
        p50: u32,
        good: &[TaskType],
    ) -> Candidate {
        Candidate {
            provider: provider.into(),
            model: model.into(),
            input_price_per_1k: price.0,
            output_price_per_1k: price.1,
            good_for: good.to_vec(),
            circuit: CircuitState::Closed,
            p50_latency_ms: p50,
            p95_latency_ms: p50 * 2,
            error_rate: 0.0,
            remaining_budget: None,
            features: Features::empty(),
        }
    }

    /// The seeds' catalogue.
    fn catalogue() -> Vec<Candidate> {
        vec![
            cand(
                "openai",
                "gpt-4o",
                (0.0025, 0.01),
                900,
                &[TaskType::Reasoning],
            ),
            cand(
                "openai",
                "gpt-4o-mini",
                (0.0002, 0.0006),
                500,
                &[TaskType::Light],
            ),
            cand(
                "groq",
                "llama-3.1-70b",
                (0.00079, 0.00079),
                200,
                &[TaskType::CodeGeneration],
            ),
            cand(
                "groq",
                "mixtral-8x7b",
                (0.00027, 0.00027),
                150,
                &[TaskType::CodeGeneration],
            ),
            cand(
                "perplexity",
                "sonar",
                (0.001, 0.001),
                1200,
                &[TaskType::Research],
            ),
        ]
    }

    fn models(plan: &Plan) -> Vec<&str> {
        plan.attempts.iter().map(|a| a.model.as_str()).collect()
    }

    #[test]
    fn each_task_type_goes_to_the_seeds_model_first() {
        let cases = [
            (TaskType::Reasoning, "gpt-4o"),
            (TaskType::CodeGeneration, "llama-3.1-70b"),
            (TaskType::Research, "sonar"),
            (TaskType::Light, "gpt-4o-mini"),
        ];
        for (tt, want) in cases {
            let plan = plan(&task(tt, Preference::Balanced), &catalogue()).unwrap();
            assert_eq!(plan.attempts[0].model, want, "{tt:?}");
            assert_eq!(plan.attempts.len(), 5, "every candidate is in the chain");
            assert!(plan.reason.contains(want), "{}", plan.reason);
        }
    }

    #[test]
    fn good_for_comes_before_the_rest() {
        // Code generation: llama preferred by id, then mixtral (good-for), then the rest by cost.
        let plan = plan(
            &task(TaskType::CodeGeneration, Preference::Cost),
            &catalogue(),
        )
        .unwrap();
        assert_eq!(
            models(&plan),
            [
                "llama-3.1-70b",
                "mixtral-8x7b",
                "gpt-4o-mini",
                "sonar",
                "gpt-4o"
            ]
        );
    }

    #[test]
    fn preference_orders_the_fallback_chain() {
        let t = task(TaskType::General, Preference::Cost);
        assert_eq!(
            models(&plan(&t, &catalogue()).unwrap()),
            [
                "mixtral-8x7b",
                "gpt-4o-mini",
                "llama-3.1-70b",
                "sonar",
                "gpt-4o"
            ]
        );
        let t = task(TaskType::General, Preference::Latency);
        assert_eq!(
            models(&plan(&t, &catalogue()).unwrap()),
            [
                "mixtral-8x7b",
                "llama-3.1-70b",
                "gpt-4o-mini",
                "gpt-4o",
                "sonar"
            ]
        );
    }

    #[test]
    fn balanced_weighs_errors() {
        let mut cands = catalogue();
        cands[3].error_rate = 0.9; // mixtral is failing
        let t = task(TaskType::General, Preference::Balanced);
        let plan = plan(&t, &cands).unwrap();
        assert_ne!(plan.attempts[0].model, "mixtral-8x7b");
        assert_eq!(plan.attempts[0].model, "llama-3.1-70b");
    }

    #[test]
    fn open_circuits_are_skipped_and_half_open_goes_last() {
        let mut cands = catalogue();
        cands[0].circuit = CircuitState::Open; // gpt-4o
        cands[2].circuit = CircuitState::HalfOpen; // llama
        let plan = plan(&task(TaskType::Reasoning, Preference::Cost), &cands).unwrap();
        let m = models(&plan);
        assert!(!m.contains(&"gpt-4o"));
        assert_eq!(m.last(), Some(&"llama-3.1-70b"));
        assert!(
            plan.reason.contains("openai/gpt-4o (circuit open)"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn budget_skips_expensive_candidates() {
        let mut cands = catalogue();
        for c in &mut cands {
            // 1000 in + 1000 out: gpt-4o costs $0.0125, llama $0.00158.
            c.remaining_budget = Some(0.002);
        }
        let plan = plan(&task(TaskType::Reasoning, Preference::Balanced), &cands).unwrap();
        assert_eq!(models(&plan).len(), 4);
        assert!(!models(&plan).contains(&"gpt-4o"));
        assert!(plan.reason.contains("budget"), "{}", plan.reason);
    }

    #[test]
    fn requested_model_goes_first() {
        let mut t = task(TaskType::Reasoning, Preference::Balanced);
        t.requested_model = Some("mixtral-8x7b".into());
        let plan = plan(&t, &catalogue()).unwrap();
        assert_eq!(models(&plan)[..2], ["mixtral-8x7b", "gpt-4o"]);
        assert!(plan.reason.contains("requested"), "{}", plan.reason);
    }

    #[test]
    fn no_usable_candidate_is_an_error() {
        let t = task(TaskType::General, Preference::Balanced);
        assert!(matches!(plan(&t, &[]), Err(RouteError::NoCandidate(_))));
        let mut cands = catalogue();
        for c in &mut cands {
            c.circuit = CircuitState::Open;
        }
        match plan(&t, &cands) {
            Err(RouteError::NoCandidate(why)) => assert!(why.contains("circuit open"), "{why}"),
            other => panic!("expected no-candidate, got {other:?}"),
        }
    }

    #[test]
    fn nonsense_prices_are_invalid_input() {
        let mut cands = catalogue();
        cands[1].input_price_per_1k = f64::NAN;
        let t = task(TaskType::General, Preference::Balanced);
        assert!(
            matches!(plan(&t, &cands), Err(RouteError::InvalidInput(m)) if m.contains("gpt-4o-mini"))
        );
    }

    #[test]
    fn duplicates_appear_once() {
        let mut cands = catalogue();
        cands.push(cands[0].clone());
        let plan = plan(&task(TaskType::General, Preference::Balanced), &cands).unwrap();
        assert_eq!(plan.attempts.len(), 5);
    }
}
