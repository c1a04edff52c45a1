//! OpenAI and Groq chat completions, plain and streamed, plus the models list.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::{chat_body, client, collect_stream, parse_sse};
use serde_json::{Value, json};
use vel_mock_upstream::{MODELS, MockUpstream, count_tokens, expected_answer};

#[tokio::test]
async fn plain_completion_echoes_and_counts_words() {
    let mock = MockUpstream::start().await;
    for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
        let response = client()
            .post(format!("{}{path}", mock.base_url()))
            .bearer_auth("sk-test")
            .json(&chat_body("gpt-4o", "what is two plus two", false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["choices"][0]["index"], 0);
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "echo: what is two plus two"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        // "be brief" (2) + "what is two plus two" (5)
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13})
        );
        assert!(body.get("citations").is_none());
    }
    assert_eq!(expected_answer("hi there"), "echo: hi there");
    assert_eq!(count_tokens(" a  b\nc "), 3);
}

#[tokio::test]
async fn streaming_sends_word_deltas_usage_and_done() {
    let mock = MockUpstream::start().await;
    let response = client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&chat_body("gpt-4o-mini", "one two three", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (text, failed) = collect_stream(response).await;
    assert!(!failed);
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(deltas, ["echo:", " one", " two", " three"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
    );
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let mock = MockUpstream::start().await;
    let mut body = chat_body("gpt-4o", "hello", true);
    body.as_object_mut().unwrap().remove("stream_options");
    let response = client()
        .post(format!("{}/openai/v1/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (text, _) = collect_stream(response).await;
    let events = parse_sse(&text);
    assert!(events.iter().all(|e| !e.data.contains("\"usage\"")));
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn max_tokens_and_stop_cut_the_answer() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "a b c d e"}], "max_tokens": 3});
    let reply: Value = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: a b");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 3);

    let body = json!({"model": "m", "messages": [{"role": "user", "content": "a b STOP c"}], "stop": "STOP"});
    let reply: Value = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: a b ");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn content_parts_are_accepted() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "from parts"}]}]});
    let reply: Value = client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "echo: from parts"
    );
}

#[tokio::test]
async fn invalid_requests_get_openai_error_bodies() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let cases = [
        (reqwest::Body::from("not json"), "invalid request body"),
        (
            reqwest::Body::from(r#"{"messages":[{"role":"user","content":"x"}]}"#),
            "model",
        ),
        (
            reqwest::Body::from(r#"{"model":"m","messages":[]}"#),
            "messages",
        ),
        (
            reqwest::Body::from(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            ),
            "temperature",
        ),
    ];
    for (body, needle) in cases {
        let response = client().post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle}"
        );
    }
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let response = client()
        .post(format!("{}/v2/nothing", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v2/nothing")
    );
    // Rejected requests are not given a fault and do not consume the script.
    assert!(mock.requests().iter().all(|r| r.fault.is_none()));
    assert_eq!(mock.stats().completed, 6);
}

#[tokio::test]
async fn models_are_listed_in_both_shapes() {
    let mock = MockUpstream::start().await;
    let openai: Value = client()
        .get(format!("{}/v1/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, MODELS);
    assert!(
        openai["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let anthropic: Value = client()
        .get(format!("{}/v1/models", mock.base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["data"][0]["type"], "model");
}

#[tokio::test]
async fn logprobs_come_per_chunk_when_asked() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let mut body = chat_body("gpt-4o", "alpha beta", false);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let reply: Value = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    let seen: Vec<(&str, f64)> = tokens
        .iter()
        .map(|t| (t["token"].as_str().unwrap(), t["logprob"].as_f64().unwrap()))
        .collect();
    assert_eq!(seen, [("echo:", -0.1), (" alpha", -0.2), (" beta", -0.3)]);
    assert_eq!(
        tokens[1]["top_logprobs"],
        json!([{"token": " alpha", "logprob": -0.2, "bytes": b" alpha"},
               {"token": "alt1", "logprob": -1.2, "bytes": b"alt1"}])
    );

    body["stream"] = json!(true);
    let response = client().post(&url).json(&body).send().await.unwrap();
    let (text, _) = collect_stream(response).await;
    let streamed: Vec<Value> = parse_sse(&text)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["logprobs"]["content"]
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    assert_eq!(&streamed, tokens);

    // Not asked: none.
    let reply: Value = client()
        .post(&url)
        .json(&chat_body("gpt-4o", "alpha", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["choices"][0]["logprobs"], Value::Null);
}
