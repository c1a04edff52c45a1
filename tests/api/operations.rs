//! Operations: audit entries past `VEL_AUDIT_RETENTION_DAYS` are deleted
//! (and no others); the system's own events (an instance starting and
//! stopping, a breaker opening and closing) are in the audit log; CORS
//! answers the allowed origins' preflights only, and every response
//! carries the security headers.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

use crate::support::{Backend, Server};

const DAY_MS: i64 = 86_400_000;

/// The audit entries with `action`, of every organization (platform admin).
async fn entries(s: &Server, admin: &str, action: &str) -> Value {
    s.get(
        &format!("/api/audit-logs?org_id=*&action={action}&limit=100"),
        admin,
    )
    .await
    .expect(200)
    .body
}

/// The entries with `action` once there are `n` of them (some are written
/// off the request path, or by a background job).
async fn entries_once(s: &Server, admin: &str, action: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = entries(s, admin, action).await;
        if found["total"] == n {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} {action} entries: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write an audit entry `age_days` old straight into the database.
async fn old_entry(s: &Server, action: &str, age_days: i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO audit_logs (id, org_id, user_id, action, payload, created_at) \
         VALUES ($1, NULL, NULL, $2, '{}', $3)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(action)
    .bind(now - age_days * DAY_MS)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
}

async fn audit_entries_past_their_retention_go(b: Backend) {
    let env = [
        ("VEL_AUDIT_RETENTION_DAYS", "30"),
        ("VEL_AUDIT_RETENTION_INTERVAL_MS", "100"),
    ];
    let mut s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    // Instances record their start (and, below, their stop).
    let started = entries_once(&s, &admin, "instance_started", 1).await;
    let payload = &started["items"][0]["payload"];
    assert!(payload["instance"].is_string(), "{started}");
    assert_eq!(started["items"][0]["user_id"], Value::Null);
    // Each built-in plugin's version went live at the first start: a
    // system event each, which later starts do not repeat.
    let activated = entries(&s, &admin, "plugin_activated").await;
    let builtins = activated["total"].as_u64().unwrap();
    assert!(builtins >= 3, "{activated}");
    for e in activated["items"].as_array().unwrap() {
        assert_eq!(e["payload"]["builtin"], true, "{e}");
        assert_eq!(e["user_id"], Value::Null, "{e}");
    }

    for _ in 0..3 {
        old_entry(&s, "expired_entry", 31).await;
    }
    old_entry(&s, "kept_entry", 29).await;
    // Both instances delete, neither twice: the expired go, the rest stay.
    let twin = s.sibling(&[]);
    entries_once(&s, &admin, "expired_entry", 0).await;
    assert_eq!(entries(&s, &admin, "kept_entry").await["total"], 1);
    assert_eq!(entries(&s, &admin, "instance_started").await["total"], 2);
    drop(twin);

    // A stop is recorded once in-flight work is drained.
    assert!(s.terminate(), "{}", s.stderr());
    s.restart();
    let admin = s.admin_token().await;
    let stopped = entries_once(&s, &admin, "instance_stopped", 1).await;
    assert_eq!(
        stopped["items"][0]["payload"]["instance"],
        started["items"][0]["payload"]["instance"]
    );
    entries_once(&s, &admin, "instance_started", 3).await;
    assert_eq!(
        entries(&s, &admin, "plugin_activated").await["total"],
        builtins
    );
}

async fn breakers_opening_and_closing_are_audited(b: Backend) {
    let s = Server::start_with(
        b,
        &[
            ("VEL_RETRY_BASE_MS", "5"),
            ("VEL_BREAKER_COOL_DOWN_MS", "200"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let broken = MockUpstream::start().await;
    broken.set_default(Fault::Status(503));
    let base_url = format!("{}/v1", broken.base_url());
    let id = s
        .upstream_integration(&admin, "primary", &base_url, "sk-breaker-0123456789", 5_000)
        .await;
    let run = |n: u32| {
        s.finished_task(
            &admin,
            json!({ "description": "pinned", "prompt": format!("pinned {n}"),
                    "parameters": { "model": "primary/gpt-4o-mini" }, "cache": false }),
        )
    };
    // Four failures (a call and three retries), then the fifth opens it.
    assert_eq!(run(1).await["status"], "failed");
    assert_eq!(run(2).await["status"], "failed");
    let opened = entries_once(&s, &admin, "breaker_opened", 1).await;
    let entry = &opened["items"][0];
    assert_eq!(entry["payload"]["integration_id"], id.as_str(), "{entry}");
    assert_eq!(entry["payload"]["integration"], "primary");
    assert_eq!(entry["user_id"], Value::Null);
    assert!(entry["org_id"].is_string());
    // The tenant's own admin sees it in their organization's log.
    let own = s
        .get("/api/audit-logs?action=breaker_opened", &admin)
        .await
        .expect(200);
    assert_eq!(own.body["total"], 1);

    // The upstream recovers; after the cool-down a probe closes it.
    broken.set_default(Fault::Ok);
    let mut closed = false;
    for n in 3..200 {
        if run(n).await["status"] == "completed" {
            closed = true;
            break;
        }
    }
    assert!(closed, "no probe went through");
    let closed = entries_once(&s, &admin, "breaker_closed", 1).await;
    assert_eq!(closed["items"][0]["payload"]["integration_id"], id.as_str());
    assert_eq!(entries(&s, &admin, "breaker_opened").await["total"], 1);
}

/// A preflight from `origin`.
async fn preflight(s: &Server, origin: &str) -> reqwest::Response {
    s.http
        .request(Method::OPTIONS, s.url("/api/tasks"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight")
}

/// Assert the security headers every response carries.
#[track_caller]
fn assert_security_headers(headers: &reqwest::header::HeaderMap, https: bool) {
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(
        headers.contains_key("strict-transport-security"),
        https,
        "{headers:?}"
    );
}

async fn cors_answers_allowed_origins_and_headers_are_always_sent(b: Backend) {
    const ALLOWED: &str = "https://app.example.com";
    let s = Server::start_with(
        b,
        &[
            (
                "VEL_CORS_ALLOWED_ORIGINS",
                "https://app.example.com, http://localhost:3000",
            ),
            ("VEL_HTTPS", "true"),
        ],
    )
    .await;
    let allowed = preflight(&s, ALLOWED).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(headers.contains("authorization"), "{headers}");
    assert_security_headers(h, true);

    let refused = preflight(&s, "https://evil.example").await;
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin"),
        "{:?}",
        refused.headers()
    );

    // An actual request from an allowed origin, and its error responses.
    let admin = s.admin_token().await;
    let ok = s
        .http
        .get(s.url("/api/users/me"))
        .bearer_auth(&admin)
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ALLOWED);
    assert_security_headers(ok.headers(), true);
    for (path, status) in [
        ("/api/users/me", 401),
        ("/api/nowhere", 404),
        ("/api/health", 200),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_security_headers(r.headers(), true);
        assert!(!r.headers().contains_key("access-control-allow-origin"));
    }

    // By default: no CORS at all, no HSTS, the other headers still there.
    let plain = Server::start(b).await;
    let r = preflight(&plain, ALLOWED).await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert_security_headers(r.headers(), false);
    let r = plain
        .http
        .get(plain.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_security_headers(r.headers(), false);
}

async fn json_logs_are_one_object_per_line(b: Backend) {
    let s = Server::start_with(b, &[("VEL_LOG_FORMAT", "json"), ("VEL_LOG", "info")]).await;
    s.http.get(s.url("/api/health")).send().await.unwrap();
    let log = s.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("vel serving")), "{log}");
}

dual_backend_tests!(
    audit_entries_past_their_retention_go,
    breakers_opening_and_closing_are_audited,
    cors_answers_allowed_origins_and_headers_are_always_sent,
    json_logs_are_one_object_per_line,
);
