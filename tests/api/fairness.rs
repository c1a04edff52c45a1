//! One tenant cannot hold the queue: claims go to the organization with the
//! fewest running tasks first (priority and age decide within it), and a
//! run is bounded in time, every attempt and retry included.

use serde_json::{Value, json};

use crate::support::{Backend, Server};

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

    let db = vel::store::Db::open(&s.database_url, 1)
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

dual_backend_tests!(
    claims_take_turns_between_organizations,
    a_run_is_bounded_in_time
);
