//! Rate limits per organization, user and API key: 429 with `Retry-After`
//! and the `x-ratelimit-*` headers, tasks per hour, the operator's default
//! per user, and two instances on one database never admitting more than
//! the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

use crate::support::{Backend, Resp, Server};

fn header(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The windows of the caller's limits, as `GET /api/rate-limits` shows
/// them (reading it does not count).
async fn windows(s: &Server, token: &str) -> Vec<Value> {
    s.get("/api/rate-limits", token).await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// `burst` runs within one window of `kind`: it is run again when the
/// window rolled over meanwhile (a test started at the end of an hour).
async fn in_one_window<F, Fut, T>(s: &Server, token: &str, burst: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..2 {
        let before = windows(s, token).await;
        let out = burst().await;
        let after = windows(s, token).await;
        let resets = |w: &[Value]| w.iter().map(|u| u["resets_at"].clone()).collect::<Vec<_>>();
        if resets(&before) == resets(&after) {
            return out;
        }
    }
    panic!("the window rolled over twice");
}

async fn limits_refuse_with_retry_after_and_headers(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (user, token) = s
        .member(&admin, "limited@test.local", "task_executor")
        .await;

    // Bad limits are refused and change nothing.
    for body in [
        json!({ "requests_per_hour": 0 }),
        json!({ "requests_per_minute": -5 }),
        json!({ "tasks_per_hour": 1_000_000_000_000i64 }),
        json!({ "requests_per_fortnight": 5 }),
    ] {
        s.put(&format!("/api/users/{user}/rate-limits"), &admin, body)
            .await
            .expect(422);
    }
    s.put(
        "/api/users/00000000-0000-4000-8000-000000000000/rate-limits",
        &admin,
        json!({ "requests_per_hour": 5 }),
    )
    .await
    .expect_error(404, "not_found");
    assert!(windows(&s, &token).await.is_empty());

    // Ten requests an hour: the tenth is the last admitted.
    s.put(
        &format!("/api/users/{user}/rate-limits"),
        &admin,
        json!({ "requests_per_hour": 10 }),
    )
    .await
    .expect(200);
    let (statuses, refused) = in_one_window(&s, &token, || async {
        let used = windows(&s, &token).await[0]["used"].as_i64().unwrap();
        let mut statuses = Vec::new();
        let mut refused = None;
        for _ in used..12 {
            let r = s.get("/api/agents", &token).await;
            statuses.push(r.status.as_u16());
            if r.status.as_u16() == 429 {
                refused = Some(r);
            } else {
                assert_eq!(
                    header(&r, "x-ratelimit-limit-requests").as_deref(),
                    Some("10")
                );
            }
        }
        (statuses, refused)
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.iter().take_while(|s| **s == 200).count() >= statuses.len() - 2);
    let refused = refused.unwrap().expect_error(429, "rate_limited");
    let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let usage = windows(&s, &admin).await;
    assert!(usage.is_empty(), "the admin has no limit: {usage:?}");

    // Lifting the limit applies at once; every change is audited.
    s.put(&format!("/api/users/{user}/rate-limits"), &admin, json!({}))
        .await
        .expect(200);
    s.get("/api/agents", &token).await.expect(200);
    let log = s
        .get("/api/audit-logs?action=rate_limits_set", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(log["items"].as_array().unwrap().len(), 2, "{log}");
}

/// Tasks per hour count REST submissions and gateway requests alike, and
/// the gateway answers with the headers OpenAI clients read.
async fn tasks_per_hour_and_gateway_headers(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "batch", "task_executor").await;
    let keys = s.get("/api/api-keys", &admin).await.expect(200).body;
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_string();
    s.put(
        &format!("/api/api-keys/{key_id}/rate-limits"),
        &admin,
        json!({ "tasks_per_hour": 2, "requests_per_hour": 1000 }),
    )
    .await
    .expect(200);
    let statuses = in_one_window(&s, &key, || async {
        let mut statuses = Vec::new();
        let r = s
            .post(
                "/api/tasks",
                &key,
                json!({ "description": "one", "prompt": "one", "task_type": "light" }),
            )
            .await;
        statuses.push(r.status.as_u16());
        let r = s
            .post(
                "/v1/chat/completions",
                &key,
                json!({ "model": "auto", "messages": [{ "role": "user", "content": "two" }] }),
            )
            .await;
        statuses.push(r.status.as_u16());
        if r.status.as_u16() == 200 {
            assert_eq!(
                header(&r, "x-ratelimit-limit-requests").as_deref(),
                Some("1000")
            );
            assert!(header(&r, "x-ratelimit-remaining-requests").is_some());
            assert!(header(&r, "x-ratelimit-reset-requests").is_some());
        }
        let r = s
            .post(
                "/api/tasks",
                &key,
                json!({ "description": "three", "prompt": "three", "task_type": "light" }),
            )
            .await;
        statuses.push(r.status.as_u16());
        statuses
    })
    .await;
    assert_eq!(statuses, vec![201, 200, 429]);
    // Reading is still allowed: the task limit counts tasks only.
    s.get("/api/tasks", &key).await.expect(200);
}

/// The operator's default applies to every user without a limit of their own.
async fn the_default_per_user_limit(b: Backend) {
    let s = Server::start_with(b, &[("VEL_DEFAULT_USER_REQUESTS_PER_HOUR", "4")]).await;
    let admin = s.admin_token().await;
    let statuses = in_one_window(&s, &admin, || async {
        let used = windows(&s, &admin).await[0]["used"].as_i64().unwrap();
        let mut statuses = Vec::new();
        for _ in used..5 {
            statuses.push(s.get("/api/users/me", &admin).await.status.as_u16());
        }
        statuses
    })
    .await;
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

/// Submit a task to the upstream that never answers.
async fn hang(s: &Server, token: &str) -> Resp {
    s.post(
        "/api/tasks",
        token,
        json!({ "description": "hang", "prompt": "wait" }),
    )
    .await
}

/// Unfinished tasks at once, per user and per organization: the next is
/// refused with 429 until one ends; API keys take no such cap.
async fn concurrent_tasks_per_user_and_organization(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(
        &admin,
        "openai",
        &base_url,
        "sk-concurrency-0123456789",
        60_000,
    )
    .await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (alice_id, alice) = s.member(&admin, "alice@test.local", "task_executor").await;
    let (_, bob) = s.member(&admin, "bob@test.local", "task_executor").await;

    s.put(
        &format!("/api/users/{alice_id}/rate-limits"),
        &admin,
        json!({ "concurrent_tasks": 1 }),
    )
    .await
    .expect(200);
    hang(&s, &alice).await.expect(201);
    let r = hang(&s, &alice).await.expect_error(429, "rate_limited");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1")
    );
    let first = hang(&s, &bob).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    hang(&s, &bob).await.expect(201);

    // Three unfinished in the organization: its cap of 3 refuses everyone.
    s.put(
        &format!("/api/organizations/{org}/rate-limits"),
        &admin,
        json!({ "concurrent_tasks": 3 }),
    )
    .await
    .expect(200);
    let r = hang(&s, &bob).await.expect_error(429, "rate_limited");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("organization"),
        "{}",
        r.body
    );
    hang(&s, &admin).await.expect_error(429, "rate_limited");
    s.post(&format!("/api/tasks/{first}/cancel"), &bob, json!({}))
        .await
        .expect(200);
    hang(&s, &admin).await.expect(201);

    s.api_key(&admin, "k", "task_executor").await;
    let keys = s.get("/api/api-keys", &admin).await.expect(200).body;
    let key_id = keys["items"][0]["id"].as_str().unwrap();
    s.put(
        &format!("/api/api-keys/{key_id}/rate-limits"),
        &admin,
        json!({ "concurrent_tasks": 2 }),
    )
    .await
    .expect_error(422, "validation_failed");
}

/// Two instances on one database, 48 clients across both: never more
/// than the organization's limit admitted, and no more than a slice per
/// instance left unused.
async fn two_instances_never_admit_more_than_the_limit(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let org = s.get("/api/users/me", &admin).await.expect(200).body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let limit = 120;
    s.put(
        &format!("/api/organizations/{org}/rate-limits"),
        &admin,
        json!({ "requests_per_hour": limit }),
    )
    .await
    .expect(200);
    let twin = Arc::new(s.sibling(&[]));
    let s = Arc::new(s);
    let admitted = in_one_window(&s, &admin, || {
        let (s, twin, admin) = (s.clone(), twin.clone(), admin.clone());
        async move {
            let admitted = Arc::new(AtomicU64::new(0));
            let mut clients = Vec::new();
            for i in 0..48 {
                let server = if i % 2 == 0 { s.clone() } else { twin.clone() };
                let (admin, admitted) = (admin.clone(), admitted.clone());
                clients.push(tokio::spawn(async move {
                    for _ in 0..6 {
                        let r = server.get("/api/users/me", &admin).await;
                        match r.status.as_u16() {
                            200 => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                            429 => {}
                            other => panic!("unexpected {other}: {}", r.body),
                        }
                    }
                }));
            }
            for c in clients {
                c.await.unwrap();
            }
            admitted.load(Ordering::Relaxed)
        }
    })
    .await;
    let slice = limit / 8;
    assert!(
        admitted <= limit,
        "{admitted} admitted over a limit of {limit}"
    );
    assert!(
        admitted + 2 * slice >= limit,
        "{admitted} admitted: more than a slice per instance went unused"
    );
    drop(twin);
}

/// The id of the API key named `name`.
async fn key_id(s: &Server, admin: &str, name: &str) -> String {
    let keys = s.get("/api/api-keys", admin).await.expect(200).body;
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["id"].as_str())
        .unwrap()
        .to_string()
}

/// The window of `scope`'s `kind` among the caller's.
fn window<'a>(windows: &'a [Value], scope: &str, kind: &str) -> &'a Value {
    windows
        .iter()
        .find(|w| w["scope"] == scope && w["kind"] == kind)
        .unwrap_or_else(|| panic!("no {scope} {kind} window in {windows:?}"))
}

/// A reset as OpenAI writes it (`42s`, `1m0s`), in seconds.
fn reset_secs(r: &Resp, name: &str) -> u64 {
    let v = header(r, name).unwrap_or_else(|| panic!("no {name}"));
    let (m, s) = v
        .strip_suffix('s')
        .and_then(|v| match v.split_once('m') {
            Some((m, s)) => Some((m.parse::<u64>().ok()?, s.parse::<u64>().ok()?)),
            None => Some((0, v.parse::<u64>().ok()?)),
        })
        .unwrap_or_else(|| panic!("{name}: {v}"));
    m * 60 + s
}

/// Tokens per minute: a request is refused once the minute's tokens are
/// used up; the tokens of plain and streamed gateway requests and of REST
/// tasks count (the mock provider reports words as tokens); a key's limit
/// holds apart from its user's; bad limits change nothing.
async fn tokens_per_minute(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let limited = s.api_key(&admin, "limited", "task_executor").await;
    let free = s.api_key(&admin, "free", "task_executor").await;
    let limited_id = key_id(&s, &admin, "limited").await;
    let me = s.get("/api/users/me", &admin).await.expect(200).body["id"]
        .as_str()
        .unwrap()
        .to_string();

    for body in [
        json!({ "tokens_per_minute": 0 }),
        json!({ "tokens_per_minute": -20 }),
        json!({ "tokens_per_minute": 1_000_000_001i64 }),
        json!({ "tokens_per_minute": "many" }),
        json!({ "tokens_per_minute": 1.5 }),
    ] {
        s.put(
            &format!("/api/api-keys/{limited_id}/rate-limits"),
            &admin,
            body,
        )
        .await
        .expect_error(422, "validation_failed");
    }
    assert!(windows(&s, &limited).await.is_empty());

    let set = s
        .put(
            &format!("/api/users/{me}/rate-limits"),
            &admin,
            json!({ "tokens_per_minute": 1000 }),
        )
        .await
        .expect(200);
    assert_eq!(set.body["tokens_per_minute"], 1000);
    s.put(
        &format!("/api/api-keys/{limited_id}/rate-limits"),
        &admin,
        json!({ "tokens_per_minute": 20 }),
    )
    .await
    .expect(200);

    // A second instance on the same database sees the same minute.
    let twin = s.sibling(&[]);
    // Eight words in, nine out ("echo: " and the eight): 17 tokens each.
    let chat = |stream: bool| {
        json!({ "model": "auto", "stream": stream,
                "messages": [{ "role": "user", "content": "a b c d e f g h" }] })
    };
    let (plain, streamed, refused, elsewhere, task, used) = in_one_window(&s, &limited, || async {
        let plain = s.post("/v1/chat/completions", &limited, chat(false)).await;
        let streamed = s.post("/v1/chat/completions", &limited, chat(true)).await;
        let refused = s.post("/v1/chat/completions", &limited, chat(false)).await;
        let elsewhere = twin
            .post("/v1/chat/completions", &limited, chat(false))
            .await;
        let task = s
            .post(
                "/api/tasks",
                &limited,
                json!({ "description": "t", "prompt": "more", "task_type": "light" }),
            )
            .await;
        let used = windows(&s, &limited).await;
        (plain, streamed, refused, elsewhere, task, used)
    })
    .await;
    drop(twin);
    let plain = plain.expect(200);
    assert_eq!(plain.body["usage"]["total_tokens"], 17, "{}", plain.body);
    assert_eq!(
        header(&plain, "x-ratelimit-limit-tokens").as_deref(),
        Some("20")
    );
    assert_eq!(
        header(&plain, "x-ratelimit-remaining-tokens").as_deref(),
        Some("3"),
        "20 less the answer's 17"
    );
    assert!((1..=60).contains(&reset_secs(&plain, "x-ratelimit-reset-tokens")));
    streamed.expect(200);
    let refused = refused.expect_error(429, "rate_limited");
    let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        header(&refused, "x-ratelimit-limit-tokens").as_deref(),
        Some("20")
    );
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-tokens").as_deref(),
        Some("0")
    );
    assert!((1..=60).contains(&reset_secs(&refused, "x-ratelimit-reset-tokens")));
    let elsewhere = elsewhere.expect_error(429, "rate_limited");
    assert_eq!(
        header(&elsewhere, "x-ratelimit-remaining-tokens").as_deref(),
        Some("0")
    );
    task.expect_error(429, "rate_limited");
    let key_window = window(&used, "api_key", "tokens_per_minute");
    assert_eq!(key_window["limit"], 20);
    assert_eq!(key_window["used"], 34, "{used:?}");
    assert_eq!(key_window["remaining"], 0);
    // The twin took a slice (an eighth) of the user's minute before the
    // key's refused it: held there unused, it counts as used until handed
    // back.
    let user_used = window(&used, "user", "tokens_per_minute")["used"]
        .as_i64()
        .unwrap();
    assert!(user_used == 34 || user_used == 34 + 125, "{used:?}");

    // The user's other key and their own token are not the limited key:
    // the user's 1,000 still has room.
    let other = s
        .post("/v1/chat/completions", &free, chat(false))
        .await
        .expect(200);
    let left: i64 = header(&other, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        header(&other, "x-ratelimit-limit-tokens").as_deref(),
        Some("1000")
    );
    assert!(left <= 1000 - 17, "{left}");
    // A REST task's tokens count when it ends.
    let before = window(&windows(&s, &free).await, "user", "tokens_per_minute")["used"]
        .as_i64()
        .unwrap();
    let t = s
        .finished_task(
            &free,
            json!({ "description": "t", "prompt": "one two three", "task_type": "light" }),
        )
        .await;
    assert_eq!(t["status"], "completed", "{t}");
    let spent = t["input_tokens"].as_i64().unwrap() + t["output_tokens"].as_i64().unwrap();
    assert!(spent > 0, "{t}");
    let after = window(&windows(&s, &free).await, "user", "tokens_per_minute")["used"]
        .as_i64()
        .unwrap();
    // (unless the minute ended between the two readings)
    assert!(
        after == before + spent || after == spent,
        "{before} + {spent} != {after}"
    );
    s.get("/api/agents", &limited).await.expect(200);
}

dual_backend_tests!(
    limits_refuse_with_retry_after_and_headers,
    tasks_per_hour_and_gateway_headers,
    the_default_per_user_limit,
    concurrent_tasks_per_user_and_organization,
    two_instances_never_admit_more_than_the_limit,
    tokens_per_minute,
);
