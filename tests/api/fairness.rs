//! One tenant cannot hold the queue: claims go to the organization with the
//! fewest running tasks first (priority and age decide within it), and a
//! run is bounded in time, every attempt and retry included.

use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

use crate::support::{Backend, Resp, Server};

async fn submit(s: &Server, token: &str, body: Value) -> String {
    let r = s.post("/api/tasks", token, body).await.expect(201);
    r.body["id"].as_str().expect("task id").to_string()
}

async fn claims_take_turns_between_organizations(b: Backend) {
    // No workers: the test claims itself, one claim at a time.
    let s = Server::start_with(b, &[("VEL_TASK_WORKERS", "0")]).await;
    let admin = s.admin_token().await;
    let (_, flooder) = s.tenant(&admin, "flood").await;
    let (_, quiet) = s.tenant(&admin, "quiet").await;
    let mut flood = Vec::new();
    for n in 0..3 {
        let body =
            json!({ "description": format!("flood {n}"), "prompt": "x", "priority": "high" });
        flood.push(submit(&s, &flooder, body).await);
    }
    let quick = submit(
        &s,
        &quiet,
        json!({ "description": "quick", "prompt": "y", "priority": "low" }),
    )
    .await;

    let db = vel::store::Db::open(&s.database_url, None, 1)
        .await
        .expect("open the database");
    let mut order = Vec::new();
    for _ in 0..4 {
        let mut tx = db.platform().await.expect("begin");
        let claimed = vel::store::tasks::claim(&mut tx, "test-worker", 60_000, 3)
            .await
            .expect("claim")
            .expect("a pending task");
        tx.commit().await.expect("commit");
        order.push(claimed.task.id);
    }
    // Both organizations idle: the higher priority first. Then the
    // flooding organization runs one task and the quiet one none: the
    // quiet one's low-priority task goes next, before the flood's rest.
    assert_eq!(
        order,
        [&flood[0], &quick, &flood[1], &flood[2]].map(String::as_str)
    );
    db.close().await;
}

async fn a_run_is_bounded_in_time(b: Backend) {
    let s = Server::start_with(b, &[("VEL_TASK_MAX_RUN_MS", "1000")]).await;
    let admin = s.admin_token().await;
    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "mock", "provider": "mock" }),
    )
    .await
    .expect(201);
    let id = submit(
        &s,
        &admin,
        json!({ "description": "too slow", "prompt": "z", "parameters": { "model": "mock/slow" },
                "metadata": { "delay-ms": 60_000 } }),
    )
    .await;
    // Wait for the terminal status (bounded: the harness's stream reader
    // would hang on a broken server, so poll with a deadline instead).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let task = loop {
        let task = s.get(&format!("/api/tasks/{id}"), &admin).await.expect(200);
        if task.body["status"] != "pending" && task.body["status"] != "in_progress" {
            break task.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task ran past its limit: {}",
            task.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "deadline_exceeded", "{task}");
}

/// A gateway request of `key`, on its own task (so the test can hold it open).
fn spawn_chat(s: &Server, key: &str) -> tokio::task::JoinHandle<u16> {
    let request = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hold" }] }),
        );
    tokio::spawn(async move { request.send().await.map_or(0, |r| r.status().as_u16()) })
}

async fn chat(s: &Server, key: &str) -> Resp {
    s.post(
        "/v1/chat/completions",
        key,
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await
}

async fn the_gateway_refuses_only_the_tenant_over_its_share(b: Backend) {
    let s = Server::start_with(
        b,
        &[
            ("VEL_GATEWAY_IN_FLIGHT_PER_KEY", "2"),
            ("VEL_GATEWAY_IN_FLIGHT_PER_ORG", "3"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let hanging = MockUpstream::start().await;
    hanging.set_default(Fault::Hang);
    let base = format!("{}/v1", hanging.base_url());
    s.upstream_integration(&admin, "openai", &base, "sk-shares-test-0123456789", 30_000)
        .await;
    let key_a = s.api_key(&admin, "flood-a", "task_executor").await;
    let key_b = s.api_key(&admin, "flood-b", "task_executor").await;
    let (_, neighbour) = s.tenant(&admin, "neighbour").await;
    let healthy = MockUpstream::start().await;
    let base = format!("{}/v1", healthy.base_url());
    s.upstream_integration(
        &neighbour,
        "openai",
        &base,
        "sk-shares-test-0123456789",
        30_000,
    )
    .await;
    let neighbour_key = s.api_key(&neighbour, "calm", "task_executor").await;

    let mut held = vec![spawn_chat(&s, &key_a), spawn_chat(&s, &key_a)];
    hanging.wait_for_in_flight(2).await;
    let over = chat(&s, &key_a).await.expect_error(429, "rate_limited");
    assert!(over.headers.contains_key("retry-after"));
    assert!(
        over.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("credential")),
        "{}",
        over.body
    );
    held.push(spawn_chat(&s, &key_b));
    hanging.wait_for_in_flight(3).await;
    let over = chat(&s, &key_b).await.expect_error(429, "rate_limited");
    assert!(
        over.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("organization")),
        "{}",
        over.body
    );
    // Another organization is not affected.
    chat(&s, &neighbour_key).await.expect(200);

    // Requests that end give their places back.
    for request in &held {
        request.abort();
    }
    hanging.wait_for_dropped(3).await;
    hanging.set_default(Fault::Ok);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = chat(&s, &key_a).await;
        if r.status.as_u16() == 200 {
            break;
        }
        // The server notices the dropped clients as their connections close.
        assert_eq!(r.status.as_u16(), 429, "{}", r.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the places were never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

dual_backend_tests!(
    claims_take_turns_between_organizations,
    a_run_is_bounded_in_time,
    the_gateway_refuses_only_the_tenant_over_its_share,
);
