//! Provider benchmarks: two mock models of different latencies run as
//! ordinary tasks; the benchmark's figures are its tasks' figures, the
//! comparison names the faster one significantly; outputs are rated 1–5
//! and the ratings compared; benchmarks are kept; bad requests are
//! refused whole and store nothing; another organization sees none of it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// Benchmark `id` once it has left `running`, polled for up to 60 s.
async fn finished(s: &Server, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = s
            .get(&format!("/api/benchmarks/{id}"), token)
            .await
            .expect(200)
            .body;
        if b["status"] != "running" {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ended: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unix ms of an RFC 3339 value.
fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Nano-dollars of a `cost_usd` value (an exact decimal in the JSON).
fn nanos(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1e9).round() as i64
}

fn by_target<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["by_target"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("{target} missing: {report}"))
}

fn comparison<'a>(report: &'a Value, metric: &str) -> &'a Value {
    report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} comparison: {report}"))
}

async fn a_benchmark_of_two_models_names_the_faster(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    // `slow` waits 60 ms before answering; `echo` answers at once.
    let created = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "name": "speed", "prompts": ["one two", "three"],
                    "targets": ["mock/echo", "mock/slow"], "repetitions": 4,
                    "max_concurrency": 2, "metadata": { "delay-ms": 60, "word-delay-ms": 0 } }),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["runs"], 16);
    assert_eq!(created["targets"], json!(["mock/echo", "mock/slow"]));
    assert_eq!(created["max_concurrency"], 2);

    let report = finished(&s, &admin, &id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["ended"], 16, "{report}");
    let runs = report["run_list"].as_array().unwrap();
    assert_eq!(runs.len(), 16);

    // Each run is an ordinary task pinned to its target, and the
    // benchmark's figures are its tasks'.
    let mut cost: HashMap<String, i64> = HashMap::new();
    let mut tokens: HashMap<String, (i64, i64)> = HashMap::new();
    let mut latency: HashMap<String, Vec<i64>> = HashMap::new();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["run"], i, "{run}");
        let target = run["target"].as_str().unwrap().to_string();
        assert_eq!(
            target,
            ["mock/echo", "mock/slow"][i % 2],
            "targets take turns"
        );
        let task = s
            .get(
                &format!("/api/tasks/{}", run["task_id"].as_str().unwrap()),
                &admin,
            )
            .await
            .expect(200)
            .body;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["batch_id"], report["batch_id"]);
        assert_eq!(task["request"]["model"], target.as_str(), "{task}");
        assert_eq!(
            format!(
                "{}/{}",
                task["provider"].as_str().unwrap(),
                task["model"].as_str().unwrap()
            ),
            target
        );
        assert_eq!(run["answered_by"], target.as_str());
        assert_eq!(run["cost_usd"], task["cost_usd"], "{run} {task}");
        assert_eq!(run["input_tokens"], task["input_tokens"]);
        assert_eq!(run["output_tokens"], task["output_tokens"]);
        let took = ms(&task["finished_at"]) - ms(&task["started_at"]);
        assert_eq!(run["latency_ms"], took, "{run} {task}");
        assert_eq!(run["output"], task["result"]["text"]);
        *cost.entry(target.clone()).or_default() += nanos(&task["cost_usd"]);
        let t = tokens.entry(target.clone()).or_default();
        t.0 += task["input_tokens"].as_i64().unwrap();
        t.1 += task["output_tokens"].as_i64().unwrap();
        latency.entry(target).or_default().push(took);
    }
    for target in ["mock/echo", "mock/slow"] {
        let f = by_target(&report, target);
        assert_eq!(f["runs"], 8, "{f}");
        assert_eq!(f["completed"], 8, "{f}");
        assert_eq!(f["failed"], 0, "{f}");
        assert_eq!(nanos(&f["cost_usd"]), cost[target], "{f}");
        assert!(cost[target] > 0);
        assert_eq!(f["input_tokens"], tokens[target].0);
        assert_eq!(f["output_tokens"], tokens[target].1);
        let l = &f["latency_ms"];
        let mut mine = latency[target].clone();
        mine.sort_unstable();
        assert_eq!(l["count"], 8, "{l}");
        assert_eq!(l["min"].as_f64().unwrap(), mine[0] as f64, "{l}");
        assert_eq!(l["max"].as_f64().unwrap(), mine[7] as f64, "{l}");
        let mean = mine.iter().sum::<i64>() as f64 / 8.0;
        assert!((l["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{l}");
        // numpy's linear interpolation: the median of eight values.
        let p50 = (mine[3] + mine[4]) as f64 / 2.0;
        assert!((l["p50"].as_f64().unwrap() - p50).abs() < 1e-9, "{l}");
        assert!(l["p95"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
        assert!(l["stddev"].as_f64().unwrap() >= 0.0);
    }
    assert!(
        by_target(&report, "mock/slow")["latency_ms"]["min"]
            .as_f64()
            .unwrap()
            >= 60.0
    );
    let total: i64 = cost.values().sum();
    assert_eq!(nanos(&report["cost_usd"]), total);

    // The comparison names the faster model, significantly.
    let speed = comparison(&report, "latency");
    assert_eq!(speed["better"], "mock/echo", "{speed}");
    assert_eq!(speed["significant"], true);
    assert!(speed["p_value"].as_f64().unwrap() < 0.05, "{speed}");
    let sentence = speed["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with("mock/echo is faster than mock/slow, p"),
        "{sentence}"
    );
    // No ratings yet: nothing to compare them on.
    assert!(
        !report["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metric"] == "rating")
    );

    // Audited once.
    let audit = s
        .get("/api/audit-logs?action=benchmark_created", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(audit["items"][0]["payload"]["benchmark_id"], id.as_str());

    // Ratings: echo's outputs rated higher than slow's.
    let ratings: Vec<Value> = (0..16)
        .map(|i| json!({ "run": i, "rating": if i % 2 == 0 { 4 + (i / 2) % 2 } else { 1 + (i / 2) % 2 } }))
        .collect();
    let rated = s
        .post(
            &format!("/api/benchmarks/{id}/ratings"),
            &admin,
            json!({ "ratings": ratings }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(rated["run_list"][0]["ratings"], json!([4]), "{rated}");
    assert_eq!(rated["run_list"][1]["ratings"], json!([1]));
    let echo = &by_target(&rated, "mock/echo")["rating"];
    assert_eq!(echo["count"], 8, "{echo}");
    assert!((echo["mean"].as_f64().unwrap() - 4.5).abs() < 1e-9);
    let liked = comparison(&rated, "rating");
    assert_eq!(liked["better"], "mock/echo", "{liked}");
    assert!(
        liked["sentence"]
            .as_str()
            .unwrap()
            .starts_with("mock/echo is rated higher than mock/slow, p"),
        "{liked}"
    );
    // Rating again replaces the rater's rating.
    let again = s
        .post(
            &format!("/api/benchmarks/{id}/ratings"),
            &admin,
            json!({ "ratings": [{ "run": 0, "rating": 5 }] }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(again["run_list"][0]["ratings"], json!([5]), "{again}");

    // Out of range, an unknown run: 422 naming the rating, nothing stored.
    for (body, field) in [
        (
            json!({ "ratings": [{ "run": 2, "rating": 0 }] }),
            "ratings[0].rating",
        ),
        (
            json!({ "ratings": [{ "run": 2, "rating": 3 }, { "run": 2, "rating": 6 }] }),
            "ratings[1].rating",
        ),
        (
            json!({ "ratings": [{ "run": 2, "rating": 3 }, { "run": 16, "rating": 3 }] }),
            "ratings[1].run",
        ),
        (json!({ "ratings": [] }), "ratings"),
        (json!({ "ratings": [{ "run": 2 }] }), "ratings[0]"),
    ] {
        let r = s
            .post(
                &format!("/api/benchmarks/{id}/ratings"),
                &admin,
                body.clone(),
            )
            .await
            .expect(422);
        let details = r.body["error"]["details"].as_object().unwrap();
        assert!(
            details.keys().any(|k| k.starts_with(field)),
            "{body}: {}",
            r.body
        );
    }
    let now = s
        .get(&format!("/api/benchmarks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(
        now["run_list"][2]["ratings"],
        json!([5]),
        "unchanged: {now}"
    );

    // A viewer reads it; another organization finds none of it.
    let viewer = s
        .user_with_role(&admin, "viewer@bench.test", "viewer")
        .await;
    s.get(&format!("/api/benchmarks/{id}"), &viewer)
        .await
        .expect(200);
    s.post(
        &format!("/api/benchmarks/{id}/ratings"),
        &viewer,
        json!({ "ratings": [{ "run": 0, "rating": 3 }] }),
    )
    .await
    .expect_error(403, "forbidden");
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    s.get(&format!("/api/benchmarks/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    s.post(
        &format!("/api/benchmarks/{id}/ratings"),
        &other,
        json!({ "ratings": [{ "run": 0, "rating": 1 }] }),
    )
    .await
    .expect_error(404, "not_found");
    let theirs = s.get("/api/benchmarks", &other).await.expect(200).body;
    assert_eq!(theirs["total"], 0, "{theirs}");

    // Benchmarks are kept: a second one is listed before the first.
    let second = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "suite": "reasoning", "targets": ["mock/echo"], "repetitions": 1 }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(second["name"], "reasoning");
    assert_eq!(second["task_type"], "reasoning");
    assert_eq!(second["suite"], "reasoning");
    let listed = s
        .get("/api/benchmarks?limit=1", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["items"][0]["id"], second["id"]);
    let page2 = s
        .get("/api/benchmarks?limit=1&offset=1", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(page2["items"][0]["id"], id.as_str(), "{page2}");
    assert_eq!(page2["items"][0]["status"], "completed");
    let done = finished(&s, &admin, second["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    // One target: nothing to compare.
    assert_eq!(done["comparisons"], json!([]), "{done}");
    assert_eq!(
        done["run_list"].as_array().unwrap().len(),
        done["prompts"].as_array().unwrap().len()
    );
}

async fn bad_benchmarks_are_refused_and_store_nothing(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let many: Vec<String> = (0..50).map(|i| format!("prompt {i}")).collect();
    for (body, field) in [
        (json!({ "prompts": ["a"] }), "targets"),
        (
            json!({ "prompts": [], "targets": ["mock/echo"] }),
            "prompts",
        ),
        (json!({ "targets": ["mock/echo"] }), "prompts"),
        (
            json!({ "suite": "poetry", "targets": ["mock/echo"] }),
            "suite",
        ),
        (
            json!({ "suite": "reasoning", "prompts": ["a"], "targets": ["mock/echo"] }),
            "prompts",
        ),
        (
            json!({ "suite": "reasoning", "task_type": "light", "targets": ["mock/echo"] }),
            "task_type",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["echo"] }),
            "targets[0]",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/"] }),
            "targets[0]",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["nowhere/echo"] }),
            "targets[0]",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo", "mock/echo"] }),
            "targets[1]",
        ),
        (json!({ "prompts": ["a"], "targets": [] }), "targets"),
        (
            json!({ "prompts": ["  "], "targets": ["mock/echo"] }),
            "prompts[0]",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "repetitions": 0 }),
            "repetitions",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "repetitions": 21 }),
            "repetitions",
        ),
        (
            json!({ "prompts": many, "targets": ["mock/echo"], "repetitions": 11 }),
            "repetitions",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "task_type": "poetry" }),
            "task_type",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "parameters": { "temperature": 3 } }),
            "parameters.temperature",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "parameters": { "model": "x" } }),
            "parameters",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "metadata": "x" }),
            "metadata",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "max_concurrency": 0 }),
            "max_concurrency",
        ),
        (
            json!({ "prompts": ["a"], "targets": ["mock/echo"], "colour": "red" }),
            "colour|body",
        ),
        (
            json!({ "prompts": "a", "targets": ["mock/echo"] }),
            "prompts",
        ),
    ] {
        let r = s
            .post("/api/benchmarks", &admin, body.clone())
            .await
            .expect(422);
        let details = r.body["error"]["details"].as_object().unwrap();
        assert!(
            field
                .split('|')
                .any(|f| details.keys().any(|k| k.starts_with(f))),
            "{body}: wanted {field}: {}",
            r.body
        );
    }
    let listed = s.get("/api/benchmarks", &admin).await.expect(200).body;
    assert_eq!(listed["total"], 0, "{listed}");
    let batches = s.get("/api/batches", &admin).await.expect(200).body;
    assert_eq!(batches["total"], 0, "{batches}");
    let tasks = s.get("/api/tasks", &admin).await.expect(200).body;
    assert_eq!(tasks["total"], 0, "{tasks}");
    s.get(
        "/api/benchmarks/00000000-0000-4000-8000-000000000000",
        &admin,
    )
    .await
    .expect_error(404, "not_found");
    s.post(
        "/api/benchmarks/00000000-0000-4000-8000-000000000000/ratings",
        &admin,
        json!({ "ratings": [{ "run": 0, "rating": 3 }] }),
    )
    .await
    .expect_error(404, "not_found");
}

async fn a_benchmark_is_budgeted_like_any_task(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A hundredth of a cent a day: a call's worst case at the default
    // 4,096 completion tokens does not fit, one capped at 8 tokens does.
    s.put(
        &format!("/api/budgets/organization/{org}/day"),
        &admin,
        json!({ "limit_usd": 0.0001 }),
    )
    .await
    .expect(200);
    let targets = json!(["mock/echo", "mock/slow"]);
    let refused = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "prompts": ["hello"], "targets": targets, "repetitions": 2 }),
        )
        .await
        .expect(201)
        .body;
    let report = finished(&s, &admin, refused["id"].as_str().unwrap()).await;
    assert_eq!(report["status"], "completed", "{report}");
    for target in ["mock/echo", "mock/slow"] {
        let f = by_target(&report, target);
        assert_eq!(f["failed"], 2, "{f}");
        assert_eq!(f["errors"], json!({ "budget_exceeded": 2 }), "{f}");
        assert_eq!(f["latency_ms"], Value::Null, "{f}");
        assert_eq!(nanos(&f["cost_usd"]), 0);
    }
    assert_eq!(report["comparisons"], json!([]), "{report}");
    assert_eq!(report["run_list"][0]["error_kind"], "budget_exceeded");

    let capped = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "prompts": ["hello"], "targets": targets, "repetitions": 2,
                    "parameters": { "max_tokens": 8 },
                    "metadata": { "delay-ms": 1, "word-delay-ms": 0 } }),
        )
        .await
        .expect(201)
        .body;
    let report = finished(&s, &admin, capped["id"].as_str().unwrap()).await;
    for target in ["mock/echo", "mock/slow"] {
        let f = by_target(&report, target);
        assert_eq!(f["completed"], 2, "{f}");
        assert!(nanos(&f["cost_usd"]) > 0, "{f}");
    }
}

dual_backend_tests!(
    a_benchmark_is_budgeted_like_any_task,
    a_benchmark_of_two_models_names_the_faster,
    bad_benchmarks_are_refused_and_store_nothing
);
