//! Budgets: a hard budget refuses, before any upstream request, the call
//! whose worst-case cost could pass it (gateway 402 `budget_exceeded`, a
//! task failed with that kind), its spend is exact to the nano-dollar, its
//! thresholds alert once per period, and it holds across two instances
//! under concurrency; bad input changes nothing; other tenants see
//! nothing of it. A latency spike in usage raises one anomaly alert.
//!
//! On the mock provider ($0.0001 per 1,000 prompt tokens, $0.0002 per
//! 1,000 completion tokens; one token per word) a `hello` prompt answered
//! `echo: hello` costs 500 nano-dollars. With `max_tokens: 8` its
//! reservation is two prompt tokens for its five bytes, four for its one
//! message, and eight completion tokens: 2,200 nano-dollars.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// What one answered `hello` costs, in nano-dollars.
const COST: u64 = 500;
/// What one `hello` with `max_tokens: 8` reserves, in nano-dollars.
const WORST: u64 = 2_200;

/// Dollars as the API writes them, of `nanos` nano-dollars.
fn usd(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// One `hello` through the gateway: (status, body).
async fn hello(s: &Server, key: &str) -> (u16, Value) {
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({ "model": "mock/echo", "max_tokens": 8,
                        "messages": [{ "role": "user", "content": "hello" }] }))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The budget at `path` once its spent amount is `nanos` (the spend is
/// written by each instance shortly after its calls settle).
async fn budget_once_spent(s: &Server, token: &str, path: &str, nanos: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let b = s.get(path, token).await.expect(200).body;
        if b["spent_usd"].as_f64() == Some(usd(nanos)) {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spent is not {nanos} nano-dollars: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_hard_budget_refuses_before_the_call_and_alerts_once(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "gw", "task_executor").await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/budgets/organization/{org}/day");

    // Bad input is refused and stores nothing.
    let bad = s
        .put(
            &path,
            &admin,
            json!({ "limit_usd": -1, "alert_at": [0, 1.5] }),
        )
        .await
        .expect(422);
    for field in ["limit_usd", "alert_at[0]", "alert_at[1]"] {
        assert!(
            bad.body["error"]["details"][field].is_array(),
            "{}",
            bad.body
        );
    }
    s.put(&path, &admin, json!({ "limit_usd": 1, "extra": true }))
        .await
        .expect(422);
    s.put("/api/budgets/team/x/day", &admin, json!({ "limit_usd": 1 }))
        .await
        .expect_error(404, "not_found");
    s.put(
        "/api/budgets/agent/no-such-agent/day",
        &admin,
        json!({ "limit_usd": 1 }),
    )
    .await
    .expect_error(404, "not_found");
    let viewer = s.user_with_role(&admin, "viewer@b.test", "viewer").await;
    s.put(&path, &viewer, json!({ "limit_usd": 1 }))
        .await
        .expect(403);
    assert_eq!(
        s.get("/api/budgets", &admin).await.expect(200).body["items"],
        json!([])
    );

    // Twenty answers' worth, hard, alerting at 80 % and 100 %.
    let limit = 20 * COST;
    let set = s
        .put(&path, &admin, json!({ "limit_usd": usd(limit) }))
        .await
        .expect(200);
    assert_eq!(set.body["hard"], true);
    assert_eq!(set.body["alert_at"], json!([0.8, 1.0]));
    assert_eq!(set.body["limit_usd"].as_f64(), Some(usd(limit)));

    // A call is made while the room left covers its worst case: 16 of
    // them (16 × 500 + 2,200 ≤ 10,000 < 17 × 500 + 2,200), then refused.
    let mut answered = 0;
    let refusal = loop {
        let (status, body) = hello(&s, &key).await;
        match status {
            200 => answered += 1,
            402 => break body,
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(answered <= 20, "the budget never refused");
    };
    assert_eq!(answered, 16);
    assert_eq!(refusal["error"]["code"], "budget_exceeded", "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("budget"), "{message}");
    // The refusal was recorded, with no provider call in it.
    let spent = 16 * COST;
    let b = budget_once_spent(&s, &admin, &path, spent).await;
    assert_eq!(b["remaining_usd"].as_f64(), Some(usd(limit - spent)));
    assert_eq!(b["alerted"], json!([0.8]), "{b}");

    // A task is refused the same way.
    let task = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "over", "prompt": "hello", "task_type": "light",
                    "parameters": { "model": "mock/echo", "max_tokens": 8 } }),
        )
        .await
        .expect(201);
    let id = task.body["id"].as_str().unwrap().to_string();
    s.event_stream(&admin, &id, None).await;
    let task = s.get(&format!("/api/tasks/{id}"), &admin).await.expect(200);
    assert_eq!(task.body["status"], "failed", "{}", task.body);
    assert_eq!(
        task.body["error"]["kind"], "budget_exceeded",
        "{}",
        task.body
    );

    // One alert, for 80 %, with its audit entry.
    let alerts = s.get("/api/alerts", &admin).await.expect(200).body;
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alerts}");
    assert_eq!(items[0]["kind"], "budget_threshold");
    assert_eq!(items[0]["details"]["threshold"], 0.8);
    assert_eq!(items[0]["details"]["spent_usd"].as_f64(), Some(usd(spent)));
    let audit = s
        .get("/api/audit-logs?action=budget_threshold_reached", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    let alert_id = items[0]["id"].as_str().unwrap();
    let acked = s
        .post(
            &format!("/api/alerts/{alert_id}/acknowledge"),
            &admin,
            json!({}),
        )
        .await
        .expect(200);
    assert!(acked.body["acknowledged_at"].is_string());
    let open = s
        .get("/api/alerts?acknowledged=false", &admin)
        .await
        .expect(200);
    assert_eq!(open.body["items"], json!([]));

    // The platform's metrics count the refusals by scope.
    let metrics = s.metrics(&admin).await;
    let refusals = metrics
        .lines()
        .find(|l| l.starts_with("vel_budget_refusals_total{scope=\"organization\"}"))
        .unwrap_or_else(|| panic!("no refusal series in {metrics}"));
    assert!(!refusals.ends_with(" 0"), "{refusals}");
    assert!(metrics.contains("vel_requests_total{source=\"gateway\",status=\"completed\"}"));

    // Another tenant sees none of it and is not limited by it.
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    s.mock_integration(&other, "mock").await;
    let other_key = s.api_key(&other, "gw", "task_executor").await;
    assert_eq!(hello(&s, &other_key).await.0, 200);
    assert_eq!(
        s.get("/api/budgets", &other).await.expect(200).body["items"],
        json!([])
    );
    s.get(&path, &other).await.expect(404);
    s.post(
        &format!("/api/alerts/{alert_id}/acknowledge"),
        &other,
        json!({}),
    )
    .await
    .expect(404);
    assert_eq!(
        s.get("/api/alerts", &other).await.expect(200).body["items"],
        json!([])
    );

    // Raised, it lets calls through at once; deleted, it is gone.
    s.put(&path, &admin, json!({ "limit_usd": 1, "hard": true }))
        .await
        .expect(200);
    assert_eq!(hello(&s, &key).await.0, 200);
    s.delete(&path, &admin).await.expect(204);
    s.get(&path, &admin).await.expect(404);
}

async fn a_budget_holds_across_two_instances_under_concurrency(b: Backend) {
    let s = Server::start_with(b, &[("VEL_METRICS_ORG_LABEL", "true")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    // Four keys, so that no key reaches its in-flight share on an instance.
    let mut keys = Vec::new();
    for i in 0..4 {
        keys.push(s.api_key(&admin, &format!("gw{i}"), "task_executor").await);
    }
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/budgets/organization/{org}/month");
    // Room for 400 answers; 128 calls in flight reserve at most 281,600.
    let limit = 400 * COST;
    s.put(
        &path,
        &admin,
        json!({ "limit_usd": usd(limit), "alert_at": [0.5, 1.0] }),
    )
    .await
    .expect(200);
    let twin = Arc::new(s.sibling(&[]));
    let s = Arc::new(s);
    let answered = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..128 {
        let server = if i % 2 == 0 { s.clone() } else { twin.clone() };
        let (key, answered) = (keys[i % 4].clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            // Each client calls until the budget refuses it.
            loop {
                let (status, body) = hello(&server, &key).await;
                match status {
                    200 => answered.fetch_add(1, Ordering::Relaxed),
                    402 => return,
                    other => panic!("unexpected {other}: {body}"),
                };
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    let spent = answered * COST;
    // Never past the limit by more than one call's worst case; and the
    // leases did not strand most of the room.
    assert!(spent <= limit + WORST, "spent {spent} of {limit}");
    assert!(spent >= limit / 2, "only {spent} of {limit} spent");
    // Exact to the nano-dollar, as both instances wrote it.
    let b = budget_once_spent(&s, &admin, &path, spent).await;
    assert_eq!(b["alerted"], json!([0.5]), "{b}");
    let alerts = s.get("/api/alerts", &admin).await.expect(200).body;
    assert_eq!(
        alerts["items"].as_array().unwrap().len(),
        1,
        "one alert for 50 % although two instances wrote: {alerts}"
    );
    // With the organization as a label, each instance shows the room it
    // sees in the budget, and what its tenants' requests did.
    let metrics = s.metrics(&admin).await;
    let budget_id = b["id"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "vel_budget_remaining_usd{{org_id=\"{org}\",budget_id=\"{budget_id}\",scope=\"organization\",period=\"month\"}}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "vel_requests_total{{org_id=\"{org}\",source=\"gateway\",status=\"completed\"}}"
    )));
}

dual_backend_tests!(
    a_hard_budget_refuses_before_the_call_and_alerts_once,
    a_budget_holds_across_two_instances_under_concurrency,
);

/// Usage minutes written straight into the database, as if an
/// organization's provider had served 20 requests a minute for half an
/// hour at 100 ms and then, in `spike`, at 800 ms; then the anomaly
/// check is made to look at the last minutes again.
async fn steady_then_slow(s: &Server, org_id: &str, spike: i64) {
    use sqlx::Connection;
    use vel::analytics::buckets::Counts;
    use vel::analytics::latency::Latency;
    use vel::orchestrator::state::TaskSource;
    use vel::store::usage_buckets::{self, BucketRow, Resolution};
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let rows: Vec<BucketRow> = (0..=30)
        .map(|i| {
            let start = spike - (30 - i) * 60_000;
            let ms = if start == spike {
                800
            } else {
                100 + (i as u64 % 4)
            };
            let mut latency = Latency::default();
            (0..20).for_each(|_| latency.add(Duration::from_millis(ms)));
            BucketRow {
                org_id: org_id.to_string(),
                resolution: Resolution::Minute,
                bucket_start: start,
                provider: "mock".into(),
                model: "echo".into(),
                agent_id: String::new(),
                source: TaskSource::Gateway,
                counts: Counts {
                    requests: 20,
                    completed: 20,
                    ..Counts::default()
                },
                latency: latency.encode(),
                created_at: start,
            }
        })
        .collect();
    usage_buckets::insert(&mut db, &rows).await.unwrap();
    rewind_anomaly_check(&mut db).await;
    db.close().await.unwrap();
}

/// Make the anomaly check look at the last ten finished minutes again.
async fn rewind_anomaly_check(db: &mut sqlx::AnyConnection) {
    sqlx::query("UPDATE jobs SET watermark = 0 WHERE name = 'anomaly_minutes'")
        .execute(db)
        .await
        .unwrap();
}

/// Wait until the anomaly check has looked at the minute starting at `minute`.
async fn anomaly_check_caught_up(s: &Server, minute: i64) {
    use sqlx::Connection;
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let watermark: i64 =
            sqlx::query_scalar("SELECT watermark FROM jobs WHERE name = 'anomaly_minutes'")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if watermark > minute {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the anomaly check did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await.unwrap();
}

async fn a_latency_spike_raises_one_anomaly_alert(b: Backend) {
    let s = Server::start_with(b, &[("VEL_USAGE_ROLLUP_INTERVAL_MS", "100")]).await;
    let admin = s.admin_token().await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The last minute the check looks at: it waits two minutes after a
    // minute ends.
    let now = chrono::Utc::now().timestamp_millis();
    let spike = (now - 120_000) - (now - 120_000).rem_euclid(60_000) - 60_000;
    steady_then_slow(&s, &org, spike).await;
    anomaly_check_caught_up(&s, spike).await;

    let alerts = s
        .get("/api/alerts?kind=anomaly", &admin)
        .await
        .expect(200)
        .body;
    let items = alerts["items"].as_array().unwrap();
    // The spike alone: the steady minutes before it raised nothing.
    assert_eq!(items.len(), 1, "{alerts}");
    assert_eq!(items[0]["subject"], "mock/latency_p95_ms");
    let value = items[0]["details"]["value"].as_f64().unwrap();
    assert!((value - 800.0).abs() <= 8.0, "{value}");
    assert!(items[0]["details"]["threshold"].as_f64().unwrap() < 200.0);

    // Looked at again, within its cool-down: no second alert.
    {
        use sqlx::Connection;
        let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
        rewind_anomaly_check(&mut db).await;
        db.close().await.unwrap();
    }
    anomaly_check_caught_up(&s, spike).await;
    let again = s
        .get("/api/alerts?kind=anomaly", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(again["items"].as_array().unwrap().len(), 1, "{again}");

    // Another tenant sees nothing of it.
    let (_, other) = s.tenant(&admin, "calm").await;
    assert_eq!(
        s.get("/api/alerts", &other).await.expect(200).body["items"],
        json!([])
    );
}

dual_backend_tests!(a_latency_spike_raises_one_anomaly_alert);
