//! Every built-in router and condition, and the mock provider, run through
//! the real runtime with meaningful inputs.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use common::*;
use vel_runtime::types::{
    CircuitState, CompletionRequest, ConditionError, EmbeddingError, EmbeddingInput,
    EmbeddingRequest, FinishReason, Message, Preference, ProviderError, ResponseFormat, Role,
    RouteError, TaskType,
};
use vel_runtime::{Limit, PluginError, PluginInfo, PluginKind, Profile, ProviderCall};

#[tokio::test]
async fn default_router_sends_each_task_type_to_its_model() {
    let rt = runtime();
    let router = builtin("default-router").await;
    assert_eq!(router.kind(), PluginKind::Router);
    assert_eq!(router.name(), "default-router");
    let limits = rt.limits(PluginKind::Router, Profile::Platform);
    for (task_type, expected) in [
        (TaskType::Reasoning, "openai/gpt-4o"),
        (TaskType::CodeGeneration, "groq/llama-3.1-70b-versatile"),
        (TaskType::Research, "perplexity/sonar"),
        (TaskType::Light, "openai/gpt-4o-mini"),
    ] {
        let call = rt
            .route(
                &router,
                limits,
                &task(task_type, Preference::Balanced),
                &candidates(),
            )
            .await;
        let plan = call.result.unwrap().unwrap();
        assert_eq!(first(&plan), expected, "{task_type:?}: {}", plan.reason);
        assert_eq!(plan.attempts.len(), 4, "every candidate is a fallback");
        // Routers are fuel-metered: the call reports what it used.
        let fuel = call.stats.fuel_consumed.unwrap();
        assert!(fuel > 0 && fuel < limits.fuel.unwrap());
        assert!(call.stats.peak_memory_bytes > 0);
    }
}

#[tokio::test]
async fn default_router_skips_open_circuits_and_reports_no_candidate() {
    let rt = runtime();
    let router = builtin("default-router").await;
    let limits = rt.limits(PluginKind::Router, Profile::Platform);
    let mut cands = candidates();
    cands[0].circuit = CircuitState::Open; // gpt-4o
    let plan = rt
        .route(
            &router,
            limits,
            &task(TaskType::Reasoning, Preference::Balanced),
            &cands,
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(
        plan.attempts.iter().all(|a| a.model != "gpt-4o"),
        "{plan:?}"
    );
    assert_eq!(plan.attempts.len(), 3);

    let none = rt
        .route(
            &router,
            limits,
            &task(TaskType::Light, Preference::Cost),
            &[],
        )
        .await;
    assert!(
        matches!(none.result, Ok(Err(RouteError::NoCandidate(_)))),
        "{none:?}"
    );
}

#[tokio::test]
async fn cost_router_puts_the_cheapest_first() {
    let rt = runtime();
    let router = builtin("cost-router").await;
    let limits = rt.limits(PluginKind::Router, Profile::Tenant);
    let plan = rt
        .route(
            &router,
            limits,
            &task(TaskType::Reasoning, Preference::Cost),
            &candidates(),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(first(&plan), "openai/gpt-4o-mini");
    assert_eq!(plan.attempts.last().unwrap().model, "gpt-4o");
}

#[tokio::test]
async fn text_match_matches_contains_and_regex_and_rejects_bad_args() {
    let rt = runtime();
    let cond = builtin("text-match").await;
    let limits = rt.limits(PluginKind::Condition, Profile::Platform);
    let eval = |output: &'static str, args: &'static str| {
        let cond = cond.clone();
        async move {
            rt.evaluate(&cond, limits, &condition_input(output, "{}", args))
                .await
                .result
                .unwrap()
        }
    };
    let hit = eval(
        "The answer is APPROVED.",
        r#"{"mode":"contains","pattern":"approved"}"#,
    )
    .await
    .unwrap();
    assert!(hit.matched, "{hit:?}");
    let miss = eval(
        "The answer is rejected.",
        r#"{"mode":"contains","pattern":"approved"}"#,
    )
    .await
    .unwrap();
    assert!(!miss.matched);
    let regex = eval(
        "order #12345 shipped",
        r##"{"mode":"regex","pattern":"#\\d{5}\\b"}"##,
    )
    .await
    .unwrap();
    assert!(regex.matched);
    let bad = eval("x", r#"{"mode":"telepathy","pattern":"x"}"#).await;
    assert!(
        matches!(bad, Err(ConditionError::InvalidArgs(_))),
        "{bad:?}"
    );
}

#[tokio::test]
async fn threshold_compares_a_number_in_the_state() {
    let rt = runtime();
    let cond = builtin("threshold").await;
    let limits = rt.limits(PluginKind::Condition, Profile::Platform);
    let args = r#"{"source":"state","pointer":"/review/score","op":"gte","value":0.8}"#;
    let high = rt
        .evaluate(
            &cond,
            limits,
            &condition_input("", r#"{"review":{"score":0.93}}"#, args),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(high.matched);
    assert_eq!(high.score, Some(0.93));
    let low = rt
        .evaluate(
            &cond,
            limits,
            &condition_input("", r#"{"review":{"score":0.5}}"#, args),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(!low.matched);
}

#[tokio::test]
async fn sentiment_scores_and_labels_text() {
    let rt = runtime();
    let cond = builtin("sentiment").await;
    let limits = rt.limits(PluginKind::Condition, Profile::Tenant);
    let happy = rt
        .evaluate(
            &cond,
            limits,
            &condition_input("This is great, I really love it!", "{}", "{}"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(happy.branch.as_deref(), Some("positive"), "{happy:?}");
    assert!(happy.score.unwrap() > 0.0);
    let sad = rt
        .evaluate(
            &cond,
            limits,
            &condition_input("This is not good, it is terrible.", "{}", "{}"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(sad.branch.as_deref(), Some("negative"), "{sad:?}");
    assert!(sad.score.unwrap() < 0.0);
}

fn request(model: &str, text: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.to_string(),
        messages: vec![Message::text(Role::User, text.to_string())],
        temperature: None,
        max_tokens: None,
        stop: vec![],
        task_type: TaskType::General,
        metadata: "{}".to_string(),
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: ResponseFormat::Text,
        seed: None,
        logprobs: false,
        top_logprobs: None,
    }
}

#[tokio::test]
async fn mock_provider_completes_streams_and_fails_on_request() {
    let rt = runtime();
    let mock = builtin("mock").await;
    let PluginInfo::Provider(info) = mock.info() else {
        panic!("mock is a provider")
    };
    assert!(info.models.iter().any(|m| m.id == "echo"));
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);

    let plain = rt
        .complete(
            &mock,
            limits,
            ProviderCall::default(),
            &request("echo", "hello there"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(plain.text, "echo: hello there");
    assert_eq!(plain.finish_reason, FinishReason::Stop);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let call = ProviderCall {
        deltas: Some(tx),
        ..ProviderCall::default()
    };
    let streamed = rt
        .complete(&mock, limits, call, &request("echo", "one two three"))
        .await
        .result
        .unwrap()
        .unwrap();
    let mut deltas = String::new();
    while let Some(d) = rx.recv().await {
        if let vel_runtime::Delta::Text(text) = d {
            deltas.push_str(&text);
        }
    }
    assert_eq!(deltas, streamed.text);
    assert_eq!(streamed.text, "echo: one two three");

    let limited = rt
        .complete(
            &mock,
            limits,
            ProviderCall::default(),
            &request("rate-limited", "hi"),
        )
        .await;
    assert_eq!(
        limited.result,
        Ok(Err(ProviderError::RateLimited(Some(1000))))
    );
}

#[tokio::test]
async fn mock_provider_embeds_and_completions_only_providers_offer_no_embeddings() {
    let rt = runtime();
    let mock = builtin("mock").await;
    let models: Vec<&str> = mock
        .embedding_models()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(models, ["embed"]);
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let request = EmbeddingRequest {
        model: "embed".into(),
        inputs: vec![
            EmbeddingInput::Text("red apple".into()),
            EmbeddingInput::Text("APPLE red".into()),
            EmbeddingInput::Tokens(vec![1, 2, 3]),
        ],
        dimensions: Some(16),
        user: None,
    };
    let answer = rt
        .embed(&mock, limits, ProviderCall::default(), &request)
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(answer.vectors.len(), 3);
    assert_eq!(answer.vectors[0], answer.vectors[1]);
    assert_eq!(answer.vectors[2].len(), 16);
    assert_eq!(answer.usage.input_tokens, 7);
    let wrong = EmbeddingRequest {
        model: "echo".into(),
        ..request
    };
    let refused = rt
        .embed(&mock, limits, ProviderCall::default(), &wrong)
        .await
        .result
        .unwrap();
    assert!(
        matches!(refused, Err(EmbeddingError::InvalidRequest(_))),
        "{refused:?}"
    );

    // The SDK's completions-only export lists no models; the OpenAI one does.
    assert!(builtin("anthropic").await.embedding_models().is_empty());
    let openai = builtin("openai-compatible").await;
    assert!(
        openai
            .embedding_models()
            .iter()
            .any(|m| m.id == "text-embedding-3-small" && m.dimensions == 1536)
    );
    // A router has no embeddings to call.
    let router = builtin("default-router").await;
    let call = rt
        .embed(&router, limits, ProviderCall::default(), &wrong_model())
        .await;
    assert!(
        matches!(call.result, Err(PluginError::Host(_))),
        "{:?}",
        call.result
    );
}

fn wrong_model() -> EmbeddingRequest {
    EmbeddingRequest {
        model: "m".into(),
        inputs: vec![EmbeddingInput::Text("x".into())],
        dimensions: None,
        user: None,
    }
}

#[tokio::test]
async fn calls_are_refused_for_the_wrong_kind_and_for_oversized_input() {
    let rt = runtime();
    let cond = builtin("text-match").await;
    let router = builtin("default-router").await;
    let limits = rt.limits(PluginKind::Router, Profile::Platform);
    let wrong = rt
        .route(
            &cond,
            limits,
            &task(TaskType::Light, Preference::Cost),
            &candidates(),
        )
        .await;
    assert_eq!(
        wrong.result.unwrap_err(),
        PluginError::WrongKind {
            expected: PluginKind::Router,
            actual: PluginKind::Condition
        }
    );
    let mut tiny = limits.clone();
    tiny.max_input_bytes = 64;
    let refused = rt
        .route(
            &router,
            &tiny,
            &task(TaskType::Light, Preference::Cost),
            &candidates(),
        )
        .await;
    assert_eq!(
        refused.result.unwrap_err(),
        PluginError::LimitExceeded {
            limit: Limit::InputSize,
            max: 64
        }
    );
}
