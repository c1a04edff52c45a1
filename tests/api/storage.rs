//! What is actually stored: no secret in plain text, and PostgreSQL
//! row-level security enforcing tenancy under the server's role.

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::support::{Backend, Server};

const PASSWORD: &str = "PlainPassw0rdSecret";
const PROVIDER_KEY: &str = "sk-live-PROVIDERKEY-abcdef123456";

/// Every text value stored in the database, as one string.
async fn dump(s: &Server) -> Vec<u8> {
    match s.backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for file in s.sqlite_files() {
                bytes.extend(std::fs::read(file).unwrap());
            }
            bytes
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&s.database_url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let mut out = String::new();
            for t in tables {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT t::text FROM \"{t}\" t"
                )))
                .fetch_all(&mut conn)
                .await
                .unwrap();
                for r in rows {
                    out.push_str(&r.get::<String, _>(0));
                    out.push('\n');
                }
            }
            out.into_bytes()
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn no_secret_in_plain_text(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "plain@test.local", "password": PASSWORD }),
    )
    .await
    .expect(201);
    let integration = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "oa", "provider": "openai", "api_key": PROVIDER_KEY }),
        )
        .await
        .expect(201);
    let fingerprint = integration.body["key_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let api_key = s
        .post("/api/api-keys", &admin, json!({ "name": "k" }))
        .await
        .expect(201);
    let api_key = api_key.body["key"].as_str().unwrap().to_string();
    s.get("/api/agents", &api_key).await.expect(200);
    let webhook = s
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": "https://93.184.215.14/hook", "events": ["task.failed"] }),
        )
        .await
        .expect(201);
    let webhook_secret = webhook.body["secret"].as_str().unwrap().to_string();
    // Force SQLite to move the WAL into the main file is not needed: both are read.
    let stored = dump(&s).await;
    // The dump is real: it holds data we wrote.
    assert!(
        contains(&stored, "plain@test.local"),
        "dump does not contain the user"
    );
    assert!(
        contains(&stored, &fingerprint),
        "dump does not contain the fingerprint"
    );
    assert!(
        contains(&stored, "$argon2id$"),
        "passwords are not argon2id hashes"
    );
    assert!(
        !contains(&stored, PASSWORD),
        "password stored in plain text"
    );
    assert!(
        !contains(&stored, PROVIDER_KEY),
        "provider key stored in plain text"
    );
    assert!(!contains(&stored, &api_key), "API key stored in plain text");
    assert!(
        !contains(&stored, &api_key[4..]),
        "API key body stored in plain text"
    );
    assert!(
        !contains(&stored, crate::support::ADMIN_PASSWORD),
        "admin password stored in plain text"
    );
    assert!(
        !contains(&stored, &webhook_secret[6..]),
        "webhook secret stored in plain text"
    );
}

dual_backend_tests!(no_secret_in_plain_text);

/// Rows of `table` seen over `url` as `vel_app`, with `org` as the
/// transaction's organization and the old bypass setting switched on.
async fn count_as_app_role(url: &str, table: &str, org: Option<&str>) -> i64 {
    let mut c = PgConnection::connect(url).await.unwrap();
    c.execute("SET ROLE vel_app").await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("SELECT set_config('app.rls_bypass', 'on', true)")
        .await
        .unwrap();
    if let Some(org) = org {
        sqlx::query("SELECT set_config('app.org_id', $1, true)")
            .bind(org)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

/// Under the server's database role, rows are visible only inside their
/// organization's context, whatever the query says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_confines_the_app_role_postgres() {
    let s = Server::start(Backend::Postgres).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "alpha").await;
    let (org_b, _owner_b) = s.tenant(&admin, "beta").await;
    s.mock_integration(&owner_a, "openai").await;
    s.post(
        "/api/agents",
        &owner_a,
        json!({ "name": "a", "type": "researcher", "config": { "provider": "openai", "model": "m" } }),
    )
    .await
    .expect(201);
    let mut conn = PgConnection::connect(&s.database_url).await.unwrap();
    // As the owner (superuser) the row is there.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        count_as_app_role(&s.database_url, "agents", None).await,
        0,
        "no tenant context: nothing visible"
    );
    assert_eq!(
        count_as_app_role(&s.database_url, "agents", Some(&org_b)).await,
        0,
        "other tenant: nothing visible"
    );
    assert_eq!(
        count_as_app_role(&s.database_url, "agents", Some(&org_a)).await,
        1,
        "own tenant: visible"
    );
    // Writing into another tenant's organization is refused by the policy.
    let mut c = PgConnection::connect(&s.database_url).await.unwrap();
    c.execute("SET ROLE vel_app").await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)")
        .bind(&org_b)
        .execute(&mut *tx)
        .await
        .unwrap();
    let denied = sqlx::query(
        "INSERT INTO agents (id, org_id, name, agent_type, status, config, config_version, created_at, updated_at) \
         VALUES ('x', $1, 'n', 'researcher', 'active', '{}', 1, 0, 0)",
    )
    .bind(&org_a)
    .execute(&mut *tx)
    .await;
    assert!(denied.is_err(), "RLS let a row into another tenant");
}

/// The database URL of the login tenant work uses (`VEL_TENANT_DATABASE_URL`).
fn tenant_login_url(s: &Server) -> String {
    s.database_url
        .replace("postgres@", &format!("{}@", crate::support::TENANT_LOGIN))
}

/// Rows of `table` the tenant login sees (see [`count_as_app_role`]).
async fn seen_by_tenant_login(s: &Server, table: &str, org: Option<&str>) -> i64 {
    count_as_app_role(&tenant_login_url(s), table, org).await
}

/// Rows of `table` the owner sees.
async fn stored_rows(s: &Server, table: &str) -> i64 {
    let mut c = PgConnection::connect(&s.database_url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// The login tenant work uses (`VEL_TENANT_DATABASE_URL`) cannot become the
/// platform role, no session setting lifts the policies, and the tables
/// that belong to no tenant show it only its members and the bytes of the
/// plugins it can see: no password hash of another organization's users,
/// no logged-out token, no login counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_login_cannot_cross_tenants_postgres() {
    // A hook nobody listens on: a change of email is stored, its delivery fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/notify", closed.local_addr().unwrap());
    drop(closed);
    let s = Server::start_with(Backend::Postgres, &[("VEL_NOTIFY_URL", &hook)]).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "alpha").await;
    let (_org_b, owner_b) = s.tenant(&admin, "beta").await;
    for owner in [&owner_a, &owner_b] {
        s.mock_integration(owner, "mock").await;
        s.post(
            "/api/agents",
            owner,
            json!({ "name": "a", "type": "researcher", "config": { "provider": "mock", "model": "m" } }),
        )
        .await
        .expect(201);
    }
    let component = crate::support::guests::build_guest("vel-fixture-shout-provider", &[]);
    let manifest = crate::support::guests::manifest("shout", "1.0.0", "provider", "");
    s.upload_plugin(&owner_b, "", component, &manifest)
        .await
        .expect(201);
    // A logout and a failed login leave a revoked token and counters.
    let spare = s
        .login("owner@alpha.test", crate::support::USER_PASSWORD)
        .await;
    s.call(
        reqwest::Method::POST,
        "/api/auth/logout",
        Some(&spare),
        None,
    )
    .await
    .expect(204);
    s.login_resp("owner@alpha.test", "wrong-password-1")
        .await
        .expect(401);
    // A pending change of email.
    s.put(
        "/api/users/me",
        &owner_a,
        json!({ "email": "new-owner@alpha.test", "current_password": crate::support::USER_PASSWORD }),
    )
    .await
    .expect(202);

    // The login is not a member of the platform role.
    let mut c = PgConnection::connect(&tenant_login_url(&s)).await.unwrap();
    let refused = c.execute("SET ROLE vel_platform").await;
    assert!(refused.is_err(), "the tenant login became vel_platform");

    // Tenant tables: only the named organization's rows, bypass or not.
    assert_eq!(stored_rows(&s, "agents").await, 2);
    assert_eq!(seen_by_tenant_login(&s, "agents", None).await, 0);
    assert_eq!(seen_by_tenant_login(&s, "agents", Some(&org_a)).await, 1);
    // Accounts: the organization's members only, not B's owner.
    let mut owner = PgConnection::connect(&s.database_url).await.unwrap();
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
        .bind(&org_a)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert!(members >= 1);
    assert!(stored_rows(&s, "users").await > members);
    assert_eq!(seen_by_tenant_login(&s, "users", None).await, 0);
    assert_eq!(
        seen_by_tenant_login(&s, "users", Some(&org_a)).await,
        members
    );
    // Component bytes: no tenant reads them, whoever uploaded them.
    let mut tx = c.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE vel_app").await.unwrap();
    let read = tx.execute("SELECT bytes FROM plugin_blobs").await;
    assert!(read.is_err(), "the tenant login read component bytes");
    drop(tx);
    // Platform-only tables.
    for table in ["revoked_tokens", "rate_limit_hits", "email_changes"] {
        assert!(stored_rows(&s, table).await > 0, "{table} is empty");
        assert_eq!(
            seen_by_tenant_login(&s, table, Some(&org_a)).await,
            0,
            "{table}"
        );
    }
}

/// The tables and columns of one database after its migrations ran:
/// table → sorted column names (the migration bookkeeping left out).
async fn schema(s: &Server) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut schema = std::collections::BTreeMap::<String, Vec<String>>::new();
    let rows: Vec<(String, String)> = match s.backend {
        Backend::Sqlite => {
            let url = format!(
                "sqlite://{}?mode=ro",
                s.sqlite_files().first().expect("database file").display()
            );
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&s.database_url).await.unwrap();
            sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
    };
    for (table, column) in rows {
        if table != "_sqlx_migrations" {
            schema.entry(table).or_default().push(column);
        }
    }
    for columns in schema.values_mut() {
        columns.sort();
    }
    schema
}

/// SQLite and PostgreSQL have their own migrations; after them both
/// databases have the same tables with the same columns, so every store
/// query means the same on each.
#[tokio::test]
async fn both_databases_have_the_same_tables_and_columns() {
    let sqlite = Server::start(Backend::Sqlite).await;
    let postgres = Server::start(Backend::Postgres).await;
    let (lite, pg) = (schema(&sqlite).await, schema(&postgres).await);
    assert!(lite.len() > 10, "{lite:?}");
    let tables =
        |s: &std::collections::BTreeMap<String, Vec<String>>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(tables(&lite), tables(&pg), "tables differ");
    for (table, columns) in &lite {
        assert_eq!(Some(columns), pg.get(table), "columns of `{table}` differ");
    }
}

/// On SQLite, reading an organization's catalog (integrations, agents,
/// keys, members, organizations, the audit log) never waits for the one
/// write lock: with another connection holding it, every read still
/// answers. A read begun as a writing transaction would wait behind the
/// holder and fail once SQLite's busy timeout ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_do_not_wait_for_the_write_lock_sqlite() {
    use sqlx::SqliteConnection;

    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let integration = s.mock_integration(&admin, "reads").await;
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "Reader", "type": "researcher",
                    "config": { "provider": "mock", "model": "echo" } }),
        )
        .await
        .expect(201);
    let agent = agent.body["id"].as_str().unwrap().to_string();
    s.api_key(&admin, "reads", "viewer").await;
    let me = s.get("/api/users/me", &admin).await.expect(200);
    let org = me.body["org_id"].as_str().unwrap().to_string();

    let mut holder = SqliteConnection::connect(&s.database_url).await.unwrap();
    holder.execute("BEGIN IMMEDIATE").await.unwrap();
    for path in [
        "/api/integrations".to_string(),
        format!("/api/integrations/{integration}"),
        "/api/agents".to_string(),
        format!("/api/agents/{agent}"),
        format!("/api/agents/{agent}/history"),
        "/api/api-keys".to_string(),
        "/api/users".to_string(),
        "/api/audit-logs".to_string(),
        "/api/organizations".to_string(),
        format!("/api/organizations/{org}"),
        format!("/api/organizations/{org}/stream-failover"),
    ] {
        let r = s.get(&path, &admin).await;
        assert_eq!(
            r.status.as_u16(),
            200,
            "GET {path} with the write lock held: {}",
            r.body
        );
    }
    // A write waits for the lock as long as SQLite's busy timeout, then is
    // told the database is busy (503), not that the server broke.
    let body = json!({ "name": "Writer", "type": "researcher",
                       "config": { "provider": "mock", "model": "echo" } });
    let r = s.post("/api/agents", &admin, body.clone()).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.body);
    holder.execute("ROLLBACK").await.unwrap();
    s.post("/api/agents", &admin, body).await.expect(201);
}
