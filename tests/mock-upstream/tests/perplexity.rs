//! Perplexity's chat completions (no `/v1`, with citations).
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::{chat_body, client, collect_stream, parse_sse};
use serde_json::{Value, json};
use vel_mock_upstream::{MockUpstream, PERPLEXITY_CITATIONS};

#[tokio::test]
async fn plain_answer_carries_citations() {
    let mock = MockUpstream::start().await;
    let body: Value = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("pplx-test")
        .json(&chat_body("sonar", "latest rust release", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: latest rust release"
    );
    assert_eq!(body["citations"], json!(PERPLEXITY_CITATIONS));
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn streamed_answer_has_citations_and_usage_on_the_finish_chunk() {
    let mock = MockUpstream::start().await;
    let mut request = chat_body("sonar", "two words", true);
    request.as_object_mut().unwrap().remove("stream_options");
    let response = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&request)
        .send()
        .await
        .unwrap();
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
            .all(|c| c["citations"] == json!(PERPLEXITY_CITATIONS))
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: two words");
    let finish = chunks.last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["usage"]["total_tokens"], 4 + 3);
}
