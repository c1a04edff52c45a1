//! `POST /v1/embeddings`: the mock provider's offline model and an
//! OpenAI-compatible upstream (the fault-injecting mock, speaking OpenAI's
//! embeddings wire), as REST and through the official OpenAI Python SDK
//! (whose default `encoding_format` is base64); bad input, unknown models,
//! a throttled upstream, and the request recorded as a priced task.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream, expected_embedding};

use crate::support::{Backend, Resp, Server};

const KEY: &str = "sk-embeddings-0123456789";

async fn embed(s: &Server, token: &str, body: Value) -> Resp {
    s.post("/v1/embeddings", token, body).await
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn vector(item: &Value) -> Vec<f64> {
    item["embedding"]
        .as_array()
        .expect("a float vector")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

async fn embeddings_through_the_gateway(b: Backend) {
    let upstream = MockUpstream::start().await;
    upstream.require_api_key(Some(KEY));
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let base_url = format!("{}/v1", upstream.base_url());
    s.upstream_integration(&admin, "oa", &base_url, KEY, 10_000)
        .await;
    let key = s.api_key(&admin, "embedder", "task_executor").await;

    // The mock provider's model: the same words give the same unit vector.
    let r = embed(
        &s,
        &key,
        json!({ "model": "mock/embed", "input": ["hello big world", "World big HELLO", "other"] }),
    )
    .await
    .expect(200);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["model"], "embed");
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["object"], "embedding");
    let (a, c) = (vector(&data[0]), vector(&data[2]));
    assert_eq!(a.len(), 8);
    assert_eq!(a, vector(&data[1]));
    assert_ne!(a, c);
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{a:?}");
    assert_eq!(
        r.body["usage"],
        json!({ "prompt_tokens": 7, "total_tokens": 7 })
    );
    assert_eq!(header(&r.headers, "x-vel-provider"), "mock");
    let cost: f64 = header(&r.headers, "x-vel-cost-usd").parse().unwrap();
    assert!(cost > 0.0, "{:?}", r.headers);
    let task_id = header(&r.headers, "x-vel-task-id").to_string();

    // An OpenAI-compatible upstream: the request reaches it as OpenAI's
    // wire with the integration's key, and its vectors come back as sent.
    let r = embed(
        &s,
        &key,
        json!({ "model": "oa/text-embedding-3-small", "input": "one two three", "dimensions": 6,
                "user": "u-7" }),
    )
    .await
    .expect(200);
    let expected: Vec<f64> = expected_embedding("one two three", 0, 6)
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(vector(&r.body["data"][0]), expected);
    assert_eq!(r.body["usage"]["prompt_tokens"], 3);
    assert_eq!(header(&r.headers, "x-vel-provider"), "oa");
    let sent = upstream.requests();
    let sent = sent.last().expect("the upstream was called");
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.bearer_token(), Some(KEY));
    assert_eq!(
        sent.body.clone().expect("a JSON body"),
        json!({ "model": "text-embedding-3-small", "input": ["one two three"],
                "encoding_format": "float", "dimensions": 6, "user": "u-7" })
    );
    // Token ids pass through; a bare model finds the integration serving it.
    let r = embed(
        &s,
        &key,
        json!({ "model": "text-embedding-3-small", "input": [[5, 6], [7]] }),
    )
    .await
    .expect(200);
    assert_eq!(header(&r.headers, "x-vel-provider"), "oa");
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["usage"]["prompt_tokens"], 3);

    // Bad input: OpenAI's 400 naming the field; nothing is called.
    let calls = upstream.requests().len();
    for (body, param) in [
        (json!({ "model": "mock/embed", "input": [] }), "input"),
        (
            json!({ "model": "mock/embed", "input": ["a", ""] }),
            "input[1]",
        ),
        (
            json!({ "model": "mock/embed", "input": "a", "encoding_format": "hex" }),
            "encoding_format",
        ),
        (
            json!({ "model": "mock/embed", "input": "a", "dimensions": 0 }),
            "dimensions",
        ),
        (json!({ "model": "", "input": "a" }), "model"),
    ] {
        let r = embed(&s, &key, body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.body);
    }
    let r = embed(&s, &key, json!({ "model": "mock/embed", "input": 5 })).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    // A chat model is not an embedding model.
    for model in ["mock/echo", "gpt-4o", "nope"] {
        let r = embed(&s, &key, json!({ "model": model, "input": "a" })).await;
        assert_eq!(r.status.as_u16(), 404, "{model}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "model_not_found");
    }
    // Embedding models are listed beside chat models, and are not chat models.
    let listed = s.get("/v1/models", &key).await.expect(200);
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in [
        "mock/embed",
        "oa/text-embedding-3-small",
        "text-embedding-3-large",
        "mock/echo",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let r = s
        .post(
            "/v1/chat/completions",
            &key,
            json!({ "model": "mock/embed", "messages": [{"role": "user", "content": "hi"}] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    // The provider's own refusal is the caller's 400.
    let r = embed(
        &s,
        &key,
        json!({ "model": "mock/embed", "input": "a", "dimensions": 100000 }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_request");
    assert_eq!(upstream.requests().len(), calls);

    // Recorded as a gateway task with its cost.
    let task = s.recorded_task(&admin, &task_id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["source"], "gateway");
    assert!(task["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{task}");

    // A throttled upstream with nothing else serving the model: 429 with
    // its Retry-After; the model then rests without being called.
    upstream.push(Fault::RateLimited {
        retry_after_secs: 60,
    });
    let body = json!({ "model": "oa/text-embedding-3-large", "input": "x" });
    let r = embed(&s, &key, body.clone()).await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "rate_limited");
    let after: u64 = header(&r.headers, "retry-after").parse().unwrap();
    assert!((50..=60).contains(&after), "{after}");
    let calls = upstream.requests().len();
    let r = embed(&s, &key, body).await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.body);
    assert_eq!(
        upstream.requests().len(),
        calls,
        "a resting model was called"
    );
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key=key, max_retries=0)
out = {}
r = client.embeddings.create(model="mock/embed", input=["a b", "c"])
out["default"] = {"n": len(r.data), "dims": len(r.data[0].embedding),
                  "first": r.data[0].embedding, "tokens": r.usage.prompt_tokens, "model": r.model}
r = client.embeddings.create(model="mock/embed", input="a b", encoding_format="float", dimensions=4)
out["float"] = r.data[0].embedding
try:
    client.embeddings.create(model="nope", input="a")
    out["missing"] = None
except openai.NotFoundError as e:
    out["missing"] = e.code
try:
    client.embeddings.create(model="mock/embed", input=[])
    out["empty"] = None
except openai.BadRequestError as e:
    out["empty"] = e.param
print(json.dumps(out))
"#;

async fn embeddings_with_the_openai_sdk(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    let key = s.api_key(&admin, "sdk", "task_executor").await;
    let rest = embed(&s, &key, json!({ "model": "mock/embed", "input": "a b" }))
        .await
        .expect(200);

    let out = s.openai_sdk(SDK_SCRIPT, &[&key]).await;
    // The SDK asked for base64 and decoded it to the same floats.
    assert_eq!(out["default"]["n"], 2, "{out}");
    assert_eq!(out["default"]["dims"], 8);
    assert_eq!(out["default"]["tokens"], 3);
    assert_eq!(out["default"]["model"], "embed");
    // The same f32s: JSON writes each as its shortest decimal, base64 as
    // its bits (which Python reads as the exact double).
    let as_f32 = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    let first: Vec<f64> = out["default"]["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(as_f32(first), as_f32(vector(&rest.body["data"][0])));
    assert_eq!(out["float"].as_array().unwrap().len(), 4);
    assert_eq!(out["missing"], "model_not_found");
    assert_eq!(out["empty"], "input");
}

crate::dual_backend_tests!(
    embeddings_through_the_gateway,
    embeddings_with_the_openai_sdk
);
