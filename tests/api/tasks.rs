//! Tasks end to end: the real binary, the real router and provider plugins,
//! a fault-injecting upstream on loopback. Waiting is done on the task's
//! own event stream (SSE) or on the upstream's counters, never by sleeping.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream, count_tokens};

use crate::gateway::{continuation_shape, set_org_failover};
use crate::support::{Backend, Server};

const KEY: &str = "sk-tasks-test-key-0123456789";

/// An `openai_compatible` integration called `name` pointing at `mock`.
async fn upstream(s: &Server, token: &str, name: &str, mock: &MockUpstream) -> String {
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(token, name, &base_url, KEY, 5_000)
        .await
}

/// The offline `mock` provider as an integration.
async fn mock_integration(s: &Server, token: &str) {
    s.post(
        "/api/integrations",
        token,
        json!({ "name": "mock", "provider": "mock" }),
    )
    .await
    .expect(201);
}

async fn submit(s: &Server, token: &str, body: Value) -> String {
    let r = s.post("/api/tasks", token, body).await.expect(201);
    assert_eq!(r.body["status"], "pending");
    r.body["id"].as_str().unwrap().to_string()
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// Read the task's event stream until it closes (after the terminal
/// status); `after` is sent as `Last-Event-ID`.
async fn events(s: &Server, token: &str, id: &str, after: Option<i64>) -> Vec<Sse> {
    let text = s.event_stream(token, id, after).await;
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(end) = rest.find("\n\n") {
        let (block, next) = rest.split_at(end + 2);
        rest = next;
        let (mut ev, mut data, mut eid) = (String::new(), String::new(), None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("id:") {
                eid = v.trim().parse().ok();
            }
        }
        if let Some(id) = eid {
            out.push(Sse {
                id,
                event: ev,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            });
        }
    }
    out
}

/// Read the task's event stream until an event of kind `kind` arrives.
async fn first_event(s: &Server, token: &str, id: &str, kind: &str) -> Value {
    let resp = s
        .http
        .get(s.url(&format!("/api/tasks/{id}/stream")))
        .bearer_auth(token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("stream request");
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.lines().any(|l| l == format!("event: {kind}")) {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("null");
                return serde_json::from_str(data).unwrap_or(Value::Null);
            }
        }
    }
    panic!("the stream ended without a {kind} event");
}

/// Wait (on the event stream) until the task is terminal; return it.
async fn finished(s: &Server, token: &str, id: &str) -> Value {
    let evs = events(s, token, id, None).await;
    let last = evs.last().expect("at least one event");
    assert_eq!(last.event, "status");
    s.get(&format!("/api/tasks/{id}"), token)
        .await
        .expect(200)
        .body
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

async fn test_mock_task_completes_with_history(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock_integration(&s, &admin).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "say hello", "prompt": "hello there", "task_type": "light" }),
    )
    .await;
    let evs = events(&s, &admin, &id, None).await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert!(
        kinds.contains(&"plan") && kinds.contains(&"attempt"),
        "{kinds:?}"
    );
    let ids: Vec<i64> = evs.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "gapless numbering"
    );
    assert_eq!(evs.last().unwrap().data["status"], "completed");

    let task = s
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"]["text"], "echo: hello there");
    assert_eq!(task["result"]["cached"], false);
    assert_eq!(task["provider"], "mock");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "ok");
    assert_eq!(attempts[0]["input_tokens"], task["input_tokens"]);
    assert!(task["finished_at"].is_string());

    // Listed, filterable by status.
    let list = s
        .get("/api/tasks?status=completed", &admin)
        .await
        .expect(200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["limit"], 20);
    let none = s.get("/api/tasks?status=failed", &admin).await.expect(200);
    assert_eq!(none.body["total"], 0);
    s.get("/api/tasks?status=done", &admin)
        .await
        .expect_error(400, "invalid_query");
}

async fn test_bad_submissions_are_refused_and_store_nothing(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let long = "x".repeat(1001);
    for (body, field) in [
        (json!({ "description": long, "prompt": "p" }), "description"),
        (json!({ "description": "d" }), "prompt"),
        (
            json!({ "description": "d", "prompt": "p", "messages": [] }),
            "prompt",
        ),
        (
            json!({ "description": "d", "prompt": "p", "task_type": "poetry" }),
            "task_type",
        ),
        (
            json!({ "description": "d", "messages": [{ "role": "robot", "content": "x" }] }),
            "messages[0].role",
        ),
        (
            json!({ "description": "d", "prompt": "p", "parameters": { "temperature": 3.0 } }),
            "parameters.temperature",
        ),
        (
            json!({ "description": "d", "prompt": "p", "agent_id": "nope" }),
            "agent_id",
        ),
    ] {
        let r = s.post("/api/tasks", &admin, body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.body);
        assert!(
            r.body["error"]["details"].get(field).is_some(),
            "{body}: expected an error on {field}: {}",
            r.body
        );
    }
    let r = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "d", "prompt": "p", "colour": 1 }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);
    let viewer = s.user_with_role(&admin, "viewer@t.test", "viewer").await;
    s.post(
        "/api/tasks",
        &viewer,
        json!({ "description": "d", "prompt": "p" }),
    )
    .await
    .expect(403);
    let list = s.get("/api/tasks", &admin).await.expect(200);
    assert_eq!(list.body["total"], 0);
    s.get("/api/tasks/nope", &admin).await.expect(404);
}

async fn test_unfinished_limit_idempotency_and_cancel(b: Backend) {
    let s = Server::start_with(b, &[("VEL_MAX_UNFINISHED_TASKS", "2")]).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    upstream(&s, &admin, "openai", &mock).await;

    let body = json!({ "description": "hang", "prompt": "one" });
    let first = s
        .call(Method::POST, "/api/tasks", Some(&admin), Some(body.clone()))
        .await;
    // Idempotency: same key and body → the same task, 200.
    let keyed = |key: &str, body: Value| {
        s.http
            .post(s.url("/api/tasks"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", key.to_string())
            .json(&body)
            .send()
    };
    let a = keyed("k-1", json!({ "description": "hang", "prompt": "two" }))
        .await
        .unwrap();
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let again = keyed("k-1", json!({ "description": "hang", "prompt": "two" }))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], a["id"]);
    let other = keyed("k-1", json!({ "description": "hang", "prompt": "three" }))
        .await
        .unwrap();
    assert_eq!(other.status(), 409);

    // Two unfinished: the third is refused.
    s.post(
        "/api/tasks",
        &admin,
        json!({ "description": "hang", "prompt": "four" }),
    )
    .await
    .expect_error(429, "rate_limited");

    // Both reach the upstream, which hangs; cancelling drops the connection.
    mock.wait_for_in_flight(2).await;
    let id = first.body["id"].as_str().unwrap();
    let cancelled = s
        .post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    let stats = mock.wait_for_dropped(1).await;
    assert_eq!(stats.in_flight, 1, "the other task still waits: {stats:?}");
    s.post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(409);
    let evs = events(&s, &admin, id, None).await;
    assert_eq!(evs.last().unwrap().data["status"], "cancelled");
    // A slot is free again.
    submit(
        &s,
        &admin,
        json!({ "description": "hang", "prompt": "five" }),
    )
    .await;
    let audit = s
        .get("/api/audit-logs?action=task_cancelled", &admin)
        .await
        .expect(200);
    assert_eq!(
        audit.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        audit.body
    );
}

async fn test_fallback_costs_and_breaker(b: Backend) {
    let s = Server::start_with(
        b,
        &[
            ("VEL_RETRY_BASE_MS", "5"),
            ("VEL_BREAKER_COOL_DOWN_MS", "400"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let broken = MockUpstream::start().await;
    broken.set_default(Fault::Status(503));
    let healthy = MockUpstream::start().await;
    upstream(&s, &admin, "primary", &broken).await;
    upstream(&s, &admin, "secondary", &healthy).await;

    // gpt-4o is offered by both, with no figures yet: the router keeps
    // the organization's order. The primary is tried (1 + 3 retries, all
    // 503), then the chain falls back to the secondary, which answers.
    let prompt = "explain the plan";
    let id = submit(
        &s,
        &admin,
        json!({ "description": "fallback", "prompt": prompt, "task_type": "reasoning", "cache": false }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["provider"], "secondary");
    let attempts = task["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("primary", "error"),
            ("primary", "error"),
            ("primary", "error"),
            ("primary", "error"),
            ("secondary", "ok")
        ],
        "{task}"
    );
    assert_eq!(attempts[0]["error"]["kind"], "unavailable");
    assert_eq!(broken.stats().received, 4);
    // Costs: tokens × the plugin's declared gpt-4o prices ($0.0025 / $0.0100 per 1K).
    let last = attempts.last().unwrap();
    assert_eq!(last["model"], "gpt-4o");
    let input = count_tokens(prompt) as f64;
    let output = count_tokens(&format!("echo: {prompt}")) as f64;
    let expected = input / 1000.0 * 0.0025 + output / 1000.0 * 0.0100;
    assert!(
        close(last["cost_usd"].as_f64().unwrap(), expected),
        "{last} vs {expected}"
    );
    assert!(
        close(task["cost_usd"].as_f64().unwrap(), expected),
        "{task}"
    );
    assert_eq!(task["output_tokens"].as_f64().unwrap(), output);

    // Pinned to the primary: its 5th failure in a row opens the circuit,
    // and the retry is skipped instead of calling it.
    let id = submit(
        &s,
        &admin,
        json!({ "description": "pinned", "prompt": "pinned", "parameters": { "model": "primary/gpt-4o" }, "cache": false }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "all_attempts_failed");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{task}");
    assert_eq!(attempts[1]["outcome"], "skipped");
    assert_eq!(attempts[1]["error"]["kind"], "circuit_open");
    assert_eq!(broken.stats().received, 5);

    // While it is open, the router leaves the primary out altogether.
    let id = submit(
        &s,
        &admin,
        json!({ "description": "skip", "prompt": "again", "task_type": "reasoning", "cache": false }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
    assert_eq!(task["provider"], "secondary");
    assert_eq!(broken.stats().received, 5, "open circuit: no call");

    // The primary recovers; after the cool-down one probe goes through and
    // closes the circuit again.
    broken.set_default(Fault::Ok);
    let mut probed = false;
    for n in 0..200 {
        let id = submit(
            &s,
            &admin,
            json!({ "description": "probe", "prompt": format!("probe {n}"),
                    "parameters": { "model": "primary/gpt-4o" }, "cache": false }),
        )
        .await;
        let task = finished(&s, &admin, &id).await;
        if task["status"] == "completed" {
            assert_eq!(task["provider"], "primary");
            probed = true;
            break;
        }
        assert_eq!(task["error"]["kind"], "no_candidate", "{task}");
    }
    assert!(probed, "the breaker never let a probe through");
}

async fn test_retry_after_is_honoured(b: Backend) {
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "5")]).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.push(Fault::RateLimited {
        retry_after_secs: 1,
    });
    upstream(&s, &admin, "openai", &mock).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "429", "prompt": "wait for it" }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{task}");
    assert_eq!(attempts[0]["error"]["kind"], "rate_limited");
    let t0 =
        chrono::DateTime::parse_from_rfc3339(attempts[0]["started_at"].as_str().unwrap()).unwrap();
    let t1 =
        chrono::DateTime::parse_from_rfc3339(attempts[1]["started_at"].as_str().unwrap()).unwrap();
    assert!(
        (t1 - t0).num_milliseconds() >= 1000,
        "the retry came {} ms after the 429, before Retry-After",
        (t1 - t0).num_milliseconds()
    );
}

async fn test_stream_deltas_in_order_and_resume(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    upstream(&s, &admin, "openai", &mock).await;
    let prompt = "one two three four five six seven eight";
    let id = submit(
        &s,
        &admin,
        json!({ "description": "stream", "prompt": prompt, "stream": true }),
    )
    .await;
    let evs = events(&s, &admin, &id, None).await;
    let text: String = evs
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, format!("echo: {prompt}"));
    let task = s
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["result"]["text"], text.as_str());
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.body.as_ref().is_some_and(|b| b["stream"] == true)),
        "the upstream was asked to stream"
    );

    // Resume after the second event: exactly the rest, same ids.
    let rest = events(&s, &admin, &id, Some(2)).await;
    let want: Vec<i64> = evs.iter().map(|e| e.id).filter(|i| *i > 2).collect();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    let r = s
        .http
        .get(s.url(&format!("/api/tasks/{id}/stream")))
        .bearer_auth(&admin)
        .header("Last-Event-ID", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn test_cancel_keeps_partial_output(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.push(Fault::StallStream { after_chunks: 2 });
    upstream(&s, &admin, "openai", &mock).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "stall", "prompt": "alpha beta gamma delta", "stream": true }),
    )
    .await;
    let delta = first_event(&s, &admin, &id, "delta").await;
    assert!(
        delta["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{delta}"
    );
    let cancelled = s
        .post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    mock.wait_for_dropped(1).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    let partial = cancelled.body["partial_output"]
        .as_str()
        .expect("the cancel answer carries the partial output");
    assert!(
        "echo: alpha beta gamma delta".starts_with(partial) && !partial.is_empty(),
        "{partial:?}"
    );
}

/// A provider that timed out had the integration's whole timeout: it is
/// not tried again (one wall-clock limit ends it), each planned step gets
/// one `timeout` attempt instead of four.
async fn test_a_timeout_is_not_retried_on_the_same_provider(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(&admin, "slowpoke", &base_url, KEY, 1_000)
        .await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "slow", "prompt": "wait for it", "cache": false }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    // One attempt per planned step (the router plans several models of
    // the integration), none repeated.
    let attempts = task["attempts"].as_array().unwrap();
    let mut models: Vec<&str> = attempts
        .iter()
        .map(|a| a["model"].as_str().unwrap())
        .collect();
    let tried = models.len();
    models.sort_unstable();
    models.dedup();
    assert_eq!(models.len(), tried, "a step was retried: {task}");
    assert!(
        attempts.iter().all(|a| a["error"]["kind"] == "timeout"),
        "{task}"
    );
}

/// Nothing follows a task's terminal event: a run's reports that arrive
/// after a cancel (its plan, attempts or text) are not appended, checked
/// at the write itself.
async fn test_nothing_follows_a_terminal_event(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    upstream(&s, &admin, "openai", &mock).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "late", "prompt": "late reports", "cache": false }),
    )
    .await;
    mock.wait_for_in_flight(1).await;
    s.post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    let before = events(&s, &admin, &id, None).await;
    assert_eq!(before.last().unwrap().data["status"], "cancelled");

    // A report that comes late, as a run overtaken by the cancel writes it.
    let db = vel::store::Db::open(&s.database_url, None, 1)
        .await
        .unwrap();
    let mut tx = db.platform().await.unwrap();
    let (org_id,): (String,) = sqlx::query_as("SELECT org_id FROM tasks WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let late = [("plan", r#"{"late":true}"#.to_string())];
    let wrote = vel::store::tasks::append_progress_events(&mut tx, &org_id, &id, &late)
        .await
        .unwrap();
    assert!(!wrote);
    tx.commit().await.unwrap();
    db.close().await;
    let after = events(&s, &admin, &id, None).await;
    assert_eq!(after.len(), before.len());
    assert_eq!(after.last().unwrap().data["status"], "cancelled");
}

async fn test_quiet_streams_get_keep_alives(b: Backend) {
    let s = Server::start_with(b, &[("VEL_SSE_KEEPALIVE_SECS", "1")]).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    upstream(&s, &admin, "openai", &mock).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "quiet", "prompt": "hush" }),
    )
    .await;
    mock.wait_for_in_flight(1).await;
    let resp = s
        .http
        .get(s.url(&format!("/api/tasks/{id}/stream")))
        .bearer_auth(&admin)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        // A comment line is a keep-alive; events never start with ':'.
        if seen.split("\n\n").any(|block| block.starts_with(':')) {
            return;
        }
    }
    panic!("the stream ended without a keep-alive: {seen}");
}

async fn test_integration_changes_apply_to_the_next_task(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let first = MockUpstream::start().await;
    let second = MockUpstream::start().await;
    let a = upstream(&s, &admin, "alpha", &first).await;
    let body =
        |n: u32| json!({ "description": "swap", "prompt": format!("swap {n}"), "cache": false });
    let id = submit(&s, &admin, body(1)).await;
    assert_eq!(finished(&s, &admin, &id).await["provider"], "alpha");
    // The dispatcher caches the organization's integrations; a change made
    // through the API is seen by the very next task.
    s.put(
        &format!("/api/integrations/{a}"),
        &admin,
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    upstream(&s, &admin, "beta", &second).await;
    let id = submit(&s, &admin, body(2)).await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["provider"], "beta", "{task}");
    assert_eq!(first.stats().received, 1);
    s.delete(&format!("/api/integrations/{a}"), &admin)
        .await
        .expect(204);
    let id = submit(&s, &admin, body(3)).await;
    assert_eq!(finished(&s, &admin, &id).await["provider"], "beta");
}

async fn test_agent_routing_policy_plans_the_task(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock_integration(&s, &admin).await;
    let agent = |policy: &str| {
        json!({ "name": format!("agent {policy}"), "type": "researcher",
                "config": { "provider": "mock", "model": "echo", "routing_policy": policy,
                            "system_prompt": "be brief" } })
    };
    let cost = s
        .post("/api/agents", &admin, agent("cost-router"))
        .await
        .expect(201);
    let missing = s
        .post("/api/agents", &admin, agent("no-such-router"))
        .await
        .expect(201);
    for (agent, router, note) in [
        (&cost, "cost-router", None),
        (&missing, "default-router", Some("no-such-router")),
    ] {
        let agent_id = agent.body["id"].as_str().unwrap();
        let id = submit(
            &s,
            &admin,
            json!({ "description": "routed", "prompt": "route me", "agent_id": agent_id, "cache": false }),
        )
        .await;
        let evs = events(&s, &admin, &id, None).await;
        let plan = evs
            .iter()
            .find(|e| e.event == "plan")
            .expect("a plan event");
        assert_eq!(plan.data["router"], router, "{:?}", plan.data);
        if let Some(note) = note {
            assert!(
                plan.data["reason"].as_str().unwrap().contains(note),
                "{:?}",
                plan.data
            );
        }
        let task = s
            .get(&format!("/api/tasks/{id}"), &admin)
            .await
            .expect(200)
            .body;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["agent_id"], agent_id);
        // The agent's model and system prompt were applied.
        assert_eq!(task["request"]["model"], "echo");
        assert_eq!(task["request"]["messages"][0]["role"], "system");
    }
}

async fn test_identical_requests_come_from_the_cache(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    upstream(&s, &admin, "openai", &mock).await;
    let body =
        json!({ "description": "cache", "prompt": "what is cached", "task_type": "research" });
    let first = submit(&s, &admin, body.clone()).await;
    assert_eq!(
        finished(&s, &admin, &first).await["result"]["cached"],
        false
    );
    assert_eq!(mock.stats().received, 1);
    let second = submit(&s, &admin, body.clone()).await;
    let task = finished(&s, &admin, &second).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["cached"], true);
    assert_eq!(task["result"]["cached"], true);
    assert_eq!(task["result"]["text"], "echo: what is cached");
    assert_eq!(
        mock.stats().received,
        1,
        "served without calling the provider"
    );
    let mut uncached = body.clone();
    uncached["cache"] = json!(false);
    let third = submit(&s, &admin, uncached).await;
    assert_eq!(finished(&s, &admin, &third).await["cached"], false);
    assert_eq!(mock.stats().received, 2);
}

async fn test_sigkill_loses_no_task(b: Backend) {
    let mut s = Server::start_with(
        b,
        &[
            ("VEL_TASK_LEASE_MS", "1000"),
            ("VEL_MAX_UNFINISHED_TASKS", "100"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_latency(Duration::from_millis(300));
    upstream(&s, &admin, "openai", &mock).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            submit(
                &s,
                &admin,
                json!({ "description": "crash", "prompt": format!("task {n}"), "cache": false }),
            )
            .await,
        );
    }
    // Some are in flight at the upstream when the server dies.
    mock.wait_for_in_flight(1).await;
    s.kill();
    s.restart();
    let admin = s.admin_token().await;
    let mut rescued = 0;
    for id in &ids {
        let task = finished(&s, &admin, id).await;
        assert_eq!(task["status"], "completed", "{task}");
        if task["runs"] == 2 {
            rescued += 1;
        }
    }
    assert!(rescued >= 1, "no task was in flight when the server died");
    let open = s
        .get("/api/tasks?status=in_progress", &admin)
        .await
        .expect(200);
    assert_eq!(open.body["total"], 0);
    let pending = s.get("/api/tasks?status=pending", &admin).await.expect(200);
    assert_eq!(pending.body["total"], 0);
    let done = s
        .get("/api/tasks?status=completed&limit=100", &admin)
        .await
        .expect(200);
    assert_eq!(done.body["total"], ids.len());
}

/// A streamed task whose server died mid-answer is rescued, and its events
/// rebuild exactly the final text: a `reset` event tells the watcher to
/// drop the dead run's deltas.
async fn test_rescued_stream_rebuilds_exactly(b: Backend) {
    let mut s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "1000")]).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.push(Fault::StallStream { after_chunks: 2 });
    upstream(&s, &admin, "openai", &mock).await;
    let prompt = "crash in the middle of this answer";
    let id = submit(
        &s,
        &admin,
        json!({ "description": "stream", "prompt": prompt, "stream": true, "cache": false }),
    )
    .await;
    first_event(&s, &admin, &id, "delta").await;
    s.kill();
    s.restart();
    let admin = s.admin_token().await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["runs"], 2, "{task}");
    let evs = events(&s, &admin, &id, None).await;
    assert!(evs.iter().any(|e| e.event == "reset"), "{evs:?}");
    let mut text = String::new();
    for e in &evs {
        match e.event.as_str() {
            "reset" => text.clear(),
            "delta" => text.push_str(e.data["text"].as_str().expect("delta text")),
            _ => {}
        }
    }
    assert_eq!(text, format!("echo: {prompt}"));
    assert_eq!(task["result"]["text"], text.as_str());
}

/// The text a task's `delta` events assemble to (a `reset` starts over).
fn assembled(evs: &[Sse]) -> String {
    let mut text = String::new();
    for e in evs {
        match e.event.as_str() {
            "reset" => text.clear(),
            "delta" => text.push_str(e.data["text"].as_str().expect("delta text")),
            _ => {}
        }
    }
    text
}

/// A streamed task whose provider fails after streaming text: by default
/// it fails with exactly that text as its partial output and is neither
/// retried nor fallen back from; with `X-Vel-Stream-Failover: continue` the next
/// attempt continues the text, and the deltas assemble to the stored
/// result with nothing repeated.
async fn test_a_stream_cut_midway_fails_or_continues(b: Backend) {
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    let cutting = MockUpstream::start().await;
    let healthy = MockUpstream::start().await;
    upstream(&s, &admin, "primary", &cutting).await;
    upstream(&s, &admin, "secondary", &healthy).await;
    let prompt = "alpha beta gamma delta";
    // Pinned, so the failing integration is tried first.
    let body = json!({ "description": "cut", "prompt": prompt, "stream": true, "cache": false,
                       "parameters": { "model": "primary/gpt-4o-mini" } });

    cutting.set_default(Fault::ErrorMidStream { after_chunks: 2 });
    let id = submit(&s, &admin, body.clone()).await;
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "stream_interrupted", "{task}");
    assert_eq!(task["partial_output"], "echo: alpha", "{task}");
    assert_eq!(assembled(&evs), "echo: alpha", "{evs:?}");
    assert!(healthy.requests().is_empty(), "the fallback was asked");

    // Cut once, then the same provider continues on its retry.
    cutting.set_default(Fault::Ok);
    cutting.push(Fault::ErrorMidStream { after_chunks: 2 });
    let r = s
        .http
        .post(s.url("/api/tasks"))
        .bearer_auth(&admin)
        .header("x-vel-stream-failover", "continue")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    assert_eq!(task["status"], "completed", "{task}");
    let text = format!("echo: {prompt}");
    assert_eq!(task["result"]["text"], text.as_str(), "{task}");
    assert_eq!(assembled(&evs), text, "{evs:?}");
    assert!(!evs.iter().any(|e| e.event == "reset"), "{evs:?}");
    // OpenAI-compatible: no prefill, an instruction to continue.
    assert_eq!(continuation_shape(&cutting, "echo: alpha"), "instruction");

    // The organization's default applies without the header…
    set_org_failover(&s, &admin, Some("continue")).await;
    cutting.push(Fault::ErrorMidStream { after_chunks: 2 });
    let id = submit(&s, &admin, body.clone()).await;
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], text.as_str(), "{task}");
    // The whole answer exactly once: a repeat would show (the mock's
    // OpenAI wire answers a bare partial turn with the whole answer again).
    assert_eq!(assembled(&evs), text, "{evs:?}");
    assert_eq!(continuation_shape(&cutting, "echo: alpha"), "instruction");
    // …and the header wins over it.
    cutting.push(Fault::ErrorMidStream { after_chunks: 2 });
    let r = s
        .http
        .post(s.url("/api/tasks"))
        .bearer_auth(&admin)
        .header("x-vel-stream-failover", "fail")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "stream_interrupted", "{task}");
    assert_eq!(task["partial_output"], "echo: alpha", "{task}");
    assert_eq!(assembled(&evs), "echo: alpha", "{evs:?}");

    // An unknown mode is refused, and nothing is stored.
    let r = s
        .http
        .post(s.url("/api/tasks"))
        .bearer_auth(&admin)
        .header("x-vel-stream-failover", "sometimes")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let list = s.get("/api/tasks", &admin).await.expect(200);
    assert_eq!(list.body["total"], 4, "{}", list.body);
}

/// A streamed task whose first provider fails before sending any text falls
/// back as a plain one does, whatever the mode: its deltas are the
/// fallback's alone, and they assemble to the stored result.
async fn test_a_task_stream_falls_back_unseen_before_its_first_text(b: Backend) {
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    let failing = MockUpstream::start().await;
    failing.set_default(Fault::ErrorMidStream { after_chunks: 0 });
    let healthy = MockUpstream::start().await;
    upstream(&s, &admin, "primary", &failing).await;
    upstream(&s, &admin, "secondary", &healthy).await;
    let prompt = "nothing lost";
    let id = submit(
        &s,
        &admin,
        json!({ "description": "early", "prompt": prompt, "stream": true, "cache": false,
                "parameters": { "model": "gpt-4o-mini" } }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["provider"], "secondary", "{task}");
    let text = format!("echo: {prompt}");
    assert_eq!(task["result"]["text"], text.as_str(), "{task}");
    assert_eq!(assembled(&evs), text, "{evs:?}");
    assert!(
        !failing.requests().is_empty(),
        "the primary was never tried"
    );
    let last = task["attempts"].as_array().unwrap().last().unwrap()["seq"].clone();
    assert!(
        evs.iter()
            .filter(|e| e.event == "delta")
            .all(|e| e.data["attempt"] == last),
        "a delta of a failed attempt: {evs:?}"
    );
}

/// A task stream on a provider with assistant prefill (`anthropic`),
/// continued by the organization's default: the retry gets the text sent
/// as the trailing assistant turn, and the deltas assemble to the stored
/// result once. A built-in's stored manifest from before it declared the
/// capability is brought up to date when the server starts.
async fn test_a_task_stream_continues_with_prefill(b: Backend) {
    let mut s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    let claude = MockUpstream::start().await;
    s.integration(
        &admin,
        json!({ "name": "claude", "provider": "anthropic", "base_url": claude.base_url(),
                "default_model": "claude-3-5-sonnet", "api_key": KEY, "timeout_ms": 5_000 }),
    )
    .await;
    set_org_failover(&s, &admin, Some("continue")).await;
    claude.push(Fault::ErrorMidStream { after_chunks: 2 });
    let prompt = "alpha beta gamma delta";
    let id = submit(
        &s,
        &admin,
        json!({ "description": "cut", "prompt": prompt, "stream": true, "cache": false,
                "parameters": { "model": "claude/claude-3-5-sonnet" } }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    let evs = events(&s, &admin, &id, None).await;
    let text = format!("echo: {prompt}");
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], text.as_str(), "{task}");
    assert_eq!(assembled(&evs), text, "{evs:?}");
    assert_eq!(continuation_shape(&claude, "echo: alpha"), "prefill");

    owner_sql(
        &s,
        &["UPDATE plugin_versions SET manifest = \
           replace(manifest, 'assistant_prefill = true', 'assistant_prefill = false') \
           WHERE manifest LIKE '%assistant_prefill = true%'"],
    )
    .await;
    s.kill();
    s.restart();
    claude.push(Fault::ErrorMidStream { after_chunks: 2 });
    let id = submit(
        &s,
        &admin,
        json!({ "description": "cut again", "prompt": prompt, "stream": true, "cache": false,
                "parameters": { "model": "claude/claude-3-5-sonnet" } }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["result"]["text"], text.as_str(), "{task}");
    assert_eq!(continuation_shape(&claude, "echo: alpha"), "prefill");
}

/// Runs SQL on the server's database as its owner (PostgreSQL's superuser;
/// SQLite has no roles), for tests that inject faults.
async fn owner_sql(s: &Server, statements: &[&str]) {
    use sqlx::{Connection, Executor};
    match s.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
            for sql in statements {
                c.execute(sqlx::AssertSqlSafe(*sql)).await.unwrap();
            }
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&s.database_url)
                .await
                .unwrap();
            for sql in statements {
                c.execute(sqlx::AssertSqlSafe(*sql)).await.unwrap();
            }
        }
    }
}

/// A run whose end cannot be written (the database refuses the finish)
/// leaves the task `in_progress`; the server keeps running, its heartbeat
/// stops extending that lease, and the task is rescued and completed by a
/// second run instead of staying `in_progress` for as long as the
/// instance lives.
async fn test_unrecorded_run_is_rescued_while_the_server_lives(b: Backend) {
    let s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "1000")]).await;
    let admin = s.admin_token().await;
    mock_integration(&s, &admin).await;
    let when = "NEW.status = 'completed' AND NEW.claims = 1 AND NEW.description = 'doomed'";
    match b {
        Backend::Postgres => {
            owner_sql(
                &s,
                &[
                    "CREATE FUNCTION refuse_first_finish() RETURNS trigger LANGUAGE plpgsql \
                     AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                    &format!(
                        "CREATE TRIGGER refuse_first_finish BEFORE UPDATE ON tasks FOR EACH ROW \
                         WHEN ({when}) EXECUTE FUNCTION refuse_first_finish()"
                    ),
                ],
            )
            .await
        }
        Backend::Sqlite => {
            owner_sql(
                &s,
                &[&format!(
                    "CREATE TRIGGER refuse_first_finish BEFORE UPDATE ON tasks FOR EACH ROW \
                     WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )],
            )
            .await
        }
    }
    let id = submit(
        &s,
        &admin,
        json!({ "description": "doomed", "prompt": "hello", "cache": false }),
    )
    .await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["runs"], 2, "{task}");
    assert!(
        s.stderr().contains("recording the run failed"),
        "the first run's finish was not refused"
    );
}

/// The queue itself, with no worker running: a claim takes the highest
/// priority first, says whether more tasks are pending (a worker wakes
/// another only then), brings the cached answer to the task's request
/// (the latest one written), and a task's first event is its `pending`
/// status.
async fn test_claims_say_whether_more_is_pending(b: Backend) {
    let s = Server::start_with(b, &[("VEL_TASK_WORKERS", "0")]).await;
    let admin = s.admin_token().await;
    let low = submit(
        &s,
        &admin,
        json!({ "description": "low", "prompt": "low", "priority": "low" }),
    )
    .await;
    let high = submit(
        &s,
        &admin,
        json!({ "description": "high", "prompt": "high", "priority": "high" }),
    )
    .await;
    let db = vel::store::Db::open(&s.database_url, None, 1)
        .await
        .expect("open the database");
    let db = &db;
    // An answer cached for the low-priority task's request, written twice:
    // the second replaces the first.
    let mut tx = db.platform().await.expect("begin");
    let (org_id, hash): (String, String) =
        sqlx::query_as("SELECT org_id, request_hash FROM tasks WHERE id = $1")
            .bind(&low)
            .fetch_one(&mut *tx)
            .await
            .expect("the task's request");
    for answer in [r#"{"text":"old"}"#, r#"{"text":"cached"}"#] {
        vel::store::tasks::cache_response(&mut tx, &org_id, &hash, answer, 60_000)
            .await
            .expect("cache an answer");
    }
    tx.commit().await.expect("commit");
    let claim = || async move {
        let mut tx = db.platform().await.expect("begin");
        // Statements that differ between the backends tell them apart by
        // the connection (PostgreSQL's claim must skip locked rows).
        assert_eq!(vel::store::Backend::of(&tx), db.backend());
        let claimed = vel::store::tasks::claim(&mut tx, "test-worker", 60_000, 3)
            .await
            .expect("claim");
        tx.commit().await.expect("commit");
        claimed.map(|c| (c.task.id.clone(), c.more_pending(), c.cached_response))
    };
    assert_eq!(claim().await, Some((high.clone(), true, None)));
    assert_eq!(
        claim().await,
        Some((low.clone(), false, Some(r#"{"text":"cached"}"#.to_string())))
    );
    assert_eq!(claim().await, None);
    let mut tx = db.platform().await.expect("begin");
    let org_id: String = sqlx::query_scalar("SELECT org_id FROM tasks WHERE id = $1")
        .bind(&low)
        .fetch_one(&mut *tx)
        .await
        .expect("the task's organization");
    let events = vel::store::tasks::events_after(&mut tx, &org_id, &low, 0)
        .await
        .expect("events");
    tx.commit().await.expect("commit");
    db.close().await;
    let first: Vec<(i64, &str, &str)> = events
        .iter()
        .map(|e| (e.seq, e.kind.as_str(), e.data.as_str()))
        .collect();
    // The claim wrote its event, the same on both backends.
    assert_eq!(
        first,
        [
            (1, "status", r#"{"status":"pending"}"#),
            (2, "status", r#"{"status":"in_progress","claims":1}"#)
        ]
    );
}

/// A finished task's stream resumed at or after its last event answers 204
/// (an `EventSource` stops reconnecting); before it, the rest comes and the
/// stream closes; an empty `Last-Event-ID` counts as none.
async fn test_a_finished_stream_ends(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock_integration(&s, &admin).await;
    let id = submit(
        &s,
        &admin,
        json!({ "description": "done", "prompt": "finish me" }),
    )
    .await;
    finished(&s, &admin, &id).await;
    let all = events(&s, &admin, &id, None).await;
    let last = all.last().expect("events").id;
    let resume = |after: String| {
        s.http
            .get(s.url(&format!("/api/tasks/{id}/stream")))
            .bearer_auth(&admin)
            .header("Last-Event-ID", after)
            .timeout(Duration::from_secs(10))
            .send()
    };
    for after in [last, last + 5] {
        let r = resume(after.to_string()).await.expect("resume");
        assert_eq!(r.status(), 204, "Last-Event-ID {after}");
    }
    let rest = events(&s, &admin, &id, Some(last - 1)).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, last);
    assert_eq!(rest[0].event, "status");
    let r = resume(String::new()).await.expect("resume");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("the whole stream, closed");
    assert_eq!(text.matches("id:").count(), all.len(), "{text}");
}

async fn test_agent_provider_limits_where_its_tasks_run(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "alpha").await;
    let beta = s.mock_integration(&admin, "beta").await;
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "on beta", "type": "researcher",
                    "config": { "provider": "beta", "model": "echo" } }),
        )
        .await
        .expect(201);
    let agent_id = agent.body["id"].as_str().unwrap();
    let body = |parameters: Value| {
        json!({ "description": "where", "prompt": "which provider", "agent_id": agent_id,
                "cache": false, "parameters": parameters })
    };
    // Only the agent's provider is planned.
    let id = submit(&s, &admin, body(json!({}))).await;
    let evs = events(&s, &admin, &id, None).await;
    let plan = evs
        .iter()
        .find(|e| e.event == "plan")
        .expect("a plan event");
    let steps = plan.data["attempts"].as_array().unwrap();
    assert!(
        !steps.is_empty()
            && steps
                .iter()
                .all(|step| step.as_str().unwrap().starts_with("beta/")),
        "{:?}",
        plan.data
    );
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["provider"], "beta", "{task}");
    // The caller's own `integration/model` wins over the agent's provider.
    let id = submit(&s, &admin, body(json!({ "model": "alpha/echo" }))).await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["provider"], "alpha", "{task}");
    // With its integration disabled, nothing else answers for the agent.
    s.put(
        &format!("/api/integrations/{beta}"),
        &admin,
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    let id = submit(&s, &admin, body(json!({}))).await;
    let task = finished(&s, &admin, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "no_candidate", "{task}");
    assert!(
        task["error"]["message"].as_str().unwrap().contains("beta"),
        "{task}"
    );
}

dual_backend_tests!(
    test_a_finished_stream_ends,
    test_mock_task_completes_with_history,
    test_claims_say_whether_more_is_pending,
    test_bad_submissions_are_refused_and_store_nothing,
    test_unfinished_limit_idempotency_and_cancel,
    test_fallback_costs_and_breaker,
    test_retry_after_is_honoured,
    test_stream_deltas_in_order_and_resume,
    test_cancel_keeps_partial_output,
    test_quiet_streams_get_keep_alives,
    test_a_timeout_is_not_retried_on_the_same_provider,
    test_nothing_follows_a_terminal_event,
    test_integration_changes_apply_to_the_next_task,
    test_agent_routing_policy_plans_the_task,
    test_agent_provider_limits_where_its_tasks_run,
    test_identical_requests_come_from_the_cache,
    test_sigkill_loses_no_task,
    test_rescued_stream_rebuilds_exactly,
    test_unrecorded_run_is_rescued_while_the_server_lives,
    test_a_stream_cut_midway_fails_or_continues,
    test_a_task_stream_continues_with_prefill,
    test_a_task_stream_falls_back_unseen_before_its_first_text,
);

/// Two instances on one PostgreSQL: tasks submitted to an API-only
/// instance run once each on the other, and a watcher on the API-only
/// instance sees the events the other one writes.
#[tokio::test]
async fn two_instances_share_the_queue_and_the_events() {
    let api = Server::start_with(
        Backend::Postgres,
        &[
            ("VEL_TASK_WORKERS", "0"),
            ("VEL_MAX_UNFINISHED_TASKS", "100"),
        ],
    )
    .await;
    let admin = api.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_latency(Duration::from_millis(20));
    upstream(&api, &admin, "openai", &mock).await;
    let worker = api.sibling(&[("VEL_TASK_WORKERS", "4")]);
    let worker_b = api.sibling(&[("VEL_TASK_WORKERS", "4")]);
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(
            submit(
                &api,
                &admin,
                json!({ "description": "shared", "prompt": format!("shared {n}"), "stream": n == 0, "cache": false }),
            )
            .await,
        );
    }
    // Watched on the API-only instance, run by the workers.
    let evs = events(&api, &admin, &ids[0], None).await;
    assert!(evs.iter().any(|e| e.event == "delta"), "{evs:?}");
    assert_eq!(evs.last().unwrap().data["status"], "completed");
    for id in &ids {
        let task = finished(&api, &admin, id).await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(
            task["attempts"].as_array().unwrap().len(),
            1,
            "ran once: {task}"
        );
    }
    assert_eq!(
        mock.stats().received,
        16,
        "each task called the provider once"
    );
    drop(worker);
    drop(worker_b);
}

/// On PostgreSQL the database announces a new pending task and every event
/// itself (triggers), in the statements that write them, and names the
/// instance that wrote, as the instance's own signals do: so other
/// instances hear them, and the writer can ignore its own echo.
#[tokio::test]
async fn postgres_announces_queued_tasks_and_events_itself() {
    let s = Server::start_with(Backend::Postgres, &[("VEL_TASK_WORKERS", "0")]).await;
    let admin = s.admin_token().await;
    let mut listener = sqlx::postgres::PgListener::connect(&s.database_url)
        .await
        .expect("connect the listener");
    listener
        .listen_all(["vel_task_queue", "vel_task_events", "vel_task_cancel"])
        .await
        .expect("listen");
    let mut heard = async |n: usize| {
        let mut got = Vec::new();
        for _ in 0..n {
            let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
                .await
                .expect("a notification within 30 s")
                .expect("receive a notification");
            got.push((note.channel().to_string(), note.payload().to_string()));
        }
        got.sort();
        got
    };

    let id = submit(
        &s,
        &admin,
        json!({ "description": "heard", "prompt": "heard" }),
    )
    .await;
    let queued = heard(2).await;
    let origin = queued[1].1.trim_end().to_string();
    assert!(
        !origin.is_empty(),
        "the payload names the instance: {queued:?}"
    );
    assert_eq!(
        queued,
        [
            ("vel_task_events".to_string(), format!("{origin} {id}")),
            ("vel_task_queue".to_string(), format!("{origin} ")),
        ]
    );

    // The cancel signal is sent by the instance, the event by the trigger:
    // both must carry the same instance id.
    s.post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    assert_eq!(
        heard(2).await,
        [
            ("vel_task_cancel".to_string(), format!("{origin} {id}")),
            ("vel_task_events".to_string(), format!("{origin} {id}")),
        ]
    );
}
