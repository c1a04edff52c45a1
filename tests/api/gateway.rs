//! The OpenAI-compatible gateway: `POST /v1/chat/completions` (plain and
//! streamed) and `GET /v1/models` through the real `openai-compatible`
//! plugin to the mock upstream; fallback between integrations; errors; the
//! request recorded as a `gateway` task with its cost and an audit entry;
//! and the official OpenAI Python SDK pointed at vel.

use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream, count_tokens, expected_answer};

use crate::support::{Backend, Resp, Server};

/// Declared prices of `gpt-4o-mini` in the `openai-compatible` plugin, $/1K tokens.
const MINI_INPUT_PER_1K: f64 = 0.0002;
const MINI_OUTPUT_PER_1K: f64 = 0.0006;

/// Create an `openai_compatible` integration called `name` pointing at `mock`.
async fn integration(s: &Server, token: &str, name: &str, mock: &MockUpstream) {
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(token, name, &base_url, "sk-gateway-test-0123456789", 10_000)
        .await;
}

/// An API key with `role`, made by `token`'s holder.
async fn api_key(s: &Server, token: &str, role: &str) -> String {
    s.api_key(token, &format!("gateway-{role}"), role).await
}

async fn chat(s: &Server, token: &str, body: Value) -> Resp {
    s.post("/v1/chat/completions", token, body).await
}

/// The raw text of a streamed completion, after checking status and type.
async fn chat_stream(s: &Server, token: &str, body: Value) -> String {
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.expect("body");
    assert_eq!(status.as_u16(), 200, "body: {text}");
    assert_eq!(content_type, "text/event-stream", "body: {text}");
    text
}

/// The `data:` payloads of an SSE body, in order.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_string()
        })
        .collect()
}

/// The task recorded for response id `id` (`chatcmpl-<task id>`), once the
/// recorder has written it.
async fn recorded_task(s: &Server, token: &str, id: &str) -> Value {
    let task_id = id.strip_prefix("chatcmpl-").expect("chatcmpl- id");
    s.recorded_task(token, task_id).await
}

fn mini_cost(input: u64, output: u64) -> f64 {
    input as f64 / 1000.0 * MINI_INPUT_PER_1K + output as f64 / 1000.0 * MINI_OUTPUT_PER_1K
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

async fn plain_completion_is_answered_and_recorded(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    integration(&s, &admin, "upstream", &mock).await;
    let key = api_key(&s, &admin, "task_executor").await;

    let r = chat(
        &s,
        &key,
        json!({ "model": "gpt-4o-mini", "temperature": 0.2, "top_p": 1, "frequency_penalty": 0,
                "messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": [{"type": "text", "text": "hello there"},
                                                          {"type": "text", "text": " world"}]}] }),
    )
    .await
    .expect(200);
    let body = &r.body;
    let id = body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"), "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    let answer = expected_answer("hello there world");
    assert_eq!(choice["message"]["content"], answer.as_str());
    assert_eq!(choice["finish_reason"], "stop");
    let input = count_tokens("be brief") + count_tokens("hello there world");
    let output = count_tokens(&answer);
    assert_eq!(body["usage"]["prompt_tokens"], input);
    assert_eq!(body["usage"]["completion_tokens"], output);
    assert_eq!(body["usage"]["total_tokens"], input + output);
    assert_eq!(r.headers["x-vel-provider"], "upstream");
    let cost: f64 = r.headers["x-vel-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_close(cost, mini_cost(input, output));
    assert!(cost > 0.0);

    // What reached the upstream: the model, the joined text parts, the sampling.
    let sent = mock.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent[0].body.clone().unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["messages"][1]["content"], "hello there world");

    // Recorded as a gateway task with tokens and cost from the declared prices.
    let task = recorded_task(&s, &admin, &id).await;
    assert_eq!(task["source"], "gateway");
    assert_eq!(task["status"], "completed");
    assert_eq!(task["stream"], false);
    assert_eq!(task["provider"], "upstream");
    assert_eq!(task["model"], "gpt-4o-mini");
    assert_eq!(task["input_tokens"], input);
    assert_eq!(task["output_tokens"], output);
    assert_close(task["cost_usd"].as_f64().unwrap(), mini_cost(input, output));
    assert_eq!(task["result"]["text"], answer.as_str());
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{task}");
    assert_eq!(attempts[0]["outcome"], "ok");
    let list = s.get("/api/tasks", &admin).await.expect(200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["source"], "gateway");

    // One audit entry, without the prompt.
    let audit = s
        .get("/api/audit-logs?action=gateway_request", &admin)
        .await
        .expect(200);
    assert_eq!(audit.body["total"], 1, "{}", audit.body);
    let entry = &audit.body["items"][0]["payload"];
    assert_eq!(entry["status"], "completed");
    assert_eq!(entry["provider"], "upstream");
    assert_eq!(entry["usage"], json!({ "input": input, "output": output }));
    assert_close(
        entry["cost_usd"].as_f64().unwrap(),
        mini_cost(input, output),
    );
    assert!(
        !audit.body.to_string().contains("hello there"),
        "{}",
        audit.body
    );

    // An access token works as well as an API key.
    let r = chat(
        &s,
        &admin,
        json!({ "model": "auto", "messages": [{"role": "user", "content": "hi"}] }),
    )
    .await
    .expect(200);
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: hi");

    // The model list: `auto`, `integration/model` and bare ids.
    let models = s.get("/v1/models", &key).await.expect(200);
    assert_eq!(models.body["object"], "list");
    let data = models.body["data"].as_array().unwrap();
    let find = |id: &str| data.iter().find(|m| m["id"] == id).cloned();
    assert_eq!(find("auto").expect("auto")["object"], "model");
    assert_eq!(
        find("upstream/gpt-4o-mini").expect("pinned")["owned_by"],
        "upstream"
    );
    assert_eq!(find("gpt-4o-mini").expect("bare")["owned_by"], "upstream");
    assert!(find("upstream/gpt-4o").is_some());

    // A viewer may list models but not run completions.
    let viewer = api_key(&s, &admin, "viewer").await;
    s.get("/v1/models", &viewer).await.expect(200);
    chat(
        &s,
        &viewer,
        json!({ "model": "auto", "messages": [{"role": "user", "content": "hi"}] }),
    )
    .await
    .expect_error(403, "forbidden");
}

async fn streamed_completion_sends_chunks_usage_and_done(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    integration(&s, &admin, "upstream", &mock).await;
    let key = api_key(&s, &admin, "task_executor").await;

    let prompt = "one two three four";
    let text = chat_stream(
        &s,
        &key,
        json!({ "model": "upstream/gpt-4o-mini", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": prompt}] }),
    )
    .await;
    let sent = events(&text);
    assert_eq!(sent.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = sent[..sent.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
        .collect();
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id.as_str(), "{text}");
        assert_eq!(c["object"], "chat.completion.chunk", "{text}");
        assert_eq!(c["model"], "gpt-4o-mini", "{text}");
    }
    // Role first, then content deltas, then the finish reason, then usage.
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]), "{text}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{text}");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let deltas: Vec<&str> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null(), "{text}");
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content delta")
        })
        .collect();
    let answer = expected_answer(prompt);
    assert_eq!(deltas.concat(), answer);
    assert!(
        deltas.len() >= count_tokens(&answer) as usize,
        "expected one delta per word: {deltas:?}"
    );
    let input = count_tokens(prompt);
    let output = count_tokens(&answer);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], input);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], output);
    assert_eq!(usage_chunk["usage"]["total_tokens"], input + output);
    assert!(mock.requests()[0].is_stream());

    let task = recorded_task(&s, &admin, &id).await;
    assert_eq!(task["source"], "gateway");
    assert_eq!(task["status"], "completed");
    assert_eq!(task["stream"], true);
    assert_eq!(task["result"]["text"], answer.as_str());
    assert_close(task["cost_usd"].as_f64().unwrap(), mini_cost(input, output));

    // Without include_usage there is no usage chunk.
    let text = chat_stream(
        &s,
        &key,
        json!({ "model": "auto", "stream": true, "messages": [{"role": "user", "content": "x"}] }),
    )
    .await;
    let sent = events(&text);
    assert_eq!(sent.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&sent[sent.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{text}");
    assert!(!text.contains("\"usage\""), "{text}");
}

async fn failing_integration_falls_back_to_another(b: Backend) {
    let failing = MockUpstream::start().await;
    failing.set_default(Fault::Status(500));
    let healthy = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    // Created first, so the router tries it first among equals.
    integration(&s, &admin, "primary", &failing).await;
    integration(&s, &admin, "secondary", &healthy).await;
    let key = api_key(&s, &admin, "task_executor").await;

    let r = chat(
        &s,
        &key,
        json!({ "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fall back"}] }),
    )
    .await
    .expect(200);
    assert_eq!(r.headers["x-vel-provider"], "secondary");
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "echo: fall back"
    );
    assert!(
        !failing.requests().is_empty(),
        "the primary was never tried"
    );
    let task = recorded_task(&s, &admin, r.body["id"].as_str().unwrap()).await;
    let attempts = task["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{task}");
    assert_eq!(attempts[0]["provider"], "primary");
    assert_ne!(attempts[0]["outcome"], "ok");
    let last = attempts.last().unwrap();
    assert_eq!(last["provider"], "secondary");
    assert_eq!(last["outcome"], "ok");
    assert_eq!(task["provider"], "secondary");

    // Streaming falls back too.
    let text = chat_stream(
        &s,
        &key,
        json!({ "model": "gpt-4o-mini", "stream": true,
                "messages": [{"role": "user", "content": "still here"}] }),
    )
    .await;
    let content: String = events(&text)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "echo: still here", "{text}");

    // When every provider fails: 502 with the dispatch error's kind.
    healthy.set_default(Fault::Status(500));
    let r = chat(
        &s,
        &key,
        json!({ "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "nobody"}] }),
    )
    .await
    .expect_error(502, "all_attempts_failed");
    let task_id = r.headers["x-vel-task-id"].to_str().unwrap().to_string();
    let task = recorded_task(&s, &admin, &format!("chatcmpl-{task_id}")).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["error"]["kind"], "all_attempts_failed");
}

async fn bad_requests_get_proper_errors(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let key = api_key(&s, &admin, "task_executor").await;
    let hello = json!([{"role": "user", "content": "hello"}]);

    // No integration yet: nothing can answer.
    chat(&s, &key, json!({ "model": "auto", "messages": hello }))
        .await
        .expect_error(503, "no_candidate");

    integration(&s, &admin, "upstream", &mock).await;
    for model in [
        "no-such-model",
        "upstream/no-such-model",
        "elsewhere/gpt-4o-mini",
    ] {
        let r = chat(&s, &key, json!({ "model": model, "messages": hello }))
            .await
            .expect_error(404, "model_not_found");
        assert_eq!(r.body["error"]["param"], "model", "{}", r.body);
        assert_eq!(r.body["error"]["type"], "not_found_error", "{}", r.body);
    }

    // No credentials, bad credentials.
    s.call(
        Method::POST,
        "/v1/chat/completions",
        None,
        Some(json!({ "model": "auto", "messages": hello })),
    )
    .await
    .expect_error(401, "unauthorized");
    s.call(Method::GET, "/v1/models", Some("vel_not-a-key"), None)
        .await
        .expect_error(401, "unauthorized");

    // Bodies that name the bad field.
    let cases = [
        (json!({ "messages": hello }), "model"),
        (json!({ "model": "auto" }), "messages"),
        (json!({ "model": "auto", "messages": [] }), "messages"),
        (
            json!({ "model": "auto", "messages": hello, "temperature": 3 }),
            "temperature",
        ),
        (
            json!({ "model": "auto", "messages": hello, "max_tokens": 0 }),
            "max_tokens",
        ),
        (json!({ "model": "auto", "messages": hello, "n": 2 }), "n"),
        (
            json!({ "model": "auto", "messages": hello, "stop": ["a", "b", "c", "d", "e"] }),
            "stop",
        ),
        (
            json!({ "model": "auto", "messages": [{"role": "robot", "content": "x"}] }),
            "messages[0].role",
        ),
        (
            json!({ "model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}] }),
            "messages[0].content[0].type",
        ),
        (json!({ "model": 7, "messages": hello }), "model"),
    ];
    for (body, field) in cases {
        let r = chat(&s, &key, body.clone())
            .await
            .expect_error(400, "validation_failed");
        assert_eq!(
            r.body["error"]["param"], field,
            "{body} should name {field}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
    }
    s.raw(
        Method::POST,
        "/v1/chat/completions",
        Some(&key),
        "application/json",
        b"{\"model\": ".to_vec(),
    )
    .await
    .expect_error(400, "invalid_json");
    s.raw(
        Method::POST,
        "/v1/chat/completions",
        Some(&key),
        "text/plain",
        b"hi".to_vec(),
    )
    .await
    .expect_error(415, "unsupported_media_type");
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-vel-task-type", "poetry")
        .json(&json!({ "model": "auto", "messages": hello }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The task type header is taken; fields vel does not use are tolerated.
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-vel-task-type", "light")
        .json(
            &json!({ "model": "auto", "messages": hello, "logprobs": false,
                       "presence_penalty": 0.5, "seed": 3, "user": "end-user-1" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    let task = recorded_task(&s, &admin, body["id"].as_str().unwrap()).await;
    assert_eq!(task["task_type"], "light");
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
out = {}
r = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "system", "content": "be brief"},
              {"role": "user", "content": "hello from python"}],
    max_tokens=50, temperature=0.5)
out["plain"] = {"id": r.id, "object": r.object, "model": r.model,
                "content": r.choices[0].message.content, "role": r.choices[0].message.role,
                "finish_reason": r.choices[0].finish_reason,
                "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens]}
parts, usage, finish, chunks = [], None, None, 0
stream = client.chat.completions.create(
    model="auto", messages=[{"role": "user", "content": "stream to python"}],
    stream=True, stream_options={"include_usage": True})
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"content": "".join(parts), "finish_reason": finish, "usage": usage, "chunks": chunks}
out["models"] = [m.id for m in client.models.list()]
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["not_found"] = None
except openai.NotFoundError as e:
    out["not_found"] = e.status_code
print(json.dumps(out))
"#;

async fn openai_python_sdk_works_unchanged(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    integration(&s, &admin, "upstream", &mock).await;
    let key = api_key(&s, &admin, "task_executor").await;

    let out = s.openai_sdk(SDK_SCRIPT, &[&key]).await;

    let plain = &out["plain"];
    assert!(plain["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["model"], "gpt-4o-mini");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["content"], "echo: hello from python");
    assert_eq!(plain["finish_reason"], "stop");
    let input = count_tokens("be brief") + count_tokens("hello from python");
    let output_tokens = count_tokens("echo: hello from python");
    assert_eq!(
        plain["usage"],
        json!([input, output_tokens, input + output_tokens])
    );

    let stream = &out["stream"];
    assert_eq!(stream["content"], "echo: stream to python");
    assert_eq!(stream["finish_reason"], "stop");
    assert!(stream["chunks"].as_u64().unwrap() >= 5, "{stream}");
    let (i, o) = (
        count_tokens("stream to python"),
        count_tokens("echo: stream to python"),
    );
    assert_eq!(stream["usage"], json!([i, o, i + o]));

    let models = out["models"].as_array().unwrap();
    assert!(models.contains(&json!("auto")), "{models:?}");
    assert!(
        models.contains(&json!("upstream/gpt-4o-mini")),
        "{models:?}"
    );
    assert_eq!(out["not_found"], 404);

    // Both SDK completions were recorded as gateway tasks.
    recorded_task(&s, &admin, plain["id"].as_str().unwrap()).await;
}

/// The recorder's batch puts every value of every row in its own column:
/// 75 finished requests (on SQLite statements of 64, 8, 2 and 1 rows; on
/// PostgreSQL one statement of JSON rows) with two attempts each (150: 64,
/// 64, 16, 4, 2) and an audit entry each, written as one batch and read
/// back. Texts carry quotes, backslashes, newlines and non-ASCII letters;
/// a request of a user deleted meanwhile is stored without its user.
async fn recorder_batches_keep_every_row(b: Backend) {
    use vel::money::Money;
    use vel::orchestrator::state::{AttemptOutcome, TaskSource, TaskStatus};
    use vel::store::audit_logs::NewAudit;
    use vel::store::tasks::Attempt;
    use vel::store::usage::{Batch, FinishedTask, insert_batch};

    let s = Server::start(b).await;
    let db = vel::store::Db::open(&s.database_url, None, 1)
        .await
        .unwrap();
    let mut tx = db.platform().await.unwrap();
    let (org_id, user_id): (String, String) =
        sqlx::query_as("SELECT org_id, user_id FROM memberships LIMIT 1")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let n = 75_i64;
    let ids: Vec<String> = (0..n).map(|_| vel::store::new_id()).collect();
    let attempt = |i: i64, seq: i64| Attempt {
        seq,
        provider: format!("p{i}"),
        integration_id: None,
        plugin: "mock".into(),
        model: format!("m{i}-{seq}"),
        outcome: if seq == 1 {
            AttemptOutcome::Error
        } else {
            AttemptOutcome::Ok
        },
        error_kind: (seq == 1).then(|| "unavailable".into()),
        error_message: None,
        latency_ms: i * 10 + seq,
        input_tokens: i,
        output_tokens: 2 * i,
        cost_nanos: Money::from_nanos(i * 1_000_000),
        started_at: 1_700_000_000_000 + i,
    };
    let description = |i: i64| format!("request {i}: \"quoted\" \\ back\nslash, ünïcødé ✓");
    let deleted_user = 7;
    let tasks: Vec<FinishedTask> = (0..n)
        .map(|i| FinishedTask {
            id: ids[i as usize].clone(),
            org_id: org_id.clone(),
            user_id: Some(if i == deleted_user {
                "no-such-user".into()
            } else {
                user_id.clone()
            }),
            agent_id: None,
            source: TaskSource::Gateway,
            description: description(i),
            task_type: "general".into(),
            priority: i % 3,
            status: TaskStatus::Completed,
            request: "{}".into(),
            stream: i % 2 == 0,
            request_hash: format!("hash{i}"),
            result: Some(format!(r#"{{"text":"answer {i}"}}"#)),
            error: (i % 5 == 0).then(|| format!(r#"{{"kind":"k{i}"}}"#)),
            partial_output: (i % 5 == 0).then(|| format!("partial {i}")),
            provider: Some(format!("p{i}")),
            model: Some(format!("m{i}-2")),
            input_tokens: 2 * i,
            output_tokens: 4 * i,
            cost_nanos: Money::from_nanos(2 * i * 1_000_000),
            created_at: 1_700_000_000_000 + i,
            finished_at: 1_700_000_001_000 + i,
            attempts: vec![attempt(i, 1), attempt(i, 2)],
        })
        .collect();
    let audits: Vec<(NewAudit, i64)> = (0..n)
        .map(|i| {
            let entry = NewAudit {
                org_id: Some(org_id.clone()),
                user_id: Some(user_id.clone()),
                action: "batch_test".into(),
                payload: format!(r#"{{"n":{i}}}"#),
                ip_address: Some(format!("10.0.0.{i}")),
                user_agent: None,
            };
            (entry, 1_700_000_002_000 + i)
        })
        .collect();
    let batch = Batch::new(db.backend(), tasks, audits).unwrap();
    insert_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.platform().await.unwrap();
    // Two reads of seven columns each (longer tuples have no `Debug`).
    type Who = (String, String, Option<String>, i64, i64, String, String);
    let who: Vec<Who> = sqlx::query_as(
        "SELECT id, description, user_id, priority, stream, provider, model \
         FROM tasks WHERE source = 'gateway' ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    type Outcome = (i64, i64, i64, i64, Option<String>, Option<String>, String);
    let outcomes: Vec<Outcome> = sqlx::query_as(
        "SELECT input_tokens, output_tokens, cost_nanos, finished_at, error, partial_output, status \
         FROM tasks WHERE source = 'gateway' ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(who.len(), 75);
    assert_eq!(outcomes.len(), 75);
    for (i, (who, outcome)) in who.iter().zip(&outcomes).enumerate() {
        let i = i as i64;
        let expected_who: Who = (
            ids[i as usize].clone(),
            description(i),
            (i != deleted_user).then(|| user_id.clone()),
            i % 3,
            i64::from(i % 2 == 0),
            format!("p{i}"),
            format!("m{i}-2"),
        );
        assert_eq!(who, &expected_who);
        let expected_outcome: Outcome = (
            2 * i,
            4 * i,
            2 * i * 1_000_000,
            1_700_000_001_000 + i,
            (i % 5 == 0).then(|| format!(r#"{{"kind":"k{i}"}}"#)),
            (i % 5 == 0).then(|| format!("partial {i}")),
            "completed".to_string(),
        );
        assert_eq!(outcome, &expected_outcome);
    }
    let attempts: Vec<(String, i64, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT task_id, seq, model, latency_ms, output_tokens, cost_nanos FROM task_attempts \
         ORDER BY task_id, seq",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 150);
    for (k, (task_id, seq, model, latency_ms, output_tokens, cost_nanos)) in
        attempts.iter().enumerate()
    {
        let (i, expected_seq) = ((k / 2) as i64, (k % 2) as i64 + 1);
        assert_eq!(task_id, &ids[i as usize]);
        assert_eq!(*seq, expected_seq);
        assert_eq!(model, &format!("m{i}-{expected_seq}"));
        assert_eq!(*latency_ms, i * 10 + expected_seq);
        assert_eq!(*output_tokens, 2 * i);
        assert_eq!(*cost_nanos, i * 1_000_000);
    }
    let entries: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT payload, ip_address, created_at FROM audit_logs WHERE action = 'batch_test' \
         ORDER BY created_at",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    db.close().await;
    let expected: Vec<(String, String, i64)> = (0..n)
        .map(|i| {
            (
                format!(r#"{{"n":{i}}}"#),
                format!("10.0.0.{i}"),
                1_700_000_002_000 + i,
            )
        })
        .collect();
    assert_eq!(entries, expected);
}

/// An integration whose base URL is vel's own `/v1`, used with the
/// organization's own key: the plugin's request comes back carrying this
/// instance's `Via` and is refused at once (508), so one client request
/// makes a bounded number of hops instead of a loop.
async fn a_request_that_comes_back_through_a_provider_is_refused(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let key = api_key(&s, &admin, "task_executor").await;
    s.upstream_integration(&admin, "myself", &s.url("/v1"), &key, 10_000)
        .await;
    let resp = chat(
        &s,
        &key,
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "loop" }] }),
    )
    .await;
    assert!(resp.status.is_server_error(), "{resp:?}");
    let text = resp.body.to_string();
    assert!(text.contains("508") || text.contains("loop"), "{text}");

    // A request that names this instance in its Via is refused before
    // anything else happens, whatever its credentials.
    let via = s
        .http
        .get(s.url("/api/health"))
        .header("via", "1.1 some-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(via.status(), 200);
}

/// The model of the integration tried first, pinned.
const PINNED: &str = "primary/gpt-4o-mini";

const CUT_SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
headers = {} if sys.argv[3] == "" else {"x-vel-stream-failover": sys.argv[3]}
out = {"parts": [], "error": None, "task_id": None, "provider": None, "status": None}
try:
    stream = client.chat.completions.create(
        model=sys.argv[5], messages=[{"role": "user", "content": sys.argv[4]}],
        stream=True, extra_headers=headers)
    out["task_id"] = stream.response.headers.get("x-vel-task-id")
    out["provider"] = stream.response.headers.get("x-vel-provider")
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                out["parts"].append(c.delta.content)
except openai.APIStatusError as e:
    out["status"] = e.status_code
    out["error"] = e.message
except openai.APIError as e:
    out["error"] = e.message
print(json.dumps(out))
"#;

/// Stream `prompt` to `model` through the OpenAI SDK with
/// `X-Vel-Stream-Failover: mode` (none when empty): the text chunks it
/// received, the error it raised, its task id and the answering provider.
async fn sdk_stream(s: &Server, key: &str, mode: &str, prompt: &str, model: &str) -> Value {
    s.openai_sdk(CUT_SCRIPT, &[key, mode, prompt, model]).await
}

/// Two integrations, `primary` (tried first) on `first` and `secondary` on
/// `second`, and a task_executor key.
async fn two_upstreams(
    s: &Server,
    first: &MockUpstream,
    second: &MockUpstream,
) -> (String, String) {
    let admin = s.admin_token().await;
    integration(s, &admin, "primary", first).await;
    integration(s, &admin, "secondary", second).await;
    let key = api_key(s, &admin, "task_executor").await;
    (admin, key)
}

/// How the last request `mock` received asked to continue `text`:
/// `prefill` when its conversation ends with the assistant's partial turn
/// `text`, `instruction` when that turn is followed by a user turn asking
/// to continue without repeating, `none` otherwise.
pub(crate) fn continuation_shape(mock: &MockUpstream, text: &str) -> &'static str {
    let requests = mock.requests();
    let Some(messages) = requests
        .last()
        .and_then(|r| r.body.as_ref()?["messages"].as_array().cloned())
    else {
        return "none";
    };
    let partial = |m: &Value| m["role"] == "assistant" && m["content"] == text;
    match messages.as_slice() {
        [.., last] if partial(last) => "prefill",
        [.., turn, ask]
            if partial(turn)
                && ask["role"] == "user"
                && ask["content"].as_str().is_some_and(|t| {
                    t.starts_with("Your previous reply was cut off") && t.contains("do not repeat")
                }) =>
        {
            "instruction"
        }
        _ => "none",
    }
}

/// The text chunks the SDK received.
fn sdk_parts(out: &Value) -> Vec<String> {
    out["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p.as_str().expect("a text part").to_string())
        .collect()
}

/// Set the organization's stream failover default (`None`: unset).
pub(crate) async fn set_org_failover(s: &Server, admin: &str, mode: Option<&str>) {
    let me = s.get("/api/users/me", admin).await.expect(200);
    let org_id = me.body["org_id"].as_str().expect("org id");
    let set = s
        .put(
            &format!("/api/organizations/{org_id}/stream-failover"),
            admin,
            json!({ "mode": mode }),
        )
        .await
        .expect(200);
    assert_eq!(set.body["mode"], json!(mode), "{}", set.body);
}

/// An attempt that fails before sending any text is invisible: the answer
/// is the fallback's alone, and `x-vel-provider` names it. When every
/// attempt fails so, the answer is an ordinary error status.
async fn a_stream_falls_back_unseen_before_its_first_text(b: Backend) {
    let failing = MockUpstream::start().await;
    failing.set_default(Fault::ErrorMidStream { after_chunks: 0 });
    let healthy = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let (admin, key) = two_upstreams(&s, &failing, &healthy).await;

    let out = sdk_stream(&s, &key, "", "nothing lost", "gpt-4o-mini").await;
    assert_eq!(out["error"], Value::Null, "{out}");
    assert_eq!(out["provider"], "secondary", "{out}");
    let parts: Vec<&str> = out["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parts.concat(), expected_answer("nothing lost"), "{out}");
    assert!(
        !failing.requests().is_empty(),
        "the primary was never tried"
    );
    let task = s
        .recorded_task(&admin, out["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], parts.concat(), "{task}");

    healthy.set_default(Fault::ErrorMidStream { after_chunks: 0 });
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "gpt-4o-mini", "stream": true,
                       "messages": [{"role": "user", "content": "nobody"}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_attempts_failed", "{body}");
}

/// An attempt that fails after sending text, by default: it is not retried
/// and no other provider is asked, the stream ends with an error event
/// (which the SDK raises), and the record is a failed task whose partial
/// output is exactly what the client received. (The integration is
/// pinned, so the failing one is tried first.)
async fn a_stream_cut_after_its_text_fails_cleanly(b: Backend) {
    let cutting = MockUpstream::start().await;
    cutting.set_default(Fault::ErrorMidStream { after_chunks: 2 });
    let healthy = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let (admin, key) = two_upstreams(&s, &cutting, &healthy).await;

    for mode in ["", "fail"] {
        let out = sdk_stream(&s, &key, mode, "alpha beta gamma delta", PINNED).await;
        let parts: Vec<&str> = out["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(parts, ["echo:", " alpha"], "{out}");
        let error = out["error"]
            .as_str()
            .expect("the SDK raised the error event");
        assert!(error.contains("part of the answer"), "{out}");
        assert_eq!(out["status"], Value::Null, "{out}");
        let task = s
            .recorded_task(&admin, out["task_id"].as_str().unwrap())
            .await;
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["error"]["kind"], "stream_interrupted", "{task}");
        assert_eq!(task["partial_output"], parts.concat(), "{task}");
        assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
    }
    assert!(healthy.requests().is_empty(), "the fallback was asked");

    // The raw stream: the error event, then `[DONE]`.
    let text = chat_stream(
        &s,
        &key,
        json!({ "model": PINNED, "stream": true,
                "messages": [{"role": "user", "content": "one two three"}] }),
    )
    .await;
    let sent = events(&text);
    assert_eq!(sent.last().map(String::as_str), Some("[DONE]"), "{text}");
    let error: Value = serde_json::from_str(&sent[sent.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted", "{text}");

    // An unknown mode is refused before anything runs.
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-vel-stream-failover", "restart")
        .json(&json!({ "model": "gpt-4o-mini", "stream": true,
                       "messages": [{"role": "user", "content": "x"}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_stream_failover", "{body}");
}

/// With `continue`, the next attempt (here the failing provider's retry)
/// gets the text sent as the assistant's partial turn and only its
/// continuation is streamed: the client assembles the whole answer once,
/// and the record holds exactly that.
async fn a_stream_cut_after_its_text_continues(b: Backend) {
    let cutting = MockUpstream::start().await;
    cutting.push(Fault::ErrorMidStream { after_chunks: 2 });
    let healthy = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let (admin, key) = two_upstreams(&s, &cutting, &healthy).await;

    let prompt = "alpha beta gamma delta epsilon zeta";
    let out = sdk_stream(&s, &key, "continue", prompt, PINNED).await;
    assert_eq!(out["error"], Value::Null, "{out}");
    let parts: Vec<&str> = out["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parts.concat(), expected_answer(prompt), "{out}");
    // One chunk per word, none repeated.
    assert_eq!(
        parts.len(),
        count_tokens(&expected_answer(prompt)) as usize,
        "{out}"
    );
    // OpenAI has no assistant prefill: the text sent is the assistant's
    // turn, then a user turn asks to continue it.
    assert_eq!(continuation_shape(&cutting, "echo: alpha"), "instruction");
    let task = s
        .recorded_task(&admin, out["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], parts.concat(), "{task}");
}

/// The organization's default applies when a request has no
/// `X-Vel-Stream-Failover` header, and the header wins over it. A provider
/// with assistant prefill (`anthropic`) gets the text sent as the trailing
/// assistant turn, one without (`openai-compatible`) gets it with an
/// instruction to continue; either way the SDK assembles the whole answer
/// once, and the record holds exactly that.
async fn a_stream_continues_by_the_organizations_default_with_prefill_or_an_instruction(
    b: Backend,
) {
    let claude = MockUpstream::start().await;
    let openai = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    s.integration(
        &admin,
        json!({ "name": "claude", "provider": "anthropic", "base_url": claude.base_url(),
                "default_model": "claude-3-5-sonnet", "api_key": "sk-ant-gateway-test-0123456789",
                "timeout_ms": 10_000 }),
    )
    .await;
    integration(&s, &admin, "primary", &openai).await;
    let key = api_key(&s, &admin, "task_executor").await;
    set_org_failover(&s, &admin, Some("continue")).await;

    let prompt = "alpha beta gamma delta epsilon zeta";
    let whole = expected_answer(prompt);
    for (mock, model, shape) in [
        (&claude, "claude/claude-3-5-sonnet", "prefill"),
        (&openai, PINNED, "instruction"),
    ] {
        mock.push(Fault::ErrorMidStream { after_chunks: 2 });
        let out = sdk_stream(&s, &key, "", prompt, model).await;
        assert_eq!(out["error"], Value::Null, "{model}: {out}");
        let parts = sdk_parts(&out);
        assert_eq!(parts.concat(), whole, "{model}: {out}");
        // One chunk per word: nothing was sent twice.
        assert_eq!(parts.len() as u64, count_tokens(&whole), "{model}: {out}");
        assert_eq!(continuation_shape(mock, "echo: alpha"), shape, "{model}");
        let task = s
            .recorded_task(&admin, out["task_id"].as_str().unwrap())
            .await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["result"]["text"], parts.concat(), "{task}");
        assert_eq!(task["attempts"].as_array().unwrap().len(), 2, "{task}");
    }

    // The header wins over the organization's default.
    openai.push(Fault::ErrorMidStream { after_chunks: 2 });
    let out = sdk_stream(&s, &key, "fail", prompt, PINNED).await;
    assert_eq!(sdk_parts(&out), ["echo:", " alpha"], "{out}");
    assert!(out["error"].is_string(), "{out}");
    let task = s
        .recorded_task(&admin, out["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["partial_output"], "echo: alpha", "{task}");

    // Unset, the built-in default (`fail`) applies again, at once.
    set_org_failover(&s, &admin, None).await;
    openai.push(Fault::ErrorMidStream { after_chunks: 2 });
    let before = openai.requests().len();
    let out = sdk_stream(&s, &key, "", prompt, PINNED).await;
    assert_eq!(sdk_parts(&out), ["echo:", " alpha"], "{out}");
    assert!(out["error"].is_string(), "{out}");
    assert_eq!(
        openai.requests().len(),
        before + 1,
        "a failed stream was retried"
    );
}

/// `continue` across a fallback to another kind of provider: the first
/// integration (`anthropic`, with prefill) fails after each part it sends,
/// its retries each continue the text sent so far as a prefill, and the
/// fallback (`openai-compatible`, without prefill) is given all of it with
/// the instruction and finishes the answer. The SDK assembles the whole
/// answer once; the record holds exactly that.
async fn a_stream_continues_on_a_fallback_of_another_kind(b: Backend) {
    let claude = MockUpstream::start().await;
    claude.set_default(Fault::ErrorMidStream { after_chunks: 2 });
    let openai = MockUpstream::start().await;
    let s = Server::start_with(b, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    // Offers gpt-4o-mini too (its default model), so the plan has both.
    s.integration(
        &admin,
        json!({ "name": "primary", "provider": "anthropic", "base_url": claude.base_url(),
                "default_model": "gpt-4o-mini", "api_key": "sk-ant-gateway-test-0123456789",
                "timeout_ms": 10_000 }),
    )
    .await;
    integration(&s, &admin, "secondary", &openai).await;
    let key = api_key(&s, &admin, "task_executor").await;

    let prompt = "one two three four five six seven eight nine ten eleven twelve \
                  thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let whole = expected_answer(prompt);
    let out = sdk_stream(&s, &key, "continue", prompt, "gpt-4o-mini").await;
    assert_eq!(out["error"], Value::Null, "{out}");
    assert_eq!(out["provider"], "primary", "{out}");
    let parts = sdk_parts(&out);
    assert_eq!(parts.concat(), whole, "{out}");
    assert_eq!(parts.len() as u64, count_tokens(&whole), "{out}");

    let task = s
        .recorded_task(&admin, out["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], parts.concat(), "{task}");
    let attempts = task["attempts"].as_array().unwrap();
    let tried = claude.requests().len();
    assert!(tried >= 2, "the primary was not retried: {task}");
    assert_eq!(attempts.len(), tried + 1, "{task}");
    assert_eq!(attempts.last().unwrap()["provider"], "secondary", "{task}");
    // Each retry of the primary continued the text sent before it…
    let sent_by_primary: String = parts[..2 * tried].concat();
    assert_eq!(
        continuation_shape(&claude, &parts[..2 * (tried - 1)].concat()),
        "prefill"
    );
    // …and the fallback got all of it with the instruction.
    assert_eq!(continuation_shape(&openai, &sent_by_primary), "instruction");
}

/// On PostgreSQL, an organization's new default reaches another instance
/// by the catalogue's change signal, well before the catalogue's reuse
/// bound (10 s) would have expired it.
#[tokio::test]
async fn the_organizations_default_reaches_other_instances_by_signal() {
    let mock = MockUpstream::start().await;
    let s = Server::start_with(Backend::Postgres, &[("VEL_RETRY_BASE_MS", "1")]).await;
    let admin = s.admin_token().await;
    integration(&s, &admin, "primary", &mock).await;
    let key = api_key(&s, &admin, "task_executor").await;
    // Every try below fails an attempt on `other`: on a loaded machine the
    // signal may take enough tries to open the circuit, so an open circuit
    // lets its next call through at once.
    let other = s.sibling(&[
        ("VEL_RETRY_BASE_MS", "1"),
        ("VEL_BREAKER_COOL_DOWN_MS", "1"),
    ]);
    let prompt = "alpha beta gamma delta";
    let body = json!({ "model": PINNED, "stream": true,
                       "messages": [{"role": "user", "content": prompt}] });
    // The text a raw stream assembled, and whether it ended with an error.
    let cut_stream = async |server: &Server| {
        mock.push(Fault::ErrorMidStream { after_chunks: 2 });
        let text = chat_stream(server, &key, body.clone()).await;
        let mut assembled = String::new();
        let mut failed = false;
        for data in events(&text).iter().filter(|d| *d != "[DONE]") {
            let chunk: Value = serde_json::from_str(data).unwrap();
            failed |= chunk.get("error").is_some();
            if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                assembled.push_str(t);
            }
        }
        (assembled, failed)
    };

    // `other` reads the organization's catalogue now: no default, so fail.
    let loaded = std::time::Instant::now();
    assert_eq!(cut_stream(&other).await, ("echo: alpha".to_string(), true));
    set_org_failover(&s, &admin, Some("continue")).await;
    // The signal is delivered asynchronously: ask until `other` continues.
    loop {
        let (assembled, failed) = cut_stream(&other).await;
        if !failed {
            assert_eq!(assembled, expected_answer(prompt));
            break;
        }
        assert_eq!(assembled, "echo: alpha");
        assert!(
            loaded.elapsed() < std::time::Duration::from_secs(9),
            "the other instance did not hear of the new default"
        );
    }
    drop(other);
}

dual_backend_tests!(
    a_stream_continues_on_a_fallback_of_another_kind,
    a_stream_continues_by_the_organizations_default_with_prefill_or_an_instruction,
    a_stream_falls_back_unseen_before_its_first_text,
    a_stream_cut_after_its_text_fails_cleanly,
    a_stream_cut_after_its_text_continues,
    a_request_that_comes_back_through_a_provider_is_refused,
    recorder_batches_keep_every_row,
    plain_completion_is_answered_and_recorded,
    streamed_completion_sends_chunks_usage_and_done,
    failing_integration_falls_back_to_another,
    bad_requests_get_proper_errors,
    openai_python_sdk_works_unchanged,
);
