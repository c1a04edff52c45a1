//! The audit log: entries for actions, filters, redaction, and who may read it.

use serde_json::json;

use crate::support::{Backend, Server, USER_PASSWORD};

async fn audit_log_records_and_filters(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let manager = s
        .user_with_role(&admin, "m@test.local", "agent_manager")
        .await;
    let manager_id = s.get("/api/users/me", &manager).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.mock_integration(&admin, "perplexity").await;
    s.post(
        "/api/agents",
        &manager,
        json!({ "name": "a", "type": "researcher", "config": { "provider": "perplexity", "model": "sonar" } }),
    )
    .await
    .expect(201);
    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "oa", "provider": "openai", "api_key": "sk-audit-secret-123456" }),
    )
    .await
    .expect(201);

    let all = s.get("/api/audit-logs?limit=100", &admin).await.expect(200);
    let text = all.body.to_string();
    assert!(
        !text.contains("sk-audit-secret-123456"),
        "secret in audit log: {text}"
    );
    assert!(!text.contains(USER_PASSWORD), "password in audit log");
    let actions: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "user_login",
        "user_created",
        "agent_created",
        "integration_created",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let entry = &all.body["items"][0];
    assert!(entry["ip_address"].as_str().unwrap().starts_with("127."));

    let by_action = s
        .get("/api/audit-logs?action=agent_created", &admin)
        .await
        .expect(200);
    assert_eq!(by_action.body["total"], 1);
    assert_eq!(by_action.body["items"][0]["user_id"], manager_id.as_str());
    let by_user = s
        .get(&format!("/api/audit-logs?user_id={manager_id}"), &admin)
        .await
        .expect(200);
    assert!(
        by_user.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == manager_id.as_str())
    );
    let future = s
        .get("/api/audit-logs?from=2999-01-01T00:00:00Z", &admin)
        .await
        .expect(200);
    assert_eq!(future.body["total"], 0);
    let past = s
        .get("/api/audit-logs?to=2000-01-01T00:00:00Z", &admin)
        .await
        .expect(200);
    assert_eq!(past.body["total"], 0);
    let window = s
        .get("/api/audit-logs?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z&action=agent_created", &admin)
        .await
        .expect(200);
    assert_eq!(window.body["total"], 1);
    s.get("/api/audit-logs?from=yesterday", &admin)
        .await
        .expect_error(422, "validation_failed");
    s.get("/api/audit-logs", &manager)
        .await
        .expect_error(403, "forbidden");
}

async fn audit_log_is_per_tenant(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "alpha").await;
    let (_org_b, owner_b) = s.tenant(&admin, "beta").await;
    s.mock_integration(&owner_a, "openai").await;
    s.post(
        "/api/agents",
        &owner_a,
        json!({ "name": "secret-project", "type": "researcher", "config": { "provider": "openai", "model": "m" } }),
    )
    .await
    .expect(201);
    let b_log = s
        .get("/api/audit-logs?limit=100", &owner_b)
        .await
        .expect(200);
    assert!(!b_log.body.to_string().contains("secret-project"));
    assert!(
        b_log.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "agent_created")
    );
    s.get(&format!("/api/audit-logs?org_id={org_a}"), &owner_b)
        .await
        .expect_error(404, "not_found");
    s.get("/api/audit-logs?org_id=*", &owner_b)
        .await
        .expect_error(404, "not_found");
    // The platform admin may read another tenant's log explicitly.
    let a_log = s
        .get(
            &format!("/api/audit-logs?org_id={org_a}&action=agent_created"),
            &admin,
        )
        .await
        .expect(200);
    assert_eq!(a_log.body["total"], 1);
    let everything = s
        .get(
            "/api/audit-logs?org_id=*&action=organization_created",
            &admin,
        )
        .await
        .expect(200);
    assert_eq!(everything.body["total"], 2);
}

dual_backend_tests!(audit_log_records_and_filters, audit_log_is_per_tenant);
