//! Permissions: every documented route × every kind of caller (anonymous,
//! the four built-in roles, a custom role, an API key, a member of another
//! organization, the platform admin) against one table of expected
//! outcomes; custom roles, role assignment and "no one grants what they do
//! not hold".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// What each documented operation needs: `public`, `signed_in`, `platform`
/// or a permission's name. A route missing here fails the test.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("POST", "/api/auth/login", "public"),
    ("POST", "/api/auth/refresh", "signed_in"),
    ("POST", "/api/auth/logout", "signed_in"),
    ("GET", "/api/users/me", "signed_in"),
    ("PUT", "/api/users/me", "signed_in"),
    ("POST", "/api/users/me/email/confirm", "signed_in"),
    ("GET", "/api/users", "manage_users"),
    ("POST", "/api/users", "platform"),
    ("PUT", "/api/users/{id}/roles", "manage_users"),
    ("GET", "/api/permissions", "signed_in"),
    ("GET", "/api/rate-limits", "signed_in"),
    (
        "PUT",
        "/api/organizations/{id}/rate-limits",
        "manage_organization",
    ),
    ("PUT", "/api/users/{id}/rate-limits", "manage_users"),
    ("PUT", "/api/api-keys/{id}/rate-limits", "manage_api_keys"),
    ("GET", "/api/organizations", "signed_in"),
    ("POST", "/api/organizations", "platform"),
    ("GET", "/api/organizations/{id}", "view"),
    ("GET", "/api/organizations/{id}/members", "manage_users"),
    ("POST", "/api/organizations/{id}/members", "platform"),
    (
        "PUT",
        "/api/organizations/{id}/members/{user_id}",
        "manage_users",
    ),
    (
        "DELETE",
        "/api/organizations/{id}/members/{user_id}",
        "manage_users",
    ),
    ("GET", "/api/organizations/{id}/invitations", "manage_users"),
    (
        "POST",
        "/api/organizations/{id}/invitations",
        "manage_users",
    ),
    ("GET", "/api/organizations/{id}/roles", "view"),
    ("POST", "/api/organizations/{id}/roles", "manage_users"),
    (
        "PUT",
        "/api/organizations/{id}/roles/{name}",
        "manage_users",
    ),
    (
        "DELETE",
        "/api/organizations/{id}/roles/{name}",
        "manage_users",
    ),
    (
        "PUT",
        "/api/organizations/{id}/routing-policy",
        "manage_organization",
    ),
    ("GET", "/api/organizations/{id}/stream-failover", "view"),
    (
        "PUT",
        "/api/organizations/{id}/stream-failover",
        "manage_organization",
    ),
    ("POST", "/api/invitations/accept", "public"),
    ("GET", "/api/agents", "view"),
    ("POST", "/api/agents", "create_agent"),
    ("GET", "/api/agents/{id}", "view"),
    ("PUT", "/api/agents/{id}", "create_agent"),
    ("DELETE", "/api/agents/{id}", "create_agent"),
    ("GET", "/api/agents/{id}/history", "view"),
    ("POST", "/api/agents/{id}/test", "create_agent"),
    ("GET", "/api/integrations", "view"),
    ("POST", "/api/integrations", "manage_integrations"),
    ("GET", "/api/integrations/{id}", "view"),
    ("PUT", "/api/integrations/{id}", "manage_integrations"),
    ("DELETE", "/api/integrations/{id}", "manage_integrations"),
    ("POST", "/api/integrations/{id}/test", "manage_integrations"),
    ("GET", "/api/integrations/{id}/tools", "view"),
    ("GET", "/api/api-keys", "manage_api_keys"),
    ("POST", "/api/api-keys", "manage_api_keys"),
    ("DELETE", "/api/api-keys/{id}", "manage_api_keys"),
    ("GET", "/api/audit-logs", "view_audit_log"),
    ("GET", "/api/webhooks", "manage_webhooks"),
    ("POST", "/api/webhooks", "manage_webhooks"),
    ("GET", "/api/webhooks/{id}", "manage_webhooks"),
    ("PATCH", "/api/webhooks/{id}", "manage_webhooks"),
    ("DELETE", "/api/webhooks/{id}", "manage_webhooks"),
    ("POST", "/api/webhooks/{id}/test", "manage_webhooks"),
    (
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        "manage_webhooks",
    ),
    ("GET", "/api/webhooks/{id}/deliveries", "manage_webhooks"),
    ("GET", "/api/tasks", "view"),
    ("POST", "/api/tasks", "execute_task"),
    ("GET", "/api/tasks/{id}", "view"),
    ("POST", "/api/tasks/{id}/cancel", "execute_task"),
    ("GET", "/api/tasks/{id}/stream", "view"),
    ("GET", "/api/batches", "view"),
    ("POST", "/api/batches", "execute_task"),
    ("GET", "/api/batches/{id}", "view"),
    ("POST", "/api/batches/{id}/cancel", "execute_task"),
    ("GET", "/api/batches/{id}/results", "view"),
    ("GET", "/api/benchmarks", "view_analytics"),
    ("POST", "/api/benchmarks", "execute_task"),
    ("GET", "/api/benchmarks/{id}", "view_analytics"),
    ("POST", "/api/benchmarks/{id}/ratings", "execute_task"),
    ("GET", "/api/analytics/usage", "view_analytics"),
    ("GET", "/api/analytics/latency", "view_analytics"),
    ("GET", "/api/analytics/costs", "view_analytics"),
    ("GET", "/api/budgets", "view_analytics"),
    (
        "GET",
        "/api/budgets/{scope}/{subject_id}/{period}",
        "view_analytics",
    ),
    (
        "PUT",
        "/api/budgets/{scope}/{subject_id}/{period}",
        "manage_budgets",
    ),
    (
        "DELETE",
        "/api/budgets/{scope}/{subject_id}/{period}",
        "manage_budgets",
    ),
    ("GET", "/api/alerts", "view_analytics"),
    ("POST", "/api/alerts/{id}/acknowledge", "acknowledge_alerts"),
    ("GET", "/api/workflows", "view"),
    ("POST", "/api/workflows", "execute_task"),
    ("GET", "/api/workflows/{id}", "view"),
    ("GET", "/api/workflows/{id}/state", "view"),
    ("GET", "/api/workflows/{id}/graph", "view"),
    ("GET", "/api/workflows/{id}/stream", "view"),
    ("POST", "/api/workflows/{id}/cancel", "execute_task"),
    ("POST", "/api/workflows/{id}/approve", "approve_workflows"),
    ("POST", "/api/workflows/{id}/reject", "approve_workflows"),
    (
        "POST",
        "/api/workflows/{id}/retry-from-step/{step_id}",
        "execute_task",
    ),
    (
        "POST",
        "/api/workflows/from-template/{template_id}",
        "execute_task",
    ),
    ("GET", "/api/workflow-templates", "view"),
    ("POST", "/api/workflow-templates", "execute_task"),
    ("GET", "/api/workflow-templates/{id}", "view"),
    ("PATCH", "/api/workflow-templates/{id}", "execute_task"),
    ("DELETE", "/api/workflow-templates/{id}", "execute_task"),
    ("GET", "/api/workflow-templates/{id}/versions", "view"),
    ("POST", "/v1/chat/completions", "execute_task"),
    ("POST", "/v1/embeddings", "execute_task"),
    ("GET", "/v1/models", "view"),
    ("GET", "/v1/models/{id}", "view"),
    ("GET", "/api/plugins", "view"),
    ("POST", "/api/plugins", "manage_plugins"),
    ("GET", "/api/plugins/{name}", "view"),
    ("GET", "/api/plugins/{name}/stats", "view"),
    (
        "POST",
        "/api/plugins/{name}/versions/{version}/activate",
        "manage_plugins",
    ),
    (
        "DELETE",
        "/api/plugins/{name}/versions/{version}",
        "manage_plugins",
    ),
    ("POST", "/api/plugins/{name}/rollback", "manage_plugins"),
    ("POST", "/api/plugins/{name}/disable", "manage_plugins"),
    ("POST", "/api/plugins/{name}/enable", "manage_plugins"),
    ("GET", "/api/plugin-approvals", "platform"),
    ("POST", "/api/plugin-approvals/{id}/approve", "platform"),
    ("POST", "/api/plugin-approvals/{id}/reject", "platform"),
    ("GET", "/metrics", "platform"),
    ("GET", "/api/health", "public"),
    ("GET", "/api/openapi.json", "public"),
];

/// The documented permission sets of the built-in roles.
fn built_in(role: &str) -> Vec<&'static str> {
    let viewer = vec!["view", "view_analytics"];
    let executor = [viewer.clone(), vec!["execute_task"]].concat();
    let manager = [
        executor.clone(),
        vec!["create_agent", "approve_workflows", "acknowledge_alerts"],
    ]
    .concat();
    match role {
        "viewer" => viewer,
        "task_executor" => executor,
        "agent_manager" => manager,
        "org_admin" => ALL.to_vec(),
        other => panic!("no built-in role {other}"),
    }
}

const ALL: [&str; 14] = [
    "view",
    "view_analytics",
    "create_agent",
    "execute_task",
    "approve_workflows",
    "acknowledge_alerts",
    "manage_budgets",
    "manage_users",
    "manage_integrations",
    "manage_plugins",
    "manage_api_keys",
    "view_audit_log",
    "manage_organization",
    "manage_webhooks",
];

/// A kind of caller: their credential and what they hold.
struct Caller {
    name: &'static str,
    token: Option<String>,
    permissions: Vec<&'static str>,
    platform_admin: bool,
    /// A member of another organization: never a 2xx on this one's resources.
    outsider: bool,
}

impl Caller {
    fn may(&self, need: &str) -> bool {
        match need {
            "public" => true,
            "signed_in" => self.token.is_some(),
            "platform" => self.platform_admin,
            p => self.permissions.contains(&p),
        }
    }
}

/// The resources of the organization the paths name.
struct Ids {
    org: String,
    agent: String,
    integration: String,
    api_key: String,
    task: String,
    batch: String,
    benchmark: String,
    workflow: String,
    template: String,
    spare_user: String,
}

fn fill(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/api/agents/") {
        ids.agent.as_str()
    } else if path.starts_with("/api/integrations/") {
        ids.integration.as_str()
    } else if path.starts_with("/api/api-keys/") {
        ids.api_key.as_str()
    } else if path.starts_with("/api/tasks/") {
        ids.task.as_str()
    } else if path.starts_with("/api/batches/") {
        ids.batch.as_str()
    } else if path.starts_with("/api/benchmarks/") {
        ids.benchmark.as_str()
    } else if path.starts_with("/api/workflows/") {
        ids.workflow.as_str()
    } else if path.starts_with("/api/workflow-templates/") {
        ids.template.as_str()
    } else if path.starts_with("/api/organizations/") {
        ids.org.as_str()
    } else if path.starts_with("/api/users/") {
        ids.spare_user.as_str()
    } else {
        "00000000-0000-4000-8000-000000000000"
    };
    let name = if path.contains("/roles/") {
        "analyst"
    } else {
        "no-such-plugin"
    };
    path.replace("{id}", id)
        .replace("{user_id}", &ids.spare_user)
        .replace("{template_id}", &ids.template)
        .replace("{name}", name)
        .replace("{version}", "1.0.0")
        .replace("{scope}", "organization")
        .replace("{subject_id}", &ids.org)
        .replace("{period}", "day")
        .replace("{step_id}", "done")
}

/// A workflow that ends at once.
fn one_step() -> Value {
    json!({ "name": "w", "input_schema": { "type": "object" }, "start": "done",
            "steps": { "done": { "kind": "succeed" } } })
}

async fn every_route_for_every_caller(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The table and the document list the same operations, and the
    // document states each one's rule.
    let doc = s.get("/api/openapi.json", "").await.expect(200).body;
    let mut documented = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let access = op["x-vel-access"].as_str().unwrap_or("").to_string();
            documented.insert((method.to_uppercase(), path.clone()), access);
        }
    }
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    for key in documented.keys() {
        assert!(
            expected.contains(key),
            "{} {} is documented but has no expected outcome here",
            key.0,
            key.1
        );
    }
    for (method, path, need) in EXPECTED {
        let access = documented
            .get(&(method.to_string(), path.to_string()))
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let stated = match *need {
            "public" => "public".to_string(),
            "signed_in" => "any signed-in caller".to_string(),
            "platform" => "the platform admin role".to_string(),
            p => format!("the {p} permission"),
        };
        assert_eq!(access, &stated, "{method} {path}");
    }

    // The organization's resources.
    s.mock_integration(&admin, "mock").await;
    let integration = s.mock_integration(&admin, "spare").await;
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "a", "type": "researcher", "config": { "provider": "mock", "model": "echo" } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = s
        .finished_task(
            &admin,
            json!({ "description": "d", "prompt": "hello", "task_type": "light" }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let batch = s
        .post(
            "/api/batches",
            &admin,
            json!({ "tasks": [{ "description": "d", "prompt": "hello", "task_type": "light" }] }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let benchmark = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "prompts": ["hello"], "targets": ["mock/echo"], "repetitions": 1 }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let workflow = s
        .post(
            "/api/workflows",
            &admin,
            json!({ "definition": one_step() }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.finished_workflow(&admin, &workflow).await;
    let template = s
        .post(
            "/api/workflow-templates",
            &admin,
            json!({ "name": "t", "definition": one_step(), "visibility": "organization" }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let api_key = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "spare", "role": "viewer" }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let analyst = ["view_analytics", "approve_workflows"];
    s.post(
        &format!("/api/organizations/{org}/roles"),
        &admin,
        json!({ "name": "analyst", "description": "reads numbers, approves",
                "permissions": analyst }),
    )
    .await
    .expect(201);
    let (spare_user, _) = s.member(&admin, "spare@test.local", "viewer").await;
    let ids = Ids {
        org: org.clone(),
        agent,
        integration,
        api_key,
        task,
        batch,
        benchmark,
        workflow,
        template,
        spare_user,
    };

    // The callers.
    let mut callers = vec![Caller {
        name: "anonymous",
        token: None,
        permissions: vec![],
        platform_admin: false,
        outsider: false,
    }];
    for (name, role) in [
        ("viewer", "viewer"),
        ("task_executor", "task_executor"),
        ("agent_manager", "agent_manager"),
        ("org_admin", "org_admin"),
    ] {
        let (_, token) = s.member(&admin, &format!("{name}@test.local"), role).await;
        callers.push(Caller {
            name,
            token: Some(token),
            permissions: built_in(role),
            platform_admin: false,
            outsider: false,
        });
    }
    let (_, analyst_token) = s.member(&admin, "analyst@test.local", "analyst").await;
    callers.push(Caller {
        name: "analyst (custom role)",
        token: Some(analyst_token),
        permissions: analyst.to_vec(),
        platform_admin: false,
        outsider: false,
    });
    let viewer_key = s.api_key(&admin, "viewer key", "viewer").await;
    callers.push(Caller {
        name: "viewer API key",
        token: Some(viewer_key),
        permissions: built_in("viewer"),
        platform_admin: false,
        outsider: false,
    });
    let (_, beta_admin) = s.tenant(&admin, "beta").await;
    callers.push(Caller {
        name: "org_admin of another organization",
        token: Some(beta_admin),
        permissions: ALL.to_vec(),
        platform_admin: false,
        outsider: true,
    });
    callers.push(Caller {
        name: "platform admin",
        token: Some(admin.clone()),
        permissions: ALL.to_vec(),
        platform_admin: true,
        outsider: false,
    });

    // Deletions after everything else, and the two that end the caller's
    // token last of all.
    let mut order: Vec<&(&str, &str, &str)> = EXPECTED.iter().collect();
    let rank = |(m, p, _): &&(&str, &str, &str)| match (*m, *p) {
        (_, "/api/auth/refresh") => 3,
        (_, "/api/auth/logout") => 4,
        ("DELETE", _) => 2,
        _ => 1,
    };
    order.sort_by_key(rank);

    let mut failures = Vec::new();
    for (method, path, need) in order {
        let url = fill(path, &ids);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for caller in callers.iter_mut() {
            let body =
                matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
            let call = s.call(method.clone(), &url, caller.token.as_deref(), body);
            let r = tokio::time::timeout(Duration::from_secs(20), call)
                .await
                .unwrap_or_else(|_| panic!("{method} {url} as {} hung", caller.name));
            let status = r.status.as_u16();
            // A refresh ends the token it was given: go on with the new one.
            if path == &"/api/auth/refresh" && status == 200 {
                caller.token = r.body["token"].as_str().map(str::to_string);
            }
            let verdict = if status >= 500 {
                Some("a server error")
            } else if caller.token.is_none() && *need != "public" {
                (status != 401).then_some("expected 401")
            } else if caller.may(need) {
                if status == 401 || status == 403 {
                    Some("expected to be let through")
                } else if caller.outsider
                    && (200..300).contains(&status)
                    && path.contains('{')
                    && !path.starts_with("/api/plugins/")
                    && !path.starts_with("/api/plugin-approvals/")
                {
                    Some("another organization's resource answered")
                } else {
                    None
                }
            } else {
                (status != 403).then_some("expected 403")
            };
            if let Some(why) = verdict {
                failures.push(format!(
                    "{method} {path} as {} (needs {need}): {status}, {why}; {}",
                    caller.name, r.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Custom roles take effect at once, grant no more than their creator
/// holds, and are audited; `PUT /api/users/{id}/roles` assigns them.
async fn custom_roles_and_assignment(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = format!("/api/organizations/{org}/roles");

    // Bad definitions are refused and store nothing.
    for (body, field) in [
        (
            json!({ "name": "Bad Name", "permissions": ["view"] }),
            "name",
        ),
        (json!({ "name": "viewer", "permissions": ["view"] }), "name"),
        (json!({ "name": "empty", "permissions": [] }), "permissions"),
        (
            json!({ "name": "x", "permissions": ["teleport"] }),
            "permissions[0]",
        ),
    ] {
        let r = s.post(&roles, &admin, body).await.expect(422);
        assert!(
            r.body["error"]["details"].get(field).is_some(),
            "{field}: {}",
            r.body
        );
    }
    let listed = s.get(&roles, &admin).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed}");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["built_in"] == true)
    );

    // An analyst reads analytics and nothing else.
    s.post(
        &roles,
        &admin,
        json!({ "name": "analyst", "permissions": ["view_analytics"] }),
    )
    .await
    .expect(201);
    s.post(
        &roles,
        &admin,
        json!({ "name": "analyst", "permissions": ["view"] }),
    )
    .await
    .expect_error(409, "conflict");
    let (user, token) = s.member(&admin, "ana@test.local", "viewer").await;
    let assigned = s
        .put(
            &format!("/api/users/{user}/roles"),
            &admin,
            json!({ "role": "analyst" }),
        )
        .await
        .expect(200);
    assert_eq!(assigned.body["role"], "analyst", "{}", assigned.body);
    s.get("/api/analytics/usage", &token).await.expect(200);
    s.get("/api/agents", &token)
        .await
        .expect_error(403, "forbidden");
    s.put(
        &format!("/api/users/{user}/roles"),
        &admin,
        json!({ "role": "emperor" }),
    )
    .await
    .expect_error(422, "validation_failed");
    let me = s.get("/api/users/me", &token).await.expect(200).body;
    assert_eq!(me["roles"], json!(["analyst"]), "{me}");

    // Changing the role changes what its holders may do, at once.
    s.put(
        &format!("{roles}/analyst"),
        &admin,
        json!({ "permissions": ["view_analytics", "view"] }),
    )
    .await
    .expect(200);
    s.get("/api/agents", &token).await.expect(200);
    // An API key carrying the role acts with it.
    let key = s.api_key(&admin, "analyst key", "analyst").await;
    s.get("/api/analytics/usage", &key).await.expect(200);
    s.post("/api/tasks", &key, json!({ "prompt": "x" }))
        .await
        .expect_error(403, "forbidden");

    // No one grants what they do not hold.
    s.post(
        &roles,
        &admin,
        json!({ "name": "people", "permissions": ["manage_users", "view", "view_analytics"] }),
    )
    .await
    .expect(201);
    let (_, people) = s.member(&admin, "people@test.local", "people").await;
    s.put(
        &format!("/api/users/{user}/roles"),
        &people,
        json!({ "role": "org_admin" }),
    )
    .await
    .expect_error(403, "forbidden");
    s.post(
        &roles,
        &people,
        json!({ "name": "budgeter", "permissions": ["manage_budgets"] }),
    )
    .await
    .expect_error(403, "forbidden");
    s.put(
        &format!("{roles}/analyst"),
        &people,
        json!({ "permissions": ["view", "manage_budgets"] }),
    )
    .await
    .expect_error(403, "forbidden");
    let (victim, _) = s.member(&admin, "victim@test.local", "agent_manager").await;
    // Demoting someone who holds more than you is granting in reverse.
    s.put(
        &format!("/api/users/{victim}/roles"),
        &people,
        json!({ "role": "viewer" }),
    )
    .await
    .expect_error(403, "forbidden");
    s.put(
        &format!("/api/users/{user}/roles"),
        &people,
        json!({ "role": "viewer" }),
    )
    .await
    .expect(200);
    s.post(
        &format!("/api/organizations/{org}/invitations"),
        &people,
        json!({ "email": "new@test.local", "role": "org_admin" }),
    )
    .await
    .expect_error(403, "forbidden");

    // A role in use cannot be deleted; an unused one can.
    s.delete(&format!("{roles}/analyst"), &admin)
        .await
        .expect_error(409, "conflict");
    let keys = s.get("/api/api-keys", &admin).await.expect(200).body;
    for k in keys["items"].as_array().unwrap() {
        if k["role"] == "analyst" {
            let id = k["id"].as_str().unwrap();
            s.delete(&format!("/api/api-keys/{id}"), &admin)
                .await
                .expect(204);
        }
    }
    s.delete(&format!("{roles}/analyst"), &admin)
        .await
        .expect(204);
    s.delete(&format!("{roles}/viewer"), &admin)
        .await
        .expect_error(409, "conflict");

    // Every change is in the audit log.
    let log = s
        .get("/api/audit-logs?limit=100", &admin)
        .await
        .expect(200)
        .body;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "role_created",
        "role_updated",
        "role_deleted",
        "member_role_changed",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
    // The catalogue lists every permission and the built-in sets.
    let catalog = s.get("/api/permissions", &token).await.expect(200).body;
    assert_eq!(catalog["permissions"].as_array().unwrap().len(), ALL.len());
    let viewer = catalog["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "viewer")
        .unwrap();
    assert_eq!(viewer["permissions"], json!(built_in("viewer")));
}

dual_backend_tests!(every_route_for_every_caller, custom_roles_and_assignment);
