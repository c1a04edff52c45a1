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

/// A request offering `get_weather(city, days)`.
fn tool_body(stream: bool) -> Value {
    let mut body = messages_body("claude", "Paris", stream);
    body["tools"] = json!([{"name": "get_weather", "description": "The weather",
        "input_schema": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}}}]);
    body
}

async fn send(mock: &MockUpstream, body: &Value) -> reqwest::Response {
    anthropic_request(&client(), &mock.base_url(), body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tools_get_a_tool_use_answer_and_results_get_text() {
    let mock = MockUpstream::start().await;
    let reply: Value = send(&mock, &tool_body(false)).await.json().await.unwrap();
    assert_eq!(reply["stop_reason"], "tool_use", "{reply}");
    let block = &reply["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "Paris", "days": 1}));
    let id = block["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_mock_"), "{id}");

    // The results go back in the next user turn and are answered.
    let mut body = tool_body(false);
    body["messages"] = json!([
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": "sunny"}]},
    ]);
    let reply: Value = send(&mock, &body).await.json().await.unwrap();
    assert_eq!(reply["stop_reason"], "end_turn", "{reply}");
    assert_eq!(reply["content"][0]["text"], "echo: sunny");

    // `none` answers text; a named tool is called even after results.
    let mut none = tool_body(false);
    none["tool_choice"] = json!({"type": "none"});
    let reply: Value = send(&mock, &none).await.json().await.unwrap();
    assert_eq!(reply["content"][0]["text"], "echo: Paris", "{reply}");
    body["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let reply: Value = send(&mock, &body).await.json().await.unwrap();
    assert_eq!(reply["stop_reason"], "tool_use", "{reply}");
    assert_eq!(reply["content"][0]["input"]["city"], "sunny");
}

#[tokio::test]
async fn a_streamed_tool_use_comes_in_input_json_pieces() {
    let mock = MockUpstream::start().await;
    let (text, failed) = collect_stream(send(&mock, &tool_body(true)).await).await;
    assert!(!failed);
    let events: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    let start = &events[1];
    assert_eq!(start["type"], "content_block_start");
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    assert_eq!(start["content_block"]["input"], json!({}));
    let pieces: Vec<&str> = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(pieces.len(), 3);
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(input, json!({"city": "Paris", "days": 1}));
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn tool_blocks_are_checked_as_the_api_checks_them() {
    let mock = MockUpstream::start().await;
    let use_block = json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                           "input": {"city": "Paris"}});
    let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "x"});
    let cases = [
        // A tool_use not answered in the next turn.
        (
            json!([{"role": "user", "content": "Paris"},
                   {"role": "assistant", "content": [use_block]},
                   {"role": "user", "content": "well?"}]),
            None,
            "without `tool_result` blocks immediately after: toolu_1",
        ),
        // Results split over two turns: the second answers nothing before it.
        (
            json!([{"role": "user", "content": "Paris"},
                   {"role": "assistant", "content": [use_block]},
                   {"role": "user", "content": [result("toolu_1")]},
                   {"role": "user", "content": [result("toolu_1")]}]),
            None,
            "unexpected `tool_use_id`",
        ),
        (
            json!([{"role": "user", "content": "Paris"}]),
            Some(json!({"type": "tool", "name": "nope"})),
            "tool nope not found",
        ),
        (
            json!([{"role": "user", "content": "Paris"}]),
            Some(json!({"type": "required"})),
            "does not match any of the expected tags",
        ),
        (
            json!([{"role": "user", "content": "Paris"},
                   {"role": "assistant", "content": [{"type": "text", "text": ""}]}]),
            None,
            "text content blocks must be non-empty",
        ),
    ];
    for (messages, choice, expected) in cases {
        let mut body = tool_body(false);
        body["messages"] = messages;
        if let Some(choice) = choice {
            body["tool_choice"] = choice;
        }
        let response = send(&mock, &body).await;
        assert_eq!(response.status(), 400, "{expected}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    // Tool blocks without tools, and a schema that is not an object.
    let mut body = messages_body("c", "x", false);
    body["messages"] = json!([{"role": "assistant", "content": [use_block]}]);
    let error: Value = send(&mock, &body).await.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must define tools")
    );
    let mut body = tool_body(false);
    body["tools"][0]["input_schema"] = json!({"type": "array"});
    assert_eq!(send(&mock, &body).await.status(), 400);
}
