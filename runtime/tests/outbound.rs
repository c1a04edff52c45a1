//! Outbound HTTP through the host's hook, against the mock upstream on
//! loopback: credentials are added by the host and never seen by the guest,
//! timeouts apply, and dropping a call drops the upstream request.

mod common;

use std::time::Duration;

use common::*;
use vel_mock_upstream::{Fault, MockUpstream};
use vel_runtime::types::{CompletionRequest, ProviderError, TaskType};
use vel_runtime::{
    OutboundConfig, PluginKind, Profile, ProviderCall, Runtime, RuntimeConfig, Secret,
};

const SECRET: &str = "sk-vel-test-9f8e7d6c5b4a";

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        messages: vec![],
        temperature: None,
        max_tokens: None,
        stop: vec![],
        task_type: TaskType::General,
        metadata: "{}".into(),
    }
}

fn call_to(mock: &MockUpstream) -> ProviderCall {
    ProviderCall {
        settings: vec![("base-url".into(), mock.base_url())],
        secret: Some(Secret::new(SECRET)),
        allow_base_url_host: true,
        ..ProviderCall::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_adds_the_credential_and_the_guest_never_sees_it() {
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some(SECRET));
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let seen = rt
        .complete(&plugin, limits, call_to(&mock), &request("snoop"))
        .await
        .result
        .unwrap()
        .unwrap()
        .text;
    // The upstream accepted the request: the credential was there…
    assert!(seen.contains("status 200"), "{seen}");
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].bearer_token(), Some(SECRET));
    // …yet nothing the guest could read contains it.
    assert!(
        seen.contains(&format!("setting base-url={}", mock.base_url())),
        "{seen}"
    );
    assert!(!seen.contains(SECRET), "the guest saw the secret:\n{seen}");
    assert!(!seen.contains("sk-vel"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_allowed_upstream_and_others_are_denied() {
    let mock = MockUpstream::start().await;
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let answer = rt
        .complete(&plugin, limits, call_to(&mock), &request("gpt-4o"))
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(answer.text.starts_with("200 "), "{}", answer.text);
    assert!(answer.text.contains("echo: hi"), "{}", answer.text);

    // Without the base URL's host allowed, the same call is refused.
    let call = ProviderCall {
        allow_base_url_host: false,
        ..call_to(&mock)
    };
    let denied = rt.complete(&plugin, limits, call, &request("gpt-4o")).await;
    assert_eq!(
        denied.result.unwrap_err(),
        vel_runtime::PluginError::HttpRequestDenied {
            host: mock.base_url().trim_start_matches("http://").to_string()
        }
    );
    assert_eq!(
        mock.stats().received,
        1,
        "the denied request never left the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_drops_the_upstream_request() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    let plugin = hostile("outbound").await;
    let call = call_to(&mock);
    // Cancel the way the orchestrator does: abort the task running the call.
    let task = tokio::spawn(async move {
        let rt = runtime();
        let limits = rt.limits(PluginKind::Provider, Profile::Platform);
        rt.complete(&plugin, limits, call, &request("gpt-4o")).await
    });
    mock.wait_for_requests(1).await;
    assert_eq!(mock.stats().dropped, 0);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The call is gone: the instance and its upstream connection with it.
    let stats = mock.wait_for_dropped(1).await;
    assert_eq!((stats.dropped, stats.completed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    // A runtime of its own with a short first-byte timeout.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 8,
        outbound: OutboundConfig {
            connect_timeout: Duration::from_millis(200),
            first_byte_timeout: Duration::from_millis(200),
            ..OutboundConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = rt.load(&hostile_bytes("outbound")).await.unwrap();
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let result = rt
        .complete(&plugin, limits, call_to(&mock), &request("gpt-4o"))
        .await
        .result
        .unwrap();
    assert_eq!(result, Err(ProviderError::Timeout));
    mock.wait_for_dropped(1).await;
}
