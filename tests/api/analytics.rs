//! Usage analytics: every finished gateway request and task is counted in
//! the usage buckets exactly once, by source, provider and model, with its
//! tokens and exact cost; latency percentiles come from the merged
//! sketches; other tenants see nothing of it; bad queries get 400.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// What one one-word request costs on the mock provider (see `money.rs`).
const ONE_WORD_NANOS: u64 = 500;

async fn chat(s: &Server, key: &str, model: &str) -> u16 {
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({ "model": model, "messages": [{ "role": "user", "content": "hello" }] }))
        .send()
        .await
        .expect("request");
    resp.status().as_u16()
}

/// The series whose group has these values.
fn series<'a>(report: &'a Value, group: &Value) -> Option<&'a Value> {
    report["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| &s["group"] == group)
}

/// A series' counter summed over its points.
fn total(series: Option<&Value>, field: &str) -> i64 {
    series.map_or(0, |s| {
        s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[field].as_i64().unwrap())
            .sum()
    })
}

/// The usage report, once it counts `requests` finished requests and
/// tasks (the gateway's are written by its batched recorder shortly after
/// they end).
async fn usage_once_counted(
    s: &Server,
    token: &str,
    query: &str,
    requests: i64,
) -> (Value, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let resp = s
            .http
            .get(s.url(&format!("/api/analytics/usage?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let report: Value = serde_json::from_str(&text).unwrap();
        let counted: i64 = report["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| total(Some(s), "requests"))
            .sum();
        if counted >= requests {
            assert_eq!(counted, requests, "counted twice: {text}");
            return (report, text);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {counted} of {requests} counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each point of `series` costs its answers' one-word price, written
/// exactly in the raw `text` (a point sums whole requests, so its cost is a
/// multiple of one).
fn assert_exact_costs(series: &Value, text: &str) {
    for p in series["points"].as_array().unwrap() {
        let n = p["completed"].as_u64().unwrap();
        let want = format!("0.{:0>9}", n * ONE_WORD_NANOS)
            .trim_end_matches('0')
            .to_string();
        assert!(
            text.contains(&format!("\"cost_usd\":{want}")),
            "{want} for {n} answers in {text}"
        );
    }
}

async fn usage_adds_up_by_source_and_model(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "gw", "task_executor").await;

    // Through the gateway: six answers and two failures.
    for _ in 0..6 {
        assert_eq!(chat(&s, &key, "mock/echo").await, 200);
    }
    for _ in 0..2 {
        assert_ne!(chat(&s, &key, "mock/error").await, 200);
    }
    // Through the task API: three answers and one cancellation.
    for word in ["one", "two", "three"] {
        let r = s
            .post(
                "/api/tasks",
                &admin,
                json!({ "description": "counted", "prompt": word, "task_type": "light",
                        "parameters": { "model": "mock/echo" } }),
            )
            .await
            .expect(201);
        let id = r.body["id"].as_str().unwrap().to_string();
        s.event_stream(&admin, &id, None).await;
        let task = s.get(&format!("/api/tasks/{id}"), &admin).await.expect(200);
        assert_eq!(task.body["status"], "completed", "{}", task.body);
    }
    let slow = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "cancelled", "prompt": "wait", "task_type": "light",
                    "parameters": { "model": "mock/slow" } }),
        )
        .await
        .expect(201);
    let slow = slow.body["id"].as_str().unwrap().to_string();
    s.post(&format!("/api/tasks/{slow}/cancel"), &admin, json!({}))
        .await
        .expect(200);

    let (report, text) =
        usage_once_counted(&s, &admin, "group_by=source,model&interval=minute", 12).await;
    assert_eq!(report["interval"], "minute");
    assert_eq!(report["group_by"], json!(["source", "model"]));
    assert_eq!(report["relative_error"], 0.01);
    // Each answer was counted once with its exact cost; the failures count
    // against the model tried last, the cancellation has no model (none
    // was called).
    let echo = |source: &str| series(&report, &json!({ "source": source, "model": "echo" }));
    let gateway = echo("gateway");
    assert_eq!(total(gateway, "requests"), 6, "{text}");
    assert_eq!(total(gateway, "completed"), 6, "{text}");
    assert_eq!(total(gateway, "input_tokens"), 6, "{text}");
    assert_eq!(total(gateway, "output_tokens"), 12, "{text}");
    let api = echo("api");
    assert_eq!(total(api, "requests"), 3, "{text}");
    assert_eq!(total(api, "completed"), 3, "{text}");
    let failed = series(&report, &json!({ "source": "gateway", "model": "error" }));
    assert_eq!(total(failed, "requests"), 2, "{text}");
    assert_eq!(total(failed, "failed"), 2, "{text}");
    let cancelled = series(&report, &json!({ "source": "api", "model": "" }));
    assert_eq!(total(cancelled, "requests"), 1, "{text}");
    assert_eq!(total(cancelled, "cancelled"), 1, "{text}");
    // Exact decimals, never through f64.
    assert_exact_costs(gateway.unwrap(), &text);
    assert_exact_costs(api.unwrap(), &text);
    // Percentiles are ordered.
    for s in [gateway.unwrap(), api.unwrap()] {
        for p in s["points"].as_array().unwrap() {
            let l = &p["latency_ms"];
            let (p50, p95, p99) = (
                l["p50"].as_f64().unwrap(),
                l["p95"].as_f64().unwrap(),
                l["p99"].as_f64().unwrap(),
            );
            assert!(0.0 <= p50 && p50 <= p95 && p95 <= p99, "{l}");
        }
    }

    // The same usage, by provider and model, with rates.
    let latency = s.get("/api/analytics/latency", &admin).await.expect(200);
    let items = latency.body["items"].as_array().unwrap();
    let answered = items
        .iter()
        .find(|i| i["provider"] == "mock" && i["model"] == "echo")
        .unwrap_or_else(|| panic!("{}", latency.body));
    assert_eq!(answered["requests"], 9, "{}", latency.body);
    assert_eq!(answered["success_rate"], 1.0);
    assert_eq!(answered["fallback_rate"], 0.0);
    // The failures are the provider's, under the model tried.
    let failing = items
        .iter()
        .find(|i| i["provider"] == "mock" && i["model"] == "error")
        .unwrap_or_else(|| panic!("{}", latency.body));
    assert_eq!(failing["requests"], 2, "{}", latency.body);
    assert_eq!(failing["failed"], 2, "{}", latency.body);
    assert_eq!(failing["success_rate"], 0.0);
    let unanswered = items.iter().find(|i| i["provider"] == "").unwrap();
    assert_eq!(unanswered["requests"], 1, "{}", latency.body);
    assert_eq!(unanswered["cancelled"], 1, "{}", latency.body);

    // What it cost, exactly: nine one-word answers (failures and the
    // cancellation cost nothing on the mock).
    let resp = s
        .http
        .get(s.url("/api/analytics/costs"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let costs: Value = serde_json::from_str(&text).unwrap();
    assert!(text.contains("\"total_usd\":0.0000045"), "{text}");
    assert!(text.contains("\"month_to_date_usd\":0.0000045"), "{text}");
    assert_eq!(costs["by_provider"][0]["name"], "mock", "{text}");
    assert!(
        text.contains("{\"name\":\"mock\",\"cost_usd\":0.0000045}"),
        "{text}"
    );
    assert!(!costs["by_day"].as_array().unwrap().is_empty(), "{text}");
    assert!(
        costs["projected_month_usd"].as_f64().unwrap() >= 0.0000045,
        "{text}"
    );

    // One series in all without group_by; hourly by default.
    let (all, _) = usage_once_counted(&s, &admin, "", 12).await;
    assert_eq!(all["interval"], "hour");
    assert_eq!(all["series"].as_array().unwrap().len(), 1, "{all}");

    // A viewer reads it; another tenant sees none of it.
    let viewer = s
        .user_with_role(&admin, "viewer@analytics.test", "viewer")
        .await;
    s.get("/api/analytics/usage", &viewer).await.expect(200);
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    let theirs = s.get("/api/analytics/usage", &other).await.expect(200);
    assert_eq!(theirs.body["series"], json!([]), "{}", theirs.body);
    let theirs = s.get("/api/analytics/latency", &other).await.expect(200);
    assert_eq!(theirs.body["items"], json!([]), "{}", theirs.body);
}

async fn bad_analytics_queries_are_refused(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    for query in [
        "interval=week",
        "group_by=colour",
        "group_by=provider,,colour",
        "from=yesterday",
        "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
        "from=2024-10-01T00:00:00Z&to=2026-12-01T00:00:00Z",
        "from=2026-11-01T00:00:00Z&to=2026-11-20T00:00:00Z&interval=minute",
        "limit=5",
    ] {
        s.get(&format!("/api/analytics/usage?{query}"), &admin)
            .await
            .expect_error(400, "invalid_query");
    }
    s.get("/api/analytics/latency?to=soon", &admin)
        .await
        .expect_error(400, "invalid_query");
    s.get(
        "/api/analytics/costs?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
        &admin,
    )
    .await
    .expect_error(400, "invalid_query");
    let anonymous = s
        .http
        .get(s.url("/api/analytics/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // A range of minutes that fits is fine, and empty.
    let ok = s
        .get(
            "/api/analytics/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&interval=minute",
            &admin,
        )
        .await
        .expect(200);
    assert_eq!(ok.body["series"], json!([]));
}

/// Move every usage bucket by `by_ms`, as if its traffic were that much
/// older (straight in the database: the server has no clock to turn).
async fn shift_buckets(s: &Server, by_ms: i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    sqlx::query("UPDATE usage_buckets SET bucket_start = bucket_start + $1")
        .bind(by_ms)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}

async fn roll_ups_keep_the_totals_and_run_once_across_instances(b: Backend) {
    const DAY_MS: i64 = 86_400_000;
    let env = [
        ("VEL_USAGE_ROLLUP_INTERVAL_MS", "100"),
        ("VEL_USAGE_MINUTE_RETENTION_HOURS", "24"),
    ];
    let s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "gw", "task_executor").await;
    // A second instance on the same database rolls up too.
    let twin = s.sibling(&[]);
    for _ in 0..5 {
        assert_eq!(chat(&s, &key, "mock/echo").await, 200);
    }
    for _ in 0..3 {
        assert_eq!(chat(&twin, &key, "mock/echo").await, 200);
    }
    usage_once_counted(&s, &admin, "interval=minute", 8).await;

    // Three days ago, that traffic is past the minutes' retention: once
    // rolled up into hours, its minute rows go.
    shift_buckets(&s, -3 * DAY_MS).await;
    let to_rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
            .replace("+00:00", "Z")
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (from, until) = (to_rfc(now - 4 * DAY_MS), to_rfc(now - 2 * DAY_MS));
    let minutes = format!("interval=minute&from={from}&to={until}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = s
            .get(&format!("/api/analytics/usage?{minutes}"), &admin)
            .await
            .expect(200);
        if r.body["series"] == json!([]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "minute rows were not rolled up and deleted: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Hours and days still count every request once, with exact costs,
    // although two instances ran the roll-up.
    for interval in ["hour", "day"] {
        let query = format!("interval={interval}&from={from}");
        let (report, text) = usage_once_counted(&s, &admin, &query, 8).await;
        let series = &report["series"][0];
        assert_eq!(total(Some(series), "completed"), 8, "{text}");
        assert_exact_costs(series, &text);
        let on_twin = twin
            .get(&format!("/api/analytics/usage?{query}"), &admin)
            .await
            .expect(200);
        assert_eq!(total(Some(&on_twin.body["series"][0]), "requests"), 8);
    }
    let latency = s
        .get(&format!("/api/analytics/latency?from={from}"), &admin)
        .await
        .expect(200);
    assert_eq!(latency.body["items"][0]["requests"], 8, "{}", latency.body);
    let costs = s
        .http
        .get(s.url(&format!("/api/analytics/costs?from={from}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(costs.contains("\"total_usd\":0.000004,"), "{costs}");
    drop(twin);
}

/// The task `id` once `done` holds of it.
async fn task_once(s: &Server, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = s
            .get(&format!("/api/tasks/{id}"), token)
            .await
            .expect(200)
            .body;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failed_tasks_count_against_the_provider_tried_and_lost_workers_count(b: Backend) {
    // A heartbeat (which fails what keeps losing its workers) every 200 ms.
    let s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "600")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;

    // A queued task whose provider fails: counted against it.
    let failing = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "fails", "prompt": "x", "parameters": { "model": "mock/error" } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = task_once(&s, &admin, &failing, |t| t["status"] == "failed").await;
    assert_eq!(
        t["provider"],
        Value::Null,
        "the task names who answered: {t}"
    );

    // A task made to look as if it had killed three workers in turn
    // (claimed three times, the last lease run out elsewhere): the
    // heartbeat fails it, and it counts once as a failure.
    let doomed = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "doomed", "prompt": "z", "parameters": { "model": "mock/slow" },
                    "metadata": { "delay-ms": 60_000 } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    task_once(&s, &admin, &doomed, |t| t["status"] == "in_progress").await;
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
        let done = sqlx::query(
            "UPDATE tasks SET lease_owner = 'dead-instance', lease_expires_at = 1, claims = 3 \
             WHERE id = $1",
        )
        .bind(&doomed)
        .execute(&mut db)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
        db.close().await.unwrap();
    }
    let t = task_once(&s, &admin, &doomed, |t| t["status"] == "failed").await;
    assert_eq!(t["error"]["kind"], "worker_lost", "{t}");

    let (report, text) =
        usage_once_counted(&s, &admin, "group_by=provider,model&interval=minute", 2).await;
    let tried = series(&report, &json!({ "provider": "mock", "model": "error" }));
    assert_eq!(total(tried, "requests"), 1, "{text}");
    assert_eq!(total(tried, "failed"), 1, "{text}");
    // No call of the lost task was recorded: it is nobody's.
    let lost = series(&report, &json!({ "provider": "", "model": "" }));
    assert_eq!(total(lost, "requests"), 1, "{text}");
    assert_eq!(total(lost, "failed"), 1, "{text}");
}

dual_backend_tests!(
    failed_tasks_count_against_the_provider_tried_and_lost_workers_count,
    usage_adds_up_by_source_and_model,
    bad_analytics_queries_are_refused,
    roll_ups_keep_the_totals_and_run_once_across_instances
);
