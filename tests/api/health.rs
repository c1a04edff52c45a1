//! `GET /api/health`.

use reqwest::Method;
use sqlx::{Connection, Executor, PgConnection};

use crate::support::{Backend, PG_ADMIN_URL, Server};

async fn healthy(b: Backend) {
    let s = Server::start(b).await;
    // Anonymous callers, and callers who are not platform admins, get the
    // status alone: the checks summarise every tenant's integrations.
    let r = s
        .call(Method::GET, "/api/health", None, None)
        .await
        .expect(200);
    assert_eq!(
        r.body,
        serde_json::json!({ "status": "healthy", "failing": [] })
    );
    let admin = s.admin_token().await;
    let viewer = s
        .user_with_role(&admin, "viewer@health.test", "viewer")
        .await;
    let r = s
        .call(Method::GET, "/api/health", Some(&viewer), None)
        .await
        .expect(200);
    assert_eq!(
        r.body,
        serde_json::json!({ "status": "healthy", "failing": [] })
    );
    let r = s
        .call(Method::GET, "/api/health", Some(&admin), None)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "healthy");
    assert_eq!(r.body["checks"]["database"]["status"], "ok");
    let plugins = &r.body["checks"]["plugin_runtime"];
    assert_eq!(plugins["status"], "ok", "{plugins}");
    let detail = plugins["detail"].as_str().unwrap();
    assert!(
        detail.contains("default-router planned mock/echo"),
        "{detail}"
    );
    // No integration yet: reported, and not a reason to be unhealthy.
    assert_eq!(r.body["checks"]["providers"]["status"], "not_configured");
    assert!(r.body["uptime_seconds"].is_u64());
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.body["failing"].as_array().unwrap().len(), 0);
    let backend = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(r.body["database_backend"], backend);
}

/// With its database gone the server answers 503 naming the database.
/// PostgreSQL only: an open SQLite file cannot be taken away from a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_when_database_is_down_postgres() {
    let s = Server::start(Backend::Postgres).await;
    s.call(Method::GET, "/api/health", None, None)
        .await
        .expect(200);
    let db = s.database_url.rsplit('/').next().unwrap().to_string();
    let mut admin = PgConnection::connect(PG_ADMIN_URL).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        )))
        .await
        .unwrap();
    let r = s
        .call(Method::GET, "/api/health", None, None)
        .await
        .expect(503);
    assert_eq!(r.body["status"], "unhealthy");
    assert_eq!(r.body["failing"], serde_json::json!(["database"]));
    // The details are a platform admin's, who cannot be authenticated
    // while the database is away.
    assert!(r.body.get("checks").is_none(), "{}", r.body);
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"
        )))
        .await
        .unwrap();
    let r = s
        .call(Method::GET, "/api/health", None, None)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "healthy");
}

dual_backend_tests!(healthy);
