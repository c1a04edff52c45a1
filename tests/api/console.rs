//! The web console in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`) driven over WebDriver against a real
//! `vel serve` on each database. Signing in and out; the overview's
//! figures equal the API's; a task's status changing on its page without
//! a reload; approving a workflow's gate; a viewer offered no write
//! control and refused a forged one; a write without the CSRF token
//! refused; a second tenant seeing none of the first's data; an API
//! failure shown in words. Each test saves a screenshot under
//! `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Server, USER_PASSWORD};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a condition in the page may take to hold.
const PATIENCE: Duration = Duration::from_secs(20);

/// A headless Chromium session with its own chromedriver, ended on drop.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    /// Its own profile directory, which names its processes.
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    /// Ends the driver and the Chromium it started: killing the driver
    /// leaves Chromium running (re-parented), so the browser process is
    /// found by its own profile directory and killed too; its renderers
    /// end with it.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .status();
    }
}

/// A free loopback port (the driver binds it right after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Browser {
    /// A browser on `s`, `width` pixels wide.
    async fn open(s: &Server, width: u32) -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "the console tests need chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        );
        let port = free_port();
        let data = s.data_dir.join(format!("chromium-{port}"));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = serde_json::Map::new();
        let mut options = json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},900"), format!("--user-data-dir={}", data.display())]
        });
        if width < 500 {
            // A window is at least 500 pixels wide: a phone's viewport is emulated.
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": 800, "pixelRatio": 1.0 } });
        }
        caps.insert("goog:chromeOptions".into(), options);
        // The driver is up once it accepts a session (each try a real
        // connection; it refuses until it listens).
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver never started: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        Browser {
            client,
            driver,
            base: s.base.clone(),
            profile: data,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// Sign in through the form (the one on screen, if it is there).
    async fn sign_in(&self, email: &str, password: &str) {
        let here = self.client.current_url().await.unwrap();
        if here.path() != "/console/login" {
            self.goto("/console/login").await;
        }
        self.client
            .find(Locator::Id("email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_text("#who", "").await;
    }

    /// The text of the first element `css` selects.
    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Whether anything matches `css`.
    async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// Wait until an element `css` selects contains `text` (each check
    /// reads the live page).
    async fn wait_for_text(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(found) = el.text().await
                && found.contains(text)
            {
                return found;
            }
            if Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} never showed {text:?}; the page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's text.
    async fn body(&self) -> String {
        self.text("body").await
    }

    /// Save a screenshot as `target/console-screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The session cookie the browser holds.
    async fn session_cookie(&self) -> String {
        self.client
            .get_named_cookie("vel_session")
            .await
            .unwrap()
            .value()
            .to_string()
    }

    /// The CSRF token of the page's forms.
    async fn csrf(&self) -> String {
        self.client
            .find(Locator::Css("input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap()
    }
}

/// Where screenshots go: `target/console-screenshots`.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots")
}

fn tag(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// A form post as a browser sends it, with the session cookie.
async fn form_post(s: &Server, path: &str, cookie: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let resp = s
        .http
        .post(s.url(path))
        .header("cookie", format!("vel_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn approval_flow() -> Value {
    json!({
        "name": "publish",
        "start": "gate",
        "steps": {
            "gate": { "kind": "approval", "message": "Publish {{input.title}}?", "next": "publish",
                      "catch": [{ "errors": ["rejected"], "next": "shelved" }] },
            "publish": { "kind": "succeed", "output": "published {{input.title}}" },
            "shelved": { "kind": "succeed", "output": "shelved" }
        }
    })
}

/// Three tasks described `{what} {i}` finished through the offline
/// `mock` provider (its integration made here).
async fn three_finished_tasks(s: &Server, admin: &str, what: &str) {
    s.mock_integration(admin, "mock").await;
    for i in 0..3 {
        let t = s
            .finished_task(
                admin,
                json!({ "description": format!("{what} {i}"), "prompt": format!("hello {i}"), "cache": false,
                        "parameters": { "model": "mock/echo" } }),
            )
            .await;
        assert_eq!(t["status"], "completed", "{t}");
    }
}

/// Start the approval flow; returns its id once it waits at the gate.
async fn awaiting_gate(s: &Server, token: &str) -> String {
    let r = s
        .post(
            "/api/workflows",
            token,
            json!({ "definition": approval_flow(), "input": { "title": "Q3" } }),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let w = s
            .get(&format!("/api/workflows/{id}"), token)
            .await
            .expect(200)
            .body;
        if w["status"] == "awaiting_approval" {
            return id;
        }
        assert!(Instant::now() < deadline, "never reached the gate: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signing in sets an httpOnly, SameSite=Strict cookie; the pages need
/// it; signing out revokes the token, so the old cookie no longer works.
async fn sign_in_and_out(b: Backend) {
    let s = Server::start(b).await;
    let browser = Browser::open(&s, 1280).await;
    browser.goto("/console/tasks").await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/login", "signed out: {url}");
    // A wrong password is said so on the form.
    browser.sign_in_fails(ADMIN_EMAIL, "wrong-password-1").await;
    browser.goto("/console/tasks").await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Back where it was going.
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/tasks");
    assert_eq!(browser.text("h1").await, "Tasks");
    let cookie = browser
        .client
        .get_named_cookie("vel_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let token = cookie.value().to_string();
    // The cookie is the API's token: the API accepts it.
    s.get("/api/users/me", &token).await.expect(200);
    browser.goto("/console").await;
    browser.screenshot(&format!("sign-in-{}", tag(b))).await;
    browser
        .client
        .find(Locator::Css("header button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("h1", "Sign in").await;
    assert!(
        browser
            .client
            .get_named_cookie("vel_session")
            .await
            .is_err(),
        "the cookie is gone"
    );
    // Revoked: neither the API nor the console takes the old token.
    s.get("/api/users/me", &token)
        .await
        .expect_error(401, "unauthorized");
    let no_redirects = crate::support::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(s.url("/console"))
        .header("cookie", format!("vel_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        "/console/login?next=%2Fconsole"
    );
}

impl Browser {
    async fn sign_in_fails(&self, email: &str, password: &str) {
        self.goto("/console/login").await;
        self.client
            .find(Locator::Id("email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let said = self.wait_for_text("main [role=alert]", "").await;
        assert!(said.to_lowercase().contains("password"), "{said}");
    }
}

/// The overview's figures are the API's: today's tasks, success rate,
/// percentiles and spend, tasks per minute, the month's spend and budget,
/// open alerts.
async fn overview_matches_the_api(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    three_finished_tasks(&s, &admin, "overview").await;
    let me = s.get("/api/users/me", &admin).await.expect(200).body;
    let org = me["org_id"].as_str().unwrap().to_string();
    s.put(
        &format!("/api/budgets/organization/{org}/month"),
        &admin,
        json!({ "limit_usd": 250 }),
    )
    .await
    .expect(200);

    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console").await;
    browser.screenshot(&format!("overview-{}", tag(b))).await;
    let shown = |id: &'static str| {
        let browser = &browser;
        async move { browser.text(&format!("[data-metric={id}]")).await }
    };

    // What the API says, computed as the page does.
    let now = chrono::Utc::now();
    let day = now.format("%Y-%m-%dT00:00:00Z").to_string();
    let usage = s
        .get(
            &format!(
                "/api/analytics/usage?interval=day&from={day}&to={}",
                now.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &admin,
        )
        .await
        .expect(200)
        .body;
    let point = &usage["series"][0]["points"][0];
    assert_eq!(point["requests"], 3, "{usage}");
    assert_eq!(shown("today").await, "3");
    let rate = point["completed"].as_f64().unwrap() * 100.0 / point["requests"].as_f64().unwrap();
    assert_eq!(shown("success-rate").await, format!("{rate:.1}%"));
    for p in ["p50", "p95", "p99"] {
        let expected = match point["latency_ms"][p].as_f64() {
            Some(v) => format!("{v:.0} ms"),
            None => "—".to_string(),
        };
        assert_eq!(shown(p).await, expected, "{p}");
    }
    // Dollars as the page writes them: a plain decimal, no exponent.
    let cost = |v: &Value| {
        let s = format!("{:.9}", v.as_f64().unwrap());
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    assert_eq!(
        shown("spend-today").await,
        format!("${}", cost(&point["cost_usd"]))
    );
    // The three finished within the last hour.
    assert_eq!(shown("per-minute").await, format!("{:.2}", 3.0 / 60.0));
    let month = now.format("%Y-%m-01T00:00:00Z").to_string();
    let costs = s
        .get(&format!("/api/analytics/costs?from={month}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(
        shown("spend-month").await,
        format!("${}", cost(&costs["month_to_date_usd"]))
    );
    let budgets = s.get("/api/budgets", &admin).await.expect(200).body;
    let month_budget = budgets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["period"] == "month")
        .unwrap()
        .clone();
    assert_eq!(
        shown("spend-month-limit").await,
        format!("${}", cost(&month_budget["limit_usd"]))
    );
    let alerts = s
        .get("/api/alerts?acknowledged=false&limit=100", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(
        shown("open-alerts").await,
        alerts["items"].as_array().unwrap().len().to_string()
    );
    // The tasks page lists them, with the API's total.
    browser.goto("/console/tasks?q=overview").await;
    let total = s
        .get("/api/tasks?q=overview", &admin)
        .await
        .expect(200)
        .body["total"]
        .clone();
    assert_eq!(browser.text("#task-total").await, total.to_string());
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#tasks tbody tr"))
            .await
            .unwrap()
            .len(),
        3
    );
    browser.screenshot(&format!("tasks-{}", tag(b))).await;
}

/// A running task's page shows its new status when it changes, without a
/// reload (the page keeps a value set in it before the change).
async fn task_status_updates_live(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(
        &admin,
        "slow",
        &base_url,
        "sk-console-test-key-0123456789",
        60_000,
    )
    .await;
    let created = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "live", "prompt": "wait", "cache": false }),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    mock.wait_for_in_flight(1).await;

    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto(&format!("/console/tasks/{id}")).await;
    browser
        .wait_for_text("[data-field=status]", "in_progress")
        .await;
    assert!(browser.has("#task[data-live-src]").await);
    browser
        .client
        .execute("window.velMarker = 'still here';", vec![])
        .await
        .unwrap();
    s.post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    browser
        .wait_for_text("[data-field=status]", "cancelled")
        .await;
    let marker = browser
        .client
        .execute("return window.velMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("still here"), "the page was reloaded");
    // The part refreshed after the change has no cancel button any more.
    let deadline = Instant::now() + PATIENCE;
    while browser.has("#task button.danger").await {
        assert!(Instant::now() < deadline, "the cancel button stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.screenshot(&format!("task-live-{}", tag(b))).await;
}

/// An approver approves the gate from the workflow's page, with a
/// comment; the workflow goes on and the decision is recorded.
async fn approve_a_workflow_gate(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let id = awaiting_gate(&s, &admin).await;
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto(&format!("/console/workflows/{id}")).await;
    browser.wait_for_text("#gate", "Publish Q3?").await;
    assert!(browser.has("svg.graph g[data-step=gate].current").await);
    browser
        .screenshot(&format!("workflow-gate-{}", tag(b)))
        .await;
    browser
        .client
        .find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("ship it")
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("[data-field=status]", "completed")
        .await;
    let w = s.finished_workflow(&admin, &id).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["output"], "published Q3");
    assert_eq!(w["steps"][0]["decision"]["approved"], true, "{w}");
    assert_eq!(w["steps"][0]["decision"]["comment"], "ship it", "{w}");
    assert!(browser.body().await.contains("approved by"));
    browser
        .screenshot(&format!("workflow-done-{}", tag(b)))
        .await;
}

/// A viewer's pages offer no write control, and the server refuses the
/// write anyway (403, nothing changed); a write without the session's
/// CSRF token is refused even for an approver.
async fn viewers_and_forged_writes_are_refused(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.member(&admin, "viewer@x.test", "viewer").await;
    let id = awaiting_gate(&s, &admin).await;

    let viewer = Browser::open(&s, 1280).await;
    viewer.sign_in("viewer@x.test", USER_PASSWORD).await;
    viewer.goto(&format!("/console/workflows/{id}")).await;
    viewer.wait_for_text("#gate", "Publish Q3?").await;
    assert!(!viewer.has("#approve").await, "a viewer is offered approve");
    assert!(!viewer.has("#reject").await);
    viewer
        .goto("/console/plugins/default-router?scope=platform")
        .await;
    assert_eq!(viewer.text("h1").await, "default-router");
    assert!(
        !viewer.has("main form").await,
        "a viewer is offered a plugin action"
    );
    viewer.screenshot(&format!("viewer-{}", tag(b))).await;
    // The forged approval: the viewer's own session and CSRF token.
    let csrf = viewer.csrf().await;
    let cookie = viewer.session_cookie().await;
    let (status, page) = form_post(
        &s,
        &format!("/console/workflows/{id}/approve"),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("approve_workflows") || page.contains("permission"),
        "{page}"
    );
    // In the browser too: the refusal is a readable page.
    viewer
        .client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
             const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf'; i.value = arguments[1];
             f.appendChild(i); document.body.appendChild(f); f.submit();",
            vec![json!(format!("/console/workflows/{id}/approve")), json!(csrf)],
        )
        .await
        .unwrap();
    viewer.wait_for_text("h1", "Forbidden").await;

    // The admin's session without the CSRF token, or with the viewer's.
    let approver = Browser::open(&s, 1280).await;
    approver.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin_cookie = approver.session_cookie().await;
    let (status, page) = form_post(
        &s,
        &format!("/console/workflows/{id}/approve"),
        &admin_cookie,
        &[],
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("security token"), "{page}");
    let (status, _) = form_post(
        &s,
        &format!("/console/workflows/{id}/approve"),
        &admin_cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403, "another session's token");
    // Nothing was decided.
    let w = s
        .get(&format!("/api/workflows/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(w["status"], "awaiting_approval", "{w}");
}

/// A second tenant's admin sees none of the first tenant's tasks or
/// workflows, in lists or by address.
async fn a_second_tenant_sees_none_of_the_first(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let task = s
        .finished_task(
            &admin,
            json!({ "description": "first-tenant-secret", "prompt": "hi", "cache": false }),
        )
        .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    let workflow_id = awaiting_gate(&s, &admin).await;
    s.tenant(&admin, "second").await;

    let browser = Browser::open(&s, 1280).await;
    browser.sign_in("owner@second.test", USER_PASSWORD).await;
    browser.goto("/console/tasks").await;
    assert_eq!(browser.text("#task-total").await, "0");
    assert!(!browser.body().await.contains("first-tenant-secret"));
    browser.goto("/console/workflows").await;
    assert!(!browser.has("#workflows tbody tr").await);
    browser.goto(&format!("/console/tasks/{task_id}")).await;
    assert_eq!(browser.text("h1").await, "Not Found");
    assert!(!browser.body().await.contains("first-tenant-secret"));
    browser
        .goto(&format!("/console/workflows/{workflow_id}"))
        .await;
    assert_eq!(browser.text("h1").await, "Not Found");
    browser.goto("/console").await;
    assert_eq!(browser.text("[data-metric=today]").await, "0");
    browser
        .screenshot(&format!("second-tenant-{}", tag(b)))
        .await;
}

/// An API call that fails shows the API's reason in words, on a page
/// that still works (the filters stay), at 375 pixels wide.
async fn a_failed_call_shows_a_readable_error(b: Backend) {
    let s = Server::start(b).await;
    let browser = Browser::open(&s, 375).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/tasks?from=yesterday").await;
    let said = browser.text("main [role=alert]").await;
    assert!(said.starts_with("Bad Request"), "{said}");
    assert!(
        said.contains("from"),
        "the API's words name the field: {said}"
    );
    assert!(browser.has("form.filters").await, "the filters stay");
    let wide = browser
        .client
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap();
    assert_eq!(wide, json!(375));
    // The page fits the narrow screen: nothing wider than the window.
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "overflows by {overflow}"
    );
    browser
        .screenshot(&format!("error-narrow-{}", tag(b)))
        .await;
    browser.goto("/console/tasks/no-such-task").await;
    assert_eq!(browser.text("h1").await, "Not Found");
    assert!(browser.text("main [role=alert]").await.contains("task"));
}

impl Browser {
    /// Type `value` into the field `#id` (emptied first).
    async fn fill(&self, id: &str, value: &str) {
        let el = self.client.find(Locator::Id(id)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    /// Choose the option `value` of the select `#id`.
    async fn choose(&self, id: &str, value: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    /// Click the first element `css` selects.
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Click the first element `css` selects, a form's button, and wait
    /// until the page it loads is on screen (the old document is marked
    /// first, so text both pages show cannot stand in for the new one).
    async fn submit(&self, css: &str) {
        self.client
            .execute("window.__velOldPage = true;", vec![])
            .await
            .unwrap();
        self.click(css).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let old = self
                .client
                .execute(
                    "return window.__velOldPage === true || document.readyState !== 'complete';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool());
            if old == Some(false) {
                return;
            }
            assert!(Instant::now() < deadline, "{css} never loaded a page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's HTML.
    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }
}

const UPSTREAM_KEY: &str = "sk-console-upstream-key-0123456789";

/// Integrations from the page: create one (the key never shown again,
/// only its fingerprint), test it (the outcome the API recorded, passed
/// and then failed), edit it, disable and enable it; a refused form keeps
/// what was typed and says why.
async fn integrations_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    let base_url = format!("{}/v1", mock.base_url());
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/integrations").await;
    browser.fill("new-name", "upstream").await;
    browser.choose("new-provider", "openai_compatible").await;
    browser.fill("new-base-url", &base_url).await;
    browser.fill("new-model", "gpt-4o-mini").await;
    browser.fill("new-key", UPSTREAM_KEY).await;
    browser.click("#new-integration-submit").await;
    browser.wait_for_text("h1", "upstream").await;
    let list = s.get("/api/integrations", &admin).await.expect(200).body;
    let created = list["items"][0].clone();
    assert_eq!(created["name"], "upstream", "{list}");
    assert_eq!(created["base_url"], base_url.as_str());
    let id = created["id"].as_str().unwrap().to_string();
    let fingerprint = created["key_fingerprint"].as_str().unwrap();
    assert!(browser.body().await.contains(fingerprint));
    assert!(
        !browser.source().await.contains(UPSTREAM_KEY),
        "the key is shown"
    );
    assert_eq!(browser.text("#test-outcome").await, "Not tested yet.");

    // The test button: the outcome the API recorded.
    browser.click(r#"form[action$="/test"] button"#).await;
    browser.wait_for_text("#test-outcome", "passed").await;
    let i = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["last_test_result"]["ok"], true, "{i}");
    let latency = i["last_test_result"]["latency_ms"].to_string();
    assert!(
        browser
            .text("#test-outcome")
            .await
            .contains(&format!("in {latency} ms")),
        "{}",
        browser.text("#test-outcome").await
    );
    browser
        .screenshot(&format!("integration-tested-{}", tag(b)))
        .await;
    mock.set_default(Fault::Status(401));
    browser.click(r#"form[action$="/test"] button"#).await;
    browser.wait_for_text("#test-outcome", "failed").await;
    let i = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["last_test_result"]["ok"], false, "{i}");
    let kind = i["last_test_result"]["error"]["kind"].as_str().unwrap();
    assert!(browser.text("#test-outcome").await.contains(kind));
    mock.set_default(Fault::Ok);

    // Edit: a new default model and timeout; the key stays.
    browser.fill("edit-model", "gpt-4o").await;
    browser.fill("edit-timeout", "15000").await;
    browser.click("#edit-integration-submit").await;
    browser.wait_for_text("dl.facts", "15000").await;
    let i = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["default_model"], "gpt-4o");
    assert_eq!(i["timeout_ms"], 15000);
    assert_eq!(i["key_fingerprint"], fingerprint);
    // A timeout out of range: the API's words, the typed value kept.
    browser.fill("edit-timeout", "5").await;
    browser.click("#edit-integration-submit").await;
    let said = browser
        .wait_for_text("main [role=alert]", "timeout_ms")
        .await;
    assert!(
        said.starts_with("Unprocessable") || said.contains("422") || said.contains("must be"),
        "{said}"
    );
    let kept = browser
        .client
        .find(Locator::Id("edit-timeout"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("5"));

    // Disable, then enable.
    browser.goto(&format!("/console/integrations/{id}")).await;
    browser.click(r#"form[action$="/disable"] button"#).await;
    browser.wait_for_text(".actions", "Enable").await;
    let i = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["status"], "disabled");
    browser.click(r#"form[action$="/enable"] button"#).await;
    browser.wait_for_text(".actions", "Disable").await;
    let i = s
        .get(&format!("/api/integrations/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["status"], "active");

    // A second one of the same name: refused, what was typed kept.
    browser.goto("/console/integrations").await;
    browser.fill("new-name", "upstream").await;
    browser.choose("new-provider", "mock").await;
    browser.click("#new-integration-submit").await;
    let said = browser.wait_for_text("main [role=alert]", "exists").await;
    assert!(said.starts_with("Conflict"), "{said}");
    let kept = browser
        .client
        .find(Locator::Id("new-name"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("upstream"));
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#integrations tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Agents from the page: create one, dry-run it (the result the API
/// recorded: tokens, cost, the sample answer), edit it; a bad value is
/// the API's readable refusal.
async fn agents_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(&admin, "upstream", &base_url, UPSTREAM_KEY, 10_000)
        .await;
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/agents").await;
    browser.fill("new-name", "Coder").await;
    browser.choose("new-type", "code_generator").await;
    browser.fill("new-provider", "upstream").await;
    browser.fill("new-model", "gpt-4o").await;
    browser.fill("new-temperature", "0.3").await;
    browser.fill("new-system-prompt", "You write Rust.").await;
    browser.click("#new-agent-submit").await;
    browser.wait_for_text("h1", "Coder").await;
    let list = s.get("/api/agents", &admin).await.expect(200).body;
    let agent = list["items"][0].clone();
    assert_eq!(agent["config"]["model"], "gpt-4o", "{list}");
    assert_eq!(agent["config"]["temperature"], 0.3);
    assert_eq!(agent["config"]["system_prompt"], "You write Rust.");
    let id = agent["id"].as_str().unwrap().to_string();

    browser.click(r#"form[action$="/test"] button"#).await;
    browser.wait_for_text("#dry-run-outcome", "passed").await;
    let a = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200)
        .body;
    let test = &a["last_test"];
    assert_eq!(test["ok"], true, "{a}");
    let shown = browser.text("#dry-run").await;
    for field in ["input_tokens", "output_tokens"] {
        assert!(shown.contains(&test[field].to_string()), "{field}: {shown}");
    }
    assert_eq!(
        browser.text("#sample-output").await,
        test["sample_output"].as_str().unwrap()
    );
    browser
        .screenshot(&format!("agent-dry-run-{}", tag(b)))
        .await;

    // Edit: a new model is a new configuration version.
    browser.fill("edit-model", "gpt-4o-mini").await;
    browser.click("#edit-agent-submit").await;
    browser.wait_for_text("dl.facts", "gpt-4o-mini").await;
    let a = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(a["config"]["model"], "gpt-4o-mini");
    assert_eq!(a["config_version"], 2);
    // Out of range: refused in the API's words, nothing changed.
    browser.fill("edit-temperature", "7").await;
    browser.click("#edit-agent-submit").await;
    let said = browser
        .wait_for_text("main [role=alert]", "config.temperature")
        .await;
    assert!(said.starts_with("Unprocessable"), "{said}");
    let a = s
        .get(&format!("/api/agents/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(a["config"]["temperature"], 0.3);
}

/// API keys from the page: a new key is shown once (it works), never
/// again; revoking it stops it.
async fn api_keys_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/api-keys").await;
    browser.fill("key-name", "ci").await;
    browser.choose("key-role", "viewer").await;
    browser.click("#new-key-form-submit").await;
    let key = browser.wait_for_text("#new-key-value", "vel_").await;
    s.get("/api/agents", &key).await.expect(200);
    let list = s.get("/api/api-keys", &admin).await.expect(200).body;
    assert_eq!(list["items"][0]["role"], "viewer", "{list}");
    assert!(browser.text("#api-keys").await.contains("ci"));
    browser
        .screenshot(&format!("api-key-once-{}", tag(b)))
        .await;
    // Shown by a GET after a redirect: a reload asks nothing, posts
    // nothing, and shows the key no more (its one-time cookie is gone).
    let here = browser.client.current_url().await.unwrap();
    assert_eq!(here.path(), "/console/api-keys");
    assert!(
        browser
            .client
            .get_named_cookie("vel_new_key")
            .await
            .is_err(),
        "the one-time cookie outlived its page"
    );
    browser.client.refresh().await.unwrap();
    browser.wait_for_text("h1", "API keys").await;
    assert!(!browser.has("#new-key").await);
    assert!(
        !browser.source().await.contains(&key),
        "the key is shown again"
    );
    let list = s.get("/api/api-keys", &admin).await.expect(200).body;
    assert_eq!(list["total"], 1, "a reload made another key: {list}");
    // Never again.
    browser.goto("/console/api-keys").await;
    assert!(!browser.has("#new-key").await);
    assert!(
        !browser.source().await.contains(&key),
        "the key is shown again"
    );
    // The one-time cookie opens only in the session that made it.
    let session = browser.session_cookie().await;
    let csrf = browser.csrf().await;
    let raw = crate::support::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let made = raw
        .post(s.url("/console/api-keys"))
        .header("cookie", format!("vel_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&name=second&role=viewer"))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 303);
    assert_eq!(made.headers()["location"], "/console/api-keys");
    let sealed = made
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("vel_new_key="))
        .and_then(|c| c.split(';').next())
        .expect("the one-time cookie")
        .to_string();
    let other = s.admin_token().await;
    let page = |token: String| {
        let (raw, s, sealed) = (&raw, &s, &sealed);
        async move {
            raw.get(s.url("/console/api-keys"))
                .header("cookie", format!("vel_session={token}; {sealed}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(!page(other).await.contains("new-key-value"));
    assert!(page(session.clone()).await.contains("new-key-value"));
    let list = s.get("/api/api-keys", &admin).await.expect(200).body;
    let ci = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .and_then(|k| k["id"].as_str())
        .unwrap()
        .to_string();
    browser.goto("/console/api-keys").await;
    browser
        .click(&format!(
            r#"tr[data-key="{ci}"] form[action$="/revoke"] button"#
        ))
        .await;
    browser.wait_for_text("#api-keys", "revoked").await;
    s.get("/api/agents", &key)
        .await
        .expect_error(401, "unauthorized");
}

/// Members from the page: change a member's role, invite someone (the
/// token shown once, and it works), remove a member.
async fn members_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (viewer_id, _) = s.member(&admin, "viewer@x.test", "viewer").await;
    let me = s.get("/api/users/me", &admin).await.expect(200).body;
    let org = me["org_id"].as_str().unwrap().to_string();
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/members").await;
    assert!(browser.text("#members").await.contains("viewer@x.test"));
    assert!(browser.text("#roles").await.contains("agent_manager"));
    browser
        .choose(&format!("role-{viewer_id}"), "agent_manager")
        .await;
    browser
        .click(&format!(
            r#"form[action="/console/members/{viewer_id}/role"] button"#
        ))
        .await;
    let role_of = |members: &Value, id: &str| {
        members["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == id)
            .map(|m| m["role"].clone())
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let members = s
            .get(&format!("/api/organizations/{org}/members"), &admin)
            .await
            .expect(200)
            .body;
        if role_of(&members, &viewer_id) == Some(json!("agent_manager")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the role never changed: {members}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.goto("/console/members").await;
    browser.fill("invite-email", "new@x.test").await;
    browser.choose("invite-role", "task_executor").await;
    browser.click("#invite-submit").await;
    let token = browser.wait_for_text("#invitation-token", "vel_inv_").await;
    assert!(browser.text("#invitations").await.contains("new@x.test"));
    browser.screenshot(&format!("members-{}", tag(b))).await;
    let accepted = s
        .call(
            reqwest::Method::POST,
            "/api/invitations/accept",
            None,
            Some(json!({ "token": token, "password": USER_PASSWORD })),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(accepted["role"], "task_executor", "{accepted}");

    browser.goto("/console/members").await;
    // The page the removal loads, not the one it was clicked on (both say
    // "Members").
    browser
        .submit(&format!(
            r#"form[action="/console/members/{viewer_id}/remove"] button"#
        ))
        .await;
    browser.wait_for_text("h1", "Members").await;
    let members = s
        .get(&format!("/api/organizations/{org}/members"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(role_of(&members, &viewer_id), None, "{members}");
    assert!(!browser.text("#members").await.contains("viewer@x.test"));
}

/// A plugin from the page: upload a real component with its manifest
/// (activated), a second version, roll back, disable.
async fn plugin_upload_page(b: Backend) {
    use crate::support::guests::{FLIP_ROUTER, build_guest, manifest};
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let dir = s.data_dir.join("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    for (version, features) in [("1.0.0", &[][..]), ("2.0.0", &["v2"][..])] {
        std::fs::write(
            dir.join(format!("router-{version}.wasm")),
            build_guest(FLIP_ROUTER, features),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("router-{version}.toml")),
            manifest("flip-router", version, "router", ""),
        )
        .unwrap();
    }
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let upload = |version: &'static str| {
        let browser = &browser;
        let dir = dir.clone();
        async move {
            browser.goto("/console/plugins").await;
            let file = |ext: &str| {
                dir.join(format!("router-{version}.{ext}"))
                    .display()
                    .to_string()
            };
            browser
                .client
                .find(Locator::Id("upload-component"))
                .await
                .unwrap()
                .send_keys(&file("wasm"))
                .await
                .unwrap();
            browser
                .client
                .find(Locator::Id("upload-manifest"))
                .await
                .unwrap()
                .send_keys(&file("toml"))
                .await
                .unwrap();
            browser.choose("upload-scope", "organization").await;
            browser.choose("upload-activate", "true").await;
            browser.click("#upload-submit").await;
            browser.wait_for_text("#active-version", version).await;
        }
    };
    upload("1.0.0").await;
    assert_eq!(browser.text("h1").await, "flip-router");
    upload("2.0.0").await;
    let api = || {
        let (s, admin) = (&s, &admin);
        async move {
            s.get("/api/plugins/flip-router?scope=organization", admin)
                .await
                .expect(200)
                .body
        }
    };
    let p = api().await;
    assert_eq!(p["active_version"], "2.0.0", "{p}");
    let sha = p["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "2.0.0")
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(browser.text("#versions").await.contains(&sha));
    browser
        .screenshot(&format!("plugin-uploaded-{}", tag(b)))
        .await;
    browser.click(r#"form[action*="/rollback"] button"#).await;
    browser.wait_for_text("#active-version", "1.0.0").await;
    assert_eq!(api().await["active_version"], "1.0.0");
    browser.click(r#"form[action*="/disable"] button"#).await;
    browser.wait_for_text(".actions", "Enable").await;
    assert_eq!(api().await["status"], "disabled");
    // Other bytes under a version that exists: the API's reason, on the page.
    browser.goto("/console/plugins").await;
    browser
        .client
        .find(Locator::Id("upload-component"))
        .await
        .unwrap()
        .send_keys(&dir.join("router-2.0.0.wasm").display().to_string())
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("upload-manifest"))
        .await
        .unwrap()
        .send_keys(&dir.join("router-1.0.0.toml").display().to_string())
        .await
        .unwrap();
    browser.click("#upload-submit").await;
    let said = browser
        .wait_for_text("main [role=alert]", "immutable")
        .await;
    assert!(said.starts_with("Conflict"), "{said}");
}

/// A viewer is offered no write control on the new pages, and the server
/// refuses each write anyway, changing nothing.
async fn viewers_cannot_write_on_the_new_pages(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.member(&admin, "viewer@x.test", "viewer").await;
    let integration = s.mock_integration(&admin, "mock").await;
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "A", "type": "researcher", "config": { "provider": "mock", "model": "m" } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let viewer = Browser::open(&s, 1280).await;
    viewer.sign_in("viewer@x.test", USER_PASSWORD).await;
    let nav = viewer.text("header nav").await;
    assert!(
        nav.contains("Integrations") && nav.contains("Agents"),
        "{nav}"
    );
    assert!(
        !nav.contains("API keys") && !nav.contains("Members"),
        "{nav}"
    );
    for page in [
        "/console/integrations".to_string(),
        format!("/console/integrations/{integration}"),
        "/console/agents".to_string(),
        format!("/console/agents/{agent}"),
        "/console/plugins".to_string(),
        "/console/api-keys".to_string(),
        "/console/members".to_string(),
    ] {
        viewer.goto(&page).await;
        assert!(!viewer.has("main form").await, "{page} offers a form");
    }
    // Pages they may read offer them no creation form either.
    viewer.goto("/console/benchmarks").await;
    viewer.wait_for_text("h1", "Benchmarks").await;
    assert!(!viewer.has("#new-benchmark").await);
    viewer.goto("/console/costs").await;
    viewer.wait_for_text("h1", "Costs").await;
    assert!(!viewer.has("#set-budget").await);
    // The pages the viewer may not read say so.
    viewer.goto("/console/api-keys").await;
    assert!(
        viewer
            .text("main [role=alert]")
            .await
            .starts_with("Forbidden")
    );
    viewer.screenshot(&format!("viewer-keys-{}", tag(b))).await;
    viewer.goto("/console/integrations").await;
    let cookie = viewer.session_cookie().await;
    // The CSRF token of the viewer's session (from the sign-out form).
    let csrf = viewer.csrf().await;
    let forged: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/console/integrations".into(),
            vec![("name", "x"), ("provider", "mock")],
        ),
        (
            format!("/console/integrations/{integration}/disable"),
            vec![],
        ),
        (format!("/console/integrations/{integration}/test"), vec![]),
        (
            format!("/console/integrations/{integration}/delete"),
            vec![],
        ),
        (
            "/console/agents".into(),
            vec![
                ("name", "x"),
                ("type", "researcher"),
                ("provider", "mock"),
                ("model", "m"),
            ],
        ),
        (format!("/console/agents/{agent}/test"), vec![]),
        (format!("/console/agents/{agent}/delete"), vec![]),
        (
            "/console/api-keys".into(),
            vec![("name", "x"), ("role", "viewer")],
        ),
        (
            "/console/members/invite".into(),
            vec![("email", "y@x.test"), ("role", "viewer")],
        ),
        (
            "/console/members/roles".into(),
            vec![("name", "mine"), ("perm-view", "on")],
        ),
        (
            "/console/costs/budgets".into(),
            vec![
                ("scope", "organization"),
                ("period", "month"),
                ("limit_usd", "5"),
            ],
        ),
        (
            "/console/benchmarks".into(),
            vec![("suite", "reasoning"), ("targets", "mock/echo")],
        ),
    ];
    for (path, fields) in &forged {
        let mut all = fields.clone();
        all.push(("csrf", &csrf));
        let (status, page) = form_post(&s, path, &cookie, &all).await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("permission"), "{path}: {page}");
    }
    // A forged upload, too.
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .part(
            "component",
            reqwest::multipart::Part::bytes(b"\0asm".to_vec()).file_name("c.wasm"),
        )
        .part(
            "manifest",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("m.toml"),
        )
        .text("scope", "organization")
        .text("activate", "true");
    let resp = s
        .http
        .post(s.url("/console/plugins"))
        .header("cookie", format!("vel_session={cookie}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // Nothing changed.
    let i = s
        .get(&format!("/api/integrations/{integration}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(i["status"], "active");
    assert!(i["last_test_at"].is_null(), "{i}");
    assert_eq!(
        s.get("/api/integrations", &admin).await.expect(200).body["total"],
        1
    );
    let a = s
        .get(&format!("/api/agents/{agent}"), &admin)
        .await
        .expect(200)
        .body;
    assert!(a["last_test"].is_null(), "{a}");
    assert_eq!(
        s.get("/api/agents", &admin).await.expect(200).body["total"],
        1
    );
    assert_eq!(
        s.get("/api/api-keys", &admin).await.expect(200).body["total"],
        0
    );
    assert_eq!(
        s.get("/api/budgets", &admin).await.expect(200).body["items"],
        json!([])
    );
    assert_eq!(
        s.get("/api/benchmarks", &admin).await.expect(200).body["items"],
        json!([])
    );
    let me = s.get("/api/users/me", &admin).await.expect(200).body;
    let roles = s
        .get(
            &format!(
                "/api/organizations/{}/roles",
                me["org_id"].as_str().unwrap()
            ),
            &admin,
        )
        .await
        .expect(200)
        .body;
    assert!(
        roles["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["built_in"] == true),
        "{roles}"
    );
}

/// A second tenant's admin sees none of the first tenant's integrations,
/// agents, keys or members, in lists or by address.
async fn a_second_tenant_sees_none_of_the_new_pages(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let integration = s
        .integration(
            &admin,
            json!({ "name": "first-secret-integration", "provider": "mock" }),
        )
        .await;
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "first-secret-agent", "type": "researcher",
                    "config": { "provider": "first-secret-integration", "model": "m" } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.api_key(&admin, "first-secret-key", "viewer").await;
    s.member(&admin, "first-secret-member@x.test", "viewer")
        .await;
    s.tenant(&admin, "second").await;
    // At a phone's width: each page fits it.
    let browser = Browser::open(&s, 375).await;
    browser.sign_in("owner@second.test", USER_PASSWORD).await;
    for page in [
        "/console/integrations",
        "/console/agents",
        "/console/api-keys",
        "/console/members",
        "/console/performance",
        "/console/costs",
        "/console/benchmarks",
        "/console/organizations",
    ] {
        browser.goto(page).await;
        let source = browser.source().await;
        assert!(
            !source.contains("first-secret"),
            "{page} shows the first tenant's data"
        );
        let overflow = browser
            .client
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{page} overflows by {overflow}"
        );
    }
    browser.goto("/console/members").await;
    assert!(browser.text("#members").await.contains("owner@second.test"));
    browser
        .goto(&format!("/console/integrations/{integration}"))
        .await;
    assert_eq!(browser.text("h1").await, "Not Found");
    browser.goto(&format!("/console/agents/{agent}")).await;
    assert_eq!(browser.text("h1").await, "Not Found");
    browser
        .screenshot(&format!("second-tenant-members-{}", tag(b)))
        .await;
}

/// The performance and costs pages show the analytics API's figures for
/// the chosen range, and their CSV holds what the page shows.
async fn performance_and_costs_pages(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    three_finished_tasks(&s, &admin, "perf").await;
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/performance").await;
    browser.choose("f-range", "hour").await;
    browser.submit("form.filters button").await;
    browser.wait_for_text("#providers", "mock").await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.query(), Some("range=hour"));
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let latency = s
        .get(&format!("/api/analytics/latency?from={from}"), &admin)
        .await
        .expect(200)
        .body;
    let row = &latency["items"][0];
    assert_eq!(row["requests"], 3, "{latency}");
    let cells: Vec<String> = {
        let mut out = Vec::new();
        for td in browser
            .client
            .find_all(Locator::Css("#providers tbody tr:first-child td"))
            .await
            .unwrap()
        {
            out.push(td.text().await.unwrap());
        }
        out
    };
    assert_eq!(cells[0], row["provider"].as_str().unwrap());
    assert_eq!(cells[2], "3");
    assert_eq!(
        cells[3],
        format!("{:.1}%", row["success_rate"].as_f64().unwrap() * 100.0)
    );
    browser.screenshot(&format!("performance-{}", tag(b))).await;
    // The CSV is the table.
    let cookie = browser.session_cookie().await;
    let href = browser
        .client
        .find(Locator::Css(r#"a[href*="table=providers"]"#))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let resp = s
        .http
        .get(s.url(&href))
        .header("cookie", format!("vel_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "Provider,Model,Requests,Success rate,Fallback rate,p50,p95,p99,Cost ($)"
    );
    assert_eq!(lines[1], cells.join(","));
    assert_eq!(lines.len(), 2, "{csv}");
    // The chart's points are the API's p50 and p95 per provider and minute.
    let usage = s
        .get(
            &format!("/api/analytics/usage?from={from}&interval=minute&group_by=provider"),
            &admin,
        )
        .await
        .expect(200)
        .body;
    let mut expected = Vec::new();
    for series in usage["series"].as_array().unwrap() {
        let provider = series["group"]["provider"].as_str().unwrap();
        for p in series["points"].as_array().unwrap() {
            for pct in ["p50", "p95"] {
                if let Some(v) = p["latency_ms"][pct].as_f64() {
                    expected.push(format!(
                        "{provider} {pct}|{}|{}",
                        p["start"].as_str().unwrap(),
                        number(v)
                    ));
                }
            }
        }
    }
    assert!(!expected.is_empty(), "{usage}");
    assert_eq!(
        chart_points(&browser, "latency-chart").await,
        sorted(expected)
    );
    assert!(browser.has("#latency-chart[role=img] > title").await);
    assert!(browser.has("#latency-chart[aria-labelledby] > desc").await);

    browser.goto("/console/costs?range=week").await;
    let costs = s
        .get(
            &format!(
                "/api/analytics/costs?from={}",
                (chrono::Utc::now() - chrono::Duration::days(7)).format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &admin,
        )
        .await
        .expect(200)
        .body;
    let provider = &costs["by_provider"][0];
    let shown = browser.text("#by-provider tbody tr:first-child").await;
    let cost = |v: &Value| {
        let s = format!("{:.9}", v.as_f64().unwrap());
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    assert_eq!(
        shown,
        format!(
            "{} {}",
            provider["name"].as_str().unwrap(),
            cost(&provider["cost_usd"])
        )
    );
    // The spend chart's points are the API's days.
    let expected = costs["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "spend|{}|{}",
                d["day"].as_str().unwrap(),
                number(d["cost_usd"].as_f64().unwrap())
            )
        })
        .collect();
    assert_eq!(
        chart_points(&browser, "spend-chart").await,
        sorted(expected)
    );
    assert!(browser.has("#spend-chart[role=img] > desc").await);
    browser.screenshot(&format!("costs-{}", tag(b))).await;
}

/// A number as the charts print it: as short as it reads exactly.
fn number(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The points of the chart `#id` as `series|x|value`, sorted.
async fn chart_points(browser: &Browser, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for g in browser
        .client
        .find_all(Locator::Css(&format!("#{id} g.series")))
        .await
        .unwrap()
    {
        let series = g.attr("data-series").await.unwrap().unwrap();
        for c in g.find_all(Locator::Css("circle")).await.unwrap() {
            out.push(format!(
                "{series}|{}|{}",
                c.attr("data-x").await.unwrap().unwrap(),
                c.attr("data-value").await.unwrap().unwrap()
            ));
        }
    }
    sorted(out)
}

/// A person in two organizations moves between them from the
/// organizations page: the password asked again, the old session revoked,
/// the pages then show the other organization's data only.
async fn organization_picker(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.member(&admin, "both@x.test", "agent_manager").await;
    s.integration(
        &admin,
        json!({ "name": "first-org-integration", "provider": "mock" }),
    )
    .await;
    let (second, owner) = s.tenant(&admin, "second").await;
    let invited = s
        .post(
            &format!("/api/organizations/{second}/invitations"),
            &owner,
            json!({ "email": "both@x.test", "role": "viewer" }),
        )
        .await
        .expect(201)
        .body;
    s.call(
        reqwest::Method::POST,
        "/api/invitations/accept",
        None,
        Some(json!({ "token": invited["token"], "password": USER_PASSWORD })),
    )
    .await
    .expect(200);
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in("both@x.test", USER_PASSWORD).await;
    let first = browser.text("#who").await;
    assert!(!first.contains(&second), "{first}");
    let old = browser.session_cookie().await;
    browser.goto("/console/organizations").await;
    assert!(browser.text("#organizations").await.contains("second"));
    browser.choose("switch-org", &second).await;
    browser.fill("switch-password", "not-the-password-1").await;
    browser.click("#switch-submit").await;
    let said = browser.wait_for_text("main [role=alert]", "password").await;
    assert!(said.starts_with("Unauthorized"), "{said}");
    browser.choose("switch-org", &second).await;
    browser.fill("switch-password", USER_PASSWORD).await;
    browser.click("#switch-submit").await;
    browser.wait_for_text("#who", &second).await;
    assert!(browser.text("#who").await.contains("viewer"));
    let new = browser.session_cookie().await;
    assert_eq!(
        s.get("/api/users/me", &new).await.expect(200).body["org_id"],
        second.as_str()
    );
    s.get("/api/users/me", &old)
        .await
        .expect_error(401, "unauthorized");
    browser.goto("/console/integrations").await;
    assert!(!browser.source().await.contains("first-org-integration"));
    browser
        .screenshot(&format!("organizations-{}", tag(b)))
        .await;
}

/// The benchmarks page lists a benchmark and shows its verdicts and
/// figures by target as the API reports them.
async fn benchmarks_page(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let created = s
        .post(
            "/api/benchmarks",
            &admin,
            json!({ "name": "speed", "prompts": ["one two", "three"],
                    "targets": ["mock/echo", "mock/slow"], "repetitions": 3,
                    "metadata": { "delay-ms": 40, "word-delay-ms": 0 } }),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + PATIENCE;
    let report = loop {
        let r = s
            .get(&format!("/api/benchmarks/{id}"), &admin)
            .await
            .expect(200)
            .body;
        if r["status"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "never finished: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["status"], "completed", "{report}");
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/benchmarks").await;
    assert!(browser.text("#benchmarks").await.contains("speed"));
    browser.click("#benchmarks a").await;
    browser.wait_for_text("h1", "speed").await;
    let verdicts = browser.text("#verdicts").await;
    for c in report["comparisons"].as_array().unwrap() {
        assert!(
            verdicts.contains(c["sentence"].as_str().unwrap()),
            "{c} not in {verdicts}"
        );
    }
    let targets = browser.text("#targets").await;
    for t in report["by_target"].as_array().unwrap() {
        let line = format!(
            "{} {} {}",
            t["target"].as_str().unwrap(),
            t["runs"],
            t["completed"]
        );
        assert!(targets.contains(&line), "{line} not in {targets}");
    }
    browser.screenshot(&format!("benchmark-{}", tag(b))).await;
}

/// A platform admin approves a tenant provider version's outbound hosts
/// from the plugins page (two tenants' versions await) and rejects the
/// other with a reason, which its organization then sees; the tenant's
/// admin is offered no such control, and an approval or rejection forged
/// from their session is refused (nothing changed).
async fn plugin_approvals_page(b: Backend) {
    use crate::support::guests::manifest;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (acme, owner) = s.tenant(&admin, "acme").await;
    let (beta, beta_owner) = s.tenant(&admin, "beta").await;
    let component = std::fs::read(
        vel_plugin_artifacts::hostile_path("outbound").expect("the outbound provider"),
    )
    .unwrap();
    let hosts = "[outbound]\nhosts = [\"api.example.test\"]\n";
    let mut ids = Vec::new();
    for token in [&owner, &beta_owner] {
        let up = s
            .upload_plugin(
                token,
                "",
                component.clone(),
                &manifest("hostile-outbound", "0.1.0", "provider", hosts),
            )
            .await
            .expect(201);
        assert_eq!(up.body["hosts_approved"], false, "{}", up.body);
        ids.push(up.body["id"].as_str().unwrap().to_string());
    }
    let pending = || {
        let (s, admin) = (&s, &admin);
        async move {
            let list = s.get("/api/plugin-approvals", admin).await.expect(200).body;
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    // The tenant's admin: no approvals, no control, a forged post refused.
    let tenant = Browser::open(&s, 1280).await;
    tenant.sign_in("owner@acme.test", USER_PASSWORD).await;
    tenant.goto("/console/plugins").await;
    tenant.wait_for_text("h1", "Plugins").await;
    assert!(
        !tenant.has("#approvals").await,
        "a tenant admin sees approvals"
    );
    assert!(!tenant.has(r#"form[action*="/plugin-approvals/"]"#).await);
    assert!(!tenant.body().await.contains("Awaiting approval"));
    let csrf = tenant.csrf().await;
    let cookie = tenant.session_cookie().await;
    let (status, page) = form_post(
        &s,
        &format!("/console/plugin-approvals/{}/approve", ids[1]),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403, "{page}");
    let (status, page) = form_post(
        &s,
        &format!("/console/plugin-approvals/{}/reject", ids[1]),
        &cookie,
        &[("csrf", &csrf), ("reason", "forged")],
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert_eq!(pending().await, ids, "a forged approval changed something");

    // The platform admin sees both, with the hosts, and approves one.
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto("/console/plugins").await;
    let table = browser
        .wait_for_text("#approvals", "api.example.test")
        .await;
    assert!(table.contains(&acme) && table.contains(&beta), "{table}");
    browser
        .screenshot(&format!("plugin-approvals-{}", tag(b)))
        .await;
    // Without the session's CSRF token, refused even for the admin.
    let admin_cookie = browser.session_cookie().await;
    let (status, _) = form_post(
        &s,
        &format!("/console/plugin-approvals/{}/approve", ids[1]),
        &admin_cookie,
        &[],
    )
    .await;
    assert_eq!(status, 403);
    browser
        .click(&format!(r#"tr[data-approval="{}"] button"#, ids[0]))
        .await;
    browser.wait_for_text("h1", "Plugins").await;
    let deadline = Instant::now() + PATIENCE;
    while pending().await.len() > 1 {
        assert!(Instant::now() < deadline, "the approval never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending().await, vec![ids[1].clone()]);
    let v = s
        .get("/api/plugins/hostile-outbound", &owner)
        .await
        .expect(200)
        .body;
    assert_eq!(v["versions"][0]["hosts_approved"], true, "{v}");
    browser.goto("/console/plugins").await;
    let table = browser.wait_for_text("#approvals", &beta).await;
    assert!(!table.contains(&acme), "{table}");

    // The other one rejected, with a reason typed: the queue is empty
    // (only the new page says so).
    browser
        .fill(
            &format!("reason-{}", ids[1]),
            "api.example.test is not ours",
        )
        .await;
    browser
        .click(&format!(
            r#"tr[data-approval="{}"] form.reject button"#,
            ids[1]
        ))
        .await;
    browser
        .wait_for_text("#no-approvals", "No version awaits approval")
        .await;
    assert!(pending().await.is_empty());
    let v = s
        .get("/api/plugins/hostile-outbound", &beta_owner)
        .await
        .expect(200)
        .body;
    assert_eq!(v["versions"][0]["approval"], "rejected", "{v}");
    assert_eq!(
        v["versions"][0]["rejection_reason"],
        "api.example.test is not ours"
    );
    let audit = s
        .get(
            "/api/audit-logs?action=plugin_version_rejected",
            &beta_owner,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    // Approving it now is refused in words.
    let (status, page) = form_post(
        &s,
        &format!("/console/plugin-approvals/{}/approve", ids[1]),
        &admin_cookie,
        &[("csrf", &browser.csrf().await)],
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("rejected"), "{page}");

    // Its organization sees it rejected, with the reason, and no activate
    // button.
    let tenant = Browser::open(&s, 1280).await;
    tenant.sign_in("owner@beta.test", USER_PASSWORD).await;
    tenant
        .goto("/console/plugins/hostile-outbound?scope=organization")
        .await;
    let row = tenant
        .wait_for_text(r#"tr[data-version="0.1.0"]"#, "rejected")
        .await;
    assert!(row.contains("api.example.test is not ours"), "{row}");
    assert!(
        !tenant
            .has(r#"tr[data-version="0.1.0"] form[action*="/activate"]"#)
            .await
    );
    tenant
        .screenshot(&format!("plugin-rejected-{}", tag(b)))
        .await;
}

impl Browser {
    /// The current value of the field `#id`.
    async fn value(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"))
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Whether the checkbox `#id` is ticked.
    async fn ticked(&self, id: &str) -> bool {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"))
            .is_selected()
            .await
            .unwrap()
    }
}

/// A role, a budget and a benchmark created from their pages, each then
/// read back from the API; each form refused once, keeping what was
/// typed and saying why (the API's words, naming the field).
async fn create_roles_budgets_and_benchmarks(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let me = s.get("/api/users/me", &admin).await.expect(200).body;
    let org = me["org_id"].as_str().unwrap().to_string();
    let browser = Browser::open(&s, 1280).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // A role: refused first (a name the API does not take), then made.
    browser.goto("/console/members").await;
    browser.fill("role-name", "Not A Name!").await;
    browser.fill("role-description", "reads the log").await;
    browser.click("#perm-view_audit_log").await;
    browser.click("#new-role-submit").await;
    let said = browser.wait_for_text("main [role=alert]", "name").await;
    assert!(said.starts_with("Unprocessable Entity"), "{said}");
    assert_eq!(browser.value("role-name").await, "Not A Name!");
    assert_eq!(browser.value("role-description").await, "reads the log");
    assert!(browser.ticked("perm-view_audit_log").await);
    assert!(!browser.ticked("perm-manage_users").await);
    browser.fill("role-name", "auditor").await;
    browser.click("#perm-view").await;
    browser.click("#new-role-submit").await;
    let row = browser
        .wait_for_text(r#"tr[data-role="auditor"]"#, "view_audit_log")
        .await;
    assert!(row.contains("reads the log"), "{row}");
    let roles = s
        .get(&format!("/api/organizations/{org}/roles"), &admin)
        .await
        .expect(200)
        .body;
    let auditor = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "auditor")
        .unwrap_or_else(|| panic!("no auditor: {roles}"))
        .clone();
    assert_eq!(auditor["permissions"], json!(["view", "view_audit_log"]));
    assert_eq!(auditor["description"], "reads the log");
    // The form is empty again on the new page.
    assert_eq!(browser.value("role-name").await, "");

    // A budget: refused (a negative limit), then set.
    browser.goto("/console/costs").await;
    assert!(!browser.has("#budgets").await, "a budget before any is set");
    // An agent's budget needs the agent's id: said without a call.
    browser.choose("budget-scope", "agent").await;
    browser.fill("budget-limit", "5").await;
    browser.click("#set-budget-submit").await;
    let said = browser
        .wait_for_text("main [role=alert]", "subject_id")
        .await;
    assert!(said.starts_with("Unprocessable Entity"), "{said}");
    assert_eq!(browser.value("budget-scope").await, "agent");
    assert_eq!(browser.value("budget-limit").await, "5");
    browser.choose("budget-scope", "organization").await;
    browser.choose("budget-period", "day").await;
    browser.fill("budget-limit", "-5").await;
    browser.choose("budget-kind", "soft").await;
    browser.fill("budget-alert-at", "0.5, 0.9").await;
    browser.click("#set-budget-submit").await;
    let said = browser
        .wait_for_text("main [role=alert]", "limit_usd")
        .await;
    assert!(said.starts_with("Unprocessable Entity"), "{said}");
    assert_eq!(browser.value("budget-limit").await, "-5");
    assert_eq!(browser.value("budget-period").await, "day");
    assert_eq!(browser.value("budget-kind").await, "soft");
    assert_eq!(browser.value("budget-alert-at").await, "0.5, 0.9");
    s.get(&format!("/api/budgets/organization/{org}/day"), &admin)
        .await
        .expect_error(404, "not_found");
    browser.fill("budget-limit", "25").await;
    browser.click("#set-budget-submit").await;
    let table = browser.wait_for_text("#budgets", "organization").await;
    assert!(table.contains("25") && table.contains("soft"), "{table}");
    let budget = s
        .get(&format!("/api/budgets/organization/{org}/day"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(budget["limit_usd"], 25.0, "{budget}");
    assert_eq!(budget["hard"], false);
    assert_eq!(budget["alert_at"], json!([0.5, 0.9]));

    // A benchmark: refused (a target that is no integration/model), then
    // started; its page follows.
    browser.goto("/console/benchmarks").await;
    browser.fill("bench-name", "from the console").await;
    browser.fill("bench-prompts", "one two\nthree").await;
    browser.fill("bench-targets", "nonsense").await;
    browser.fill("bench-repetitions", "1").await;
    browser.click("#new-benchmark-submit").await;
    let said = browser.wait_for_text("main [role=alert]", "targets").await;
    assert!(said.starts_with("Unprocessable Entity"), "{said}");
    assert_eq!(browser.value("bench-targets").await, "nonsense");
    assert_eq!(browser.value("bench-prompts").await, "one two\nthree");
    assert_eq!(
        s.get("/api/benchmarks", &admin).await.expect(200).body["items"],
        json!([])
    );
    browser.fill("bench-targets", "mock/echo\nmock/slow").await;
    browser.click("#new-benchmark-submit").await;
    browser.wait_for_text("h1", "from the console").await;
    let list = s.get("/api/benchmarks", &admin).await.expect(200).body;
    let made = &list["items"][0];
    assert_eq!(made["name"], "from the console", "{list}");
    assert_eq!(made["targets"], json!(["mock/echo", "mock/slow"]));
    assert_eq!(made["runs"], 4, "{made}");
    browser
        .screenshot(&format!("benchmark-created-{}", tag(b)))
        .await;
}

/// What has the keyboard focus: its id, its text, and its outline
/// (computed style) as `style width`.
#[derive(Debug)]
struct Focused {
    id: String,
    text: String,
    outline: String,
}

impl Browser {
    /// Press `key` (a [`fantoccini::key::Key`]) on whatever has the focus,
    /// as a person's keyboard would.
    async fn press(&self, key: fantoccini::key::Key) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let value: char = key.into();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Type `text` into whatever has the focus.
    async fn type_text(&self, text: &str) {
        self.client
            .active_element()
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// The element with the focus.
    async fn focused(&self) -> Focused {
        let el = self.client.active_element().await.unwrap();
        let style = el.css_value("outline-style").await.unwrap();
        let width = el.css_value("outline-width").await.unwrap();
        Focused {
            id: el.attr("id").await.unwrap().unwrap_or_default(),
            text: el.text().await.unwrap_or_default(),
            outline: format!("{style} {width}"),
        }
    }

    /// Tab until the element `#id` has the focus (at most `max` presses);
    /// each element passed on the way, in order.
    async fn tab_to(&self, id: &str, max: usize) -> Vec<Focused> {
        let mut passed = Vec::new();
        for _ in 0..max {
            self.press(fantoccini::key::Key::Tab).await;
            let now = self.focused().await;
            if now.id == id {
                return passed;
            }
            passed.push(now);
        }
        panic!("#{id} never took the focus; tabbed through {passed:?}");
    }
}

/// The console by keyboard alone: signing in (the email field has the
/// focus, Tab to the password, Enter submits), Tab reaching the skip link
/// and then the navigation in its order, each focused control drawn with
/// a visible outline; on the members page Tab reaches the new role's
/// fields, Space ticks a permission, Tab reaches its button and Enter
/// creates the role (read back from the API).
async fn keyboard_only(b: Backend) {
    use fantoccini::key::Key;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let browser = Browser::open(&s, 1280).await;
    browser.goto("/console/login").await;
    assert_eq!(browser.focused().await.id, "email");
    browser.type_text(ADMIN_EMAIL).await;
    browser.press(Key::Tab).await;
    let password = browser.focused().await;
    assert_eq!(password.id, "password");
    assert_eq!(password.outline, "solid 3px", "{password:?}");
    browser.type_text(ADMIN_PASSWORD).await;
    browser.press(Key::Enter).await;
    browser.wait_for_text("#who", "").await;
    assert_eq!(browser.text("h1").await, "Overview");

    // From the top of the overview: the skip link, the brand, then the
    // navigation in its order, each with the focus outline.
    browser.press(Key::Tab).await;
    let skip = browser.focused().await;
    assert_eq!(skip.text, "Skip to content", "{skip:?}");
    assert_eq!(skip.outline, "solid 3px", "{skip:?}");
    browser.press(Key::Tab).await;
    assert_eq!(browser.focused().await.text, "vel");
    let nav = browser.text("header nav").await;
    let links: Vec<&str> = nav
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(links.len() > 5 && links[0] == "Overview", "{nav}");
    for link in &links {
        browser.press(Key::Tab).await;
        let f = browser.focused().await;
        assert_eq!(&f.text, link, "{f:?}");
        assert_eq!(f.outline, "solid 3px", "{f:?}");
    }
    // Enter follows the focused link: the last one is Members.
    assert_eq!(links.last(), Some(&"Members"));
    browser.press(Key::Enter).await;
    browser.wait_for_text("h1", "Members and roles").await;

    // The new role's form by keyboard.
    browser.tab_to("role-name", 200).await;
    assert_eq!(browser.focused().await.outline, "solid 3px");
    browser.type_text("kbd-role").await;
    browser.press(Key::Tab).await;
    assert_eq!(browser.focused().await.id, "role-description");
    browser.type_text("typed only").await;
    browser.press(Key::Tab).await;
    let first = browser.focused().await;
    assert_eq!(first.id, "perm-view", "{first:?}");
    assert_eq!(first.outline, "solid 3px", "{first:?}");
    browser.press(Key::Space).await;
    assert!(browser.ticked("perm-view").await);
    let between = browser.tab_to("new-role-submit", 30).await;
    let ids: Vec<&str> = between.iter().map(|f| f.id.as_str()).collect();
    assert!(
        ids.iter().all(|id| id.starts_with("perm-")),
        "between the first permission and the button: {ids:?}"
    );
    assert_eq!(browser.focused().await.outline, "solid 3px");
    browser
        .screenshot(&format!("keyboard-focus-{}", tag(b)))
        .await;
    browser.press(Key::Enter).await;
    browser
        .wait_for_text(r#"tr[data-role="kbd-role"]"#, "typed only")
        .await;
    let me = s.get("/api/users/me", &admin).await.expect(200).body;
    let roles = s
        .get(
            &format!(
                "/api/organizations/{}/roles",
                me["org_id"].as_str().unwrap()
            ),
            &admin,
        )
        .await
        .expect(200)
        .body;
    let made = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "kbd-role")
        .unwrap_or_else(|| panic!("no kbd-role: {roles}"))
        .clone();
    assert_eq!(made["permissions"], json!(["view"]), "{made}");
}

dual_backend_tests!(
    keyboard_only,
    create_roles_budgets_and_benchmarks,
    plugin_approvals_page,
    benchmarks_page,
    organization_picker,
    integrations_page,
    agents_page,
    api_keys_page,
    members_page,
    plugin_upload_page,
    viewers_cannot_write_on_the_new_pages,
    a_second_tenant_sees_none_of_the_new_pages,
    performance_and_costs_pages,
);

dual_backend_tests!(
    sign_in_and_out,
    overview_matches_the_api,
    task_status_updates_live,
    approve_a_workflow_gate,
    viewers_and_forged_writes_are_refused,
    a_second_tenant_sees_none_of_the_first,
    a_failed_call_shows_a_readable_error,
);
