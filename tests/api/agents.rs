//! Agents: CRUD, config history, soft delete, roles, tenancy, bad input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server};

fn agent_body() -> Value {
    json!({
        "name": "Researcher",
        "type": "researcher",
        "config": {
            "provider": "perplexity", "model": "sonar", "temperature": 0.2,
            "max_tokens": 1024, "system_prompt": "Cite sources.", "routing_policy": "default-router"
        }
    })
}

async fn agent_crud_and_history(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "perplexity").await;
    s.mock_integration(&admin, "openai").await;
    let created = s
        .post("/api/agents", &admin, agent_body())
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["config_version"], 1);
    assert_eq!(created.body["config"]["model"], "sonar");

    let got = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(got.body["name"], "Researcher");

    let updated = s
        .put(
            &format!("/api/agents/{id}"),
            &admin,
            json!({ "name": "R2", "status": "inactive", "config": { "provider": "openai", "model": "gpt-4o" } }),
        )
        .await
        .expect(200);
    assert_eq!(updated.body["config_version"], 2);
    assert_eq!(updated.body["status"], "inactive");
    // Name-only changes do not add a config version.
    let renamed = s
        .put(
            &format!("/api/agents/{id}"),
            &admin,
            json!({ "name": "R3" }),
        )
        .await
        .expect(200);
    assert_eq!(renamed.body["config_version"], 2);
    let history = s
        .get(&format!("/api/agents/{id}/history"), &admin)
        .await
        .expect(200);
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["version"], 2);
    assert_eq!(items[0]["config"]["model"], "gpt-4o");
    assert_eq!(items[1]["config"]["model"], "sonar");

    for i in 0..3 {
        let mut body = agent_body();
        body["name"] = json!(format!("coder {i}"));
        body["type"] = json!("code_generator");
        s.post("/api/agents", &admin, body).await.expect(201);
    }
    let list = s.get("/api/agents?limit=2", &admin).await.expect(200);
    assert_eq!(list.body["total"], 4);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    let coders = s
        .get("/api/agents?type=code_generator", &admin)
        .await
        .expect(200);
    assert_eq!(coders.body["total"], 3);
    let inactive = s
        .get("/api/agents?status=inactive", &admin)
        .await
        .expect(200);
    assert_eq!(inactive.body["total"], 1);

    // Soft delete: gone from the API.
    s.delete(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(204);
    s.get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect_error(404, "not_found");
    s.delete(&format!("/api/agents/{id}"), &admin)
        .await
        .expect_error(404, "not_found");
    s.put(
        &format!("/api/agents/{id}"),
        &admin,
        json!({ "name": "back" }),
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(s.get("/api/agents", &admin).await.body["total"], 3);
}

async fn agent_roles(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "perplexity").await;
    let viewer = s.user_with_role(&admin, "v@test.local", "viewer").await;
    let executor = s
        .user_with_role(&admin, "x@test.local", "task_executor")
        .await;
    let manager = s
        .user_with_role(&admin, "m@test.local", "agent_manager")
        .await;
    let created = s
        .post("/api/agents", &manager, agent_body())
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    for token in [&viewer, &executor] {
        s.post("/api/agents", token, agent_body())
            .await
            .expect_error(403, "forbidden");
        s.put(&format!("/api/agents/{id}"), token, json!({ "name": "n" }))
            .await
            .expect_error(403, "forbidden");
        s.delete(&format!("/api/agents/{id}"), token)
            .await
            .expect_error(403, "forbidden");
        s.get(&format!("/api/agents/{id}"), token).await.expect(200);
        s.get("/api/agents", token).await.expect(200);
    }
    s.put(
        &format!("/api/agents/{id}"),
        &manager,
        json!({ "name": "n" }),
    )
    .await
    .expect(200);
    s.delete(&format!("/api/agents/{id}"), &manager)
        .await
        .expect(204);
}

async fn agents_are_isolated_between_tenants(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_a, owner_a) = s.tenant(&admin, "alpha").await;
    let (_b, owner_b) = s.tenant(&admin, "beta").await;
    s.mock_integration(&owner_a, "perplexity").await;
    let created = s
        .post("/api/agents", &owner_a, agent_body())
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/api/agents/{id}");
    s.get(&path, &owner_b).await.expect_error(404, "not_found");
    s.get(&format!("{path}/history"), &owner_b)
        .await
        .expect_error(404, "not_found");
    s.put(&path, &owner_b, json!({ "name": "stolen" }))
        .await
        .expect_error(404, "not_found");
    s.delete(&path, &owner_b)
        .await
        .expect_error(404, "not_found");
    assert_eq!(s.get("/api/agents", &owner_b).await.body["total"], 0);
    // The platform admin acting in the default org does not see it either.
    s.get(&path, &admin).await.expect_error(404, "not_found");
    // Still intact for its owner.
    let still = s.get(&path, &owner_a).await.expect(200);
    assert_eq!(still.body["name"], "Researcher");
}

async fn agent_bad_input(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "name": 42, "type": "researcher", "config": { "provider": "openai", "model": "m" } }),
            "name",
        ),
        (
            json!({ "name": "a", "type": "wizard", "config": { "provider": "openai", "model": "m" } }),
            "type",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m" }, "owner": "x" }),
            "owner",
        ),
        (
            json!({ "name": "x".repeat(101), "type": "researcher", "config": { "provider": "openai", "model": "m" } }),
            "name",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m", "temperature": 2.5 } }),
            "config.temperature",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m", "temperature": "hot" } }),
            "config.temperature",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m", "max_tokens": 0 } }),
            "config.max_tokens",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "Open AI", "model": "m" } }),
            "config.provider",
        ),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m", "seed": 1 } }),
            "config.seed",
        ),
        (json!({ "name": "a", "type": "researcher" }), "config"),
        (
            json!({ "name": "a", "type": "researcher", "config": { "provider": "openai" } }),
            "config.model",
        ),
        (
            json!({ "name": "   ", "type": "researcher", "config": { "provider": "openai", "model": "m" } }),
            "name",
        ),
    ];
    for (body, field) in cases {
        let r = s
            .post("/api/agents", &admin, body.clone())
            .await
            .expect_error(422, "validation_failed");
        let details = r.body["error"]["details"].as_object().unwrap();
        assert!(
            details.contains_key(field),
            "expected {field} in {} for {body}",
            r.body
        );
    }
    // Malformed JSON and wrong content type.
    s.raw(
        Method::POST,
        "/api/agents",
        Some(&admin),
        "application/json",
        b"{\"name\": ".to_vec(),
    )
    .await
    .expect_error(400, "invalid_json");
    s.raw(
        Method::POST,
        "/api/agents",
        Some(&admin),
        "text/plain",
        b"{}".to_vec(),
    )
    .await
    .expect_error(415, "unsupported_media_type");
    // Nothing was created.
    assert_eq!(s.get("/api/agents", &admin).await.body["total"], 0);
    // Updates are validated the same way and change nothing.
    s.mock_integration(&admin, "perplexity").await;
    let created = s
        .post("/api/agents", &admin, agent_body())
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    s.put(
        &format!("/api/agents/{id}"),
        &admin,
        json!({ "config": { "provider": "openai", "model": "m", "temperature": -1 } }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.put(
        &format!("/api/agents/{id}"),
        &admin,
        json!({ "colour": "red" }),
    )
    .await
    .expect_error(422, "validation_failed");
    let same = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(same.body["config_version"], 1);
    // Bad query parameters.
    s.get("/api/agents?limit=abc", &admin)
        .await
        .expect_error(400, "invalid_query");
    s.get("/api/agents?limit=1000", &admin)
        .await
        .expect_error(422, "validation_failed");
    s.get("/api/agents?type=wizard", &admin)
        .await
        .expect_error(400, "invalid_query");
}

async fn agent_provider_is_one_of_the_organizations_integrations(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_alpha, owner_a) = s.tenant(&admin, "alpha").await;
    let body = |provider: &str| json!({ "name": "a", "type": "researcher", "config": { "provider": provider, "model": "echo" } });
    // No integration at all: the provider names nothing.
    let r = s
        .post("/api/agents", &admin, body("openai"))
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"]["config.provider"][0]
            .as_str()
            .unwrap()
            .contains("openai"),
        "{}",
        r.body
    );
    // Another organization's integration does not count.
    s.mock_integration(&owner_a, "openai").await;
    s.post("/api/agents", &admin, body("openai"))
        .await
        .expect_error(422, "validation_failed");
    assert_eq!(s.get("/api/agents", &admin).await.body["total"], 0);
    // An integration's name or its provider kind, enabled or not.
    let offline = s.mock_integration(&admin, "offline").await;
    s.put(
        &format!("/api/integrations/{offline}"),
        &admin,
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    s.post("/api/agents", &admin, body("offline"))
        .await
        .expect(201);
    let created = s
        .post("/api/agents", &admin, body("mock"))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    // Updates are checked the same way and change nothing.
    let r = s
        .put(
            &format!("/api/agents/{id}"),
            &admin,
            json!({ "config": { "provider": "groq", "model": "echo" } }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"]["config.provider"].is_array(),
        "{}",
        r.body
    );
    let same = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(same.body["config"]["provider"], "mock");
    assert_eq!(same.body["config_version"], 1);
    s.put(
        &format!("/api/agents/{id}"),
        &admin,
        json!({ "config": { "provider": "offline", "model": "echo" } }),
    )
    .await
    .expect(200);
}

dual_backend_tests!(
    agent_crud_and_history,
    agent_roles,
    agents_are_isolated_between_tenants,
    agent_bad_input,
    agent_provider_is_one_of_the_organizations_integrations
);
