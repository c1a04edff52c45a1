//! Workflow templates: immutable versions; typed variables substituted at
//! instantiation with each missing or ill-typed one named and nothing
//! stored; checks at creation; private, organization and public
//! visibility across two tenants (404s, the public marketplace usable and
//! read-only); templates from a workflow and copies of templates;
//! workflows started from templates running to completion on the mock
//! provider and filtered by template; the built-in templates; visibility
//! changes and deletion (workflows started from a deleted template run
//! on); audit.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Backend, Server, USER_PASSWORD};

/// The error's field names.
fn fields(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = body["error"]["details"]
        .as_object()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .keys()
        .cloned()
        .collect();
    out.sort();
    out
}

/// A two-step template: draft about a topic, then succeed with it.
fn brief(prompt: &str) -> Value {
    json!({
        "name": "brief",
        "input_schema": {"type": "object"},
        "start": "draft",
        "steps": {
            "draft": {"kind": "task", "prompt": prompt, "model": "{{vars.model}}",
                      "temperature": "{{vars.temperature}}", "next": "done"},
            "done": {"kind": "succeed"}
        }
    })
}

fn brief_vars() -> Value {
    json!({
        "topic": {"type": "string", "description": "What to write about"},
        "words": {"type": "integer", "default": 50},
        "model": {"type": "string", "default": "mock/echo"},
        "temperature": {"type": "number", "default": 0.2}
    })
}

/// A user with `role` in organization `org_id` (created by the platform
/// admin); returns their token.
async fn member(s: &Server, admin: &str, org_id: &str, email: &str, role: &str) -> String {
    s.post(
        "/api/users",
        admin,
        json!({"email": email, "password": USER_PASSWORD, "role": role, "org_id": org_id}),
    )
    .await
    .expect(201);
    s.login(email, USER_PASSWORD).await
}

async fn count(s: &Server, token: &str, path: &str) -> i64 {
    s.get(path, token).await.expect(200).body["total"]
        .as_i64()
        .unwrap()
}

async fn test_versions_variables_and_the_list_filter(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let before = count(&s, &admin, "/api/workflow-templates").await;

    // Version 1, then version 2 under the same name.
    let v1 = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({
                "name": "brief", "description": "first",
                "definition": brief("Write {{vars.words}} words on {{ vars.topic }} for {{input.who}}"),
                "variables": brief_vars(), "visibility": "organization"
            }),
        )
        .await
        .expect(201);
    let id = v1.body["id"].as_str().unwrap().to_string();
    assert_eq!(v1.body["version"], 1, "{}", v1.body);
    assert_eq!(v1.body["owner"], "organization");
    let v2 = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({
                "name": "brief", "description": "second",
                "definition": brief("Brief ({{vars.words}} words): {{vars.topic}}, for {{input.who}}"),
                "variables": brief_vars(), "visibility": "organization"
            }),
        )
        .await
        .expect(201);
    assert_eq!(v2.body["id"], id.as_str(), "same template");
    assert_eq!(v2.body["version"], 2);
    let latest = s
        .get(&format!("/api/workflow-templates/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(latest.body["version"], 2);
    assert_eq!(latest.body["latest_version"], 2);
    assert_eq!(latest.body["description"], "second");
    let first = s
        .get(&format!("/api/workflow-templates/{id}?version=1"), &admin)
        .await
        .expect(200);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["description"], "first");
    assert!(
        first.body["definition"]["steps"]["draft"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Write "),
        "{}",
        first.body
    );
    s.get(&format!("/api/workflow-templates/{id}?version=3"), &admin)
        .await
        .expect_error(404, "not_found");
    let versions = s
        .get(&format!("/api/workflow-templates/{id}/versions"), &admin)
        .await
        .expect(200);
    let numbers: Vec<i64> = versions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        count(&s, &admin, "/api/workflow-templates").await,
        before + 1
    );

    // Instantiation: defaults fill in, given values substitute with their type.
    let r = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &admin,
            json!({"variables": {"topic": "owls", "temperature": 0.5}, "input": {"who": "kids"}}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["template_id"], id.as_str(), "{}", r.body);
    assert_eq!(r.body["template_version"], 2);
    let wf = r.body["id"].as_str().unwrap().to_string();
    let w = s.finished_workflow(&admin, &wf).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "echo: Brief (50 words): owls, for kids", "{w}");
    assert_eq!(w["definition"]["steps"]["draft"]["temperature"], 0.5, "{w}");

    // An older version on request.
    let r = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &admin,
            json!({"version": 1, "variables": {"topic": "bats", "words": 7}, "input": {"who": "me"}}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["template_version"], 1);
    let w = s
        .finished_workflow(&admin, r.body["id"].as_str().unwrap())
        .await;
    assert_eq!(w["output"], "echo: Write 7 words on bats for me", "{w}");

    // Missing, ill-typed and undeclared variables: each named, nothing stored.
    let workflows_before = count(&s, &admin, "/api/workflows").await;
    let bad = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &admin,
            json!({"variables": {"words": "many", "temperature": true, "colour": "red"}}),
        )
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(
        fields(&bad.body),
        [
            "variables.colour",
            "variables.temperature",
            "variables.topic",
            "variables.words"
        ]
    );
    // Well typed, but the substituted definition is not valid: its path is named.
    let bad = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &admin,
            json!({"variables": {"topic": "x", "temperature": 9}}),
        )
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(fields(&bad.body), ["steps.draft.temperature"]);
    s.post(
        &format!("/api/workflows/from-template/{id}"),
        &admin,
        json!({"version": 9, "variables": {"topic": "x"}}),
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(count(&s, &admin, "/api/workflows").await, workflows_before);

    // Bad templates: undeclared references, bad declarations, bad definitions.
    let bad = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({
                "name": "broken",
                "definition": brief("{{vars.topic}} {{vars.nope}}"),
                "variables": {"topic": {"type": "text"}, "model": {"type": "string", "default": 3},
                              "temperature": {"type": "number"}}
            }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(
        fields(&bad.body),
        [
            "steps.draft.prompt",
            "variables.model.default",
            "variables.topic.type"
        ]
    );
    let bad = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({
                "name": "broken",
                "definition": {"name": "b", "start": "a", "steps": {"a": {"kind": "task",
                    "prompt": "{{vars.p}}", "next": "{{vars.next}}"}}},
                "variables": {"p": {"type": "string"}, "next": {"type": "string", "default": "ghost"}}
            }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(fields(&bad.body), ["steps.a.next"]);
    s.post(
        "/api/workflow-templates",
        &admin,
        json!({"name": "broken", "definition": brief("x"), "from_workflow": wf}),
    )
    .await
    .expect_error(422, "validation_failed");
    s.post(
        "/api/workflow-templates",
        &admin,
        json!({"name": "broken", "definition": brief("x"), "visibility": "everyone"}),
    )
    .await
    .expect_error(422, "validation_failed");
    assert_eq!(
        count(&s, &admin, "/api/workflow-templates?name=broken").await,
        0
    );

    // The list filter by template.
    let mut plain = brief("plain");
    plain["steps"]["draft"]["model"] = json!("mock/echo");
    plain["steps"]["draft"]["temperature"] = json!(0.1);
    s.post(
        "/api/workflows",
        &admin,
        json!({"definition": plain, "input": {}}),
    )
    .await
    .expect(201);
    let listed = s
        .get(&format!("/api/workflows?template={id}"), &admin)
        .await
        .expect(200);
    assert_eq!(listed.body["total"], 2, "{}", listed.body);
    assert!(
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["template_id"] == id.as_str())
    );
    assert_eq!(
        count(&s, &admin, "/api/workflows").await,
        workflows_before + 1
    );

    // Audited: both versions, and the starts with their template.
    let audit = s.get("/api/audit-logs?limit=100", &admin).await.expect(200);
    let items = audit.body["items"].as_array().unwrap();
    let created: Vec<i64> = items
        .iter()
        .filter(|e| e["action"] == "workflow_template_created")
        .map(|e| e["payload"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(created.len(), 2, "{items:?}");
    assert!(created.contains(&1) && created.contains(&2));
    let started = items
        .iter()
        .filter(|e| e["action"] == "workflow_started" && e["payload"]["template_id"] == id.as_str())
        .count();
    assert_eq!(started, 2, "{items:?}");
}

async fn test_visibility_across_tenants(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "acme").await;
    let (_b, owner_b) = s.tenant(&admin, "globex").await;
    s.mock_integration(&owner_a, "mock").await;
    s.mock_integration(&owner_b, "mock").await;
    let member_a = member(&s, &admin, &org_a, "m@acme.test", "task_executor").await;

    let create = |token: String, name: &'static str, visibility: &'static str| {
        let s = &s;
        async move {
            s.post(
                "/api/workflow-templates",
                &token,
                json!({"name": name, "definition": brief("On {{vars.topic}}"),
                       "variables": brief_vars(), "visibility": visibility}),
            )
            .await
        }
    };
    let private = create(owner_a.clone(), "mine", "private").await.expect(201);
    let org = create(owner_a.clone(), "ours", "organization")
        .await
        .expect(201);
    let public = create(owner_a.clone(), "shared", "public")
        .await
        .expect(201);
    // Only org admins (and platform admins) publish.
    create(member_a.clone(), "members", "public")
        .await
        .expect_error(403, "forbidden");
    let ids: Vec<String> = [&private, &org, &public]
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    let (private_id, org_id, public_id) = (&ids[0], &ids[1], &ids[2]);

    // The private template is its creator's alone, even in its organization.
    s.get(&format!("/api/workflow-templates/{private_id}"), &member_a)
        .await
        .expect_error(404, "not_found");
    s.get(&format!("/api/workflow-templates/{org_id}"), &member_a)
        .await
        .expect(200);
    // Another member cannot take over its name.
    create(member_a.clone(), "mine", "organization")
        .await
        .expect(409);

    // Another tenant: 404 for non-public templates everywhere.
    for id in [private_id, org_id] {
        s.get(&format!("/api/workflow-templates/{id}"), &owner_b)
            .await
            .expect_error(404, "not_found");
        s.get(&format!("/api/workflow-templates/{id}/versions"), &owner_b)
            .await
            .expect_error(404, "not_found");
        s.post(
            &format!("/api/workflows/from-template/{id}"),
            &owner_b,
            json!({"variables": {"topic": "x"}}),
        )
        .await
        .expect_error(404, "not_found");
        s.post(
            "/api/workflow-templates",
            &owner_b,
            json!({"name": "stolen", "from_template": id}),
        )
        .await
        .expect_error(404, "not_found");
    }
    let listed = s.get("/api/workflow-templates", &owner_b).await.expect(200);
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"shared"), "{names:?}");
    assert!(
        !names.contains(&"mine") && !names.contains(&"ours"),
        "{names:?}"
    );
    let listed_a = s
        .get("/api/workflow-templates", &member_a)
        .await
        .expect(200);
    let names_a: Vec<&str> = listed_a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names_a.contains(&"ours") && !names_a.contains(&"mine"),
        "{names_a:?}"
    );

    // The public one: readable, runnable by reference, copyable, read-only.
    let seen = s
        .get(&format!("/api/workflow-templates/{public_id}"), &owner_b)
        .await
        .expect(200);
    assert_eq!(seen.body["owner"], "other");
    assert_eq!(seen.body["editable"], false);
    assert!(seen.body["created_by"].is_null(), "{}", seen.body);
    let r = s
        .post(
            &format!("/api/workflows/from-template/{public_id}"),
            &owner_b,
            json!({"variables": {"topic": "comets"}}),
        )
        .await
        .expect(201);
    let w = s
        .finished_workflow(&owner_b, r.body["id"].as_str().unwrap())
        .await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "echo: On comets");
    // The workflow is B's, not A's.
    s.get(
        &format!("/api/workflows/{}", r.body["id"].as_str().unwrap()),
        &owner_a,
    )
    .await
    .expect_error(404, "not_found");
    let copy = s
        .post(
            "/api/workflow-templates",
            &owner_b,
            json!({"from_template": public_id, "visibility": "organization"}),
        )
        .await
        .expect(201);
    assert_eq!(copy.body["name"], "shared");
    assert_eq!(copy.body["owner"], "organization");
    assert_eq!(copy.body["version"], 1);
    assert_eq!(copy.body["source"]["template_id"], public_id.as_str());
    assert_eq!(copy.body["variables"], public.body["variables"]);
    assert_ne!(copy.body["id"], public_id.as_str());
    // Posting again under that name versions B's copy, never A's template.
    s.post(
        "/api/workflow-templates",
        &owner_b,
        json!({"name": "shared", "definition": brief("B: {{vars.topic}}"), "variables": brief_vars()}),
    )
    .await
    .expect(201);
    let original = s
        .get(&format!("/api/workflow-templates/{public_id}"), &owner_a)
        .await
        .expect(200);
    assert_eq!(original.body["latest_version"], 1);
    assert_eq!(original.body["owner"], "organization");

    // A workflow of A cannot become B's template.
    let wf_a = s
        .post(
            &format!("/api/workflows/from-template/{org_id}"),
            &owner_a,
            json!({"variables": {"topic": "x"}}),
        )
        .await
        .expect(201);
    s.post(
        "/api/workflow-templates",
        &owner_b,
        json!({"name": "x", "from_workflow": wf_a.body["id"]}),
    )
    .await
    .expect_error(404, "not_found");

    // Viewers read but do not create or start.
    let viewer = member(&s, &admin, &org_a, "v@acme.test", "viewer").await;
    s.get(&format!("/api/workflow-templates/{org_id}"), &viewer)
        .await
        .expect(200);
    create(viewer.clone(), "v", "organization")
        .await
        .expect_error(403, "forbidden");
    s.post(
        &format!("/api/workflows/from-template/{org_id}"),
        &viewer,
        json!({"variables": {"topic": "x"}}),
    )
    .await
    .expect_error(403, "forbidden");
}

async fn test_a_template_from_a_workflow(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let definition = json!({
        "name": "greet",
        "start": "hello",
        "steps": {
            "hello": {"kind": "task", "prompt": "Hello {{input.name}}", "model": "mock/echo", "next": "done"},
            "done": {"kind": "succeed"}
        }
    });
    let r = s
        .post(
            "/api/workflows",
            &admin,
            json!({"definition": definition, "input": {"name": "Ada"}}),
        )
        .await
        .expect(201);
    let wf = r.body["id"].as_str().unwrap().to_string();
    s.finished_workflow(&admin, &wf).await;
    let t = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({"from_workflow": wf, "description": "proven", "visibility": "organization"}),
        )
        .await
        .expect(201);
    assert_eq!(t.body["name"], "greet", "{}", t.body);
    assert_eq!(t.body["source"]["workflow_id"], wf.as_str());
    assert_eq!(
        t.body["definition"]["steps"]["hello"]["prompt"],
        "Hello {{input.name}}"
    );
    let id = t.body["id"].as_str().unwrap();
    let r = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &admin,
            json!({"input": {"name": "Grace"}}),
        )
        .await
        .expect(201);
    let w = s
        .finished_workflow(&admin, r.body["id"].as_str().unwrap())
        .await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "echo: Hello Grace");
    // The input is checked as for any workflow.
    s.post(
        &format!("/api/workflows/from-template/{id}"),
        &admin,
        json!({"input": [1]}),
    )
    .await
    .expect_error(422, "validation_failed");
    s.post(
        "/api/workflow-templates",
        &admin,
        json!({"from_workflow": "00000000-0000-0000-0000-000000000000"}),
    )
    .await
    .expect_error(404, "not_found");
}

async fn test_the_builtin_templates_run(b: Backend) {
    let mut s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "initech").await;
    s.mock_integration(&owner, "mock").await;
    let listed = s
        .get("/api/workflow-templates?visibility=public", &owner)
        .await
        .expect(200);
    let find = |name: &str| -> Value {
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no built-in {name}: {}", listed.body))
            .clone()
    };
    let sentiment = find("sentiment-routing");
    let confidence = find("confidence-threshold");
    for t in [&sentiment, &confidence] {
        assert_eq!(t["owner"], "platform", "{t}");
        assert_eq!(t["builtin"], true);
        assert_eq!(t["visibility"], "public");
        assert_eq!(t["editable"], false);
    }

    let run = |id: Value, body: Value| {
        let s = &s;
        let owner = owner.clone();
        async move {
            let r = s
                .post(
                    &format!("/api/workflows/from-template/{}", id.as_str().unwrap()),
                    &owner,
                    body,
                )
                .await
                .expect(201);
            s.finished_workflow(&owner, r.body["id"].as_str().unwrap())
                .await
        }
    };
    let route = |w: &Value| -> Vec<String> {
        w["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["step"].as_str().unwrap().to_string())
            .collect()
    };

    let w = run(
        sentiment["id"].clone(),
        json!({"input": {"message": "great wonderful service"}, "variables": {"product": "the app"}}),
    )
    .await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(route(&w), ["judge", "thank", "done"]);
    assert_eq!(w["steps"][0]["branch"], "positive");
    assert!(
        w["output"].as_str().unwrap().contains("about the app"),
        "{w}"
    );
    let w = run(
        sentiment["id"].clone(),
        json!({"input": {"message": "terrible awful experience"}}),
    )
    .await;
    assert_eq!(route(&w), ["judge", "apologise", "done"], "{w}");

    let w = run(
        confidence["id"].clone(),
        json!({"input": {"text": "buy now", "label": "spam", "confidence": 0.93}}),
    )
    .await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(route(&w), ["gate", "apply", "done"]);
    let unsure = json!({"text": "hi", "label": "spam", "confidence": 0.5});
    let w = run(confidence["id"].clone(), json!({"input": unsure})).await;
    assert_eq!(route(&w), ["gate", "second_opinion", "done"], "{w}");
    let w = run(
        confidence["id"].clone(),
        json!({"input": unsure, "variables": {"min_confidence": 0.4}}),
    )
    .await;
    assert_eq!(route(&w), ["gate", "apply", "done"], "{w}");
    let bad = s
        .post(
            &format!(
                "/api/workflows/from-template/{}",
                confidence["id"].as_str().unwrap()
            ),
            &owner,
            json!({"input": unsure, "variables": {"min_confidence": "high"}}),
        )
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(fields(&bad.body), ["variables.min_confidence"]);

    // A tenant copies a built-in; the built-in itself stays the platform's.
    let copy = s
        .post(
            "/api/workflow-templates",
            &owner,
            json!({"from_template": confidence["id"], "name": "my-threshold"}),
        )
        .await
        .expect(201);
    assert_eq!(copy.body["owner"], "organization");
    assert_eq!(copy.body["visibility"], "private");
    // A restart records nothing new: same ids, still version 1.
    let builtins = count(&s, &owner, "/api/workflow-templates?visibility=public").await;
    s.kill();
    s.restart();
    let owner = s.login("owner@initech.test", USER_PASSWORD).await;
    let again = s
        .get(
            &format!(
                "/api/workflow-templates/{}",
                sentiment["id"].as_str().unwrap()
            ),
            &owner,
        )
        .await
        .expect(200);
    assert_eq!(again.body["latest_version"], 1);
    assert_eq!(
        count(&s, &owner, "/api/workflow-templates?visibility=public").await,
        builtins
    );
}

/// Changing a template's visibility and deleting it: permissions as for
/// creating one, 404 across tenants, another tenant's public template and
/// the built-ins read-only, audited; a workflow started from a deleted
/// template runs on and keeps its definition and template id.
async fn test_visibility_changes_and_deletion(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "acme").await;
    let (_b, owner_b) = s.tenant(&admin, "globex").await;
    let member_a = member(&s, &admin, &org_a, "m@acme.test", "task_executor").await;
    let definition = json!({
        "name": "gated",
        "start": "gate",
        "steps": {
            "gate": {"kind": "approval", "next": "done"},
            "done": {"kind": "succeed", "output": "{{vars.word}}"}
        }
    });
    let t = s
        .post(
            "/api/workflow-templates",
            &owner_a,
            json!({"definition": definition, "visibility": "organization",
                   "variables": {"word": {"type": "string", "default": "shipped"}}}),
        )
        .await
        .expect(201);
    let id = t.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/workflow-templates/{id}");

    // Publishing takes an org admin, as creating a public template does.
    s.patch(&path, &member_a, json!({"visibility": "public"}))
        .await
        .expect_error(403, "forbidden");
    let bad = s
        .patch(&path, &member_a, json!({"visibility": "everyone"}))
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(fields(&bad.body), ["visibility"]);
    let published = s
        .patch(&path, &owner_a, json!({"visibility": "public"}))
        .await
        .expect(200);
    assert_eq!(published.body["visibility"], "public", "{}", published.body);
    assert_eq!(published.body["version"], 1);
    assert_eq!(published.body["definition"]["name"], "gated");
    // Another tenant now reads it, and can change it no more than before.
    let seen = s.get(&path, &owner_b).await.expect(200);
    assert_eq!(seen.body["owner"], "other");
    assert_eq!(seen.body["editable"], false);
    s.patch(&path, &owner_b, json!({"visibility": "private"}))
        .await
        .expect_error(403, "forbidden");
    s.delete(&path, &owner_b)
        .await
        .expect_error(403, "forbidden");
    // A public template stays the org admins' to change.
    s.patch(&path, &member_a, json!({"visibility": "organization"}))
        .await
        .expect_error(403, "forbidden");
    s.patch(&path, &owner_a, json!({"visibility": "organization"}))
        .await
        .expect(200);
    // Withdrawn: 404 to the other tenant again, whatever it tries.
    s.get(&path, &owner_b).await.expect_error(404, "not_found");
    s.patch(&path, &owner_b, json!({"visibility": "public"}))
        .await
        .expect_error(404, "not_found");
    s.delete(&path, &owner_b)
        .await
        .expect_error(404, "not_found");
    // The built-ins are the platform's.
    let builtins = s
        .get("/api/workflow-templates?visibility=public", &owner_a)
        .await
        .expect(200);
    let builtin = builtins.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["builtin"] == true)
        .unwrap_or_else(|| panic!("no built-in: {}", builtins.body))["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.delete(&format!("/api/workflow-templates/{builtin}"), &owner_a)
        .await
        .expect_error(403, "forbidden");
    s.patch(
        &format!("/api/workflow-templates/{builtin}"),
        &owner_a,
        json!({"visibility": "private"}),
    )
    .await
    .expect_error(403, "forbidden");

    // A workflow started from it outlives it.
    let r = s
        .post(
            &format!("/api/workflows/from-template/{id}"),
            &member_a,
            json!({}),
        )
        .await
        .expect(201);
    let wf = r.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s
            .get(&format!("/api/workflows/{wf}"), &member_a)
            .await
            .expect(200)
            .body;
        if w["status"] == "awaiting_approval" {
            break;
        }
        assert!(Instant::now() < deadline, "never reached the gate: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.delete(&path, &member_a).await.expect(204);
    s.get(&path, &member_a).await.expect_error(404, "not_found");
    s.get(&format!("{path}/versions"), &owner_a)
        .await
        .expect_error(404, "not_found");
    s.post(
        &format!("/api/workflows/from-template/{id}"),
        &member_a,
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    s.delete(&path, &owner_a)
        .await
        .expect_error(404, "not_found");
    s.post(&format!("/api/workflows/{wf}/approve"), &owner_a, json!({}))
        .await
        .expect(200);
    let w = s.finished_workflow(&member_a, &wf).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "shipped");
    assert_eq!(w["template_id"], id.as_str());
    let listed = s
        .get(&format!("/api/workflows?template={id}"), &member_a)
        .await
        .expect(200);
    assert_eq!(listed.body["total"], 1, "{}", listed.body);

    // Audited, each change with who made it.
    let audit = s
        .get("/api/audit-logs?limit=100", &owner_a)
        .await
        .expect(200);
    let items = audit.body["items"].as_array().unwrap();
    let changes: Vec<(&str, &str)> = items
        .iter()
        .filter(|e| e["action"] == "workflow_template_visibility_changed")
        .map(|e| {
            (
                e["payload"]["from"].as_str().unwrap(),
                e["payload"]["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{items:?}");
    assert!(changes.contains(&("organization", "public")), "{changes:?}");
    assert!(changes.contains(&("public", "organization")), "{changes:?}");
    let deleted: Vec<&Value> = items
        .iter()
        .filter(|e| e["action"] == "workflow_template_deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{items:?}");
    assert_eq!(deleted[0]["payload"]["template_id"], id.as_str());
    assert_eq!(deleted[0]["payload"]["name"], "gated");
}

dual_backend_tests!(
    test_visibility_changes_and_deletion,
    test_versions_variables_and_the_list_filter,
    test_visibility_across_tenants,
    test_a_template_from_a_workflow,
    test_the_builtin_templates_run,
);

/// Under the server's database role a tenant reads its own templates and
/// every public one, and writes none but its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_shows_public_templates_read_only_postgres() {
    use sqlx::{Connection, Executor, PgConnection};

    let s = Server::start(Backend::Postgres).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "alpha").await;
    let (org_b, _owner_b) = s.tenant(&admin, "beta").await;
    let mut ids = Vec::new();
    for (name, visibility) in [("ours", "organization"), ("shared", "public")] {
        let r = s
            .post(
                "/api/workflow-templates",
                &owner_a,
                json!({"name": name, "definition": brief("On {{vars.topic}}"),
                       "variables": brief_vars(), "visibility": visibility}),
            )
            .await
            .expect(201);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let (ours, shared) = (&ids[0], &ids[1]);

    let mut c = PgConnection::connect(&s.database_url).await.unwrap();
    c.execute("SET ROLE vel_app").await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)")
        .bind(&org_b)
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen = |table: &'static str, id: String| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE {} = '{id}'",
            if table == "workflow_templates" {
                "id"
            } else {
                "template_id"
            }
        )))
    };
    for table in ["workflow_templates", "workflow_template_versions"] {
        let n = seen(table, ours.clone()).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n, 0, "{table}: another tenant's template seen");
        let n = seen(table, shared.clone())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 1, "{table}: a public template unseen");
    }
    let builtins: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM workflow_templates WHERE org_id IS NULL")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(builtins, 2, "the built-ins are public");
    let changed = sqlx::query("UPDATE workflow_templates SET name = 'taken' WHERE id = $1")
        .bind(shared)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0, "a public template was changed");
    let added = sqlx::query(
        "INSERT INTO workflow_template_versions (template_id, version, org_id, description, \
             definition, variables, visibility, created_at) \
         VALUES ($1, 2, $2, '', '{}', '{}', 'public', 0)",
    )
    .bind(shared)
    .bind(&org_a)
    .execute(&mut *tx)
    .await;
    assert!(
        added.is_err(),
        "a version was added to another tenant's template"
    );
}
