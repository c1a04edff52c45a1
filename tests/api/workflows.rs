//! Workflows: definitions checked with every bad path named and nothing
//! stored; task steps that run as ordinary tasks; choices decided by
//! built-in and tenant-uploaded condition plugins; a failing condition
//! caught; retries; approvals approved, rejected and timed out; cancel;
//! retry from a step; the step limit; the user's limit counting a
//! workflow once; state versions and the graph; a crash during a step and a decision taken on
//! another instance; 404 across tenants.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::guests::manifest;
use crate::support::{Backend, Server};

fn hostile(name: &str) -> Vec<u8> {
    let path = vel_plugin_artifacts::hostile_path(name)
        .unwrap_or_else(|| panic!("no hostile component {name}"));
    std::fs::read(path).expect("hostile component")
}

/// Poll a workflow until `done` holds (each poll a real request).
async fn wait_until(s: &Server, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s
            .get(&format!("/api/workflows/{id}"), token)
            .await
            .expect(200)
            .body;
        if done(&w) {
            return w;
        }
        assert!(Instant::now() < deadline, "workflow never got there: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll until the workflow has ended.
async fn finished(s: &Server, token: &str, id: &str) -> Value {
    wait_until(s, token, id, |w| {
        ["completed", "failed", "cancelled"].contains(&w["status"].as_str().unwrap_or(""))
    })
    .await
}

/// Start a workflow of `definition` on `input`; returns its id.
async fn start(s: &Server, token: &str, definition: Value, input: Value) -> String {
    let r = s
        .post(
            "/api/workflows",
            token,
            json!({ "definition": definition, "input": input }),
        )
        .await
        .expect(201);
    assert_eq!(r.body["status"], "running", "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// The runs of a workflow view, as (step, status) pairs.
fn trail(w: &Value) -> Vec<(String, String)> {
    w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Draft a text, judge its sentiment, and answer in kind.
fn sentiment_flow() -> Value {
    json!({
        "name": "mood",
        "input_schema": {
            "type": "object",
            "required": ["mood"],
            "properties": { "mood": { "type": "string", "minLength": 1 } }
        },
        "start": "draft",
        "steps": {
            "draft": { "kind": "task", "prompt": "{{input.mood}} day", "model": "mock/echo", "next": "judge" },
            "judge": { "kind": "choice", "rules": [
                { "condition": "sentiment", "args": {},
                  "branches": { "positive": "cheer", "negative": "console" } }
            ], "default": "console" },
            "cheer": { "kind": "task", "prompt": "Celebrate: {{steps.draft.output}}", "model": "mock/echo", "next": "done" },
            "console": { "kind": "task", "prompt": "Console: {{steps.draft.output}}", "model": "mock/echo", "next": "done" },
            "done": { "kind": "succeed" }
        }
    })
}

async fn test_a_choice_takes_the_branch_its_condition_names(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;

    let id = start(
        &s,
        &admin,
        sentiment_flow(),
        json!({ "mood": "great wonderful" }),
    )
    .await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        trail(&w),
        pairs(&[
            ("draft", "completed"),
            ("judge", "completed"),
            ("cheer", "completed"),
            ("done", "completed")
        ])
    );
    let steps = w["steps"].as_array().unwrap();
    assert_eq!(steps[0]["output"], "echo: great wonderful day");
    assert_eq!(steps[1]["branch"], "positive");
    assert_eq!(steps[1]["next"], "cheer");
    let verdict = &steps[1]["evaluations"][0];
    assert!(
        verdict["condition"]
            .as_str()
            .unwrap()
            .starts_with("sentiment@"),
        "{verdict}"
    );
    assert!(verdict["score"].as_f64().unwrap() > 0.0, "{verdict}");
    assert!(verdict["explanation"].is_string(), "{verdict}");
    assert_eq!(
        steps[2]["output"],
        "echo: Celebrate: echo: great wonderful day"
    );
    assert_eq!(w["output"], steps[2]["output"]);
    assert_eq!(w["steps_run"], 4);
    // The step's task is an ordinary task of the organization.
    let task_id = steps[0]["task_id"].as_str().unwrap();
    let task = s
        .get(&format!("/api/tasks/{task_id}"), &admin)
        .await
        .expect(200);
    assert_eq!(task.body["status"], "completed");

    // The graph shows the branch taken and the one not taken.
    let graph = &w["graph"];
    let edge = |to: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == "judge" && e["to"] == to)
            .cloned()
            .unwrap()
    };
    assert_eq!(edge("cheer")["taken"], true);
    assert_eq!(edge("console")["taken"], false);
    let node = |id: &str| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("console")["status"], "pending");
    assert_eq!(node("cheer")["status"], "completed");
    let mermaid = s
        .http
        .get(s.url(&format!("/api/workflows/{id}/graph?format=mermaid")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(mermaid.starts_with("flowchart TD"), "{mermaid}");
    assert!(
        mermaid.contains("s_judge ==>|rules[0].branches.positive| s_cheer"),
        "{mermaid}"
    );

    // Every finished step wrote a state version; version 0 is the input.
    let v0 = s
        .get(&format!("/api/workflows/{id}/state?version=0"), &admin)
        .await
        .expect(200);
    assert_eq!(v0.body["state"]["input"]["mood"], "great wonderful");
    assert_eq!(v0.body["state"]["steps"], json!({}));
    let latest = s
        .get(&format!("/api/workflows/{id}/state"), &admin)
        .await
        .expect(200);
    assert_eq!(latest.body["version"], w["state_version"]);
    assert_eq!(
        latest.body["state"]["steps"]["draft"]["output"],
        "echo: great wonderful day"
    );
    let v1 = s
        .get(&format!("/api/workflows/{id}/state?version=1"), &admin)
        .await
        .expect(200);
    assert!(
        v1.body["state"]["steps"].get("judge").is_none(),
        "{}",
        v1.body
    );
    s.get(&format!("/api/workflows/{id}/state?version=99"), &admin)
        .await
        .expect_error(404, "not_found");

    // The event log, as Server-Sent Events, numbered from 1; a finished
    // workflow's stream ends after its terminal status.
    let text = s
        .http
        .get(s.url(&format!("/api/workflows/{id}/stream")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<(i64, String, Value)> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            (
                field("id").parse().unwrap(),
                field("event"),
                serde_json::from_str(&field("data")).unwrap(),
            )
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "status",
            "step_started",
            "step_completed",
            "step_started",
            "branch_taken",
            "step_completed",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "status"
        ],
        "{text}"
    );
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, (n, _, _))| *n == i as i64 + 1),
        "{text}"
    );
    assert_eq!(events[4].2["branch"], "positive");
    assert_eq!(events[10].2["status"], "completed");
    // Resuming after the last event of a finished workflow: nothing left.
    let r = s
        .http
        .get(s.url(&format!("/api/workflows/{id}/stream")))
        .bearer_auth(&admin)
        .header("last-event-id", "11")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // The other mood takes the other branch.
    let id = start(
        &s,
        &admin,
        sentiment_flow(),
        json!({ "mood": "terrible awful" }),
    )
    .await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["steps"][1]["branch"], "negative", "{w}");
    assert_eq!(w["steps"][2]["step"], "console", "{w}");

    // Listed, newest first, filtered.
    let list = s
        .get("/api/workflows?status=completed&name=mood", &admin)
        .await
        .expect(200);
    assert_eq!(list.body["total"], 2);
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    s.get("/api/workflows?status=sleeping", &admin)
        .await
        .expect_error(400, "invalid_query");
}

async fn test_bad_definitions_name_every_path_and_store_nothing(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let bad = json!({
        "name": "broken",
        "start": "nowhere",
        "max_steps": 0,
        "steps": {
            "a": { "kind": "task", "prompt": "{{steps.ghost.output}}", "next": "b", "temperature": 7 },
            "b": { "kind": "choice", "rules": [
                { "condition": "text-match", "args": { "pattern": "x" }, "next": "a" },
                { "condition": "no-such-condition", "next": "c" },
                { "condition": "default-router", "next": "c" }
            ] },
            "c": { "kind": "parallel", "max_concurrency": 9, "branches": [
                { "start": "c1", "steps": { "c1": { "kind": "succeed" } } }
            ] },
            "d": { "kind": "teleport" },
            "e": { "kind": "approval", "timeout": "soon", "role": "emperor" }
        }
    });
    let r = s
        .post("/api/workflows", &admin, json!({ "definition": bad }))
        .await
        .expect_error(422, "validation_failed");
    let details = &r.body["error"]["details"];
    for path in [
        "start",
        "max_steps",
        "steps.a.prompt",
        "steps.a.temperature",
        "steps.b.rules[1].condition",
        "steps.b.rules[2].condition",
        "steps.c.max_concurrency",
        "steps.d.kind",
        "steps.e.timeout",
        "steps.e.role",
    ] {
        assert!(details.get(path).is_some(), "{path} not named: {details}");
    }
    // The input must satisfy the definition's schema.
    let r = s
        .post(
            "/api/workflows",
            &admin,
            json!({ "definition": sentiment_flow(), "input": { "mood": 3 } }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"].get("input.mood").is_some(),
        "{}",
        r.body
    );
    s.post(
        "/api/workflows",
        &admin,
        json!({ "definition": sentiment_flow(), "input": [1] }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.post("/api/workflows", &admin, json!({ "definition": "x" }))
        .await
        .expect_error(422, "validation_failed");
    let list = s.get("/api/workflows", &admin).await.expect(200);
    assert_eq!(list.body["total"], 0, "{}", list.body);
}

/// An organization's own conditions decide its workflow's branch: one
/// that probes the sandbox (files, environment) finds nothing and does not
/// match, one that tries to forge log lines matches. Another organization
/// can neither use them nor see the workflow.
async fn test_a_tenant_condition_decides_for_its_tenant_only(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_a, owner_a) = s.tenant(&admin, "acme").await;
    let (_b, owner_b) = s.tenant(&admin, "globex").await;
    s.mock_integration(&owner_a, "mock").await;
    for name in ["snoop", "log-forge"] {
        s.upload_plugin(
            &owner_a,
            "?activate=true",
            hostile(name),
            &manifest(&format!("hostile-{name}"), "0.1.0", "condition", ""),
        )
        .await
        .expect(201);
    }
    let definition = json!({
        "name": "ship",
        "start": "ask",
        "steps": {
            "ask": { "kind": "task", "prompt": "please ship it", "model": "mock/echo", "next": "gate" },
            "gate": { "kind": "choice", "rules": [
                { "condition": "hostile-snoop", "next": "leaked" },
                { "condition": "hostile-log-forge", "next": "yes" }
            ], "default": "no" },
            "leaked": { "kind": "fail", "error": "leaked" },
            "yes": { "kind": "succeed", "output": "shipped: {{steps.ask.output}}" },
            "no": { "kind": "fail", "error": "not_shipped" }
        }
    });
    let id = start(&s, &owner_a, definition.clone(), json!({})).await;
    let w = finished(&s, &owner_a, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "shipped: echo: please ship it");
    let verdicts = &w["steps"][1]["evaluations"];
    assert_eq!(verdicts[0]["matched"], false, "{w}");
    assert!(
        verdicts[0]["condition"]
            .as_str()
            .unwrap()
            .starts_with("hostile-snoop@"),
        "{w}"
    );
    assert_eq!(verdicts[1]["matched"], true, "{w}");

    // Not usable by another organization, and invisible to it.
    let r = s
        .post(
            "/api/workflows",
            &owner_b,
            json!({ "definition": definition }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"]
            .get("steps.gate.rules[0].condition")
            .is_some(),
        "{}",
        r.body
    );
    for path in [
        format!("/api/workflows/{id}"),
        format!("/api/workflows/{id}/state"),
        format!("/api/workflows/{id}/graph"),
    ] {
        s.get(&path, &owner_b).await.expect_error(404, "not_found");
    }
    s.post(&format!("/api/workflows/{id}/cancel"), &owner_b, json!({}))
        .await
        .expect_error(404, "not_found");
    let list = s.get("/api/workflows", &owner_b).await.expect(200);
    assert_eq!(list.body["total"], 0);
}

/// A condition that traps fails its step with `condition_failed`; a
/// `catch` routes it, and without one the workflow fails with it.
async fn test_a_trapping_condition_is_caught(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "traps").await;
    s.upload_plugin(
        &owner,
        "?activate=true",
        hostile("trap"),
        &manifest("hostile-trap", "0.1.0", "condition", ""),
    )
    .await
    .expect(201);
    let flow = |catch: Value| {
        json!({
            "name": "trapped",
            "start": "gate",
            "steps": {
                "gate": { "kind": "choice", "input": "anything", "rules": [
                    { "condition": "hostile-trap", "next": "ok" }
                ], "default": "ok", "catch": catch },
                "ok": { "kind": "succeed", "output": "ok" },
                "fallback": { "kind": "succeed", "output": "caught" }
            }
        })
    };
    let id = start(
        &s,
        &owner,
        flow(json!([{ "errors": ["condition_failed"], "next": "fallback" }])),
        json!({}),
    )
    .await;
    let w = finished(&s, &owner, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "caught");
    let gate = &w["steps"][0];
    assert_eq!(gate["status"], "failed");
    assert_eq!(gate["error"]["category"], "condition_failed", "{gate}");
    assert_eq!(gate["next"], "fallback");
    assert!(gate["evaluations"][0]["error"].is_string(), "{gate}");

    let id = start(&s, &owner, flow(json!([])), json!({})).await;
    let w = finished(&s, &owner, &id).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["category"], "condition_failed", "{w}");
    assert_eq!(w["error"]["step"], "gate", "{w}");
}

/// A step retried after its back-off, then caught; each attempt is a run
/// with its own task.
async fn test_retries_then_catch(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "stubborn",
        "start": "call",
        "steps": {
            "call": { "kind": "task", "prompt": "hi", "model": "mock/error", "next": "done",
                      "retry": { "max_attempts": 2, "backoff": "fixed", "base_ms": 10 },
                      "catch": [{ "errors": ["all"], "next": "recover" }] },
            "recover": { "kind": "succeed", "output": "recovered after {{steps.call.error.kind}}" },
            "done": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        trail(&w),
        pairs(&[
            ("call", "failed"),
            ("call", "failed"),
            ("recover", "completed")
        ])
    );
    let steps = w["steps"].as_array().unwrap();
    assert_eq!(steps[0]["attempt"], 1);
    assert_eq!(steps[1]["attempt"], 2);
    assert_ne!(steps[0]["task_id"], steps[1]["task_id"]);
    assert_eq!(steps[1]["error"]["category"], "retryable", "{w}");
    assert_eq!(w["output"], "recovered after all_attempts_failed", "{w}");
}

fn approval_flow(extra: Value) -> Value {
    let mut gate = json!({ "kind": "approval", "message": "Publish {{input.title}}?", "next": "publish",
                           "catch": [{ "errors": ["rejected"], "next": "shelved" }] });
    if let (Some(g), Some(e)) = (gate.as_object_mut(), extra.as_object()) {
        g.extend(e.clone());
    }
    json!({
        "name": "publish",
        "start": "gate",
        "steps": {
            "gate": gate,
            "publish": { "kind": "succeed", "output": "published {{input.title}}" },
            "shelved": { "kind": "succeed", "output": "shelved" },
            "late": { "kind": "succeed", "output": "nobody answered" }
        }
    })
}

async fn test_approvals_approve_reject_and_time_out(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let viewer = s.user_with_role(&admin, "v@x.test", "viewer").await;
    let manager = s.user_with_role(&admin, "m@x.test", "agent_manager").await;
    let awaiting = |w: &Value| w["status"] == "awaiting_approval";

    // Approved by a manager, after a viewer was refused.
    let id = start(
        &s,
        &admin,
        approval_flow(json!({})),
        json!({ "title": "Q3" }),
    )
    .await;
    let w = wait_until(&s, &admin, &id, awaiting).await;
    assert_eq!(w["awaiting"]["step"], "gate", "{w}");
    assert_eq!(w["awaiting"]["role"], "agent_manager");
    assert_eq!(w["awaiting"]["message"], "Publish Q3?");
    // A watcher connected while it waits sees the decision and the end live.
    let watch = {
        let req = s
            .http
            .get(s.url(&format!("/api/workflows/{id}/stream")))
            .bearer_auth(&admin);
        tokio::spawn(async move { req.send().await.unwrap().text().await.unwrap() })
    };
    s.post(&format!("/api/workflows/{id}/approve"), &viewer, json!({}))
        .await
        .expect_error(403, "forbidden");
    s.post(
        &format!("/api/workflows/{id}/approve"),
        &manager,
        json!({ "comment": "go" }),
    )
    .await
    .expect(200);
    s.post(&format!("/api/workflows/{id}/approve"), &manager, json!({}))
        .await
        .expect_error(409, "conflict");
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "published Q3");
    let gate = &w["steps"][0];
    assert_eq!(gate["decision"]["approved"], true, "{gate}");
    assert_eq!(gate["decision"]["comment"], "go");
    let seen = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("the stream ended after the terminal status")
        .unwrap();
    let order: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("event:").map(str::trim))
        .collect();
    assert_eq!(
        order,
        [
            "status",
            "step_started",
            "awaiting_approval",
            "status",
            "decision",
            "step_completed",
            "status",
            "step_started",
            "step_completed",
            "status"
        ],
        "{seen}"
    );

    // Rejected: the catch routes it.
    let id = start(
        &s,
        &admin,
        approval_flow(json!({})),
        json!({ "title": "Q4" }),
    )
    .await;
    wait_until(&s, &admin, &id, awaiting).await;
    s.post(
        &format!("/api/workflows/{id}/reject"),
        &manager,
        json!({ "comment": "not yet" }),
    )
    .await
    .expect(200);
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["output"], "shelved", "{w}");
    assert_eq!(w["steps"][0]["error"]["category"], "rejected");

    // Nobody decides: the timeout follows on_timeout.
    let id = start(
        &s,
        &admin,
        approval_flow(json!({ "timeout": "PT0.3S", "on_timeout": "late" })),
        json!({ "title": "Q1" }),
    )
    .await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["output"], "nobody answered", "{w}");
    assert_eq!(w["steps"][0]["decision"]["timed_out"], true, "{w}");

    // Every decision is audited.
    let audit = s.get("/api/audit-logs?limit=100", &admin).await.expect(200);
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"workflow_approved"), "{actions:?}");
    assert!(actions.contains(&"workflow_rejected"), "{actions:?}");
    assert!(actions.contains(&"workflow_started"), "{actions:?}");
}

/// Cancelling a workflow cancels its running step's task; a finished
/// workflow cannot be cancelled.
async fn test_cancel_stops_the_running_step(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "long",
        "start": "think",
        "steps": { "think": { "kind": "task", "prompt": "take your time", "model": "mock/slow" } }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = wait_until(&s, &admin, &id, |w| w["steps"][0]["task_id"].is_string()).await;
    let task_id = w["steps"][0]["task_id"].as_str().unwrap().to_string();
    let r = s
        .post(&format!("/api/workflows/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    assert_eq!(r.body["status"], "cancelled", "{}", r.body);
    assert_eq!(r.body["steps"][0]["status"], "cancelled", "{}", r.body);
    let task = s
        .get(&format!("/api/tasks/{task_id}"), &admin)
        .await
        .expect(200);
    assert_eq!(task.body["status"], "cancelled", "{}", task.body);
    s.post(&format!("/api/workflows/{id}/cancel"), &admin, json!({}))
        .await
        .expect_error(409, "conflict");

    // Run again from the step: a new run of it, with the state it read.
    s.post(
        &format!("/api/workflows/{id}/retry-from-step/nowhere"),
        &admin,
        json!({}),
    )
    .await
    .expect_error(409, "conflict");
    let r = s
        .post(
            &format!("/api/workflows/{id}/retry-from-step/think"),
            &admin,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "running", "{}", r.body);
    s.post(
        &format!("/api/workflows/{id}/retry-from-step/think"),
        &admin,
        json!({}),
    )
    .await
    .expect_error(409, "conflict");
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        trail(&w),
        pairs(&[("think", "cancelled"), ("think", "completed")])
    );
    assert_eq!(w["output"], "echo: take your time");
    let v = s
        .get(&format!("/api/workflows/{id}/state?version=1"), &admin)
        .await
        .expect(200);
    assert_eq!(v.body["state"]["steps"], json!({}), "{}", v.body);
}

/// A loop is bounded by `max_steps`.
async fn test_loops_stop_at_the_step_limit(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let definition = json!({
        "name": "loop",
        "max_steps": 5,
        "start": "again",
        "steps": {
            "again": { "kind": "choice", "input": "no", "rules": [
                { "condition": "text-match", "args": { "mode": "equals", "pattern": "yes" }, "next": "out" }
            ], "default": "again" },
            "out": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["kind"], "step_limit", "{w}");
    assert_eq!(w["steps"].as_array().unwrap().len(), 5, "{w}");
}

/// A workflow counts once against its user's unfinished limit, however
/// many steps it runs.
async fn test_a_workflow_counts_once_against_the_limit(b: Backend) {
    let s = Server::start_with(b, &[("VEL_MAX_UNFINISHED_TASKS", "2")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "chain",
        "start": "one",
        "steps": {
            "one": { "kind": "task", "prompt": "1", "model": "mock/echo", "next": "two" },
            "two": { "kind": "task", "prompt": "2", "model": "mock/echo", "next": "three" },
            "three": { "kind": "task", "prompt": "3", "model": "mock/echo", "next": "wait" },
            "wait": { "kind": "approval" }
        }
    });
    let first = start(&s, &admin, definition.clone(), json!({})).await;
    wait_until(&s, &admin, &first, |w| w["status"] == "awaiting_approval").await;
    start(&s, &admin, definition.clone(), json!({})).await;
    // Two unfinished workflows: a third, or a task, is over the limit.
    s.post(
        "/api/workflows",
        &admin,
        json!({ "definition": definition }),
    )
    .await
    .expect_error(429, "rate_limited");
    s.post(
        "/api/tasks",
        &admin,
        json!({ "description": "one more", "prompt": "hi" }),
    )
    .await
    .expect_error(429, "rate_limited");
    s.post(&format!("/api/workflows/{first}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    s.post(
        "/api/tasks",
        &admin,
        json!({ "description": "one more", "prompt": "hi", "parameters": { "model": "mock/echo" } }),
    )
    .await
    .expect(201);
}

/// A workflow survives its instance: killed while its step's task runs,
/// the step's task is rescued (not started twice) and the workflow
/// completes; killed while awaiting an approval, the decision is taken on
/// another instance sharing the database, which carries it on.
async fn test_a_workflow_survives_its_instance(b: Backend) {
    let mut s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "1000")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "durable",
        "start": "think",
        "steps": {
            "think": { "kind": "task", "prompt": "slowly", "model": "mock/slow", "next": "gate" },
            "gate": { "kind": "approval", "next": "done" },
            "done": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = wait_until(&s, &admin, &id, |w| w["steps"][0]["task_id"].is_string()).await;
    let task_id = w["steps"][0]["task_id"].as_str().unwrap().to_string();
    // Killed while the step's task is in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .get(&format!("/api/tasks/{task_id}"), &admin)
        .await
        .expect(200)
        .body["status"]
        != "in_progress"
    {
        assert!(Instant::now() < deadline, "the step's task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill();
    s.restart();
    let admin = s.admin_token().await;
    let w = wait_until(&s, &admin, &id, |w| w["status"] == "awaiting_approval").await;
    assert_eq!(w["steps"][0]["status"], "completed", "{w}");
    assert_eq!(w["steps"][0]["task_id"], task_id.as_str(), "{w}");
    let tasks = s.get("/api/tasks?limit=100", &admin).await.expect(200);
    assert_eq!(
        tasks.body["total"], 1,
        "one task for the step: {}",
        tasks.body
    );

    // Killed while waiting; the decision is taken on a sibling, which
    // finishes the workflow (on SQLite the sibling is the same file's
    // next server, on PostgreSQL a second instance).
    let other = s.sibling(&[("VEL_TASK_LEASE_MS", "1000")]);
    s.kill();
    let admin = other.admin_token().await;
    other
        .post(&format!("/api/workflows/{id}/approve"), &admin, json!({}))
        .await
        .expect(200);
    let w = finished(&other, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
}

dual_backend_tests!(
    test_a_choice_takes_the_branch_its_condition_names,
    test_bad_definitions_name_every_path_and_store_nothing,
    test_a_tenant_condition_decides_for_its_tenant_only,
    test_a_trapping_condition_is_caught,
    test_retries_then_catch,
    test_approvals_approve_reject_and_time_out,
    test_cancel_stops_the_running_step,
    test_loops_stop_at_the_step_limit,
    test_a_workflow_counts_once_against_the_limit,
    test_a_workflow_survives_its_instance,
);
