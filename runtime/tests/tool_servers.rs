//! The `tool-server` world through the real runtime: the built-in `mcp`
//! plugin against the mock upstream's hostile MCP endpoints — the host adds
//! the credential, a JSON-RPC error comes back typed, a huge answer is
//! refused, progress reports reach the caller and a caller that stops
//! listening stops the call; and the kind is checked on every call.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::*;
use vel_mock_upstream::MockUpstream;
use vel_runtime::types::ToolError;
use vel_runtime::{PluginError, PluginInfo, PluginKind, Profile, Secret, ToolServerCall};

const SECRET: &str = "tm-vel-test-1a2b3c4d";

fn call_to(mock: &MockUpstream, mode: &str) -> ToolServerCall {
    ToolServerCall {
        settings: vec![
            ("base-url".into(), format!("{}/mcp/{mode}", mock.base_url())),
            ("timeout-ms".into(), "5000".into()),
        ],
        secret: Some(Secret::new(SECRET)),
        allow_base_url_host: true,
        ..ToolServerCall::default()
    }
}

#[tokio::test]
async fn mcp_is_a_tool_server_with_a_bearer_credential() {
    let mcp = builtin("mcp").await;
    assert_eq!(mcp.kind(), PluginKind::Tool);
    let PluginInfo::Tool(info) = mcp.info() else {
        panic!("{:?}", mcp.info())
    };
    assert_eq!(info.name, "mcp");
    let credential = info.credential.as_ref().unwrap();
    assert_eq!(
        (credential.name.as_str(), credential.prefix.as_str()),
        ("authorization", "Bearer ")
    );
    assert_eq!(info.base_url_setting.as_deref(), Some("base-url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_adds_the_credential_and_errors_come_back_typed() {
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some(SECRET));
    let rt = runtime();
    let mcp = builtin("mcp").await;
    let limits = rt.limits(PluginKind::Tool, Profile::Platform);
    let answer = rt
        .call_tool(&mcp, limits, call_to(&mock, "rpc-error"), "anything", "{}")
        .await
        .result
        .unwrap();
    match answer {
        Err(ToolError::Server((code, message))) => {
            assert_eq!(code, -32603);
            assert!(message.contains("the tool broke"), "{message}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    // initialize, notifications/initialized, tools/call and the DELETE
    // ending the session, each with the host's credential.
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests.iter().all(|r| r.bearer_token() == Some(SECRET)));

    // Arguments that are not an object never leave the sandbox.
    let answer = rt
        .call_tool(&mcp, limits, call_to(&mock, "rpc-error"), "anything", "[1]")
        .await
        .result
        .unwrap();
    assert!(
        matches!(answer, Err(ToolError::InvalidArguments(_))),
        "{answer:?}"
    );
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_are_refused() {
    let mock = MockUpstream::start().await;
    let rt = runtime();
    let mcp = builtin("mcp").await;
    let limits = rt.limits(PluginKind::Tool, Profile::Platform);
    let huge = rt.list_tools(&mcp, limits, call_to(&mock, "huge")).await;
    match huge.result.unwrap() {
        Err(ToolError::Other(m)) => assert!(m.contains("larger than 4194304 bytes"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let invalid = rt.list_tools(&mcp, limits, call_to(&mock, "invalid")).await;
    assert!(
        matches!(invalid.result.unwrap(), Err(ToolError::Protocol(_))),
        "not JSON-RPC is a protocol error"
    );
    // A host that is not allowed is refused by the host.
    let mut call = call_to(&mock, "invalid");
    call.allow_base_url_host = false;
    let refused = rt.list_tools(&mcp, limits, call).await;
    assert!(
        matches!(&refused.result, Err(PluginError::HttpRequestDenied { .. })),
        "{:?}",
        refused.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_caller_and_a_caller_that_left_stops_the_call() {
    let mock = MockUpstream::start().await;
    let rt = runtime();
    let mcp = builtin("mcp").await;
    let limits = rt.limits(PluginKind::Tool, Profile::Platform);
    // Listening: reports arrive until the answer grows too large.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut call = call_to(&mock, "endless");
    call.progress = Some(tx);
    let endless = rt.call_tool(&mcp, limits, call, "anything", "{}").await;
    assert!(matches!(endless.result.unwrap(), Err(ToolError::Other(_))));
    let first = rx.recv().await.unwrap();
    assert_eq!(first.progress, 1.0);
    assert_eq!(first.message.as_deref(), Some("still going"));
    // Gone: the first report tells the plugin to stop.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    drop(rx);
    let mut call = call_to(&mock, "endless");
    call.progress = Some(tx);
    let stopped = rt.call_tool(&mcp, limits, call, "anything", "{}").await;
    match stopped.result.unwrap() {
        Err(ToolError::Other(m)) => assert!(m.contains("cancelled"), "{m}"),
        other => panic!("expected the call to stop, got {other:?}"),
    }
}

#[tokio::test]
async fn only_tool_servers_list_and_call_tools() {
    let rt = runtime();
    let mock = builtin("mock").await;
    let limits = rt.limits(PluginKind::Tool, Profile::Platform);
    let call = rt
        .call_tool(&mock, limits, ToolServerCall::default(), "echo", "{}")
        .await;
    assert!(
        matches!(
            call.result,
            Err(PluginError::WrongKind {
                expected: PluginKind::Tool,
                actual: PluginKind::Provider
            })
        ),
        "{:?}",
        call.result
    );
}
