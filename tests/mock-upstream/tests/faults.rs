//! Each fault kind, seen by a real HTTP client.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::{
    anthropic_request, bounded, chat_body, client, client_builder, collect_stream, messages_body,
    parse_sse,
};
use serde_json::Value;
use vel_mock_upstream::{Fault, MockUpstream};

fn chat_url(mock: &MockUpstream) -> String {
    format!("{}/v1/chat/completions", mock.base_url())
}

async fn status_of(mock: &MockUpstream, model: &str) -> u16 {
    client()
        .post(chat_url(mock))
        .json(&chat_body(model, "hi", false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rate_limited_sends_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::RateLimited {
        retry_after_secs: 7,
    });
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    mock.push(Fault::RateLimited {
        retry_after_secs: 2,
    });
    let response = anthropic_request(&client(), &mock.base_url(), &messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    // The queue is consumed: the next request is fine.
    assert_eq!(status_of(&mock, "m").await, 200);
}

#[tokio::test]
async fn status_faults_use_the_provider_error_shape() {
    let mock = MockUpstream::start().await;
    mock.push_many([
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(401),
        Fault::Status(500),
    ]);
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"].is_string());

    let response = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat_body("sonar", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "service_unavailable");

    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");

    let response = anthropic_request(&client(), &mock.base_url(), &messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(mock.pending_faults(), 0);
}

#[tokio::test]
async fn hang_ends_when_the_client_times_out_and_counts_as_dropped() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    let impatient = client_builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let result = impatient
        .post(chat_url(&mock))
        .json(&chat_body("m", "hi", false))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let stats = bounded(mock.wait_for_dropped(1)).await;
    assert_eq!(
        (
            stats.received,
            stats.completed,
            stats.dropped,
            stats.in_flight
        ),
        (1, 0, 1, 0)
    );
}

#[tokio::test]
async fn aborting_the_client_task_drops_a_hanging_request() {
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    let url = chat_url(&mock);
    let caller = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat_body("m", "hi", true))
            .send()
            .await
    });
    let stats = bounded(mock.wait_until(|s| s.in_flight == 1)).await;
    assert_eq!(stats.dropped, 0);
    caller.abort();
    let stats = bounded(mock.wait_for_dropped(1)).await;
    assert_eq!(stats.in_flight, 0);
    bounded(mock.wait_until(|s| s.connections_open == 0)).await;
}

#[tokio::test]
async fn delay_answers_normally_afterwards() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Delay(Duration::from_millis(50)));
    mock.set_latency(Duration::from_millis(10));
    let body: Value = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "late", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: late");
    assert_eq!(
        mock.requests()[0].fault,
        Some(Fault::Delay(Duration::from_millis(50)))
    );
}

#[tokio::test]
async fn cut_stream_closes_without_the_terminator() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::CutStream { after_chunks: 2 });
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "one two three four", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (text, failed) = collect_stream(response).await;
    assert!(failed, "the client must see an incomplete body");
    let events = parse_sse(&text);
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "echo: one");
    let stats = bounded(mock.wait_for_completed(1)).await;
    assert_eq!(stats.dropped, 0);
}

#[tokio::test]
async fn error_mid_stream_sends_the_error_event_after_the_deltas() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::ErrorMidStream { after_chunks: 2 });
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "one two three four", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (text, failed) = collect_stream(response).await;
    assert!(!failed, "the body ends normally");
    let events = parse_sse(&text);
    let content: String = events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "echo: one");
    let last = events.last().expect("events").json();
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
}

#[tokio::test]
async fn cut_stream_on_anthropic_stops_before_message_stop() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::CutStream { after_chunks: 1 });
    let response = anthropic_request(
        &client(),
        &mock.base_url(),
        &messages_body("c", "a b c", true),
    )
    .send()
    .await
    .unwrap();
    let (text, failed) = collect_stream(response).await;
    assert!(failed);
    let names: Vec<String> = parse_sse(&text)
        .into_iter()
        .filter_map(|e| e.event)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
}

#[tokio::test]
async fn cut_plain_response_is_an_incomplete_body() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::CutStream { after_chunks: 0 });
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn stalled_stream_delivers_partial_output_then_counts_the_drop() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::StallStream { after_chunks: 1 });
    let response = client()
        .post(chat_url(&mock))
        .json(&chat_body("m", "partial answer here", true))
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(futures::StreamExt::peekable(response.bytes_stream()));
    // Read until the first content delta arrives.
    let mut received = String::new();
    while !received.contains("\"content\":\"echo:\"") {
        let bytes = bounded(futures::StreamExt::next(&mut stream))
            .await
            .unwrap()
            .unwrap();
        received.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert_eq!(mock.stats().in_flight, 1);
    drop(stream);
    let stats = bounded(mock.wait_for_dropped(1)).await;
    assert_eq!(stats.completed, 0);
}

#[tokio::test]
async fn fail_every_model_overrides_and_default() {
    let mock = MockUpstream::start().await;
    mock.fail_every(3, 502);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(status_of(&mock, "m").await);
    }
    assert_eq!(statuses, [200, 200, 502, 200, 200, 502]);

    mock.fail_every(0, 502);
    mock.set_model_fault("broken-model", Fault::Status(503));
    mock.push(Fault::Status(500));
    assert_eq!(status_of(&mock, "broken-model").await, 503);
    // The override did not consume the queued fault.
    assert_eq!(status_of(&mock, "m").await, 500);
    assert_eq!(status_of(&mock, "m").await, 200);
    mock.clear_model_fault("broken-model");
    assert_eq!(status_of(&mock, "broken-model").await, 200);

    mock.set_default(Fault::Status(504));
    assert_eq!(status_of(&mock, "m").await, 504);
    mock.set_default(Fault::Ok);
    mock.push_many([Fault::Status(500), Fault::Status(500)]);
    mock.clear_faults();
    assert_eq!(status_of(&mock, "m").await, 200);
}

#[tokio::test]
async fn shutdown_closes_hanging_connections() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    let url = chat_url(&mock);
    let caller = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat_body("m", "hi", false))
            .send()
            .await
    });
    bounded(mock.wait_for_requests(1)).await;
    mock.shutdown().await;
    let result = bounded(caller).await.unwrap();
    assert!(result.is_err(), "the client must see the connection close");
}

/// The text of a plain answer on either wire.
fn answer_text(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .or_else(|| body["content"][0]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn only_anthropic_continues_a_trailing_assistant_turn_but_both_follow_a_request_to_continue()
{
    let mock = MockUpstream::start().await;
    let partial = serde_json::json!({"role": "assistant", "content": "echo: one two"});
    let ask = serde_json::json!({"role": "user", "content": "Continue exactly where it stops."});

    // Anthropic: assistant prefill.
    let mut body = messages_body("c", "one two three", false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(partial.clone());
    let reply: Value = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer_text(&reply), " three", "{reply}");

    // OpenAI: no prefill, the whole answer again…
    let mut body = chat_body("m", "one two three", false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(partial.clone());
    let reply: Value = client()
        .post(chat_url(&mock))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer_text(&reply), "echo: one two three", "{reply}");

    // …but the partial turn followed by a request to continue is continued,
    // on either wire.
    body["messages"].as_array_mut().unwrap().push(ask.clone());
    let reply: Value = client()
        .post(chat_url(&mock))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer_text(&reply), " three", "{reply}");
    let mut body = messages_body("c", "one two three", false);
    body["messages"].as_array_mut().unwrap().push(partial);
    body["messages"].as_array_mut().unwrap().push(ask);
    let reply: Value = anthropic_request(&client(), &mock.base_url(), &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer_text(&reply), " three", "{reply}");
}
