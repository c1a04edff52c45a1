//! The rate limiter's admission check, as the access guard runs it before
//! every authenticated request: `admit_request` for an organization
//! without rules, and for an API key whose organization, user and key all
//! have request limits, with their slices already leased (the steady
//! state: no query), and `admit_task` with a token limit (a room check).
//! On SQLite in a temporary directory; the rules cache reloads every 2 s,
//! as on a server.
//!
//! Run: `cargo bench -p vel --bench limits`.
#![allow(clippy::unwrap_used)] // In benches a failed unwrap is a failed bench.
#![allow(missing_docs)] // criterion's macros write undocumented functions.

use criterion::{Criterion, criterion_group, criterion_main};
use vel::auth::{Credential, Holding, Permissions, Principal};
use vel::limits::RateLimiter;
use vel::store::rate_limit_rules::{self, RuleRow};
use vel::store::{Db, now_ms, organizations};

/// So large that one slice (an eighth) outlasts any run of the bench.
const HUGE: i64 = 1 << 50;

fn principal(org_id: &str, user_id: &str, key: &str) -> Principal {
    Principal {
        user_id: user_id.to_string(),
        org_id: org_id.to_string(),
        holding: Holding {
            platform_admin: false,
            role: Some("task_executor".into()),
            permissions: Permissions::NONE,
        },
        credential: Credential::ApiKey {
            id: key.to_string(),
        },
    }
}

fn rule(org_id: &str, scope: &str, subject_id: &str) -> RuleRow {
    RuleRow {
        org_id: org_id.to_string(),
        scope: scope.to_string(),
        subject_id: subject_id.to_string(),
        requests_per_minute: Some(HUGE),
        requests_per_hour: Some(HUGE),
        tasks_per_hour: Some(HUGE),
        concurrent_tasks: None,
        tokens_per_minute: Some(HUGE),
        updated_at: now_ms(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("vel-bench-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("vel.db").display());
    let (limiter, free, limited) = rt.block_on(async {
        let db = Db::open(&url, None, 4).await.unwrap();
        let mut tx = db.platform().await.unwrap();
        let open = organizations::insert(&mut tx, "without rules")
            .await
            .unwrap();
        let org = organizations::insert(&mut tx, "with rules").await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = db.tenant(&org.id).await.unwrap();
        for (scope, id) in [
            ("organization", org.id.as_str()),
            ("user", "user-1"),
            ("api_key", "key-1"),
        ] {
            rate_limit_rules::upsert(&mut tx, &rule(&org.id, scope, id))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let limiter = RateLimiter::new(db, None);
        let free = principal(&open.id, "user-0", "key-0");
        let limited = principal(&org.id, "user-1", "key-1");
        // Load the rules and lease the slices.
        limiter.admit_request(&free).await.unwrap();
        limiter.admit_request(&limited).await.unwrap();
        limiter.admit_task(&limited).await.unwrap();
        (limiter, free, limited)
    });
    c.bench_function("admit_request, no rules", |b| {
        b.to_async(&rt).iter(|| limiter.admit_request(&free))
    });
    c.bench_function("admit_request, 3 rules, slices leased", |b| {
        b.to_async(&rt).iter(|| limiter.admit_request(&limited))
    });
    c.bench_function("admit_task, 3 rules with tokens, slices leased", |b| {
        b.to_async(&rt).iter(|| limiter.admit_task(&limited))
    });
    drop(limiter);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
