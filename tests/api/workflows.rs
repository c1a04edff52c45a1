//! Workflows: definitions checked with every bad path named and nothing
//! stored; task steps that run as ordinary tasks; choices decided by
//! built-in and tenant-uploaded condition plugins; a failing condition
//! caught; retries; approvals approved, rejected and timed out; cancel;
//! retry from a step; the step limit; the user's limit counting a
//! workflow once; state versions and the graph; a crash during a step and a decision taken on
//! another instance; 404 across tenants; parallel steps (results gathered,
//! `max_concurrency` kept, `continue` and `abort`, catch after an abort,
//! cancel and a crash during a group).

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

/// A workflow's graph as Mermaid text.
async fn mermaid_of(s: &Server, token: &str, id: &str) -> String {
    s.http
        .get(s.url(&format!("/api/workflows/{id}/graph?format=mermaid")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    // The first step's task was claimed by a task worker; the next one by
    // the worker whose task (`draft`) ended, in the commit of that end, as
    // the other workers were idle.
    let metrics = s.metrics(&admin).await;
    for how in ["fair", "chained"] {
        let series = format!("vel_queue_claims_total{{kind=\"tasks\",how=\"{how}\"}} 1\n");
        assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    }
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
    let mermaid = mermaid_of(&s, &admin, &id).await;
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
                { "start": "c1", "steps": { "c1": { "kind": "approval", "next": "c9" } } }
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
        "steps.c.branches[0].steps.c1.kind",
        "steps.c.branches[0].steps.c1.next",
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

/// The branch runs of a workflow view, by branch index: (step, status).
fn branch_runs(w: &Value, branch: i64) -> Vec<(String, String)> {
    w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["branch_index"] == branch)
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A task step on the `slow` mock model answering after `ms`.
fn slow_step(ms: u64, next: Option<&str>) -> Value {
    let mut step = json!({ "kind": "task", "prompt": "slow", "model": "mock/slow",
                           "metadata": { "delay-ms": ms } });
    if let Some(next) = next {
        step["next"] = json!(next);
    }
    step
}

/// A parallel group runs its branches, each a chain of steps (tasks, a
/// choice, succeed), and gathers their results into the state; later
/// steps read the branches' steps; the view, events and graph show the
/// branches.
async fn test_a_parallel_group_gathers_its_branches(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "fan-out",
        "start": "fan",
        "steps": {
            "fan": { "kind": "parallel", "max_concurrency": 3, "next": "sum", "branches": [
                { "start": "a1", "steps": {
                    "a1": { "kind": "task", "prompt": "alpha {{input.x}}", "model": "mock/echo", "next": "a2" },
                    "a2": { "kind": "task", "prompt": "then {{steps.a1.output}}", "model": "mock/echo" }
                } },
                { "start": "b1", "steps": {
                    "b1": { "kind": "choice", "input": "{{input.x}}", "rules": [
                        { "condition": "text-match", "args": { "mode": "equals", "pattern": "7" }, "next": "b2" }
                    ], "default": "b3" },
                    "b2": { "kind": "succeed", "output": "seven" },
                    "b3": { "kind": "fail" }
                } },
                { "start": "c1", "steps": {
                    "c1": { "kind": "task", "prompt": "gamma", "model": "mock/echo" }
                } },
                { "start": "d1", "steps": {
                    "d1": { "kind": "task", "prompt": "x", "model": "mock/error",
                            "retry": { "max_attempts": 2, "backoff": "fixed", "base_ms": 10 },
                            "catch": [{ "errors": ["all"], "next": "d2" }] },
                    "d2": { "kind": "succeed", "output": "fell back after {{steps.d1.error.kind}}" }
                } }
            ] },
            "sum": { "kind": "task", "prompt": "{{steps.a2.output}} and {{steps.c1.output}}",
                     "model": "mock/echo", "next": "done" },
            "done": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({ "x": "7" })).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        branch_runs(&w, 0),
        pairs(&[("a1", "completed"), ("a2", "completed")])
    );
    assert_eq!(
        branch_runs(&w, 1),
        pairs(&[("b1", "completed"), ("b2", "completed")])
    );
    assert_eq!(branch_runs(&w, 2), pairs(&[("c1", "completed")]));
    // Retried after its back-off, then caught, inside its branch.
    assert_eq!(
        branch_runs(&w, 3),
        pairs(&[("d1", "failed"), ("d1", "failed"), ("d2", "completed")])
    );
    let steps = w["steps"].as_array().unwrap();
    let attempts: Vec<&Value> = steps
        .iter()
        .filter(|r| r["step"] == "d1")
        .map(|r| &r["attempt"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(2)], "{w}");
    let fan = &steps[0];
    assert_eq!(
        (fan["step"].as_str(), fan["kind"].as_str()),
        (Some("fan"), Some("parallel"))
    );
    assert_eq!(fan["status"], "completed", "{fan}");
    for r in steps.iter().filter(|r| r["branch_index"].is_number()) {
        assert_eq!(r["group_seq"], fan["seq"], "{r}");
    }
    assert_eq!(
        w["output"], "echo: echo: then echo: alpha 7 and echo: gamma",
        "{w}"
    );
    let state = s
        .get(&format!("/api/workflows/{id}/state"), &admin)
        .await
        .expect(200)
        .body;
    let gathered = &state["state"]["steps"]["fan"];
    assert_eq!(
        gathered["branches"],
        json!([
            { "status": "completed", "output": "echo: then echo: alpha 7", "error": null },
            { "status": "completed", "output": "seven", "error": null },
            { "status": "completed", "output": "echo: gamma", "error": null },
            { "status": "completed", "output": "fell back after all_attempts_failed", "error": null }
        ]),
        "{state}"
    );
    assert_eq!(
        gathered["output"],
        json!([
            "echo: then echo: alpha 7",
            "seven",
            "echo: gamma",
            "fell back after all_attempts_failed"
        ])
    );
    assert_eq!(state["state"]["steps"]["b1"]["next"], "b2", "{state}");
    // One task per task step run, branches included.
    let tasks = s.get("/api/tasks?limit=100", &admin).await.expect(200);
    assert_eq!(tasks.body["total"], 6, "{}", tasks.body);

    // The graph has the branch steps under their parallel step.
    let graph = &w["graph"];
    let node = |id: &str| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {id}: {graph}"))
    };
    assert_eq!(node("a2")["parent"], "fan");
    assert_eq!(node("a2")["branch_index"], 0);
    assert_eq!(node("a2")["status"], "completed");
    assert_eq!(node("b3")["status"], "pending");
    let edge = |from: &str, to: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {graph}"))
    };
    assert_eq!(edge("fan", "b1")["label"], "branches[1]");
    assert_eq!(edge("fan", "b1")["taken"], true);
    assert_eq!(edge("b1", "b2")["taken"], true);
    assert_eq!(edge("b1", "b3")["taken"], false);
    let r = mermaid_of(&s, &admin, &id).await;
    assert!(r.contains("subgraph s_fan_b1[\"fan branch 1\"]"), "{r}");
    assert!(r.contains("s_fan ==>|branches[1]| s_b1"), "{r}");
}

/// Start and end times of a view's runs of branch steps, as (time, +1/-1)
/// in order, ends first when equal; and the most that overlapped.
fn most_at_once(w: &Value) -> usize {
    let mut marks: Vec<(String, i32)> = Vec::new();
    for r in w["steps"].as_array().unwrap() {
        if r["branch_index"].is_number() {
            marks.push((r["started_at"].as_str().unwrap().to_string(), 1));
            marks.push((r["finished_at"].as_str().unwrap().to_string(), -1));
        }
    }
    marks.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in marks {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

/// At most `max_concurrency` branches run at once: four branches of a
/// slow step with two at a time never overlap by more than two.
async fn test_a_parallel_group_keeps_its_concurrency(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let branch = |id: &str| json!({ "start": id, "steps": { id: slow_step(300, None) } });
    let definition = json!({
        "name": "pairs",
        "start": "fan",
        "steps": {
            "fan": { "kind": "parallel", "max_concurrency": 2, "on_failure": "continue",
                     "branches": [branch("p1"), branch("p2"), branch("p3"), branch("p4")] }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = wait_until(&s, &admin, &id, |w| {
        w["steps"].as_array().unwrap().len() >= 3
    })
    .await;
    assert!(w["current_steps"].as_array().unwrap().len() >= 2, "{w}");
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    for i in 0..4 {
        assert_eq!(branch_runs(&w, i).len(), 1, "{w}");
    }
    assert_eq!(most_at_once(&w), 2, "{w}");
    assert!(w["steps"][0]["duration_ms"].as_i64().unwrap() >= 600, "{w}");
    assert_eq!(w["current_steps"], json!([]), "{w}");
}

/// `on_failure: continue` completes the group with each branch's status;
/// `abort` cancels the other branches' running tasks at the first failure
/// and fails the step, which `catch` routes (and without a catch the
/// workflow fails).
async fn test_parallel_continue_and_abort(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let flow = |on_failure: &str, catch: Value| {
        json!({
            "name": "mixed",
            "start": "fan",
            "steps": {
                "fan": { "kind": "parallel", "on_failure": on_failure, "next": "done", "catch": catch,
                         "branches": [
                    { "start": "ok", "steps": { "ok": { "kind": "task", "prompt": "fine", "model": "mock/echo" } } },
                    { "start": "bad", "steps": { "bad": { "kind": "task", "prompt": "x", "model": "mock/error" } } },
                    { "start": "long", "steps": { "long": slow_step(20_000, None) } }
                ] },
                "done": { "kind": "succeed", "output": "done" },
                "recover": { "kind": "succeed", "output": "recovered from {{steps.fan.error.kind}}" }
            }
        })
    };
    // continue: the group completes; the long branch runs to its end.
    let shorter = |v: Value| {
        let mut v = v;
        v["steps"]["fan"]["branches"][2]["steps"]["long"] = slow_step(200, None);
        v
    };
    let id = start(&s, &admin, shorter(flow("continue", json!([]))), json!({})).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "done");
    let fan = &w["steps"][0];
    assert_eq!(fan["status"], "completed", "{fan}");
    let branches = &fan["output"]["branches"];
    assert_eq!(branches[0]["status"], "completed", "{fan}");
    assert_eq!(branches[1]["status"], "failed", "{fan}");
    assert_eq!(branches[1]["error"]["category"], "retryable", "{fan}");
    assert_eq!(branches[2]["status"], "completed", "{fan}");
    assert_eq!(branches[2]["output"], "echo: slow", "{fan}");

    // abort with a catch: the long branch's task is cancelled at once.
    let started = Instant::now();
    let id = start(
        &s,
        &admin,
        flow("abort", json!([{ "errors": ["all"], "next": "recover" }])),
        json!({}),
    )
    .await;
    let w = finished(&s, &admin, &id).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the abort waited for the long branch"
    );
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "recovered from branch_failed", "{w}");
    let fan = &w["steps"][0];
    assert_eq!(fan["status"], "failed", "{fan}");
    assert_eq!(fan["next"], "recover", "{fan}");
    assert_eq!(fan["error"]["kind"], "branch_failed", "{fan}");
    assert_eq!(fan["error"]["category"], "retryable", "{fan}");
    assert_eq!(fan["error"]["branch_index"], 1, "{fan}");
    assert_eq!(fan["error"]["branches"][2]["status"], "cancelled", "{fan}");
    assert_eq!(branch_runs(&w, 2), pairs(&[("long", "cancelled")]));
    let long = w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == "long")
        .unwrap();
    let task = s
        .get(
            &format!("/api/tasks/{}", long["task_id"].as_str().unwrap()),
            &admin,
        )
        .await
        .expect(200);
    assert_eq!(task.body["status"], "cancelled", "{}", task.body);

    // abort without a catch: the workflow fails with the branch's error.
    let id = start(&s, &admin, shorter(flow("abort", json!([]))), json!({})).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["kind"], "branch_failed", "{w}");
    assert_eq!(w["error"]["step"], "fan", "{w}");
}

/// Wait until every task of the view's running branch steps is in progress.
async fn branch_tasks_in_progress(s: &Server, token: &str, id: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s
            .get(&format!("/api/workflows/{id}"), token)
            .await
            .expect(200)
            .body;
        let ids: Vec<String> = w["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["branch_index"].is_number() && r["status"] == "running")
            .filter_map(|r| r["task_id"].as_str().map(str::to_string))
            .collect();
        if ids.len() == count {
            let mut all = true;
            for t in &ids {
                let task = s.get(&format!("/api/tasks/{t}"), token).await.expect(200);
                all &= task.body["status"] == "in_progress";
            }
            if all {
                return ids;
            }
        }
        assert!(Instant::now() < deadline, "the branches never all ran: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancelling a workflow during a parallel group stops every running
/// branch's task.
async fn test_cancel_stops_every_branch(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let branch = |id: &str| json!({ "start": id, "steps": { id: slow_step(30_000, None) } });
    let definition = json!({
        "name": "stoppable",
        "start": "fan",
        "steps": {
            "fan": { "kind": "parallel", "branches": [branch("x1"), branch("x2"), branch("x3")] }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let tasks = branch_tasks_in_progress(&s, &admin, &id, 3).await;
    let w = s
        .get(&format!("/api/workflows/{id}"), &admin)
        .await
        .expect(200)
        .body;
    let mut current: Vec<&str> = w["current_steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    current.sort_unstable();
    assert_eq!(current, ["fan", "x1", "x2", "x3"], "{w}");
    let r = s
        .post(&format!("/api/workflows/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    assert_eq!(r.body["status"], "cancelled", "{}", r.body);
    for run in r.body["steps"].as_array().unwrap() {
        assert_eq!(run["status"], "cancelled", "{}", r.body);
    }
    for t in tasks {
        let task = s.get(&format!("/api/tasks/{t}"), &admin).await.expect(200);
        assert_eq!(task.body["status"], "cancelled", "{}", task.body);
    }
}

/// Killed during a parallel group, the workflow goes on on the next
/// instance: each branch step runs once, with one task.
async fn test_a_parallel_group_survives_its_instance(b: Backend) {
    let mut s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "1000")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let branch = |a: &str, b: &str| {
        json!({ "start": a, "steps": {
            a: slow_step(1500, Some(b)),
            b: { "kind": "task", "prompt": "after {{steps.%A.output}}".replace("%A", a), "model": "mock/echo" }
        } })
    };
    let definition = json!({
        "name": "durable-fan",
        "start": "fan",
        "steps": {
            "fan": { "kind": "parallel", "next": "done",
                     "branches": [branch("k1", "k2"), branch("m1", "m2"), branch("n1", "n2")] },
            "done": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    branch_tasks_in_progress(&s, &admin, &id, 3).await;
    s.kill();
    s.restart();
    let admin = s.admin_token().await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    for (i, (a, b)) in [("k1", "k2"), ("m1", "m2"), ("n1", "n2")]
        .iter()
        .enumerate()
    {
        assert_eq!(
            branch_runs(&w, i64::try_from(i).unwrap()),
            pairs(&[(a, "completed"), (b, "completed")]),
            "{w}"
        );
    }
    assert_eq!(
        w["output"],
        json!([
            "echo: after echo: slow",
            "echo: after echo: slow",
            "echo: after echo: slow"
        ]),
        "{w}"
    );
    let tasks = s.get("/api/tasks?limit=100", &admin).await.expect(200);
    assert_eq!(
        tasks.body["total"], 6,
        "one task per branch step: {}",
        tasks.body
    );
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
    test_a_parallel_group_gathers_its_branches,
    test_a_parallel_group_keeps_its_concurrency,
    test_parallel_continue_and_abort,
    test_cancel_stops_every_branch,
    test_a_parallel_group_survives_its_instance,
);

/// On PostgreSQL the engine's and its step tasks' transactions raise no
/// notification themselves (migrations 0025 and 0027); the instance
/// relays their signals after each commit, naming itself: a listener hears
/// the workflow's later events and the queueing of a step task that only
/// the previous step's end started, as any other instance would. (With
/// one task worker, none is idle when a step's task ends, so that end
/// queues the next step's task instead of claiming it itself.)
#[tokio::test]
async fn postgres_relays_the_engines_signals() {
    let s = Server::start_with(Backend::Postgres, &[("VEL_TASK_WORKERS", "1")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let mut listener = sqlx::postgres::PgListener::connect(&s.database_url)
        .await
        .expect("connect the listener");
    listener
        .listen_all(["vel_task_queue", "vel_task_events"])
        .await
        .expect("listen");
    let definition = json!({
        "name": "relay",
        "start": "first",
        "steps": {
            "first": { "kind": "task", "prompt": "one", "model": "mock/echo", "next": "second" },
            "second": { "kind": "task", "prompt": "two", "model": "mock/echo", "next": "done" },
            "done": { "kind": "succeed" }
        }
    });
    let id = start(&s, &admin, definition, json!({})).await;
    let w = finished(&s, &admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");

    // The start's own transaction signals once for the workflow; every
    // later commit of its events (the first step's start, the second's,
    // the end) only through the relay. Each step task was queued by a
    // relayed commit too.
    let (mut heard, mut queued) = (0, 0);
    while heard < 3 || queued < 2 {
        let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("within 30 s: the workflow heard {heard} times, {queued} queue signals")
            })
            .expect("receive a notification");
        let (origin, payload) = note.payload().split_once(' ').unwrap();
        assert!(!origin.is_empty(), "names its instance: {}", note.payload());
        match note.channel() {
            "vel_task_queue" => queued += 1,
            _ => heard += usize::from(payload == id),
        }
    }
}
