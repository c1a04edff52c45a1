//! One provider call, taken apart: the same chat completion sent to the
//! mock upstream directly (a pooled hyper client, the round trip alone),
//! through the `openai-compatible` plugin (fresh instance, the guest's JSON,
//! `wasi:http` through the host's send hook), and to the offline `mock`
//! provider (instantiation and the guest, no HTTP). The differences say
//! where a gateway request's provider time goes.
//!
//! Run: `cargo bench -p vel-runtime --bench provider_call`.
//! Prints p50/p90/p99 over 5,000 calls of each (`VEL_BENCH_SAMPLES`), measured in one run.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::{Harness, percentiles};
use vel_mock_upstream::MockUpstream;
use vel_runtime::types::{CompletionRequest, Message, ResponseFormat, Role, TaskType};
use vel_runtime::{PluginKind, Profile, ProviderCall};

/// Timed calls of each kind; `VEL_BENCH_SAMPLES` overrides.
fn samples() -> usize {
    std::env::var("VEL_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000)
}

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        messages: vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::User, "Say hello to the benchmark in a few words."),
        ],
        temperature: Some(0.2),
        max_tokens: Some(64),
        stop: vec![],
        task_type: TaskType::Light,
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

/// The body the `openai-compatible` plugin sends for [`request`].
const DIRECT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hello to the benchmark in a few words."}],"temperature":0.2,"max_tokens":64,"stream":false}"#;

/// The mock upstream on its own thread and runtime, as in production where
/// the upstream is another process.
fn start_mock() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async {
            let mock = MockUpstream::start().await;
            mock.set_recording(false);
            tx.send(mock.base_url()).expect("bench is waiting");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("mock upstream starts")
}

fn main() {
    let samples = samples();
    let base = start_mock();
    let harness = Harness::new();
    let openai = harness.load("openai-compatible");
    let mock = harness.load("mock");
    let Harness { tokio, runtime } = harness;
    let limits = runtime.limits(PluginKind::Provider, Profile::Platform);

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let url = format!("{base}/v1/chat/completions");
    percentiles(
        "direct to the mock upstream (hyper)",
        samples / 10,
        samples,
        || {
            tokio.block_on(async {
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(Bytes::from_static(DIRECT_BODY.as_bytes())))
                    .expect("request");
                let response = client.request(req).await.expect("mock answers");
                assert!(response.status().is_success());
                response.into_body().collect().await.expect("body");
            })
        },
    );

    let openai_request = request("gpt-4o-mini");
    let settings = vec![("base-url".to_string(), format!("{base}/v1"))];
    percentiles(
        "openai-compatible plugin (instantiate + HTTP + JSON)",
        samples / 10,
        samples,
        || {
            tokio.block_on(async {
                let call = ProviderCall {
                    settings: settings.clone(),
                    secret: Some(vel_runtime::Secret::new("sk-bench")),
                    allow_base_url_host: true,
                    ..ProviderCall::default()
                };
                let done = runtime
                    .complete(&openai, limits, call, &openai_request)
                    .await;
                assert!(matches!(done.result, Ok(Ok(_))), "{:?}", done.result);
            })
        },
    );

    let echo = request("echo");
    percentiles(
        "mock provider plugin (instantiate + guest, no HTTP)",
        samples / 10,
        samples,
        || {
            tokio.block_on(async {
                let done = runtime
                    .complete(&mock, limits, ProviderCall::default(), &echo)
                    .await;
                assert!(matches!(done.result, Ok(Ok(_))), "{:?}", done.result);
            })
        },
    );
}
