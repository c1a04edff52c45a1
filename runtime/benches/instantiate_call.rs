//! Instantiate-and-call latency for `default-router` and `text-match`:
//! every iteration is a fresh store and instance from the pooling
//! allocator plus one call, as in production.
//!
//! Run: `cargo bench -p vel-runtime --bench instantiate_call`.
//! Besides criterion's report, prints p50/p90/p99/p99.9 over 20,000 calls
//! of each (targets: p50 <= 10 µs, p99 <= 50 µs).
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
#![allow(missing_docs)] // `criterion_main!` writes an undocumented `main`.

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use support::{Harness, percentiles, percentiles_after};
use vel_runtime::types::{
    Candidate, CircuitState, ConditionInput, Features, Preference, Priority, TaskInfo, TaskType,
};
use vel_runtime::{Plugin, PluginKind, Profile, Runtime};

const SAMPLES: usize = 20_000;
/// Calls measured with cold caches (each follows a pass over the buffer).
const COLD_SAMPLES: usize = 2_000;
/// Larger than the last-level cache of the machines the figures are from.
const EVICT_BYTES: usize = 128 * 1024 * 1024;

fn task() -> TaskInfo {
    TaskInfo {
        id: "bench-task".into(),
        organization_id: "org".into(),
        task_type: TaskType::CodeGeneration,
        priority: Priority::Medium,
        requested_model: None,
        estimated_input_tokens: 800,
        max_tokens: Some(400),
        prefer: Preference::Balanced,
        metadata: "{}".into(),
        required_features: Features::empty(),
    }
}

fn candidates() -> Vec<Candidate> {
    let c = |provider: &str, model: &str, price: f64, p50: u32, good: TaskType| Candidate {
        provider: provider.into(),
        model: model.into(),
        input_price_per_1k: price,
        output_price_per_1k: price * 3.0,
        good_for: vec![good],
        circuit: CircuitState::Closed,
        p50_latency_ms: p50,
        p95_latency_ms: p50 * 3,
        error_rate: 0.02,
        remaining_budget: Some(10.0),
        features: Features::empty(),
    };
    vec![
        c("openai", "gpt-4o", 0.0025, 900, TaskType::Reasoning),
        c("openai", "gpt-4o-mini", 0.00015, 400, TaskType::Light),
        c(
            "groq",
            "llama-3.1-70b-versatile",
            0.00059,
            250,
            TaskType::CodeGeneration,
        ),
        c("perplexity", "sonar", 0.001, 1200, TaskType::Research),
    ]
}

fn condition_input() -> ConditionInput {
    ConditionInput {
        output: "The build passed and every test is green; ship it.".into(),
        state: "{}".into(),
        args: r#"{"mode":"contains","pattern":"SHIP IT"}"#.into(),
    }
}

struct Setup {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    router: Plugin,
    condition: Plugin,
}

fn setup() -> Setup {
    let harness = Harness::new();
    let router = harness.load("default-router");
    let condition = harness.load("text-match");
    Setup {
        tokio: harness.tokio,
        runtime: harness.runtime,
        router,
        condition,
    }
}

impl Setup {
    async fn route_once(&self, task: &TaskInfo, candidates: &[Candidate]) {
        let limits = self.runtime.limits(PluginKind::Router, Profile::Platform);
        let call = self
            .runtime
            .route(&self.router, limits, task, candidates)
            .await;
        assert!(matches!(call.result, Ok(Ok(_))), "{:?}", call.result);
    }

    async fn evaluate_once(&self, input: &ConditionInput) {
        let limits = self
            .runtime
            .limits(PluginKind::Condition, Profile::Platform);
        let call = self.runtime.evaluate(&self.condition, limits, input).await;
        assert!(
            matches!(call.result, Ok(Ok(ref o)) if o.matched),
            "{:?}",
            call.result
        );
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let (task, candidates, input) = (task(), candidates(), condition_input());

    percentiles(
        "default-router route (instantiate + call)",
        2_000,
        SAMPLES,
        || s.tokio.block_on(s.route_once(&task, &candidates)),
    );
    percentiles(
        "text-match evaluate (instantiate + call)",
        2_000,
        SAMPLES,
        || s.tokio.block_on(s.evaluate_once(&input)),
    );
    // A condition runs once per choice, between provider calls and
    // database work: its code, its pooled slot and the host's
    // instantiation path are out of the caches by then. Writing a buffer
    // larger than the last-level cache between calls shows that cost.
    let mut evict = vec![0u8; EVICT_BYTES];
    let mut round = 0u8;
    percentiles_after(
        "text-match evaluate, caches evicted before each call",
        0,
        COLD_SAMPLES,
        || {
            round = round.wrapping_add(1);
            for line in evict.chunks_mut(64) {
                line[0] = round;
            }
            std::hint::black_box(&evict);
        },
        || s.tokio.block_on(s.evaluate_once(&input)),
    );

    let mut group = c.benchmark_group("instantiate_call");
    group.bench_function("default-router", |b| {
        b.iter(|| s.tokio.block_on(s.route_once(&task, &candidates)))
    });
    group.bench_function("text-match", |b| {
        b.iter(|| s.tokio.block_on(s.evaluate_once(&input)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
