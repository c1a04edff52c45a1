//! The built-in providers over real HTTP on loopback, against the mock
//! upstream: plain and streaming completions, injected 429 / 5xx / hangs,
//! and credentials added by the host.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::*;
use vel_mock_upstream::{Fault, MockUpstream, expected_answer};
use vel_runtime::types::{
    CompletionRequest, Message, ProviderError, ResponseFormat, Role, TaskType,
};
use vel_runtime::{PluginKind, Profile, ProviderCall, Secret};

const SECRET: &str = "sk-provider-test-0123456789";

/// A provider under test: its plugin name, model, how its base URL is
/// built from the mock's, and the header its credential travels in.
struct Case {
    plugin: &'static str,
    model: &'static str,
    base_path: &'static str,
    credential_header: &'static str,
    credential_prefix: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        plugin: "openai-compatible",
        model: "gpt-4o-mini",
        base_path: "/v1",
        credential_header: "authorization",
        credential_prefix: "Bearer ",
    },
    Case {
        plugin: "perplexity",
        model: "sonar",
        base_path: "",
        credential_header: "authorization",
        credential_prefix: "Bearer ",
    },
    Case {
        plugin: "anthropic",
        model: "claude-3-5-sonnet",
        base_path: "",
        credential_header: "x-api-key",
        credential_prefix: "",
    },
];

fn request(model: &str, text: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        messages: vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::User, text),
        ],
        temperature: Some(0.2),
        max_tokens: Some(200),
        stop: vec![],
        task_type: TaskType::General,
        metadata: "{}".into(),
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: ResponseFormat::Text,
        seed: None,
        logprobs: false,
        top_logprobs: None,
    }
}

fn call(case: &Case, mock: &MockUpstream) -> ProviderCall {
    ProviderCall {
        settings: vec![
            (
                "base-url".into(),
                format!("{}{}", mock.base_url(), case.base_path),
            ),
            ("timeout-ms".into(), "300".into()),
        ],
        secret: Some(Secret::new(SECRET)),
        allow_base_url_host: true,
        ..ProviderCall::default()
    }
}

async fn complete(
    case: &Case,
    mock: &MockUpstream,
    provider_call: ProviderCall,
    text: &str,
) -> Result<vel_runtime::types::CompletionResponse, ProviderError> {
    let rt = runtime();
    let plugin = builtin(case.plugin).await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let _ = mock;
    rt.complete(&plugin, limits, provider_call, &request(case.model, text))
        .await
        .result
        .unwrap_or_else(|e| panic!("{}: the sandbox stopped the call: {e}", case.plugin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_completions_carry_the_host_added_credential() {
    for case in &CASES {
        let mock = MockUpstream::start().await;
        let answer = complete(case, &mock, call(case, &mock), "hello vel")
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.plugin));
        assert!(
            answer.text.starts_with(&expected_answer("hello vel")),
            "{}: {}",
            case.plugin,
            answer.text
        );
        assert!(
            answer.usage.input_tokens > 0 && answer.usage.output_tokens > 0,
            "{}",
            case.plugin
        );
        let sent = &mock.requests()[0];
        assert_eq!(
            sent.header(case.credential_header),
            Some(format!("{}{SECRET}", case.credential_prefix).as_str()),
            "{}",
            case.plugin
        );
        assert!(!sent.is_stream());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completions_emit_deltas_in_order() {
    for case in &CASES {
        let mock = MockUpstream::start().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let provider_call = ProviderCall {
            deltas: Some(tx),
            ..call(case, &mock)
        };
        let answer = complete(case, &mock, provider_call, "stream these words please")
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.plugin));
        let mut deltas = Vec::new();
        while let Some(delta) = rx.recv().await {
            if let vel_runtime::Delta::Text(text) = delta {
                deltas.push(text);
            }
        }
        assert!(deltas.len() > 1, "{}: {deltas:?}", case.plugin);
        let streamed: String = deltas.concat();
        assert!(
            streamed.starts_with(&expected_answer("stream these words please")),
            "{}: {streamed}",
            case.plugin
        );
        assert!(answer.text.starts_with(&streamed) || streamed.starts_with(&answer.text));
        assert!(mock.requests()[0].is_stream(), "{}", case.plugin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_become_provider_errors() {
    for case in &CASES {
        let mock = MockUpstream::start().await;
        mock.push_many([
            Fault::RateLimited {
                retry_after_secs: 2,
            },
            Fault::Status(503),
            Fault::Hang,
        ]);
        let limited = complete(case, &mock, call(case, &mock), "x").await;
        assert_eq!(
            limited,
            Err(ProviderError::RateLimited(Some(2000))),
            "{}",
            case.plugin
        );
        let down = complete(case, &mock, call(case, &mock), "x").await;
        assert!(
            matches!(down, Err(ProviderError::Unavailable(_))),
            "{}: {down:?}",
            case.plugin
        );
        let hung = complete(case, &mock, call(case, &mock), "x").await;
        assert_eq!(hung, Err(ProviderError::Timeout), "{}", case.plugin);
        // The hung request was abandoned, not left open.
        mock.wait_for_dropped(1).await;
    }
}
