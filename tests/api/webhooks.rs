//! Webhooks: a real receiver on 127.0.0.1 verifies every delivery's
//! signature; a delivery that fails is retried with back-off and logged,
//! and reaches the receiver once with the same event id; one that gets no
//! answer times out, is retried, and its webhook is disabled with an
//! alert (itself an `alert.raised` event); events queued before a SIGKILL
//! are delivered after the restart; restricted destinations are refused
//! without the operator's setting; the secret is shown once; bad input is
//! a 4xx.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::support::guests::{build_guest, manifest};
use crate::support::{Backend, Server};

/// The operator settings the delivery tests run with: loopback receivers
/// over plain HTTP, quick retries.
pub(crate) const LOCAL: [(&str, &str); 4] = [
    ("VEL_WEBHOOK_ALLOW_HTTP", "true"),
    ("VEL_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8"),
    ("VEL_WEBHOOK_RETRY_BASE_MS", "50"),
    ("VEL_WEBHOOK_RETRY_MAX_MS", "200"),
];

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// `X-Vel-Event`.
    pub(crate) event: String,
    /// `X-Vel-Event-Id`.
    pub(crate) event_id: String,
    /// `X-Vel-Signature`.
    pub(crate) signature: String,
    /// The raw body.
    pub(crate) body: Bytes,
    /// What the receiver answered (0: nothing).
    pub(crate) answered: u16,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Never: the request hangs.
    Never,
}

/// A receiver on `listener`: every request goes to the channel, then is
/// answered as `answer` says.
fn receive_on(
    listener: tokio::net::TcpListener,
    answer: Answer,
) -> mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (tx, seen) = (tx.clone(), seen.clone());
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let code = match answer {
                    Answer::FailFirst(k) if n < k => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::OK,
                };
                let silent = matches!(answer, Answer::Never);
                let received = Received {
                    event: header("x-vel-event"),
                    event_id: header("x-vel-event-id"),
                    signature: header("x-vel-signature"),
                    body,
                    answered: if silent { 0 } else { code.as_u16() },
                };
                tx.send(received).ok();
                if silent {
                    std::future::pending::<()>().await;
                }
                (
                    code,
                    format!("attempt {} answered {}", n + 1, code.as_u16()),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    rx
}

/// A receiver on a free loopback port; its URL.
pub(crate) async fn receiver(answer: Answer) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    (url, receive_on(listener, answer))
}

/// The next request the receiver gets (failing after `secs`).
pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<Received>, secs: u64) -> Received {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("no delivery arrived in time")
        .expect("the receiver stopped")
}

/// The receiver's check: `t=<unix>,v1=<hex>` where the hex is
/// HMAC-SHA256 of `"<t>.<body>"` under the secret, `t` within five
/// minutes of now. Written here independently of the server's code.
pub(crate) fn signature_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    v1.contains(&expected)
}

/// Run `statement` on the server's database (ids are formatted in by the
/// callers: test values only).
async fn sql(s: &Server, statement: &str) -> u64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let done = sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    db.close().await.unwrap();
    done.rows_affected()
}

/// One number from `query` on the server's database.
async fn sql_count(s: &Server, query: &str) -> i64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_one(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    db.close().await.unwrap();
    n
}

/// Unix ms now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A resource's JSON once `done` holds for it (polled for up to 30 s).
async fn get_once(s: &Server, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = s.get(path, token).await.expect(200).body;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create a webhook; returns (id, secret).
pub(crate) async fn webhook(
    s: &Server,
    token: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let r = s
        .post(
            "/api/webhooks",
            token,
            json!({ "url": url, "events": events }),
        )
        .await
        .expect(201);
    (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    )
}

/// Queue a test event; returns its id.
async fn test_event(s: &Server, token: &str, id: &str) -> String {
    let r = s
        .post(&format!("/api/webhooks/{id}/test"), token, json!({}))
        .await
        .expect(202);
    r.body["event_id"].as_str().unwrap().to_string()
}

/// The webhook's deliveries once `done` holds for them (polled for up to
/// 30 s: the log is written after the receiver is called).
async fn deliveries_once(
    s: &Server,
    token: &str,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = s
            .get(&format!("/api/webhooks/{id}/deliveries?limit=100"), token)
            .await
            .expect(200);
        let items = r.body["items"].as_array().unwrap().clone();
        if done(&items) {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deliveries never got there: {}\nstderr:\n{}",
            r.body,
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_delivery_is_signed_retried_and_logged(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(2)).await;
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    let (id, secret) = webhook(&s, &admin, &url, &["task.completed", "task.failed"]).await;

    let event_id = test_event(&s, &admin, &id).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut rx, 30).await);
    }
    for r in &got {
        assert_eq!(r.event, "webhook.test");
        assert_eq!(r.event_id, event_id, "every attempt carries the event's id");
        assert!(
            signature_valid(&secret, &r.signature, &r.body),
            "bad signature {}",
            r.signature
        );
        assert_eq!(r.json()["id"], event_id.as_str());
        assert_eq!(r.json()["type"], "webhook.test");
        assert_eq!(r.json()["data"]["webhook_id"], id.as_str());
    }
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(
        answered,
        [500, 500, 200],
        "delivered once, on the third attempt"
    );

    let items = deliveries_once(&s, &admin, &id, |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(items.len(), 1);
    let d = &items[0];
    assert_eq!(d["event_id"], event_id.as_str());
    assert_eq!(d["attempts"], 3);
    let log = d["log"].as_array().unwrap();
    let statuses: Vec<&str> = log.iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["http_error", "http_error", "delivered"], "{d}");
    let codes: Vec<i64> = log
        .iter()
        .map(|a| a["response_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["response_body"], "attempt 1 answered 500");
    assert!(log[0]["error"].as_str().unwrap().contains("500"));
    assert!(log.iter().all(|a| a["latency_ms"].as_i64().unwrap() >= 0));
    assert!(log[2]["error"].is_null());

    // A task completing is an event too, delivered once, signed.
    s.mock_integration(&admin, "mock").await;
    let task = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "hook", "prompt": "hello" }),
        )
        .await
        .expect(201);
    let task_id = task.body["id"].as_str().unwrap();
    let r = next(&mut rx, 30).await;
    assert_eq!(r.event, "task.completed");
    assert!(signature_valid(&secret, &r.signature, &r.body));
    let body = r.json();
    assert_eq!(body["data"]["task_id"], task_id);
    assert_eq!(body["data"]["status"], "completed");
    assert!(body["org_id"].is_string(), "{body}");
    assert_ne!(r.event_id, event_id);
    assert_eq!(r.answered, 200);
}

async fn a_receiver_that_never_answers_times_out_and_is_disabled(b: Backend) {
    let (silent, mut silent_rx) = receiver(Answer::Never).await;
    let (watcher, mut watcher_rx) = receiver(Answer::FailFirst(0)).await;
    let mut env = LOCAL.to_vec();
    env.extend([
        ("VEL_WEBHOOK_TIMEOUT_MS", "300"),
        ("VEL_WEBHOOK_RETRIES", "2"),
        ("VEL_WEBHOOK_DISABLE_AFTER", "1"),
    ]);
    let s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    let (id, _) = webhook(&s, &admin, &silent, &["task.completed"]).await;
    let (_, watcher_secret) = webhook(&s, &admin, &watcher, &["alert.raised"]).await;

    let event_id = test_event(&s, &admin, &id).await;
    // The first attempt and both retries reach the receiver.
    for _ in 0..3 {
        assert_eq!(next(&mut silent_rx, 30).await.event_id, event_id);
    }
    let items = deliveries_once(&s, &admin, &id, |d| {
        d.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let log = items[0]["log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{}", items[0]);
    for a in log {
        assert_eq!(a["status"], "timeout", "{a}");
        assert!(a["response_code"].is_null());
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("no answer within 300 ms"),
            "{a}"
        );
        assert!(a["latency_ms"].as_i64().unwrap() >= 300, "{a}");
    }

    // Its failed delivery disabled it, with an alert, which the other
    // webhook hears of.
    let w = s
        .get(&format!("/api/webhooks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(w["enabled"], false, "{w}");
    assert_eq!(w["consecutive_failures"], 1);
    assert!(w["disabled_reason"].as_str().unwrap().contains("failed"));
    let alerts = s
        .get("/api/alerts?kind=webhook_disabled", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts["items"][0]["subject"], id.as_str());
    let heard = next(&mut watcher_rx, 30).await;
    assert_eq!(heard.event, "alert.raised");
    assert!(signature_valid(
        &watcher_secret,
        &heard.signature,
        &heard.body
    ));
    assert_eq!(heard.json()["data"]["kind"], "webhook_disabled");
    assert_eq!(heard.json()["data"]["subject"], id.as_str());

    // A disabled webhook is sent nothing until enabled again.
    s.post(&format!("/api/webhooks/{id}/test"), &admin, json!({}))
        .await
        .expect_error(409, "webhook_disabled");
    let enabled = s
        .patch(
            &format!("/api/webhooks/{id}"),
            &admin,
            json!({ "enabled": true }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["consecutive_failures"], 0);
    assert!(enabled["disabled_reason"].is_null());
}

async fn deliveries_pending_at_a_sigkill_are_delivered_after_the_restart(b: Backend) {
    // The receiver's port, reserved and closed: the receiver is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut env = LOCAL.to_vec();
    env.extend([
        ("VEL_WEBHOOK_RETRIES", "20"),
        ("VEL_WEBHOOK_RETRY_MAX_MS", "1000"),
        ("VEL_TASK_LEASE_MS", "1000"),
    ]);
    let mut s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    let (id, secret) = webhook(&s, &admin, &url, &["task.completed"]).await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(test_event(&s, &admin, &id).await);
    }
    // Every one has failed at least once against the closed port.
    let items = deliveries_once(&s, &admin, &id, |d| {
        d.len() == 3
            && d.iter().all(|d| {
                d["status"] == "pending"
                    && d["log"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|a| a["status"] == "connect_error"))
            })
    })
    .await;
    assert_eq!(items.len(), 3);

    s.kill();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the receiver's port is free again");
    let mut rx = receive_on(listener, Answer::FailFirst(0));
    s.restart();

    let mut delivered = std::collections::BTreeSet::new();
    while delivered.len() < queued.len() {
        let r = next(&mut rx, 30).await;
        assert!(signature_valid(&secret, &r.signature, &r.body));
        assert!(queued.contains(&r.event_id), "unknown event {}", r.event_id);
        delivered.insert(r.event_id);
    }
    let admin = s.admin_token().await;
    deliveries_once(&s, &admin, &id, |d| {
        d.len() == 3 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
}

async fn workflow_and_budget_events_are_delivered(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let events = [
        "workflow.awaiting_approval",
        "workflow.completed",
        "budget.threshold",
        "alert.raised",
    ];
    let (_, secret) = webhook(&s, &admin, &url, &events).await;
    let mut seen: std::collections::BTreeMap<String, Value> = Default::default();
    let wait_for = |rx_event: Received, seen: &mut std::collections::BTreeMap<String, Value>| {
        assert!(signature_valid(
            &secret,
            &rx_event.signature,
            &rx_event.body
        ));
        assert!(
            events.contains(&rx_event.event.as_str()),
            "{}",
            rx_event.event
        );
        seen.insert(rx_event.event.clone(), rx_event.json());
    };

    // A workflow that waits for an approval, then completes.
    let definition = json!({
        "name": "gate", "start": "gate",
        "steps": {
            "gate": { "kind": "approval", "message": "Ship?", "next": "done" },
            "done": { "kind": "succeed", "output": "shipped" }
        }
    });
    let wf = s
        .post(
            "/api/workflows",
            &admin,
            json!({ "definition": definition, "input": {} }),
        )
        .await
        .expect(201);
    let wf_id = wf.body["id"].as_str().unwrap().to_string();
    while !seen.contains_key("workflow.awaiting_approval") {
        wait_for(next(&mut rx, 30).await, &mut seen);
    }
    assert_eq!(
        seen["workflow.awaiting_approval"]["data"]["workflow_id"],
        wf_id.as_str()
    );
    s.post(
        &format!("/api/workflows/{wf_id}/approve"),
        &admin,
        json!({}),
    )
    .await
    .expect(200);
    while !seen.contains_key("workflow.completed") {
        wait_for(next(&mut rx, 30).await, &mut seen);
    }
    let done = &seen["workflow.completed"]["data"];
    assert_eq!(done["workflow_id"], wf_id.as_str());
    assert_eq!(done["output"], "shipped", "{done}");

    // A soft budget passed by one task: its threshold and its alert.
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.put(
        &format!("/api/budgets/organization/{org}/day"),
        &admin,
        json!({ "limit_usd": 0.000001, "hard": false, "alert_at": [0.1] }),
    )
    .await
    .expect(200);
    s.post(
        "/api/tasks",
        &admin,
        json!({ "description": "spend", "prompt": "hello" }),
    )
    .await
    .expect(201);
    while !(seen.contains_key("budget.threshold") && seen.contains_key("alert.raised")) {
        wait_for(next(&mut rx, 30).await, &mut seen);
    }
    let threshold = &seen["budget.threshold"]["data"];
    assert_eq!(threshold["scope"], "organization", "{threshold}");
    assert_eq!(threshold["threshold"], 0.1);
    assert_eq!(seen["alert.raised"]["data"]["kind"], "budget_threshold");
}

async fn a_plugin_version_going_live_is_an_event(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    let (_, owner) = s.tenant(&admin, "acme").await;
    let (_, secret) = webhook(&s, &owner, &url, &["plugin.activated"]).await;
    let router = |version: &str| {
        build_guest(
            "vel-fixture-flip-router",
            if version == "2.0.0" { &["v2"] } else { &[] },
        )
    };

    // Uploaded and activated at once.
    s.upload_plugin(
        &owner,
        "?activate=true",
        router("1.0.0"),
        &manifest("flip-router", "1.0.0", "router", ""),
    )
    .await
    .expect(201);
    let r = next(&mut rx, 60).await;
    assert_eq!(r.event, "plugin.activated");
    assert!(signature_valid(&secret, &r.signature, &r.body));
    let data = &r.json()["data"];
    assert_eq!(data["plugin"], "flip-router", "{data}");
    assert_eq!(data["version"], "1.0.0");
    assert_eq!(data["scope"], "organization");

    // Uploaded, then activated; then rolled back.
    s.upload_plugin(
        &owner,
        "",
        router("2.0.0"),
        &manifest("flip-router", "2.0.0", "router", ""),
    )
    .await
    .expect(201);
    s.post(
        "/api/plugins/flip-router/versions/2.0.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect(200);
    let data = next(&mut rx, 30).await.json()["data"].clone();
    assert_eq!(data["version"], "2.0.0", "{data}");
    assert_eq!(data["previous_version"], "1.0.0");
    assert_eq!(data["rollback"], false);
    s.post("/api/plugins/flip-router/rollback", &owner, json!({}))
        .await
        .expect(200);
    let data = next(&mut rx, 30).await.json()["data"].clone();
    assert_eq!(data["version"], "1.0.0", "{data}");
    assert_eq!(data["rollback"], true);
}

async fn restricted_destinations_are_refused_without_the_setting(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    for url in [
        "http://hooks.example.com/vel",
        "https://127.0.0.1/hook",
        "https://[::1]:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/hook",
        "https://192.168.1.1/hook",
        "https://localhost/hook",
        "https://2130706433/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://metadata.google.internal/",
    ] {
        let r = s
            .post(
                "/api/webhooks",
                &admin,
                json!({ "url": url, "events": ["task.completed"] }),
            )
            .await
            .expect_error(422, "validation_failed");
        assert!(
            r.body["error"]["details"]["url"].is_array(),
            "{url}: {}",
            r.body
        );
    }
    // Plain HTTP is refused even to a public address without its setting.
    let r = s
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": "http://93.184.215.14/hook", "events": ["task.completed"] }),
        )
        .await
        .expect(422);
    assert!(
        r.body["error"]["details"]["url"][0]
            .as_str()
            .unwrap()
            .contains("https"),
        "{}",
        r.body
    );
    // Allowing http does not allow loopback.
    let s2 = Server::start_with(b, &[("VEL_WEBHOOK_ALLOW_HTTP", "true")]).await;
    let admin2 = s2.admin_token().await;
    s2.post(
        "/api/webhooks",
        &admin2,
        json!({ "url": "http://127.0.0.1:9/hook", "events": ["task.completed"] }),
    )
    .await
    .expect(422);
    assert_eq!(
        s.get("/api/webhooks", &admin).await.expect(200).body["items"],
        json!([])
    );
}

async fn the_secret_is_shown_once_and_bad_input_is_refused(b: Backend) {
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    let url = "http://127.0.0.1:9/hook";
    let created = s
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": url, "events": ["task.failed", "task.completed", "task.failed"],
                    "description": "ops" }),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{created}"
    );
    assert_eq!(created["events"], json!(["task.completed", "task.failed"]));
    assert_eq!(created["enabled"], true);
    assert!(
        created["secret_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Never again: not read back, listed, changed or audited.
    let got = s
        .get(&format!("/api/webhooks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["secret_fingerprint"], created["secret_fingerprint"]);
    let listed = s.get("/api/webhooks", &admin).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let patched = s
        .patch(
            &format!("/api/webhooks/{id}"),
            &admin,
            json!({ "events": ["workflow.completed", "budget.threshold"] }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        patched["events"],
        json!(["budget.threshold", "workflow.completed"])
    );
    let audit = s.get("/api/audit-logs?limit=100", &admin).await.expect(200);
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"webhook_created") && actions.contains(&"webhook_updated"));
    for text in [
        listed.to_string(),
        patched.to_string(),
        audit.body.to_string(),
        s.stderr(),
    ] {
        assert!(!text.contains(&secret[6..]), "the secret leaked: {text}");
    }

    // Bad input: a clear 4xx naming the field, nothing stored.
    for (body, field) in [
        (
            json!({ "url": url, "events": ["task.started"] }),
            "events[0]",
        ),
        (
            json!({ "url": url, "events": ["webhook.test"] }),
            "events[0]",
        ),
        (json!({ "url": url, "events": [] }), "events"),
        (
            json!({ "url": "not a url", "events": ["task.failed"] }),
            "url",
        ),
        (json!({ "url": "", "events": ["task.failed"] }), "url"),
        (
            json!({ "url": "ftp://127.0.0.1/x", "events": ["task.failed"] }),
            "url",
        ),
        (
            json!({ "url": url, "events": ["task.failed"], "description": "x".repeat(201) }),
            "description",
        ),
    ] {
        let r = s
            .post("/api/webhooks", &admin, body.clone())
            .await
            .expect_error(422, "validation_failed");
        assert!(
            r.body["error"]["details"][field].is_array(),
            "{body}: {}",
            r.body
        );
    }
    for body in [
        json!({ "events": ["task.failed"] }),
        json!({ "url": url, "events": "task.failed" }),
        json!({ "url": url, "events": ["task.failed"], "secret": "mine" }),
    ] {
        let r = s.post("/api/webhooks", &admin, body.clone()).await;
        assert!(
            r.status.is_client_error() && r.body["error"]["code"].is_string(),
            "{body}: {} {}",
            r.status,
            r.body
        );
    }
    s.patch(
        &format!("/api/webhooks/{id}"),
        &admin,
        json!({ "events": ["nope"] }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.patch(
        &format!("/api/webhooks/{id}"),
        &admin,
        json!({ "url": "https://10.0.0.1/" }),
    )
    .await
    .expect_error(422, "validation_failed");
    assert_eq!(
        s.get("/api/webhooks", &admin).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.get("/api/webhooks/no-such-id", &admin)
        .await
        .expect_error(404, "not_found");
    s.get("/api/webhooks/no-such-id/deliveries", &admin)
        .await
        .expect_error(404, "not_found");
    s.get(&format!("/api/webhooks/{id}/deliveries?limit=0"), &admin)
        .await
        .expect(422);

    // Org admins only, and only their organization's.
    let viewer = s
        .user_with_role(&admin, "viewer@test.local", "viewer")
        .await;
    s.get("/api/webhooks", &viewer).await.expect(403);
    s.post(
        "/api/webhooks",
        &viewer,
        json!({ "url": url, "events": ["task.failed"] }),
    )
    .await
    .expect(403);
    let (_, other) = s.tenant(&admin, "othercorp").await;
    s.get(&format!("/api/webhooks/{id}"), &other)
        .await
        .expect(404);
    s.delete(&format!("/api/webhooks/{id}"), &other)
        .await
        .expect(404);
    assert_eq!(
        s.get("/api/webhooks", &other).await.expect(200).body["items"],
        json!([])
    );

    s.delete(&format!("/api/webhooks/{id}"), &admin)
        .await
        .expect(204);
    s.get(&format!("/api/webhooks/{id}"), &admin)
        .await
        .expect(404);
}

async fn runs_failed_for_lost_workers_are_failure_events(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let mut env = LOCAL.to_vec();
    // A heartbeat (which fails what keeps losing its workers) every 200 ms.
    env.extend([("VEL_TASK_LEASE_MS", "600")]);
    let s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let (id, secret) = webhook(&s, &admin, &url, &["task.failed", "workflow.failed"]).await;

    // A task running here, made to look as if it had killed three workers
    // in turn (claimed three times, the last lease run out elsewhere).
    let task = s
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "doomed", "prompt": "z", "parameters": { "model": "mock/slow" },
                    "metadata": { "delay-ms": 60_000 } }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    get_once(&s, &admin, &format!("/api/tasks/{task}"), |t| {
        t["status"] == "in_progress"
    })
    .await;
    let n = sql(
        &s,
        &format!(
            "UPDATE tasks SET lease_owner = 'dead-instance', lease_expires_at = 1, claims = 3 \
             WHERE id = '{task}'"
        ),
    )
    .await;
    assert_eq!(n, 1);
    let r = next(&mut rx, 30).await;
    assert_eq!(r.event, "task.failed");
    assert!(signature_valid(&secret, &r.signature, &r.body));
    let data = &r.json()["data"];
    assert_eq!(data["task_id"], task.as_str(), "{data}");
    assert_eq!(data["status"], "failed");
    assert_eq!(data["error"]["kind"], "worker_lost", "{data}");
    let failed = s
        .get(&format!("/api/tasks/{task}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(failed["status"], "failed", "{failed}");

    // A workflow waiting for an approval, its engine "lost" the same way.
    let definition = json!({
        "name": "stuck", "start": "gate",
        "steps": {
            "gate": { "kind": "approval", "message": "Ship?", "next": "done" },
            "done": { "kind": "succeed", "output": "shipped" }
        }
    });
    let wf = s
        .post(
            "/api/workflows",
            &admin,
            json!({ "definition": definition, "input": {} }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    get_once(&s, &admin, &format!("/api/workflows/{wf}"), |w| {
        w["status"] == "awaiting_approval"
    })
    .await;
    let n = sql(
        &s,
        &format!(
            "UPDATE workflows SET wake_at = 1, lease_owner = 'dead-instance', \
             lease_expires_at = 1, claims = 3 WHERE id = '{wf}'"
        ),
    )
    .await;
    assert_eq!(n, 1);
    let r = next(&mut rx, 30).await;
    assert_eq!(r.event, "workflow.failed");
    assert!(signature_valid(&secret, &r.signature, &r.body));
    let data = &r.json()["data"];
    assert_eq!(data["workflow_id"], wf.as_str(), "{data}");
    assert_eq!(data["error"]["kind"], "worker_lost", "{data}");

    // Each reported once, though the heartbeats went on.
    let items = deliveries_once(&s, &admin, &id, |d| {
        d.len() >= 2 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let types: Vec<&str> = items
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["workflow.failed", "task.failed"], "{items:?}");
}

async fn a_built_in_version_going_live_at_start_is_an_event(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let mut s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    let (_, owner) = s.tenant(&admin, "acme").await;
    let (_, secret) = webhook(&s, &owner, &url, &["plugin.activated"]).await;
    // As if the deployment ran an older build: its built-in router was
    // version 0.0.0-old. The new build's version goes live at the start.
    s.kill();
    let plugin = "(SELECT id FROM plugins WHERE scope = 'platform' AND name = 'default-router')";
    sql(
        &s,
        &format!(
            "UPDATE plugin_versions SET version = '0.0.0-old' WHERE plugin_id = {plugin} \
             AND version = (SELECT active_version FROM plugins WHERE id = {plugin})"
        ),
    )
    .await;
    let n = sql(
        &s,
        &format!("UPDATE plugins SET active_version = '0.0.0-old' WHERE id = {plugin}"),
    )
    .await;
    assert_eq!(n, 1);
    s.restart();
    let r = next(&mut rx, 60).await;
    assert_eq!(r.event, "plugin.activated");
    assert!(signature_valid(&secret, &r.signature, &r.body));
    let body = r.json();
    assert!(body.get("org_id").is_none(), "a platform event: {body}");
    let data = &body["data"];
    assert_eq!(data["plugin"], "default-router", "{data}");
    assert_eq!(data["scope"], "platform");
    assert_eq!(data["previous_version"], "0.0.0-old");
    assert_ne!(data["version"], "0.0.0-old");
    assert_eq!(data["rollback"], false);
}

async fn ended_deliveries_past_their_retention_go(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let mut env = LOCAL.to_vec();
    env.extend([
        ("VEL_WEBHOOK_DELIVERY_RETENTION_DAYS", "30"),
        ("VEL_AUDIT_RETENTION_INTERVAL_MS", "100"),
    ]);
    let s = Server::start_with(b, &env).await;
    let admin = s.admin_token().await;
    let (id, _) = webhook(&s, &admin, &url, &["task.completed"]).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(test_event(&s, &admin, &id).await);
        next(&mut rx, 30).await;
    }
    deliveries_once(&s, &admin, &id, |d| {
        d.len() == 3 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    // The first ended 31 days ago, the second 29; the third is pending
    // again, queued 31 days ago and due tomorrow.
    let day = 86_400_000;
    let now = now_ms();
    for (event, age, pending) in [
        (&events[0], 31, false),
        (&events[1], 29, false),
        (&events[2], 31, true),
    ] {
        let (status, finished, due) = if pending {
            (
                "'pending'".to_string(),
                "NULL".to_string(),
                (now + day).to_string(),
            )
        } else {
            (
                "status".to_string(),
                (now - age * day).to_string(),
                "NULL".to_string(),
            )
        };
        sql(
            &s,
            &format!(
                "UPDATE webhook_deliveries SET status = {status}, finished_at = {finished}, \
                 next_attempt_at = {due}, created_at = {} WHERE event_id = '{event}'",
                now - age * day
            ),
        )
        .await;
    }
    let items = deliveries_once(&s, &admin, &id, |d| d.len() == 2).await;
    let kept: Vec<&str> = items
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert!(
        kept.contains(&events[1].as_str()) && kept.contains(&events[2].as_str()),
        "{items:?}"
    );
    // Its attempts went with it.
    let attempts = sql_count(
        &s,
        &format!(
            "SELECT COUNT(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE d.webhook_id = '{id}'"
        ),
    )
    .await;
    let all = sql_count(
        &s,
        &format!("SELECT COUNT(*) FROM webhook_attempts WHERE webhook_id = '{id}'"),
    )
    .await;
    assert_eq!((attempts, all), (2, 2));
}

async fn a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends(b: Backend) {
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    let created = s
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": url, "events": ["task.completed"] }),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap().to_string();
    let old = created["secret"].as_str().unwrap().to_string();
    assert!(
        created["previous_secret_fingerprint"].is_null(),
        "{created}"
    );

    // Rotated with the default overlap: the new secret shown once, the old
    // one still signing for a day.
    let rotated = s
        .post(
            &format!("/api/webhooks/{id}/rotate-secret"),
            &admin,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert_ne!(rotated["secret_fingerprint"], created["secret_fingerprint"]);
    assert_eq!(
        rotated["previous_secret_fingerprint"],
        created["secret_fingerprint"]
    );
    let until = rotated["previous_secret_expires_at"].as_str().unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(until)
        .unwrap()
        .timestamp_millis();
    let day = 86_400_000;
    assert!((until - now_ms() - day).abs() < 60_000, "{rotated}");
    let got = s
        .get(&format!("/api/webhooks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(
        got["previous_secret_fingerprint"],
        rotated["previous_secret_fingerprint"]
    );

    test_event(&s, &admin, &id).await;
    let r = next(&mut rx, 30).await;
    assert_eq!(r.signature.matches("v1=").count(), 2, "{}", r.signature);
    assert!(
        signature_valid(&new, &r.signature, &r.body),
        "the new secret verifies"
    );
    assert!(
        signature_valid(&old, &r.signature, &r.body),
        "the old secret verifies"
    );
    assert!(!signature_valid("whsec_other", &r.signature, &r.body));

    // The overlap over: the new secret alone.
    sql(
        &s,
        &format!(
            "UPDATE webhooks SET previous_secret_expires_at = {} WHERE id = '{id}'",
            now_ms() - 1
        ),
    )
    .await;
    test_event(&s, &admin, &id).await;
    let r = next(&mut rx, 30).await;
    assert_eq!(r.signature.matches("v1=").count(), 1, "{}", r.signature);
    assert!(signature_valid(&new, &r.signature, &r.body));
    assert!(!signature_valid(&old, &r.signature, &r.body));
    let got = get_once(&s, &admin, &format!("/api/webhooks/{id}"), |w| {
        w["previous_secret_fingerprint"].is_null()
    })
    .await;
    assert!(got["previous_secret_expires_at"].is_null(), "{got}");

    // No overlap asked: the replaced secret stops signing at once.
    let newest = s
        .post(
            &format!("/api/webhooks/{id}/rotate-secret"),
            &admin,
            json!({ "overlap_seconds": 0 }),
        )
        .await
        .expect(200)
        .body;
    assert!(newest["previous_secret_fingerprint"].is_null(), "{newest}");
    let newest = newest["secret"].as_str().unwrap().to_string();
    test_event(&s, &admin, &id).await;
    let r = next(&mut rx, 30).await;
    assert!(signature_valid(&newest, &r.signature, &r.body));
    assert!(!signature_valid(&new, &r.signature, &r.body));

    // Audited, without the secrets.
    let audit = s
        .get("/api/audit-logs?action=webhook_secret_rotated", &admin)
        .await
        .expect(200)
        .body;
    let rotations: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "webhook_secret_rotated")
        .collect();
    assert_eq!(rotations.len(), 2, "{audit}");
    for text in [audit.to_string(), s.stderr()] {
        for secret in [&old, &new, &newest] {
            assert!(!text.contains(&secret[6..]), "a secret leaked: {text}");
        }
    }

    // Bad input, other organizations, other roles.
    for body in [
        json!({ "overlap_seconds": 604_801 }),
        json!({ "overlap_seconds": -1 }),
        json!({ "overlap_seconds": "a day" }),
        json!({ "overlap": 10 }),
    ] {
        let r = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &admin,
                body.clone(),
            )
            .await
            .expect(422);
        assert!(r.body["error"]["code"].is_string(), "{body}: {}", r.body);
    }
    s.post("/api/webhooks/no-such-id/rotate-secret", &admin, json!({}))
        .await
        .expect_error(404, "not_found");
    let (_, other) = s.tenant(&admin, "othercorp").await;
    s.post(
        &format!("/api/webhooks/{id}/rotate-secret"),
        &other,
        json!({}),
    )
    .await
    .expect(404);
    let viewer = s
        .user_with_role(&admin, "viewer@test.local", "viewer")
        .await;
    s.post(
        &format!("/api/webhooks/{id}/rotate-secret"),
        &viewer,
        json!({}),
    )
    .await
    .expect(403);
    test_event(&s, &admin, &id).await;
    let r = next(&mut rx, 30).await;
    assert!(
        signature_valid(&newest, &r.signature, &r.body),
        "refused rotations changed nothing"
    );
}

dual_backend_tests!(
    runs_failed_for_lost_workers_are_failure_events,
    a_built_in_version_going_live_at_start_is_an_event,
    ended_deliveries_past_their_retention_go,
    a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends,
    a_delivery_is_signed_retried_and_logged,
    a_receiver_that_never_answers_times_out_and_is_disabled,
    workflow_and_budget_events_are_delivered,
    a_plugin_version_going_live_is_an_event,
    deliveries_pending_at_a_sigkill_are_delivered_after_the_restart,
    restricted_destinations_are_refused_without_the_setting,
    the_secret_is_shown_once_and_bad_input_is_refused,
);
