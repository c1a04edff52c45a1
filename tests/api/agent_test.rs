//! `POST /api/agents/{id}/test`: the agent's dry run through the real
//! `openai-compatible` plugin against the real mock upstream (and the
//! offline `mock` provider) — tokens, cost at the declared prices, the
//! cheaper/faster suggestion, failures as typed results, storage on the
//! agent, the audit entry, roles and tenancy.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vel_mock_upstream::{Fault, MockUpstream, count_tokens, expected_answer};

use crate::support::{Backend, Server};

const KEY: &str = "sk-agent-test-key-0123456789abcdef";

/// One declared model: id, $/1K in, $/1K out, task types it is good for.
type Declared = (&'static str, f64, f64, &'static [&'static str]);

/// The `openai-compatible` plugin's declared models.
const OPENAI_COMPATIBLE: [Declared; 4] = [
    ("gpt-4o", 0.0025, 0.0100, &["reasoning", "general"]),
    (
        "gpt-4o-mini",
        0.0002,
        0.0006,
        &["light", "research", "general"],
    ),
    ("llama-3.1-70b", 0.00079, 0.00079, &["code", "general"]),
    ("mixtral-8x7b", 0.00027, 0.00027, &["code", "light"]),
];

fn declared(model: &str) -> Declared {
    *OPENAI_COMPATIBLE
        .iter()
        .find(|d| d.0 == model)
        .unwrap_or_else(|| panic!("{model} is not declared"))
}

fn cost(model: &str, input: u64, output: u64) -> f64 {
    let (_, i, o, _) = declared(model);
    input as f64 / 1000.0 * i + output as f64 / 1000.0 * o
}

/// The cheapest other declared model good for one of `model`'s task types,
/// when it costs less than `model` for these tokens.
fn expected_cheaper(model: &str, input: u64, output: u64) -> Option<(&'static str, f64)> {
    let own = declared(model);
    OPENAI_COMPATIBLE
        .iter()
        .filter(|d| d.0 != model && d.3.iter().any(|t| own.3.contains(t)))
        .map(|d| (d.0, cost(d.0, input, output)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, c)| *c < cost(model, input, output))
}

fn assert_close(got: &Value, want: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {got}"));
    assert!(
        (got - want).abs() <= want.abs() * 1e-9 + 1e-15,
        "{got} != {want}"
    );
}

/// Create an `openai_compatible` integration called `name` pointing at `mock`.
async fn upstream_integration(s: &Server, token: &str, mock: &MockUpstream, name: &str) -> String {
    let base_url = format!("{}/v1", mock.base_url());
    s.upstream_integration(token, name, &base_url, KEY, 10_000)
        .await
}

async fn create_agent(s: &Server, token: &str, config: Value) -> String {
    let created = s
        .post(
            "/api/agents",
            token,
            json!({ "name": "Tested", "type": "code_generator", "config": config }),
        )
        .await
        .expect(201);
    assert!(created.body["last_test"].is_null(), "{}", created.body);
    created.body["id"].as_str().unwrap().to_string()
}

async fn dry_run(s: &Server, token: &str, agent_id: &str) -> Value {
    let r = s
        .post(&format!("/api/agents/{agent_id}/test"), token, json!({}))
        .await
        .expect(200);
    assert!(
        !r.body.to_string().contains(KEY),
        "key leaked in the result: {}",
        r.body
    );
    r.body
}

async fn last_test(s: &Server, token: &str, agent_id: &str) -> Value {
    s.get(&format!("/api/agents/{agent_id}"), token)
        .await
        .expect(200)
        .body["last_test"]
        .clone()
}

async fn success_with_cost_and_cheaper_suggestion(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let integration = upstream_integration(&s, &admin, &mock, "upstream").await;
    let agent = create_agent(
        &s,
        &admin,
        json!({ "provider": "upstream", "model": "gpt-4o", "temperature": 0.25,
                "max_tokens": 4096, "system_prompt": "You are a terse assistant." }),
    )
    .await;

    let out = dry_run(&s, &admin, &agent).await;
    assert_eq!(out["ok"], true, "{out}");
    assert!(out["error"].is_null(), "{out}");
    assert_eq!(out["agent_id"], agent.as_str());
    assert_eq!(out["provider"], "upstream");
    assert_eq!(out["integration_id"], integration.as_str());
    assert_eq!(out["plugin"], "openai-compatible");
    assert_eq!(out["model"], "gpt-4o");
    assert!(out["latency_ms"].is_u64(), "{out}");
    assert!(out["tested_at"].is_string(), "{out}");

    // One upstream call: the agent's model, system prompt and temperature,
    // the completion cap lowered to 64, the host-held key.
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let req = &requests[0];
    assert_eq!(req.bearer_token(), Some(KEY));
    assert_eq!(req.model(), Some("gpt-4o"));
    let body = req.body.as_ref().unwrap();
    assert_eq!(body["max_tokens"], 64, "{body}");
    assert!(
        (body["temperature"].as_f64().unwrap() - 0.25).abs() < 1e-6,
        "{body}"
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], "You are a terse assistant.");
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();

    // Tokens are the upstream's counts; the cost is tokens × declared prices.
    let input: u64 = messages
        .iter()
        .map(|m| count_tokens(m["content"].as_str().unwrap()))
        .sum();
    let answer = expected_answer(user);
    let output = count_tokens(&answer);
    assert_eq!(out["input_tokens"], input, "{out}");
    assert_eq!(out["output_tokens"], output, "{out}");
    assert_eq!(out["sample_output"], answer.as_str(), "{out}");
    let own = cost("gpt-4o", input, output);
    assert_close(&out["estimated_cost_usd"], own);

    // The cheapest like-for-like declared model, priced for the same tokens
    // (the default organization's offline `mock` integration is not offered).
    let (best_model, best_cost) = expected_cheaper("gpt-4o", input, output).unwrap();
    assert_eq!(best_model, "gpt-4o-mini");
    let cheaper = &out["suggestion"]["cheaper"];
    assert_eq!(cheaper["provider"], "upstream", "{out}");
    assert_eq!(cheaper["integration_id"], integration.as_str(), "{out}");
    assert_eq!(cheaper["model"], best_model, "{out}");
    assert_close(&cheaper["estimated_cost_usd"], best_cost);
    // No other integration has been tested, so nothing is known to be faster.
    assert!(out["suggestion"]["faster"].is_null(), "{out}");
    let message = out["suggestion"]["message"].as_str().unwrap();
    assert!(message.contains(best_model), "{message}");

    // Stored on the agent, shown by GET, audited without secrets.
    let stored = last_test(&s, &admin, &agent).await;
    assert_eq!(stored, out);
    let audit = s
        .get("/api/audit-logs?action=agent_tested", &admin)
        .await
        .expect(200);
    assert_eq!(audit.body["total"], 1, "{}", audit.body);
    let entry = &audit.body["items"][0]["payload"];
    assert_eq!(entry["agent_id"], agent.as_str());
    assert_eq!(entry["integration_id"], integration.as_str());
    assert_eq!(entry["ok"], true);
    assert!(!audit.body.to_string().contains(KEY));
    assert!(!s.stderr().contains(KEY), "key in the server's log");

    // An agent already on the cheapest model of its kind gets no cheaper
    // suggestion.
    let frugal = create_agent(
        &s,
        &admin,
        json!({ "provider": "upstream", "model": "mixtral-8x7b" }),
    )
    .await;
    let out = dry_run(&s, &admin, &frugal).await;
    assert_eq!(out["ok"], true, "{out}");
    let input = out["input_tokens"].as_u64().unwrap();
    let output = out["output_tokens"].as_u64().unwrap();
    assert_close(
        &out["estimated_cost_usd"],
        cost("mixtral-8x7b", input, output),
    );
    assert_eq!(expected_cheaper("mixtral-8x7b", input, output), None);
    assert!(out["suggestion"]["cheaper"].is_null(), "{out}");
    assert!(
        out["suggestion"]["message"]
            .as_str()
            .unwrap()
            .starts_with("No cheaper"),
        "{out}"
    );
}

async fn faster_integration_is_suggested(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    upstream_integration(&s, &admin, &mock, "upstream").await;
    let quick = upstream_integration(&s, &admin, &mock, "quick").await;
    let tested = s
        .post(
            &format!("/api/integrations/{quick}/test"),
            &admin,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(tested.body["ok"], true, "{}", tested.body);
    let quick_latency = tested.body["latency_ms"].as_u64().unwrap();

    let agent = create_agent(
        &s,
        &admin,
        json!({ "provider": "upstream", "model": "gpt-4o-mini" }),
    )
    .await;
    // The agent's own call is held back, so the other integration's last
    // test is faster.
    mock.push(Fault::Delay(Duration::from_millis(800)));
    let out = dry_run(&s, &admin, &agent).await;
    assert_eq!(out["ok"], true, "{out}");
    let latency = out["latency_ms"].as_u64().unwrap();
    assert!(latency >= 800, "{out}");
    assert!(quick_latency < latency, "{quick_latency} vs {out}");
    let faster = &out["suggestion"]["faster"];
    assert_eq!(faster["provider"], "quick", "{out}");
    assert_eq!(faster["integration_id"], quick.as_str(), "{out}");
    assert_eq!(faster["model"], "gpt-4o-mini", "{out}");
    assert_eq!(faster["latency_ms"], quick_latency, "{out}");
    let input = out["input_tokens"].as_u64().unwrap();
    let output = out["output_tokens"].as_u64().unwrap();
    assert_close(
        &faster["estimated_cost_usd"],
        cost("gpt-4o-mini", input, output),
    );
    assert!(
        out["suggestion"]["message"]
            .as_str()
            .unwrap()
            .contains("`quick`"),
        "{out}"
    );
}

async fn provider_failure_is_a_typed_result(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let integration = upstream_integration(&s, &admin, &mock, "primary").await;
    // Resolved through the provider kind when no integration has that name.
    let agent = create_agent(
        &s,
        &admin,
        json!({ "provider": "openai_compatible", "model": "gpt-4o" }),
    )
    .await;
    mock.push(Fault::Status(500));
    let out = dry_run(&s, &admin, &agent).await;
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["integration_id"], integration.as_str(), "{out}");
    assert_eq!(out["error"]["source"], "provider", "{out}");
    assert_eq!(out["error"]["kind"], "unavailable", "{out}");
    assert!(out["error"]["message"].is_string(), "{out}");
    assert!(out["input_tokens"].is_null(), "{out}");
    assert!(out["output_tokens"].is_null(), "{out}");
    assert!(out["estimated_cost_usd"].is_null(), "{out}");
    assert!(out["sample_output"].is_null(), "{out}");
    assert!(out["suggestion"]["faster"].is_null(), "{out}");
    assert_eq!(mock.requests().len(), 1);

    let stored = last_test(&s, &admin, &agent).await;
    assert_eq!(stored["ok"], false, "{stored}");
    assert_eq!(stored["error"]["kind"], "unavailable", "{stored}");
    let audit = s
        .get("/api/audit-logs?action=agent_tested", &admin)
        .await
        .expect(200);
    assert_eq!(audit.body["items"][0]["payload"]["ok"], false);
    assert_eq!(
        audit.body["items"][0]["payload"]["error"]["kind"],
        "unavailable"
    );
}

async fn missing_integration_is_a_typed_result(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    // An integration with the right name that is disabled does not count.
    let disabled = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "anthropic", "provider": "mock" }),
        )
        .await
        .expect(201);
    let disabled_id = disabled.body["id"].as_str().unwrap();
    s.put(
        &format!("/api/integrations/{disabled_id}"),
        &admin,
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    let agent = create_agent(
        &s,
        &admin,
        json!({ "provider": "anthropic", "model": "claude-3-5-sonnet" }),
    )
    .await;
    let out = dry_run(&s, &admin, &agent).await;
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["error"]["source"], "configuration", "{out}");
    assert_eq!(out["error"]["kind"], "integration_not_found", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic"),
        "{out}"
    );
    assert!(out["integration_id"].is_null(), "{out}");
    assert!(out["plugin"].is_null(), "{out}");
    assert_eq!(out["latency_ms"], 0);
    assert!(out["suggestion"]["cheaper"].is_null(), "{out}");
    assert_eq!(
        last_test(&s, &admin, &agent).await["error"]["kind"],
        "integration_not_found"
    );
}

async fn roles_and_tenancy(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.post(
        "/api/integrations",
        &admin,
        json!({ "name": "offline", "provider": "mock" }),
    )
    .await
    .expect(201);
    let agent = create_agent(
        &s,
        &admin,
        json!({ "provider": "offline", "model": "echo" }),
    )
    .await;
    let path = format!("/api/agents/{agent}/test");
    let viewer = s.user_with_role(&admin, "v@test.local", "viewer").await;
    let executor = s
        .user_with_role(&admin, "e@test.local", "task_executor")
        .await;
    for token in [&viewer, &executor] {
        s.post(&path, token, json!({}))
            .await
            .expect_error(403, "forbidden");
    }
    s.call(Method::POST, &path, None, None)
        .await
        .expect_error(401, "unauthorized");
    let (_beta, owner_b) = s.tenant(&admin, "beta").await;
    s.post(&path, &owner_b, json!({}))
        .await
        .expect_error(404, "not_found");
    s.post("/api/agents/no-such-agent/test", &admin, json!({}))
        .await
        .expect_error(404, "not_found");
    // Refused calls store nothing.
    assert!(last_test(&s, &admin, &agent).await.is_null());

    // An agent manager may test; the offline provider prices every model
    // alike, so there is nothing cheaper.
    let manager = s
        .user_with_role(&admin, "m@test.local", "agent_manager")
        .await;
    let out = dry_run(&s, &manager, &agent).await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["plugin"], "mock");
    assert!(out["input_tokens"].as_u64().unwrap() > 0, "{out}");
    assert!(out["estimated_cost_usd"].as_f64().unwrap() > 0.0, "{out}");
    assert!(out["sample_output"].as_str().unwrap().starts_with("echo: "));
    assert!(out["suggestion"]["cheaper"].is_null(), "{out}");
    assert!(out["suggestion"]["faster"].is_null(), "{out}");
    assert_eq!(last_test(&s, &viewer, &agent).await["ok"], true);

    // A soft-deleted agent cannot be tested.
    s.delete(&format!("/api/agents/{agent}"), &admin)
        .await
        .expect(204);
    s.post(&path, &admin, json!({}))
        .await
        .expect_error(404, "not_found");
}

dual_backend_tests!(
    success_with_cost_and_cheaper_suggestion,
    faster_integration_is_suggested,
    provider_failure_is_a_typed_result,
    missing_integration_is_a_typed_result,
    roles_and_tenancy
);
