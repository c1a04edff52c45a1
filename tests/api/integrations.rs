//! Integrations: CRUD, the key never returned, roles, tenancy, bad input.

use serde_json::json;

use crate::support::{Backend, Server};

const KEY: &str = "sk-test-integration-key-0123456789";

async fn integration_crud(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let created = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "openai-main", "provider": "openai", "default_model": "gpt-4o", "api_key": KEY }),
        )
        .await
        .expect(201);
    let text = created.body.to_string();
    assert!(!text.contains(KEY), "key leaked: {text}");
    assert!(created.body.get("api_key").is_none());
    assert_eq!(created.body["has_api_key"], true);
    assert_eq!(created.body["plugin"], "openai-compatible");
    assert_eq!(created.body["base_url"], "https://api.openai.com/v1");
    assert_eq!(created.body["timeout_ms"], 60000);
    let fp = created.body["key_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fp.starts_with("sha256:"));
    let id = created.body["id"].as_str().unwrap().to_string();

    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "openai-main", "provider": "mock" }),
    )
    .await
    .expect_error(409, "conflict");
    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "offline", "provider": "mock" }),
    )
    .await
    .expect(201);

    let list = s.get("/api/integrations", &admin).await.expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    assert!(!list.body.to_string().contains(KEY));

    let rotated = s
        .put(
            &format!("/api/integrations/{id}"),
            &admin,
            json!({ "api_key": "sk-rotated-key-9876543210", "timeout_ms": 30000, "status": "disabled" }),
        )
        .await
        .expect(200);
    assert_ne!(rotated.body["key_fingerprint"], fp);
    assert_eq!(rotated.body["timeout_ms"], 30000);
    assert_eq!(rotated.body["status"], "disabled");
    let got = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(got.body["key_fingerprint"], rotated.body["key_fingerprint"]);

    s.delete(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(204);
    s.get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect_error(404, "not_found");
}

async fn integration_roles_and_tenancy(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let manager = s
        .user_with_role(&admin, "m@test.local", "agent_manager")
        .await;
    let viewer = s.user_with_role(&admin, "v@test.local", "viewer").await;
    let body = json!({ "name": "groq", "provider": "groq", "api_key": KEY });
    for token in [&manager, &viewer] {
        s.post("/api/integrations", token, body.clone())
            .await
            .expect_error(403, "forbidden");
    }
    let created = s.post("/api/integrations", &admin, body).await.expect(201);
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/api/integrations/{id}");
    s.get(&path, &viewer).await.expect(200);
    s.put(&path, &manager, json!({ "timeout_ms": 5000 }))
        .await
        .expect_error(403, "forbidden");
    s.delete(&path, &viewer)
        .await
        .expect_error(403, "forbidden");

    let (_b, owner_b) = s.tenant(&admin, "beta").await;
    s.get(&path, &owner_b).await.expect_error(404, "not_found");
    s.put(
        &path,
        &owner_b,
        json!({ "api_key": "sk-attacker-key-000000" }),
    )
    .await
    .expect_error(404, "not_found");
    s.delete(&path, &owner_b)
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        s.get("/api/integrations", &owner_b).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let intact = s.get(&path, &admin).await.expect(200);
    assert_eq!(
        intact.body["key_fingerprint"],
        created.body["key_fingerprint"]
    );
}

async fn integration_bad_input(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let cases = [
        (json!({ "name": "a", "provider": "openai" }), "api_key"),
        (
            json!({ "name": "a", "provider": "openai_compatible", "api_key": KEY }),
            "base_url",
        ),
        (
            json!({ "name": "a", "provider": "openai", "api_key": KEY, "base_url": "ftp://x" }),
            "base_url",
        ),
        (
            json!({ "name": "a", "provider": "openai", "api_key": KEY, "timeout_ms": 10 }),
            "timeout_ms",
        ),
        (
            json!({ "name": "a", "provider": "openai", "api_key": KEY, "timeout_ms": "slow" }),
            "timeout_ms",
        ),
        (
            json!({ "name": "a", "provider": "skynet", "api_key": KEY }),
            "provider",
        ),
        (
            json!({ "name": "a", "provider": "openai", "api_key": KEY, "secret": "x" }),
            "secret",
        ),
        (
            json!({ "name": "a", "provider": "openai", "api_key": KEY, "plugin": "Bad Plugin" }),
            "plugin",
        ),
    ];
    for (body, field) in cases {
        let r = s
            .post("/api/integrations", &admin, body.clone())
            .await
            .expect_error(422, "validation_failed");
        assert!(
            r.body["error"]["details"]
                .as_object()
                .unwrap()
                .contains_key(field),
            "expected {field} in {} for {body}",
            r.body
        );
        assert!(!r.body.to_string().contains(KEY), "key echoed in error");
    }
    assert_eq!(
        s.get("/api/integrations", &admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

dual_backend_tests!(
    integration_crud,
    integration_roles_and_tenancy,
    integration_bad_input
);
