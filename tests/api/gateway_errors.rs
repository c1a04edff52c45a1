//! The gateway's errors and resilience, as OpenAI clients see them: every
//! error under `/v1` in OpenAI's shape and status (while `/api` keeps
//! vel's), `GET /v1/models/{id}`, a throttled upstream reaching the client
//! as 429 with `Retry-After` when nothing else can serve, breakers per
//! model (one failing or throttled model leaves the integration's others
//! served), and the exception classes of the official OpenAI Python SDK.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

use crate::support::{Backend, Resp, Server};

const KEY: &str = "sk-gateway-errors-0123456789";

async fn chat(s: &Server, token: &str, model: &str) -> Resp {
    s.post(
        "/v1/chat/completions",
        token,
        json!({ "model": model, "messages": [{"role": "user", "content": "hello"}] }),
    )
    .await
}

/// Assert OpenAI's error shape: exactly `message`, `type`, `param`, `code`.
#[track_caller]
fn assert_openai(r: &Resp, status: u16, kind: &str, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    let error = r.body["error"].as_object().expect("an error object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{}", r.body);
    assert_eq!(error["type"], kind, "{}", r.body);
    assert_eq!(error["code"], code, "{}", r.body);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// The completion requests `mock` received.
fn completions(mock: &MockUpstream) -> usize {
    mock.requests().iter().filter(|r| r.fault.is_some()).count()
}

/// The `Retry-After` of a response, in seconds.
fn retry_after(r: &Resp) -> u64 {
    r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{:?}", r.headers))
}

async fn errors_under_v1_are_openais(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "executor", "task_executor").await;
    let viewer = s.api_key(&admin, "viewer", "viewer").await;
    let hello = json!([{"role": "user", "content": "hello"}]);

    // 401, 403: before the handler runs, in OpenAI's shape all the same.
    let r = s
        .call(
            Method::POST,
            "/v1/chat/completions",
            None,
            Some(json!({ "model": "auto", "messages": hello })),
        )
        .await;
    assert_openai(&r, 401, "authentication_error", "unauthorized");
    assert_eq!(r.body["error"]["param"], Value::Null);
    let r = s
        .call(Method::GET, "/v1/models", Some("vel_nope"), None)
        .await;
    assert_openai(&r, 401, "authentication_error", "unauthorized");
    let r = chat(&s, &viewer, "auto").await;
    assert_openai(&r, 403, "permission_error", "forbidden");

    // 404: an unknown route or model.
    let r = s.get("/v1/embeddingz", &key).await;
    assert_openai(&r, 404, "not_found_error", "not_found");
    let r = chat(&s, &key, "mock/no-such-model").await;
    assert_openai(&r, 404, "not_found_error", "model_not_found");
    assert_eq!(r.body["error"]["param"], "model");

    // 400, not 422, naming the field; the message says what is wrong with it.
    let r = s
        .post(
            "/v1/chat/completions",
            &key,
            json!({ "model": "auto", "messages": hello, "temperature": 3 }),
        )
        .await;
    assert_openai(&r, 400, "invalid_request_error", "validation_failed");
    assert_eq!(r.body["error"]["param"], "temperature");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("temperature: "),
        "{}",
        r.body
    );
    let r = s
        .post(
            "/v1/chat/completions",
            &key,
            json!({ "model": 7, "messages": hello }),
        )
        .await;
    assert_openai(&r, 400, "invalid_request_error", "validation_failed");
    assert_eq!(r.body["error"]["param"], "model");
    let r = s
        .raw(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            "application/json",
            b"{\"model\": ".to_vec(),
        )
        .await;
    assert_openai(&r, 400, "invalid_request_error", "invalid_json");

    // `/api` keeps vel's own shape and its 422.
    s.post("/api/tasks", &key, json!({ "description": 7 }))
        .await
        .expect_error(422, "validation_failed");
    let r = s.get("/api/no-such-route", &key).await.expect(404);
    assert!(r.body["error"]["details"].is_object(), "{}", r.body);
}

async fn a_model_is_described_by_its_id(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "viewer", "viewer").await;
    let listed = s.get("/v1/models", &key).await.expect(200).body;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"mock/echo") && ids.contains(&"echo"),
        "{ids:?}"
    );

    // Every listed id, its slash as is or encoded, describes itself as listed.
    for (path, id) in [
        ("/v1/models/auto", "auto"),
        ("/v1/models/mock/echo", "mock/echo"),
        ("/v1/models/mock%2Fecho", "mock/echo"),
        ("/v1/models/echo", "echo"),
    ] {
        let r = s.get(path, &key).await.expect(200);
        let listed = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap();
        assert_eq!(&r.body, listed, "{path}");
        assert_eq!(r.body["object"], "model");
    }
    assert_eq!(
        s.get("/v1/models/mock/echo", &key).await.body["owned_by"],
        "mock"
    );
    for path in ["/v1/models/mock/nope", "/v1/models/nope"] {
        let r = s.get(path, &key).await;
        assert_openai(&r, 404, "not_found_error", "model_not_found");
        assert_eq!(r.body["error"]["param"], "model");
    }
    let r = s.call(Method::GET, "/v1/models/echo", None, None).await;
    assert_openai(&r, 401, "authentication_error", "unauthorized");
}

/// The issue's case: `mock/rate-limited` throttles (a 429 with
/// `Retry-After: 1`, on every call). Its client gets a 429 with
/// `Retry-After`, not a 502 and then a 503, and the integration's other
/// models are still served, however often it is asked; a model that
/// fails opens its own circuit only.
async fn a_throttled_model_is_a_429_and_leaves_the_others_served(b: Backend) {
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "executor", "task_executor").await;

    for _ in 0..2 {
        let r = chat(&s, &key, "mock/rate-limited").await;
        assert_openai(&r, 429, "rate_limit_error", "rate_limited");
        assert_eq!(retry_after(&r), 1);
        assert!(r.headers.contains_key("x-vel-task-id"));
        let r = chat(&s, &key, "mock/echo").await.expect(200);
        assert_eq!(r.body["choices"][0]["message"]["content"], "echo: hello");
    }
    // The recorded request failed as rate limited; throttles retried
    // after the Retry-After, then given up.
    let r = chat(&s, &key, "mock/rate-limited").await;
    let task_id = r.headers["x-vel-task-id"].to_str().unwrap().to_string();
    let task = s.recorded_task(&admin, &task_id).await;
    assert_eq!(task["error"]["kind"], "rate_limited", "{task}");

    // `mock/error` fails outright: its fifth failure opens its circuit,
    // and then it is refused; `mock/echo` is not.
    for _ in 0..5 {
        let r = chat(&s, &key, "mock/error").await;
        assert_openai(&r, 502, "upstream_error", "all_attempts_failed");
    }
    let r = chat(&s, &key, "mock/error").await;
    assert_openai(&r, 503, "service_unavailable_error", "no_candidate");
    chat(&s, &key, "mock/echo").await.expect(200);
    // The breaker's audit entry (written off the request path) names the model.
    let deadline = Instant::now() + Duration::from_secs(20);
    let opened = loop {
        let found = s
            .get("/api/audit-logs?action=breaker_opened", &admin)
            .await
            .expect(200)
            .body;
        if found["total"] == 1 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no breaker_opened entry: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(opened["items"][0]["payload"]["model"], "error", "{opened}");
    assert_eq!(opened["items"][0]["payload"]["integration"], "mock");
}

/// An upstream that throttles for longer than vel waits: the client gets
/// its 429 and `Retry-After` at once, the model rests meanwhile (no call
/// reaches it), and a request another integration can serve falls back.
async fn a_throttle_reaches_the_client_only_when_no_fallback_serves(b: Backend) {
    let throttled = MockUpstream::start().await;
    throttled.set_default(Fault::RateLimited {
        retry_after_secs: 60,
    });
    let healthy = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    for (name, mock) in [("primary", &throttled), ("secondary", &healthy)] {
        let base_url = format!("{}/v1", mock.base_url());
        s.upstream_integration(&admin, name, &base_url, KEY, 10_000)
            .await;
    }
    let key = s.api_key(&admin, "executor", "task_executor").await;

    let started = Instant::now();
    let r = chat(&s, &key, "primary/gpt-4o-mini").await;
    assert_openai(&r, 429, "rate_limit_error", "rate_limited");
    let after = retry_after(&r);
    assert!((59..=60).contains(&after), "Retry-After: {after}");
    assert!(
        started.elapsed().as_secs() < 30,
        "vel waited for the throttle"
    );
    assert_eq!(completions(&throttled), 1);

    // While it rests: the bare model is served by the other integration,
    // and the pinned one is refused without a call.
    let r = chat(&s, &key, "gpt-4o-mini").await.expect(200);
    assert_eq!(r.headers["x-vel-provider"], "secondary");
    let r = chat(&s, &key, "primary/gpt-4o-mini").await;
    assert_openai(&r, 429, "rate_limit_error", "rate_limited");
    assert!((50..=60).contains(&retry_after(&r)), "{:?}", r.headers);
    assert_eq!(completions(&throttled), 1, "a resting model was called");
    // Another model of the throttled integration is still called.
    throttled.set_model_fault("gpt-4o", Fault::Ok);
    let r = chat(&s, &key, "primary/gpt-4o").await.expect(200);
    assert_eq!(r.headers["x-vel-provider"], "primary");
}

const SDK_ERRORS: &str = r#"
import json, sys
import openai
from openai import OpenAI

base, key, viewer = sys.argv[1], sys.argv[2], sys.argv[3]
hello = [{"role": "user", "content": "hello"}]
out = {}

def caught(name, call):
    try:
        call()
        out[name] = None
    except openai.APIStatusError as e:
        out[name] = {"class": type(e).__name__, "status": e.status_code, "type": e.type,
                     "param": e.param, "code": e.code,
                     "retry_after": e.response.headers.get("retry-after")}

client = OpenAI(base_url=base, api_key=key, max_retries=0)
caught("bad_request", lambda: client.chat.completions.create(model="auto", messages=hello, temperature=3))
caught("authentication", lambda: OpenAI(base_url=base, api_key="vel_wrong", max_retries=0)
       .chat.completions.create(model="auto", messages=hello))
caught("permission", lambda: OpenAI(base_url=base, api_key=viewer, max_retries=0)
       .chat.completions.create(model="auto", messages=hello))
caught("not_found", lambda: client.chat.completions.create(model="no-such-model", messages=hello))
caught("model_not_found", lambda: client.models.retrieve("mock/no-such-model"))
caught("rate_limit", lambda: client.chat.completions.create(model="throttled/gpt-4o-mini", messages=hello))
out["model"] = client.models.retrieve("mock/echo").to_dict()
# One retry, after the Retry-After the 429 carries: the throttle is over by then.
retrying = OpenAI(base_url=base, api_key=key, max_retries=1)
r = retrying.chat.completions.create(model="briefly/gpt-4o-mini", messages=hello)
out["retried"] = r.choices[0].message.content
print(json.dumps(out))
"#;

async fn the_openai_sdk_raises_its_error_classes(b: Backend) {
    let throttled = MockUpstream::start().await;
    throttled.set_default(Fault::RateLimited {
        retry_after_secs: 60,
    });
    // Throttles every call vel makes for one request (a call and its one
    // retry after the short Retry-After), then answers.
    let briefly = MockUpstream::start().await;
    briefly.push_many(std::iter::repeat_n(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        2,
    ));
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    for (name, mock) in [("throttled", &throttled), ("briefly", &briefly)] {
        let base_url = format!("{}/v1", mock.base_url());
        s.upstream_integration(&admin, name, &base_url, KEY, 10_000)
            .await;
    }
    let key = s.api_key(&admin, "executor", "task_executor").await;
    let viewer = s.api_key(&admin, "viewer", "viewer").await;

    let out = s.openai_sdk(SDK_ERRORS, &[&key, &viewer]).await;
    let expect = |name: &str, class: &str, status: u16, kind: &str, code: &str| {
        let e = &out[name];
        assert_eq!(e["class"], class, "{name}: {e}");
        assert_eq!(e["status"], status, "{name}: {e}");
        assert_eq!(e["type"], kind, "{name}: {e}");
        assert_eq!(e["code"], code, "{name}: {e}");
    };
    expect(
        "bad_request",
        "BadRequestError",
        400,
        "invalid_request_error",
        "validation_failed",
    );
    assert_eq!(out["bad_request"]["param"], "temperature");
    expect(
        "authentication",
        "AuthenticationError",
        401,
        "authentication_error",
        "unauthorized",
    );
    expect(
        "permission",
        "PermissionDeniedError",
        403,
        "permission_error",
        "forbidden",
    );
    expect(
        "not_found",
        "NotFoundError",
        404,
        "not_found_error",
        "model_not_found",
    );
    assert_eq!(out["not_found"]["param"], "model");
    expect(
        "model_not_found",
        "NotFoundError",
        404,
        "not_found_error",
        "model_not_found",
    );
    expect(
        "rate_limit",
        "RateLimitError",
        429,
        "rate_limit_error",
        "rate_limited",
    );
    let after: u64 = out["rate_limit"]["retry_after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&after), "{}", out["rate_limit"]);
    assert_eq!(
        out["model"],
        json!({ "id": "mock/echo", "object": "model", "owned_by": "mock",
                "created": out["model"]["created"] })
    );
    // The SDK retried after the 429's Retry-After, and the upstream served.
    assert_eq!(out["retried"], "echo: hello");
    assert_eq!(completions(&briefly), 3);
}

/// A throttle with a short `Retry-After` (1 s) is retried once inside
/// vel, after that second, and the request is served; throttled on the
/// retry too, the client gets the 429 after those two calls. A longer one
/// (3 s) is not waited for: the 429 and its `Retry-After` come at once.
async fn a_short_retry_after_is_retried_once_inside_vel(b: Backend) {
    let upstream = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    let base_url = format!("{}/v1", upstream.base_url());
    s.upstream_integration(&admin, "briefly", &base_url, KEY, 10_000)
        .await;
    let key = s.api_key(&admin, "executor", "task_executor").await;
    upstream.push(Fault::RateLimited {
        retry_after_secs: 1,
    });
    let started = Instant::now();
    let r = chat(&s, &key, "briefly/gpt-4o-mini").await.expect(200);
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: hello");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried before the Retry-After"
    );
    assert_eq!(completions(&upstream), 2);

    upstream.push_many(std::iter::repeat_n(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        2,
    ));
    let r = chat(&s, &key, "briefly/gpt-4o-mini").await;
    assert_openai(&r, 429, "rate_limit_error", "rate_limited");
    assert_eq!(retry_after(&r), 1);
    assert_eq!(completions(&upstream), 4, "retried more than once");

    upstream.set_model_fault(
        "gpt-4o",
        Fault::RateLimited {
            retry_after_secs: 3,
        },
    );
    let started = Instant::now();
    let r = chat(&s, &key, "briefly/gpt-4o").await;
    assert_openai(&r, 429, "rate_limit_error", "rate_limited");
    assert!((2..=3).contains(&retry_after(&r)), "{:?}", r.headers);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "vel waited for a long throttle"
    );
    assert_eq!(completions(&upstream), 5);
}

dual_backend_tests!(
    errors_under_v1_are_openais,
    a_model_is_described_by_its_id,
    a_throttled_model_is_a_429_and_leaves_the_others_served,
    a_throttle_reaches_the_client_only_when_no_fallback_serves,
    the_openai_sdk_raises_its_error_classes,
    a_short_retry_after_is_retried_once_inside_vel,
);
