//! One rule for the NUL character on both databases: a request carrying one
//! in its JSON is refused with 422 naming the field, one carrying it in its
//! URL with 400, and nothing is stored (PostgreSQL's text cannot hold it,
//! SQLite's could: the answer must not depend on the backend).

use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server};

/// A body with a NUL in it (serde_json writes it as `\u0000`).
fn nul(text: &str) -> String {
    format!("{text}\u{0}")
}

async fn nul_is_refused_everywhere(b: Backend) {
    let s = Server::start(b).await;
    // Unauthenticated.
    let r = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": nul("a@b.c"), "password": "Whatever-Passw0rd1" })),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(r.body["error"]["details"]["email"].is_array(), "{}", r.body);
    let admin = s.admin_token().await;
    for (path, body, field) in [
        (
            "/api/tasks",
            json!({ "description": nul("task"), "prompt": "p" }),
            "description",
        ),
        (
            "/api/tasks",
            json!({ "description": "d", "messages": [{ "role": "user", "content": nul("hi") }] }),
            "messages[0].content",
        ),
        ("/api/organizations", json!({ "name": nul("org") }), "name"),
        ("/api/api-keys", json!({ "name": nul("key") }), "name"),
        (
            "/v1/chat/completions",
            json!({ "model": "auto", "messages": [{ "role": "user", "content": nul("hi") }] }),
            "messages[0].content",
        ),
    ] {
        let r = s.post(path, &admin, body).await;
        // The gateway answers OpenAI's 400 naming the field as `param`.
        if path.starts_with("/v1/") {
            let r = r.expect_error(400, "validation_failed");
            assert_eq!(r.body["error"]["param"], field, "{path}: {}", r.body);
            continue;
        }
        let r = r.expect_error(422, "validation_failed");
        assert!(
            r.body["error"]["details"][field].is_array(),
            "{path}: {}",
            r.body
        );
    }
    for path in [
        "/api/tasks/%00",
        "/api/tasks?status=%00",
        "/api/agents/abc%00def",
    ] {
        s.get(path, &admin).await.expect_error(400, "invalid_url");
    }
    // Nothing was stored.
    let tasks = s.get("/api/tasks", &admin).await.expect(200);
    assert_eq!(tasks.body["total"], 0, "{}", tasks.body);
    let orgs = s.get("/api/organizations", &admin).await.expect(200);
    assert!(!orgs.body.to_string().contains("\\u0000"), "{}", orgs.body);
    let keys = s.get("/api/api-keys", &admin).await.expect(200);
    assert_eq!(keys.body["items"], json!([]));
}

dual_backend_tests!(nul_is_refused_everywhere);
