//! `POST /api/integrations/{id}/test`: the provider reached through its
//! plugin — the real `openai-compatible` component calling the real mock
//! upstream over loopback, and the offline `mock` provider — plus roles,
//! tenancy, the audit entry and the health check's provider summary.

use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream, count_tokens};

use crate::support::{Backend, Server};

const KEY: &str = "sk-connectivity-test-key-0123456789";

/// Create an `openai_compatible` integration pointing at `mock`; returns its id.
async fn upstream_integration(s: &Server, token: &str, mock: &MockUpstream) -> String {
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(token, "upstream", &base_url, KEY, 10_000)
        .await
}

async fn test_integration(s: &Server, token: &str, id: &str) -> Value {
    let r = s
        .post(&format!("/api/integrations/{id}/test"), token, json!({}))
        .await
        .expect(200);
    assert!(
        !r.body.to_string().contains(KEY),
        "key leaked in the test result: {}",
        r.body
    );
    r.body
}

async fn health_providers(s: &Server) -> Value {
    let admin = s.admin_token().await;
    let r = s
        .call(Method::GET, "/api/health", Some(&admin), None)
        .await
        .expect(200);
    r.body["checks"]["providers"].clone()
}

async fn test_reaches_upstream_through_plugin(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let id = upstream_integration(&s, &admin, &mock).await;
    assert_eq!(health_providers(&s).await["status"], "untested");

    let out = test_integration(&s, &admin, &id).await;
    assert_eq!(out["ok"], true, "{out}");
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["model"], "gpt-4o-mini");
    assert!(out["latency_ms"].is_u64());

    // Exactly one upstream call, carrying the key the host added.
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let req = &requests[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.bearer_token(), Some(KEY));
    assert_eq!(req.model(), Some("gpt-4o-mini"));
    let body = req.body.as_ref().unwrap();
    let prompt: u64 = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| count_tokens(m["content"].as_str().unwrap()))
        .sum();
    assert!(prompt > 0);
    assert_eq!(out["usage"]["input_tokens"], prompt);
    let max_tokens = body["max_tokens"].as_u64().unwrap();
    let output = out["usage"]["output_tokens"].as_u64().unwrap();
    assert!(output > 0 && output <= max_tokens, "{out}");

    // The outcome is stored on the integration, audited, and summarised by health.
    let got = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(got.body["last_test_result"]["ok"], true);
    assert!(got.body["last_test_at"].is_string());
    let audit = s
        .get("/api/audit-logs?action=integration_tested", &admin)
        .await
        .expect(200);
    assert_eq!(audit.body["total"], 1);
    let entry = &audit.body["items"][0]["payload"];
    assert_eq!(entry["integration_id"], id.as_str());
    assert_eq!(entry["ok"], true);
    assert!(!audit.body.to_string().contains(KEY));
    let providers = health_providers(&s).await;
    assert_eq!(providers["status"], "ok", "{providers}");
    assert!(
        providers["detail"]
            .as_str()
            .unwrap()
            .contains("openai_compatible: 1 reachable"),
        "{providers}"
    );
    assert!(
        !s.stderr().contains(KEY),
        "key in the server's log:\n{}",
        s.stderr()
    );
}

async fn test_reports_provider_errors(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let id = upstream_integration(&s, &admin, &mock).await;
    let cases = [
        (Fault::Status(401), "auth"),
        (
            Fault::RateLimited {
                retry_after_secs: 2,
            },
            "rate_limited",
        ),
        (Fault::Status(500), "unavailable"),
    ];
    for (fault, kind) in cases {
        mock.push(fault.clone());
        let out = test_integration(&s, &admin, &id).await;
        assert_eq!(out["ok"], false, "{fault:?}: {out}");
        assert_eq!(out["error"]["source"], "provider", "{fault:?}: {out}");
        assert_eq!(out["error"]["kind"], kind, "{fault:?}: {out}");
        assert!(out["error"]["message"].is_string(), "{out}");
        assert!(out["usage"].is_null(), "{out}");
        if kind == "rate_limited" {
            assert_eq!(out["error"]["retry_after_ms"], 2000, "{out}");
        }
    }
    assert_eq!(mock.requests().len(), 3);
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.bearer_token() == Some(KEY))
    );
    let got = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200);
    assert_eq!(got.body["last_test_result"]["error"]["kind"], "unavailable");
    // A provider outage is reported, not turned into an unhealthy server.
    let r = s
        .call(Method::GET, "/api/health", Some(&admin), None)
        .await
        .expect(200);
    assert_eq!(r.body["checks"]["providers"]["status"], "degraded");
    assert_eq!(r.body["failing"], json!([]));
}

async fn test_mock_provider(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let create = |name: &str, model: Option<&str>| {
        let mut body = json!({ "name": name, "provider": "mock" });
        if let Some(m) = model {
            body["default_model"] = json!(m);
        }
        body
    };
    let echo = s
        .post("/api/integrations", &admin, create("offline", None))
        .await
        .expect(201);
    let out = test_integration(&s, &admin, echo.body["id"].as_str().unwrap()).await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["model"], "echo");
    assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0, "{out}");
    assert!(out["usage"]["output_tokens"].as_u64().unwrap() > 0, "{out}");

    let limited = s
        .post(
            "/api/integrations",
            &admin,
            create("limited", Some("rate-limited")),
        )
        .await
        .expect(201);
    let out = test_integration(&s, &admin, limited.body["id"].as_str().unwrap()).await;
    assert_eq!(out["ok"], false);
    assert_eq!(out["model"], "rate-limited");
    assert_eq!(out["error"]["kind"], "rate_limited", "{out}");
    assert_eq!(out["error"]["retry_after_ms"], 1000, "{out}");

    let broken = s
        .post("/api/integrations", &admin, create("broken", Some("error")))
        .await
        .expect(201);
    let out = test_integration(&s, &admin, broken.body["id"].as_str().unwrap()).await;
    assert_eq!(out["error"]["source"], "provider", "{out}");
    assert_eq!(out["error"]["kind"], "other", "{out}");

    // An integration naming a plugin that is not loaded: a configuration error.
    let missing = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "ghost", "provider": "mock", "plugin": "no-such-plugin" }),
        )
        .await
        .expect(201);
    let out = test_integration(&s, &admin, missing.body["id"].as_str().unwrap()).await;
    assert_eq!(out["ok"], false);
    assert_eq!(out["error"]["source"], "configuration", "{out}");
    assert_eq!(out["error"]["kind"], "plugin_not_found", "{out}");

    // A router is not a provider.
    let router = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "router", "provider": "mock", "plugin": "default-router" }),
        )
        .await
        .expect(201);
    let out = test_integration(&s, &admin, router.body["id"].as_str().unwrap()).await;
    assert_eq!(out["error"]["kind"], "not_a_provider", "{out}");
}

async fn test_authorization(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let id = upstream_integration(&s, &admin, &mock).await;
    let path = format!("/api/integrations/{id}/test");
    let viewer = s.user_with_role(&admin, "v@test.local", "viewer").await;
    let manager = s
        .user_with_role(&admin, "m@test.local", "agent_manager")
        .await;
    for token in [&viewer, &manager] {
        s.post(&path, token, json!({}))
            .await
            .expect_error(403, "forbidden");
    }
    s.call(Method::POST, &path, None, None)
        .await
        .expect_error(401, "unauthorized");
    let (_beta, owner_b) = s.tenant(&admin, "beta").await;
    s.post(&path, &owner_b, json!({}))
        .await
        .expect_error(404, "not_found");
    s.post("/api/integrations/no-such-id/test", &admin, json!({}))
        .await
        .expect_error(404, "not_found");
    // None of the refused calls reached the provider.
    assert_eq!(mock.requests().len(), 0);
    let got = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200);
    assert!(got.body["last_test_at"].is_null());
}

dual_backend_tests!(
    test_reaches_upstream_through_plugin,
    test_reports_provider_errors,
    test_mock_provider,
    test_authorization
);
