//! `GET /metrics`'s families of finished work at scale: rendering the
//! request, token, cost and alert families with the organization as a
//! label for 1,000 organizations (several thousand series), and counting
//! one finished request while they are there.
//!
//! Run: `cargo bench -p vel --bench metrics`.
#![allow(clippy::unwrap_used)] // In benches a failed unwrap is a failed bench.
#![allow(missing_docs)] // criterion's macros write undocumented functions.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vel::analytics::buckets::Sample;
use vel::analytics::metrics;
use vel::money::Money;
use vel::orchestrator::state::{TaskSource, TaskStatus};

fn sample(org: usize, status: TaskStatus) -> Sample {
    Sample {
        org_id: format!("org-{org:04}"),
        finished_at: 0,
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        agent_id: None,
        source: TaskSource::Gateway,
        status: Some(status),
        attempts: 1,
        cached: false,
        input_tokens: 12,
        output_tokens: 40,
        cost: Money::from_nanos(9_000),
        latency: Duration::from_millis(300),
    }
}

fn bench(c: &mut Criterion) {
    metrics::set_org_label(true);
    for org in 0..1_000 {
        metrics::count(&sample(org, TaskStatus::Completed));
        metrics::count(&sample(org, TaskStatus::Failed));
        metrics::count_alert(&format!("org-{org:04}"), "anomaly");
    }
    let mut out = String::new();
    metrics::render(&mut out);
    let series = out.lines().filter(|l| !l.starts_with('#')).count();
    println!("{series} series, {} bytes", out.len());
    c.bench_function("render 1,000 organizations", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(1 << 20);
            metrics::render(&mut out);
            out
        })
    });
    c.bench_function("count one finished request", |b| {
        let s = sample(500, TaskStatus::Completed);
        b.iter(|| metrics::count(&s))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
