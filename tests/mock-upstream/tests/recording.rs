//! What the mock records, credentials checks and the stats endpoint.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::{anthropic_request, chat_body, client, messages_body};
use serde_json::Value;
use vel_mock_upstream::{Fault, MockUpstream};

#[tokio::test]
async fn records_method_path_headers_body_and_fault() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Status(503));
    client()
        .post(format!("{}/v1/chat/completions?trace=1", mock.base_url()))
        .bearer_auth("sk-injected")
        .json(&chat_body("gpt-4o", "hi", false))
        .send()
        .await
        .unwrap();
    anthropic_request(
        &client(),
        &mock.base_url(),
        &messages_body("claude", "yo", true),
    )
    .send()
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let openai = &requests[0];
    assert_eq!(openai.method, "POST");
    assert_eq!(openai.path, "/v1/chat/completions");
    assert_eq!(openai.query.as_deref(), Some("trace=1"));
    assert_eq!(openai.header("authorization"), Some("Bearer sk-injected"));
    assert_eq!(openai.bearer_token(), Some("sk-injected"));
    assert_eq!(openai.model(), Some("gpt-4o"));
    assert!(!openai.is_stream());
    assert_eq!(
        openai.body.as_ref().unwrap()["messages"][1]["content"],
        "hi"
    );
    assert_eq!(openai.fault, Some(Fault::Status(503)));

    let anthropic = &requests[1];
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some("ak-test"));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert!(anthropic.is_stream());
    assert_eq!(anthropic.fault, Some(Fault::Ok));

    mock.clear_requests();
    assert!(mock.requests().is_empty());
    assert_eq!(mock.stats().received, 2);
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let mock = MockUpstream::start().await;
    mock.set_recording(false);
    let response = client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(mock.requests().is_empty());
    assert_eq!(mock.stats().completed, 1);
}

#[tokio::test]
async fn required_api_key_is_checked_per_provider() {
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some("right"));
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let send = |key: Option<&'static str>| {
        let mut request = client().post(&url).json(&chat_body("m", "hi", false));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let missing = send(None).await.unwrap();
    assert_eq!(missing.status(), 401);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");
    assert_eq!(send(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(send(Some("right")).await.unwrap().status(), 200);

    let wrong = anthropic_request(&client(), &mock.base_url(), &messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let error: Value = wrong.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
    let right = client()
        .post(format!("{}/v1/messages", mock.base_url()))
        .header("x-api-key", "right")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("c", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // Rejected requests consumed no script entry.
    assert!(mock.requests().iter().filter(|r| r.fault.is_some()).count() == 2);
}

#[tokio::test]
async fn stats_endpoint_reports_counters_without_counting_itself() {
    let mock = MockUpstream::start().await;
    client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&chat_body("m", "hi", false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: Value = client()
        .get(format!("{}/__mock/stats", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["received"], 1);
    assert_eq!(stats["completed"], 1);
    assert_eq!(stats["dropped"], 0);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(mock.stats().received, 1);
    assert_eq!(mock.requests().len(), 1);
}
