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
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
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
    s.mock_integration(&admin, "mock").await;
    for i in 0..3 {
        let t = s
            .finished_task(
                &admin,
                json!({ "description": format!("overview {i}"), "prompt": format!("hello {i}"), "cache": false }),
            )
            .await;
        assert_eq!(t["status"], "completed", "{t}");
    }
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

dual_backend_tests!(
    sign_in_and_out,
    overview_matches_the_api,
    task_status_updates_live,
    approve_a_workflow_gate,
    viewers_and_forged_writes_are_refused,
    a_second_tenant_sees_none_of_the_first,
    a_failed_call_shows_a_readable_error,
);
