//! Money as the API shows it: exact decimal dollars written from the stored
//! integer nano-dollars. The offline `mock` provider charges $0.0001 per
//! 1,000 prompt tokens and $0.0002 per 1,000 completion tokens, so a
//! one-word prompt (`echo: word` back, two words) costs $0.0000005, which
//! `f64` arithmetic makes `5.000000000000001e-7`. The checks read the raw
//! response text: parsing it as `f64` would hide the difference.

use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// What one one-word task costs on the mock provider.
const ONE_WORD: &str = "0.0000005";

/// The raw text of a GET.
async fn raw_get(s: &Server, path: &str, token: &str) -> String {
    let resp = s
        .http
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.expect("body")
}

/// How often `needle` occurs in `text`.
fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// No amount in `text` went through `f64` arithmetic or an exponent.
fn assert_plain_amounts(text: &str) {
    for field in ["\"cost_usd\":", "\"estimated_cost_usd\":"] {
        for (at, _) in text.match_indices(field) {
            let value: String = text[at + field.len()..]
                .chars()
                .take_while(|c| !matches!(c, ',' | '}' | ']'))
                .collect();
            assert!(
                value == "null" || value.chars().all(|c| c.is_ascii_digit() || c == '.'),
                "{field} {value} in {text}"
            );
            assert!(value.len() <= 20, "{field} {value} in {text}");
        }
    }
}

/// `nanos` nano-dollars as the plain decimal the API writes.
fn dollars(nanos: u64) -> String {
    let (whole, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// The data line of the stream's `completed` status event.
fn completed_event(stream: &str) -> &str {
    stream
        .split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: status"))
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .find(|data| data.contains("\"completed\""))
        .unwrap_or_else(|| panic!("no completed event in {stream}"))
}

async fn costs_are_exact_decimals(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "mock", "provider": "mock" }),
    )
    .await
    .expect(201);

    // Several tasks, each a one-word prompt on the mock's `echo` model.
    let mut ids = Vec::new();
    for word in ["hello", "again", "third"] {
        let r = s
            .post(
                "/api/tasks",
                &admin,
                json!({ "description": "money", "prompt": word, "task_type": "light",
                        "parameters": { "model": "mock/echo" } }),
            )
            .await
            .expect(201);
        let id = r.body["id"].as_str().unwrap().to_string();
        // The stream's `completed` event carries the run's cost.
        let stream = s.event_stream(&admin, &id, None).await;
        let completed = completed_event(&stream);
        assert!(
            completed.contains(&format!("\"cost_usd\":{ONE_WORD}")),
            "{completed}"
        );
        assert_plain_amounts(&stream);
        ids.push(id);
    }

    // Each task and its attempt show exactly that decimal.
    for id in &ids {
        let text = raw_get(&s, &format!("/api/tasks/{id}"), &admin).await;
        assert_eq!(
            occurrences(&text, &format!("\"cost_usd\":{ONE_WORD}")),
            2,
            "{text}"
        );
        assert_plain_amounts(&text);
        let task: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(task["status"], "completed", "{text}");
        assert_eq!(
            (
                task["input_tokens"].as_i64(),
                task["output_tokens"].as_i64()
            ),
            (Some(1), Some(2))
        );
    }
    // And so does the list, for every one of them.
    let list = raw_get(&s, "/api/tasks", &admin).await;
    assert_eq!(
        occurrences(&list, &format!("\"cost_usd\":{ONE_WORD}")),
        3,
        "{list}"
    );
    assert_plain_amounts(&list);

    // The gateway's header, and the task that records the request.
    let key = s.api_key(&admin, "gw", "task_executor").await;
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({ "model": "mock/echo", "messages": [{ "role": "user", "content": "hello" }] }),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-vel-cost-usd"], ONE_WORD);
    let task_id = resp.headers()["x-vel-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    s.recorded_task(&admin, &task_id).await;
    let recorded = raw_get(&s, &format!("/api/tasks/{task_id}"), &admin).await;
    assert_eq!(
        occurrences(&recorded, &format!("\"cost_usd\":{ONE_WORD}")),
        2,
        "{recorded}"
    );
    assert_plain_amounts(&recorded);

    // An agent's dry run prices its tokens exactly too, in the answer and
    // as the agent shows its last test.
    let agent = s
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "Priced", "type": "code_generator",
                    "config": { "provider": "mock", "model": "echo" } }),
        )
        .await
        .expect(201);
    let agent = agent.body["id"].as_str().unwrap().to_string();
    let resp = s
        .http
        .post(s.url(&format!("/api/agents/{agent}/test")))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let result: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["ok"], true, "{text}");
    let (input, output) = (
        result["input_tokens"].as_u64().unwrap(),
        result["output_tokens"].as_u64().unwrap(),
    );
    // $0.0001 and $0.0002 per 1,000 tokens: 100 and 200 nano-dollars a token.
    let expected = format!(
        "\"estimated_cost_usd\":{}",
        dollars(input * 100 + output * 200)
    );
    assert!(text.contains(&expected), "{expected} in {text}");
    assert_plain_amounts(&text);
    let shown = raw_get(&s, &format!("/api/agents/{agent}"), &admin).await;
    assert!(shown.contains(&expected), "{expected} in {shown}");

    // The audit entries of the gateway request and of the dry run carry
    // the same exact decimals.
    let audit = raw_get(&s, "/api/audit-logs?action=gateway_request", &admin).await;
    assert_eq!(
        occurrences(&audit, &format!("\"cost_usd\":{ONE_WORD}")),
        1,
        "{audit}"
    );
    assert_plain_amounts(&audit);
    let audit = raw_get(&s, "/api/audit-logs?action=agent_tested", &admin).await;
    assert!(audit.contains(&expected), "{expected} in {audit}");
    assert_plain_amounts(&audit);
}

dual_backend_tests!(costs_are_exact_decimals);
