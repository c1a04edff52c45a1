//! Anthropic's Messages API, plain and streamed, and its errors.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::{anthropic_request, client, collect_stream, messages_body, parse_sse};
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream};

#[tokio::test]
async fn plain_message_echoes_with_usage() {
    let mock = MockUpstream::start().await;
    let response = anthropic_request(
        &client(),
        &mock.base_url(),
        &messages_body("claude-3-5-sonnet-latest", "hello there", false),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-3-5-sonnet-latest");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "echo: hello there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    // system "be brief" (2) + "hello there" (2)
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 4, "output_tokens": 3})
    );
}

#[tokio::test]
async fn stop_reasons_follow_max_tokens_and_stop_sequences() {
    let mock = MockUpstream::start().await;
    let mut body = messages_body("c", "a b c d", false);
    body["max_tokens"] = json!(2);
    let reply: Value = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["content"][0]["text"], "echo: a");

    let mut body = messages_body("c", "a b c d", false);
    body["stop_sequences"] = json!(["c"]);
    let reply: Value = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["stop_reason"], "stop_sequence");
    assert_eq!(reply["stop_sequence"], "c");
    assert_eq!(reply["content"][0]["text"], "echo: a b ");
}

#[tokio::test]
async fn streamed_message_sends_the_event_sequence() {
    let mock = MockUpstream::start().await;
    let response = anthropic_request(
        &client(),
        &mock.base_url(),
        &messages_body("claude", "stream me", true),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (text, failed) = collect_stream(response).await;
    assert!(!failed);
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for event in &events {
        assert_eq!(event.json()["type"], event.event.as_deref().unwrap());
    }
    assert_eq!(events[0].json()["message"]["usage"]["input_tokens"], 4);
    let deltas: Vec<Value> = events[2..5]
        .iter()
        .map(|e| e.json()["delta"].clone())
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"type": "text_delta", "text": "echo:"}),
            json!({"type": "text_delta", "text": " stream"}),
            json!({"type": "text_delta", "text": " me"}),
        ]
    );
    let delta = events[6].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn bad_requests_get_anthropic_error_bodies() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/messages", mock.base_url());
    // No anthropic-version header.
    let response = client()
        .post(&url)
        .json(&messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    // No max_tokens.
    let mut body = messages_body("c", "x", false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let response = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    // A system role inside messages.
    let body =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]});
    let response = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn overloaded_is_529_with_overloaded_error() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Status(529));
    let response = anthropic_request(&client(), &mock.base_url(), &messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 529);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}
