//! Shared harness for the black-box suites: start the real `vel` binary on a
//! free loopback port with a temporary data directory and a fresh database
//! (a SQLite file, or a new PostgreSQL database on 127.0.0.1:5432 dropped
//! afterwards), talk to it over real HTTP, and kill it on drop.
//!
//! Suites include it with `#[path = "../support/mod.rs"] mod support;`.

#![allow(dead_code)]

pub(crate) mod guests;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

/// The maintenance database URL used to create and drop per-test databases.
pub(crate) const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL login the servers' tenant pools use: a member of `vel_app`
/// only, so it cannot act as `vel_platform`.
pub(crate) const TENANT_LOGIN: &str = "vel_test_tenant";

/// Create [`TENANT_LOGIN`] (and `vel_app`, which the first migration would
/// create) when absent. Roles are cluster-wide and tests run in parallel, so
/// each step tolerates losing the race.
const TENANT_LOGIN_SQL: &str = "
DO $$ BEGIN CREATE ROLE vel_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE vel_test_tenant LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN GRANT vel_app TO vel_test_tenant;
EXCEPTION WHEN OTHERS THEN NULL; END $$;";

/// Email of the platform admin every test server starts with.
pub(crate) const ADMIN_EMAIL: &str = "admin@test.local";
/// Its password.
pub(crate) const ADMIN_PASSWORD: &str = "AdminPassw0rd1";
/// A password that satisfies the policy, for test users.
pub(crate) const USER_PASSWORD: &str = "UserPassw0rd12";

/// The plugin compile cache every test server shares (under `target/`), so
/// the built-in components compile once for the whole suite, not per server.
pub(crate) fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("vel-plugin-cache")
}

/// A reqwest client builder. vel's reqwest brings TLS without a crypto
/// provider (`rustls-no-provider`, the ring provider rustls already has);
/// a process installs it once before building clients.
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the local PostgreSQL.
    Postgres,
}

/// Generate `mod NAME { sqlite(), postgres() }` test pairs for async fns
/// `NAME(Backend)`, so every test runs on both backends.
#[macro_export]
macro_rules! dual_backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A running `vel serve`.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Temporary data directory (removed on drop).
    pub data_dir: PathBuf,
    /// Backend in use.
    pub backend: Backend,
    /// Database URL the server uses.
    pub database_url: String,
    /// Name of the PostgreSQL database to drop on drop.
    pg_database: Option<String>,
    /// The environment it was started with.
    env: Vec<(String, String)>,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// A response: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Parsed body.
    pub body: Value,
}

impl Resp {
    /// Assert the status, printing the body when it differs.
    #[track_caller]
    pub(crate) fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Assert an error response with `status` and `code` in the one error
    /// shape (`details`), or, under `/v1`, in OpenAI's (`type`, `param`).
    #[track_caller]
    pub(crate) fn expect_error(self, status: u16, code: &str) -> Resp {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"].is_string(),
            "body: {}",
            self.body
        );
        let error = self.body["error"].as_object().expect("an error object");
        let vel = error.len() == 3 && error["details"].is_object();
        let openai = error.len() == 4 && error["type"].is_string() && error.contains_key("param");
        assert!(vel || openai, "body: {}", self.body);
        self
    }
}

impl Server {
    /// Start a server with the test defaults.
    pub(crate) async fn start(backend: Backend) -> Server {
        Server::start_with(backend, &[]).await
    }

    /// Start a server with extra environment variables (which override the defaults).
    pub(crate) async fn start_with(backend: Backend, extra_env: &[(&str, &str)]) -> Server {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("vel-test-{id}"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}?mode=rwc", data_dir.join("vel.db").display()),
                None,
            ),
            Backend::Postgres => {
                let name = format!("vel_test_{id}");
                let mut admin = PgConnection::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL must run on 127.0.0.1:5432 (trust auth, user postgres)");
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                admin
                    .execute(TENANT_LOGIN_SQL)
                    .await
                    .expect("create the tenant login");
                admin.close().await.ok();
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        let tenant_url = match &pg_database {
            Some(name) => format!("postgres://{TENANT_LOGIN}@127.0.0.1:5432/{name}"),
            None => String::new(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("VEL_LISTEN".into(), "127.0.0.1:0".into()),
            // On PostgreSQL tenant work logs in as a member of vel_app only,
            // as docs/security.md tells operators to (empty on SQLite: unset).
            ("VEL_TENANT_DATABASE_URL".into(), tenant_url),
            ("VEL_DATA_DIR".into(), data_dir.display().to_string()),
            ("DATABASE_URL".into(), database_url.clone()),
            ("VEL_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("VEL_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            // Cheap hashing keeps tests fast; production defaults are much stronger.
            ("VEL_ARGON2_MEMORY_KIB".into(), "64".into()),
            ("VEL_ARGON2_ITERATIONS".into(), "1".into()),
            ("VEL_LOGIN_ATTEMPTS_PER_MINUTE".into(), "1000".into()),
            ("VEL_LOG".into(), "warn".into()),
            // Tests create the integrations they need.
            ("VEL_DEMO_MOCK".into(), "false".into()),
            // Gateway requests are read back soon after they end, not after
            // the production linger of a second.
            ("VEL_USAGE_LINGER_MS".into(), "20".into()),
            // The mock upstreams listen on loopback, a restricted destination.
            (
                "VEL_OUTBOUND_ALLOW_PRIVATE".into(),
                "127.0.0.0/8,::1/128".into(),
            ),
            (
                "VEL_PLUGIN_CACHE_DIR".into(),
                plugin_cache_dir().display().to_string(),
            ),
        ];
        for (k, v) in extra_env {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let (child, base) = spawn(&env, &data_dir);
        Server {
            child,
            base,
            data_dir,
            backend,
            database_url,
            pg_database,
            env,
            http: http_client_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Kill the server with SIGKILL (no graceful shutdown) and wait for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the server again with the same environment and data (after
    /// [`Server::kill`] or [`Server::terminate`]); it gets a new port.
    pub(crate) fn restart(&mut self) {
        let (child, base) = spawn(&self.env, &self.data_dir);
        self.child = child;
        self.base = base;
    }

    /// Start the server again like [`Server::restart`], with `changes` made
    /// to its environment first (they stay for later restarts).
    pub(crate) fn restart_with(&mut self, changes: &[(&str, &str)]) {
        for (k, v) in changes {
            self.env.retain(|(name, _)| name != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        self.restart();
    }

    /// Run `vel ARGS` to its end with the server's environment (same
    /// database, data directory and keys).
    pub(crate) async fn run_cli(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vel"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run vel")
    }

    /// A second `vel serve` on the same database and secret key, with its
    /// own data directory and `extra_env`. The first server drops the
    /// database; drop the sibling first.
    pub(crate) fn sibling(&self, extra_env: &[(&str, &str)]) -> Server {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("vel-test-{id}"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        std::fs::copy(
            self.data_dir.join("secret.key"),
            data_dir.join("secret.key"),
        )
        .expect("copy the secret key");
        let mut env = self.env.clone();
        for (k, v) in [("VEL_DATA_DIR", data_dir.display().to_string())]
            .into_iter()
            .chain(extra_env.iter().map(|(k, v)| (*k, v.to_string())))
        {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v));
        }
        let (child, base) = spawn(&env, &data_dir);
        Server {
            child,
            base,
            data_dir,
            backend: self.backend,
            database_url: self.database_url.clone(),
            pg_database: None,
            env,
            http: self.http.clone(),
        }
    }

    /// Absolute URL of a path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send a request with an optional bearer token and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::finish(req).await
    }

    /// Create an `openai_compatible` integration called `name` pointing at
    /// `base_url` (a mock upstream's `…/v1`) with `api_key`, a default model
    /// of `gpt-4o-mini` and `timeout_ms`; returns its id.
    pub(crate) async fn upstream_integration(
        &self,
        token: &str,
        name: &str,
        base_url: &str,
        api_key: &str,
        timeout_ms: u64,
    ) -> String {
        self.integration(
            token,
            json!({ "name": name, "provider": "openai_compatible", "base_url": base_url,
                    "default_model": "gpt-4o-mini", "api_key": api_key, "timeout_ms": timeout_ms }),
        )
        .await
    }

    /// An integration of the offline `mock` provider called `name` (what an
    /// agent's `config.provider` may name); returns its id.
    pub(crate) async fn mock_integration(&self, token: &str, name: &str) -> String {
        self.integration(token, json!({ "name": name, "provider": "mock" }))
            .await
    }

    /// Create the integration `body` describes (201 expected); returns its id.
    pub(crate) async fn integration(&self, token: &str, body: Value) -> String {
        let created = self
            .post("/api/integrations", token, body)
            .await
            .expect(201);
        created.body["id"]
            .as_str()
            .expect("integration id")
            .to_string()
    }

    /// An API key with `role` made by `token`'s holder; returns the key.
    pub(crate) async fn api_key(&self, token: &str, name: &str, role: &str) -> String {
        let r = self
            .post(
                "/api/api-keys",
                token,
                json!({ "name": name, "role": role }),
            )
            .await
            .expect(201);
        r.body["key"].as_str().expect("key").to_string()
    }

    /// Upload a plugin version (`POST /api/plugins{query}`, multipart).
    pub(crate) async fn upload_plugin(
        &self,
        token: &str,
        query: &str,
        component: Vec<u8>,
        manifest: &str,
    ) -> Resp {
        let form = reqwest::multipart::Form::new()
            .part(
                "component",
                reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"),
            )
            .text("manifest", manifest.to_string());
        let req = self
            .http
            .post(self.url(&format!("/api/plugins{query}")))
            .bearer_auth(token)
            .multipart(form);
        Self::finish(req).await
    }

    /// Send a raw body with an explicit content type.
    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::finish(req).await
    }

    async fn finish(req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    /// GET.
    pub(crate) async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON.
    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// PUT JSON.
    pub(crate) async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// PATCH JSON.
    pub(crate) async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// DELETE.
    pub(crate) async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// `GET /metrics` as `token` (a platform admin), as text.
    pub(crate) async fn metrics(&self, token: &str) -> String {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics text")
    }

    /// The raw text of task `id`'s event stream, read until it closes
    /// (after the terminal status): a finished task's whole history.
    /// `after` is sent as `Last-Event-ID`.
    pub(crate) async fn event_stream(&self, token: &str, id: &str, after: Option<i64>) -> String {
        let mut req = self
            .http
            .get(self.url(&format!("/api/tasks/{id}/stream")))
            .bearer_auth(token)
            .timeout(Duration::from_secs(60));
        if let Some(after) = after {
            req = req.header("Last-Event-ID", after.to_string());
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        resp.text().await.expect("stream body")
    }

    /// Submit the task `body` (201 expected), wait on its event stream
    /// until it ends, and return the task as then recorded.
    pub(crate) async fn finished_task(&self, token: &str, body: Value) -> Value {
        let created = self.post("/api/tasks", token, body).await.expect(201);
        let id = created.body["id"].as_str().expect("task id").to_string();
        self.event_stream(token, &id, None).await;
        self.get(&format!("/api/tasks/{id}"), token)
            .await
            .expect(200)
            .body
    }

    /// Workflow `id` once it has ended (completed, failed or cancelled),
    /// polled for up to 30 s (each poll a real request).
    pub(crate) async fn finished_workflow(&self, token: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let w = self
                .get(&format!("/api/workflows/{id}"), token)
                .await
                .expect(200)
                .body;
            if ["completed", "failed", "cancelled"].contains(&w["status"].as_str().unwrap_or("")) {
                return w;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "workflow never ended: {w}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Task `id` once it is recorded: a gateway request's task is written by
    /// the usage recorder after the request ends (the tests' servers write
    /// within ~20 ms); polled for up to 10 s.
    pub(crate) async fn recorded_task(&self, token: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(&format!("/api/tasks/{id}"), token).await;
            if r.status.as_u16() == 200 {
                return r.body;
            }
            assert_eq!(r.status.as_u16(), 404, "body: {}", r.body);
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway request {id} was not recorded; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Log in; returns the whole token response.
    /// Run `script` (Python, with the official OpenAI SDK) with this
    /// server's `/v1` base URL and then `args` (API keys, ids) as its
    /// arguments; it prints one JSON document, returned here (a failing
    /// script fails the test).
    pub(crate) async fn openai_sdk(&self, script: &str, args: &[&str]) -> Value {
        let output = tokio::process::Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(format!("{}/v1", self.base))
            .args(args)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .output()
            .await
            .expect("run python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the SDK script failed:\n{stderr}\nstdout: {stdout}\nserver stderr:\n{}",
            self.stderr()
        );
        serde_json::from_str(stdout.trim()).expect("JSON from the script")
    }

    pub(crate) async fn login_resp(&self, email: &str, password: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// Log in and return the token.
    pub(crate) async fn login(&self, email: &str, password: &str) -> String {
        let r = self.login_resp(email, password).await.expect(200);
        r.body["token"].as_str().expect("token").to_string()
    }

    /// The platform admin's token (acting in the `default` organization).
    pub(crate) async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Create a user with `role` in the caller's organization and return a token for them.
    pub(crate) async fn user_with_role(
        &self,
        admin_token: &str,
        email: &str,
        role: &str,
    ) -> String {
        self.member(admin_token, email, role).await.1
    }

    /// Create a user with `role` in the caller's organization; returns
    /// (user id, a token for them).
    pub(crate) async fn member(
        &self,
        admin_token: &str,
        email: &str,
        role: &str,
    ) -> (String, String) {
        let created = self
            .post(
                "/api/users",
                admin_token,
                json!({ "email": email, "password": USER_PASSWORD, "role": role }),
            )
            .await
            .expect(201);
        let id = created.body["id"].as_str().expect("user id").to_string();
        (id, self.login(email, USER_PASSWORD).await)
    }

    /// Create a second tenant with its own org_admin; returns (org id, that admin's token).
    pub(crate) async fn tenant(&self, admin_token: &str, name: &str) -> (String, String) {
        let org = self
            .post("/api/organizations", admin_token, json!({ "name": name }))
            .await
            .expect(201);
        let org_id = org.body["id"].as_str().expect("org id").to_string();
        let email = format!("owner@{name}.test");
        self.post(
            "/api/users",
            admin_token,
            json!({ "email": email, "password": USER_PASSWORD, "role": "org_admin", "org_id": org_id }),
        )
        .await
        .expect(201);
        (org_id, self.login(&email, USER_PASSWORD).await)
    }

    /// The server's stderr so far (for diagnostics).
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("stderr.log")).unwrap_or_default()
    }

    /// Files of the SQLite database (main file, WAL, shared memory) that exist.
    pub(crate) fn sqlite_files(&self) -> Vec<PathBuf> {
        ["vel.db", "vel.db-wal", "vel.db-shm"]
            .iter()
            .map(|f| self.data_dir.join(f))
            .filter(|p| Path::new(p).exists())
            .collect()
    }

    /// Stop the server with SIGTERM and wait; returns its exit status success.
    pub(crate) fn terminate(&mut self) -> bool {
        #[cfg(unix)]
        {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        #[cfg(not(unix))]
        {
            let _ = self.child.kill();
        }
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

/// Spawn `vel serve` with exactly `env`; wait for its `listening on` line.
fn spawn(env: &[(String, String)], data_dir: &Path) -> (Child, String) {
    let stderr_path = data_dir.join("stderr.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vel"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn vel");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first);
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("vel did not announce its address ({other:?}); stderr:\n{log}");
        }
    };
    let base = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
        .to_string();
    (child, base)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = self.pg_database.take() {
            // Drop runs outside async context guarantees: use a private runtime on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        if let Ok(mut admin) = PgConnection::connect(PG_ADMIN_URL).await {
                            let _ = admin
                                .execute(sqlx::AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                }
            })
            .join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The interpreter of the venv `.ci/run` prepares (`target/py`, with the
/// OpenAI SDK and openapi-spec-validator), or `VEL_TEST_PYTHON`.
pub(crate) fn python() -> PathBuf {
    if let Ok(p) = std::env::var("VEL_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let python = root.join("target/py/bin/python");
    assert!(
        python.exists(),
        "this test needs the Python tools .ci/run installs: run \
         `python3 -m venv target/py && target/py/bin/pip install openai openapi-spec-validator schemathesis openapi-python-client`, \
         or set VEL_TEST_PYTHON to an interpreter that has them; {} does not exist",
        python.display()
    );
    python
}
