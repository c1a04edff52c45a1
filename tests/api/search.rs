//! Task history search: `GET /api/tasks` filtered by text in the
//! description or the request, by provider, model, source and cost range,
//! across queued tasks and gateway requests alike.

use serde_json::json;

use crate::support::{Backend, Server};

/// Ids of the tasks `GET /api/tasks?{query}` lists, checked against its total.
async fn found(s: &Server, token: &str, query: &str) -> Vec<String> {
    let r = s
        .get(&format!("/api/tasks?{query}"), token)
        .await
        .expect(200);
    let items: Vec<String> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(r.body["total"], items.len(), "{query}: {}", r.body);
    items
}

async fn tasks_are_found_by_text_provider_model_source_and_cost(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    // The mock charges 100 nano-dollars a prompt word and 200 an answer
    // word (`echo: ` and the prompt): one word $0.0000005, two $0.0000008,
    // five $0.0000017.
    let mut ids = Vec::new();
    for (description, prompt) in [
        ("Alpha report", "hello"),
        ("beta", "find the 100% _raw_ data"),
    ] {
        let r = s
            .post(
                "/api/tasks",
                &admin,
                json!({ "description": description, "prompt": prompt, "task_type": "light",
                        "parameters": { "model": "mock/echo" } }),
            )
            .await
            .expect(201);
        let id = r.body["id"].as_str().unwrap().to_string();
        s.event_stream(&admin, &id, None).await;
        ids.push(id);
    }
    let key = s.api_key(&admin, "gw", "task_executor").await;
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "mock/echo", "messages": [{ "role": "user", "content": "gamma ray" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gateway = resp.headers()["x-vel-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    s.recorded_task(&admin, &gateway).await;
    let (alpha, beta) = (ids[0].clone(), ids[1].clone());

    // Text: the description or the prompt, any ASCII case; `%` and `_` are
    // themselves, not patterns.
    assert_eq!(found(&s, &admin, "q=ALPHA").await, [alpha.as_str()]);
    assert_eq!(found(&s, &admin, "q=100%25").await, [beta.as_str()]);
    assert_eq!(found(&s, &admin, "q=_raw_").await, [beta.as_str()]);
    assert_eq!(found(&s, &admin, "q=_").await, [beta.as_str()]);
    assert_eq!(found(&s, &admin, "q=Gamma").await, [gateway.as_str()]);
    assert!(found(&s, &admin, "q=nowhere").await.is_empty());
    // Source, provider and model.
    assert_eq!(
        found(&s, &admin, "source=gateway").await,
        [gateway.as_str()]
    );
    assert_eq!(found(&s, &admin, "source=api").await.len(), 2);
    assert_eq!(found(&s, &admin, "provider=mock").await.len(), 3);
    assert!(found(&s, &admin, "provider=elsewhere").await.is_empty());
    let model = s
        .get(&format!("/api/tasks/{alpha}"), &admin)
        .await
        .expect(200)
        .body["model"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(found(&s, &admin, &format!("model={model}")).await.len(), 3);
    // Cost, exactly, at both ends.
    assert_eq!(
        found(&s, &admin, "min_cost_usd=0.000001").await,
        [beta.as_str()]
    );
    assert_eq!(
        found(&s, &admin, "max_cost_usd=0.0000005").await,
        [alpha.as_str()]
    );
    assert_eq!(
        found(&s, &admin, "min_cost_usd=0.0000008&max_cost_usd=0.0000008").await,
        [gateway.as_str()]
    );
    // Filters combine.
    assert_eq!(
        found(&s, &admin, "source=api&q=report").await,
        [alpha.as_str()]
    );
    assert!(
        found(&s, &admin, "source=gateway&q=report")
            .await
            .is_empty()
    );

    // Another tenant finds nothing of it.
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    assert!(found(&s, &other, "q=alpha").await.is_empty());

    // Bad values: 400 naming the parameter, never a 500.
    for query in ["q=%00", "provider=%00"] {
        s.get(&format!("/api/tasks?{query}"), &admin)
            .await
            .expect_error(400, "invalid_url");
    }
    for query in [
        "q=",
        "source=batch",
        "min_cost_usd=1e-7",
        "max_cost_usd=0.0000000001",
        "min_cost_usd=cheap",
    ] {
        s.get(&format!("/api/tasks?{query}"), &admin)
            .await
            .expect_error(400, "invalid_query");
    }
    let long = "x".repeat(201);
    s.get(&format!("/api/tasks?q={long}"), &admin)
        .await
        .expect_error(400, "invalid_query");
}

dual_backend_tests!(tasks_are_found_by_text_provider_model_source_and_cost);
