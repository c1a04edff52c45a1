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

/// The raw answer to a GET with `accept`, checked for status 200 and its
/// content type.
async fn export(s: &Server, token: &str, query: &str, accept: &str, content_type: &str) -> String {
    let resp = s
        .http
        .get(s.url(&format!("/api/tasks?{query}")))
        .bearer_auth(token)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{query}");
    assert_eq!(resp.headers()["content-type"], content_type, "{query}");
    resp.text().await.unwrap()
}

async fn the_history_exports_as_csv_and_json_lines(b: Backend) {
    use futures::StreamExt;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.mock_integration(&admin, "mock").await;
    // Descriptions that CSV must quote, and one it need not.
    let tricky = [
        "plain",
        "comma, inside",
        "quote \" inside",
        "new\nline\r\nand more",
        "ünïcödé ✓",
    ];
    for description in tricky {
        let r = s
            .post(
                "/api/tasks",
                &admin,
                json!({ "description": description, "prompt": "hello", "task_type": "light",
                        "parameters": { "model": "mock/echo" } }),
            )
            .await
            .expect(201);
        s.event_stream(&admin, r.body["id"].as_str().unwrap(), None)
            .await;
    }
    // More than two pages of gateway requests.
    let key = s.api_key(&admin, "gw", "task_executor").await;
    let sent = futures::stream::iter(0..1_100)
        .map(|i| {
            let (s, key) = (&s, &key);
            async move {
                s.http
                    .post(s.url("/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&json!({ "model": "mock/echo",
                                   "messages": [{ "role": "user", "content": format!("n{i}") }] }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(sent.iter().all(|&c| c == 200));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while s
        .get("/api/tasks?source=gateway&limit=1", &admin)
        .await
        .expect(200)
        .body["total"]
        != 1_100
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway requests not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // CSV: every task once, newest first, each field as it was.
    let text = export(&s, &admin, "format=csv", "*/*", "text/csv; charset=utf-8").await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header[0], "id");
    assert!(header.contains(&"cost_usd".to_string()), "{header:?}");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1_105);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| &r[col("id")]).collect();
    assert_eq!(ids.len(), 1_105, "a task exported twice");
    let created: Vec<&str> = rows.iter().map(|r| &r[col("created_at")]).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "not newest first");
    let mut described: Vec<String> = rows
        .iter()
        .filter(|r| &r[col("source")] == "api")
        .map(|r| r[col("description")].to_string())
        .collect();
    described.sort();
    let mut want: Vec<String> = tricky.iter().map(|d| d.to_string()).collect();
    want.sort();
    assert_eq!(described, want);
    assert!(
        rows.iter()
            .all(|r| !r[col("cost_usd")].is_empty() && &r[col("status")] == "completed")
    );
    // The same by `Accept`, and JSON Lines with filters and a cap.
    let by_accept = export(&s, &admin, "", "text/csv", "text/csv; charset=utf-8").await;
    assert_eq!(by_accept.lines().next(), text.lines().next());
    let lines = export(
        &s,
        &admin,
        "format=jsonl&source=api",
        "*/*",
        "application/x-ndjson",
    )
    .await;
    let tasks: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tasks.len(), 5);
    assert!(
        tasks
            .iter()
            .all(|t| t["source"] == "api" && t["result"]["text"] == "echo: hello")
    );
    let capped = export(
        &s,
        &admin,
        "limit=3",
        "application/x-ndjson",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(capped.lines().count(), 3);
    // Another tenant's export is empty but for the header.
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    let theirs = export(&s, &other, "format=csv", "*/*", "text/csv; charset=utf-8").await;
    assert_eq!(theirs.lines().count(), 1, "{theirs}");
    // Bad values.
    for query in ["format=xml", "format=csv&offset=1", "format=jsonl&limit=0"] {
        s.get(&format!("/api/tasks?{query}"), &admin)
            .await
            .expect_error(400, "invalid_query");
    }
}

dual_backend_tests!(
    tasks_are_found_by_text_provider_model_source_and_cost,
    the_history_exports_as_csv_and_json_lines
);
