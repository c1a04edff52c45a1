//! API keys: shown once, usable as bearer, scoped by role and organization, revocable.

use serde_json::json;

use crate::support::{Backend, Server};

async fn api_key_lifecycle(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let created = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "ci", "role": "agent_manager" }),
        )
        .await
        .expect(201);
    let key = created.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("vel_") && key.len() > 40);
    assert!(key.starts_with(created.body["prefix"].as_str().unwrap()));
    let id = created.body["id"].as_str().unwrap().to_string();

    let list = s.get("/api/api-keys", &admin).await.expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert!(!list.body.to_string().contains(&key));

    // The key authenticates with its role.
    s.get("/api/agents", &key).await.expect(200);
    s.mock_integration(&admin, "groq").await;
    let agent = json!({ "name": "bot", "type": "code_generator", "config": { "provider": "groq", "model": "llama-3.1-70b" } });
    s.post("/api/agents", &key, agent.clone()).await.expect(201);
    s.get("/api/api-keys", &key)
        .await
        .expect_error(403, "forbidden");
    let me = s.get("/api/users/me", &key).await.expect(200);
    assert_eq!(me.body["roles"], json!(["agent_manager"]));

    let viewer_key = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "ro", "role": "viewer" }),
        )
        .await
        .expect(201)
        .body["key"]
        .as_str()
        .unwrap()
        .to_string();
    s.post("/api/agents", &viewer_key, agent)
        .await
        .expect_error(403, "forbidden");

    // Revocation is immediate.
    s.delete(&format!("/api/api-keys/{id}"), &admin)
        .await
        .expect(204);
    s.get("/api/agents", &key)
        .await
        .expect_error(401, "unauthorized");
    s.delete(&format!("/api/api-keys/{id}"), &admin)
        .await
        .expect_error(404, "not_found");
    s.get("/api/agents", "vel_not-a-real-key-at-all-000000000000000")
        .await
        .expect_error(401, "unauthorized");
}

async fn api_key_scoping(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_b, owner_b) = s.tenant(&admin, "beta").await;
    // An org_admin cannot mint a platform-admin key.
    s.post(
        "/api/api-keys",
        &owner_b,
        json!({ "name": "x", "role": "admin" }),
    )
    .await
    .expect_error(422, "validation_failed");
    let viewer = s.user_with_role(&admin, "v@test.local", "viewer").await;
    s.post("/api/api-keys", &viewer, json!({ "name": "x" }))
        .await
        .expect_error(403, "forbidden");
    s.post("/api/api-keys", &admin, json!({ "name": "" }))
        .await
        .expect_error(422, "validation_failed");
    // Keys belong to their organization.
    let created = s
        .post("/api/api-keys", &admin, json!({ "name": "a" }))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    s.delete(&format!("/api/api-keys/{id}"), &owner_b)
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        s.get("/api/api-keys", &owner_b).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let key_b = s
        .post("/api/api-keys", &owner_b, json!({ "name": "b" }))
        .await
        .expect(201);
    let key_b = key_b.body["key"].as_str().unwrap();
    s.get("/api/agents", key_b).await.expect(200);
    // Logout is for tokens; API keys are revoked by id.
    s.call(reqwest::Method::POST, "/api/auth/logout", Some(key_b), None)
        .await
        .expect_error(400, "not_a_token");
}

/// The short lists page like the others: `limit`/`offset` are honoured and
/// checked, `total` counts the whole list, and an unknown parameter is refused.
async fn short_lists_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    for n in 0..3 {
        s.api_key(&admin, &format!("key-{n}"), "viewer").await;
        s.post(
            "/api/integrations",
            &admin,
            json!({ "name": format!("mock-{n}"), "provider": "mock" }),
        )
        .await
        .expect(201);
        s.tenant(&admin, &format!("org-{n}")).await;
    }
    for (path, total) in [
        ("/api/api-keys", 3),
        ("/api/integrations", 3),
        ("/api/organizations", 4),
    ] {
        let all = s.get(path, &admin).await.expect(200);
        assert_eq!(all.body["total"], total, "{path}: {}", all.body);
        assert_eq!(all.body["items"].as_array().unwrap().len(), total, "{path}");
        let page = s
            .get(&format!("{path}?limit=1&offset=1"), &admin)
            .await
            .expect(200);
        assert_eq!(page.body["items"].as_array().unwrap().len(), 1, "{path}");
        assert_eq!(page.body["items"][0], all.body["items"][1], "{path}");
        assert_eq!(
            (page.body["limit"].as_i64(), page.body["offset"].as_i64()),
            (Some(1), Some(1))
        );
        s.get(&format!("{path}?limit=0"), &admin)
            .await
            .expect_error(422, "validation_failed");
        s.get(&format!("{path}?page=2"), &admin)
            .await
            .expect_error(400, "invalid_query");
    }
}

dual_backend_tests!(api_key_lifecycle, api_key_scoping, short_lists_page);
