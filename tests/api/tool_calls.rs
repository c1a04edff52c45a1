//! Tool calling and structured output through `/v1/chat/completions`,
//! driven by the official OpenAI Python SDK: a tool-call round trip (tool
//! call, tool result, final text) plain and streamed, JSON mode, JSON
//! Schema output and logprobs on the built-in `mock` provider (contract
//! 0.2.0, whose model `tools` calls tools), next to the uploaded `shout`
//! provider, built from the frozen `vel:plugins@0.1.0` WIT
//! (`tests/plugins/shout-provider`) and served through the host's adapter:
//! it answers plain requests, and a request that needs tools is never
//! given to it but refused with a 400 naming the feature. And the real
//! `openai-compatible` plugin passing tools, tool choice, response format
//! and seed to the mock upstream and mapping its tool calls back, plain
//! and streamed; and the real `anthropic` plugin mapping the same round
//! trip, streamed tool calls and JSON Schema output onto the Messages API's
//! `tool_use` / `tool_result` blocks and a forced answer tool.

use serde_json::{Value, json};
use vel_mock_upstream::MockUpstream;

use crate::support::guests::{SHOUT_PROVIDER, build_guest, manifest};
use crate::support::{Backend, Server};

const SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
out = {}
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
question = [{"role": "user", "content": "Paris"}]

# Plain: the model asks for the tool, gets its result, answers.
first = client.chat.completions.create(model="alpha/tools", messages=question,
                                       tools=tools, tool_choice="required")
m = first.choices[0].message
call = m.tool_calls[0]
out["plain_call"] = {"finish_reason": first.choices[0].finish_reason, "content": m.content,
                     "id": call.id, "type": call.type, "name": call.function.name,
                     "arguments": json.loads(call.function.arguments)}
follow = question + [m.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
final = client.chat.completions.create(model="alpha/tools", messages=follow, tools=tools)
out["plain_final"] = {"finish_reason": final.choices[0].finish_reason,
                      "content": final.choices[0].message.content,
                      "tool_calls": final.choices[0].message.tool_calls}

# Streamed: the tool call arrives in pieces, assembled by index.
calls, finish, pieces = {}, None, 0
for chunk in client.chat.completions.create(model="alpha/tools", messages=question,
                                            tools=tools, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            pieces += 1
            e = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                e["id"] = d.id
            if d.function and d.function.name:
                e["name"] += d.function.name
            if d.function and d.function.arguments:
                e["arguments"] += d.function.arguments
        if c.finish_reason:
            finish = c.finish_reason
streamed = calls[0]
out["stream_call"] = {"finish_reason": finish, "pieces": pieces, "id": streamed["id"],
                      "name": streamed["name"], "arguments": json.loads(streamed["arguments"])}
follow = question + [
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": streamed["id"], "type": "function",
        "function": {"name": streamed["name"], "arguments": streamed["arguments"]}}]},
    {"role": "tool", "tool_call_id": streamed["id"], "content": "rain"}]
parts, finish = [], None
for chunk in client.chat.completions.create(model="alpha/tools", messages=follow,
                                            tools=tools, stream=True):
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream_final"] = {"content": "".join(parts), "finish_reason": finish}

# `auto` with tools: only a model that calls tools is a candidate.
raw = client.chat.completions.with_raw_response.create(model="auto", messages=question,
                                                       tools=tools)
auto = raw.parse()
out["auto"] = {"provider": raw.headers.get("x-vel-provider"), "model": auto.model,
               "finish_reason": auto.choices[0].finish_reason}

# JSON mode and JSON Schema.
r = client.chat.completions.create(model="alpha/echo", messages=question,
                                   response_format={"type": "json_object"})
out["json_object"] = json.loads(r.choices[0].message.content)
schema = {"type": "object", "properties": {"city": {"type": "string"},
          "warm": {"type": "boolean"}}, "required": ["city", "warm"],
          "additionalProperties": False}
r = client.chat.completions.create(model="alpha/echo", messages=question,
    response_format={"type": "json_schema",
                     "json_schema": {"name": "weather", "schema": schema, "strict": True}})
out["json_schema"] = json.loads(r.choices[0].message.content)

# Logprobs.
r = client.chat.completions.create(model="alpha/echo", messages=question,
                                   logprobs=True, top_logprobs=2)
lp = r.choices[0].logprobs.content
out["logprobs"] = {"tokens": [t.token for t in lp], "top": len(lp[0].top_logprobs)}

# The 0.1.0 provider next to them: plain requests are served...
r = client.chat.completions.create(model="legacy/shout-1",
                                   messages=[{"role": "user", "content": "hello"}])
out["legacy"] = r.choices[0].message.content
# ...and a request that needs tools is refused, naming what is missing.
try:
    client.chat.completions.create(model="legacy/shout-1", messages=question, tools=tools)
    out["legacy_tools"] = None
except openai.BadRequestError as e:
    out["legacy_tools"] = {"status": e.status_code, "message": str(e)}
try:
    client.chat.completions.create(model="legacy/shout-1", messages=question,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}})
    out["legacy_schema"] = None
except openai.BadRequestError as e:
    out["legacy_schema"] = {"status": e.status_code, "message": str(e)}
print(json.dumps(out))
"#;

/// An organization with `alpha` on the built-in `mock` (0.2.0) and
/// `legacy` on the uploaded 0.1.0 `shout`; a gateway key of it.
async fn setup(s: &Server) -> String {
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "toolsmiths").await;
    s.upload_plugin(
        &owner,
        "?activate=true",
        build_guest(SHOUT_PROVIDER, &[]),
        &manifest("shout", "1.0.0", "provider", ""),
    )
    .await
    .expect(201);
    for (name, plugin) in [("alpha", "mock"), ("legacy", "shout")] {
        s.post(
            "/api/integrations",
            &owner,
            json!({ "name": name, "provider": "mock", "plugin": plugin }),
        )
        .await
        .expect(201);
    }
    s.api_key(&owner, "tool-calls", "task_executor").await
}

async fn run_sdk(s: &Server, key: &str, script: &str) -> Value {
    s.openai_sdk(script, &[key]).await
}

async fn tool_calls_and_structured_output_with_the_openai_sdk(b: Backend) {
    let s = Server::start(b).await;
    let key = setup(&s).await;
    let out = run_sdk(&s, &key, SCRIPT).await;

    let call = &out["plain_call"];
    assert_eq!(call["finish_reason"], "tool_calls", "{out}");
    assert_eq!(call["content"], Value::Null, "{out}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], json!({ "city": "Paris" }));
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{out}");
    let last = &out["plain_final"];
    assert_eq!(last["finish_reason"], "stop", "{out}");
    assert_eq!(last["content"], "tool said: sunny, 21 C");
    assert_eq!(last["tool_calls"], Value::Null);

    let streamed = &out["stream_call"];
    assert_eq!(streamed["finish_reason"], "tool_calls", "{out}");
    assert_eq!(streamed["name"], "get_weather");
    assert_eq!(streamed["arguments"], json!({ "city": "Paris" }));
    assert!(streamed["pieces"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(
        out["stream_final"],
        json!({ "content": "tool said: rain", "finish_reason": "stop" })
    );

    assert_eq!(out["auto"]["provider"], "alpha", "{out}");
    assert_eq!(out["auto"]["model"], "tools", "{out}");
    assert_eq!(out["auto"]["finish_reason"], "tool_calls", "{out}");

    assert_eq!(out["json_object"], json!({ "echo": "echo: Paris" }));
    assert_eq!(out["json_schema"], json!({ "city": "Paris", "warm": true }));
    assert_eq!(out["logprobs"]["tokens"], json!(["echo: ", "Paris"]));
    assert_eq!(out["logprobs"]["top"], 2);

    assert_eq!(out["legacy"], "[shout 1.0.0] HELLO", "{out}");
    for (what, feature) in [("legacy_tools", "tools"), ("legacy_schema", "json-schema")] {
        let refused = &out[what];
        assert_eq!(refused["status"], 400, "{what}: {out}");
        let message = refused["message"].as_str().unwrap();
        assert!(message.contains(feature), "{what}: {message}");
        assert!(message.contains("legacy/shout-1"), "{what}: {message}");
    }
}

/// The `data:` payloads of an SSE body that are JSON, in order.
fn chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

async fn openai_compatible_passes_tools_through_and_maps_calls_back(b: Backend) {
    let upstream = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let base_url = format!("{}/v1", upstream.base_url());
    s.upstream_integration(&admin, "up", &base_url, "sk-tools-test-0123456789", 10_000)
        .await;
    let key = s.api_key(&admin, "tools-upstream", "task_executor").await;
    let tools = json!([{ "type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let body = json!({
        "model": "up/gpt-4o-mini",
        "messages": [{"role": "user", "content": "vel"}],
        "tools": tools, "tool_choice": "required", "parallel_tool_calls": false, "seed": 42,
        "response_format": {"type": "json_object"},
    });
    let r = s.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let choice = &r.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{}", r.body);
    assert_eq!(choice["message"]["content"], Value::Null, "{}", r.body);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], r#"{"q":"vel"}"#);
    let sent = upstream.requests().last().unwrap().body.clone().unwrap();
    assert_eq!(sent["tools"], tools, "{sent}");
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));

    // Streamed: the upstream's pieces reach the client as OpenAI chunks.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = chunks(&resp.text().await.unwrap());
    let pieces: Vec<&Value> = events
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .map(|_| c)
        })
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0])
        .collect();
    assert!(pieces.len() >= 2, "{events:?}");
    assert!(
        pieces[0]["id"].as_str().unwrap().starts_with("call_mock_"),
        "{events:?}"
    );
    assert_eq!(pieces[0]["function"]["name"], "lookup");
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"q":"vel"}"#);
    let finish = events
        .iter()
        .rev()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"), "{events:?}");

    // The tool's result goes back upstream as a `tool` message.
    let follow = json!({
        "model": "up/gpt-4o-mini", "tools": tools,
        "messages": [
            {"role": "user", "content": "vel"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "found it"},
        ],
    });
    let r = s.post("/v1/chat/completions", &key, follow).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["choices"][0]["finish_reason"], "stop", "{}", r.body);
    let sent = upstream.requests().last().unwrap().body.clone().unwrap();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["id"], call["id"],
        "{sent}"
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "found it", "tool_call_id": call["id"]})
    );
}

const ANTHROPIC_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
out = {}
model = "claude/claude-3-5-haiku"
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
question = [{"role": "user", "content": "Paris"}]

# Plain: a tool_use answer becomes a tool call; its result goes back.
first = client.chat.completions.create(model=model, messages=question, tools=tools,
                                       tool_choice="required", parallel_tool_calls=False)
m = first.choices[0].message
call = m.tool_calls[0]
out["plain_call"] = {"finish_reason": first.choices[0].finish_reason, "content": m.content,
                     "id": call.id, "type": call.type, "name": call.function.name,
                     "arguments": json.loads(call.function.arguments)}
follow = question + [m.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
final = client.chat.completions.create(model=model, messages=follow, tools=tools)
out["plain_final"] = {"finish_reason": final.choices[0].finish_reason,
                      "content": final.choices[0].message.content,
                      "tool_calls": final.choices[0].message.tool_calls}

# Two calls of one turn: both results go back (in one user turn upstream).
two = question + [
    {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "toolu_a", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "toolu_b", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Lyon\"}"}}]},
    {"role": "tool", "tool_call_id": "toolu_a", "content": "sunny"},
    {"role": "tool", "tool_call_id": "toolu_b", "content": "windy"}]
r = client.chat.completions.create(model=model, messages=two, tools=tools)
out["two_results"] = r.choices[0].message.content

# Streamed: the tool call arrives in pieces, assembled by index.
calls, finish, pieces = {}, None, 0
for chunk in client.chat.completions.create(model=model, messages=question,
                                            tools=tools, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            pieces += 1
            e = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                e["id"] = d.id
            if d.function and d.function.name:
                e["name"] += d.function.name
            if d.function and d.function.arguments:
                e["arguments"] += d.function.arguments
        if c.finish_reason:
            finish = c.finish_reason
streamed = calls[0]
out["stream_call"] = {"finish_reason": finish, "pieces": pieces, "calls": len(calls),
                      "id": streamed["id"], "name": streamed["name"],
                      "arguments": json.loads(streamed["arguments"])}
follow = question + [
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": streamed["id"], "type": "function",
        "function": {"name": streamed["name"], "arguments": streamed["arguments"]}}]},
    {"role": "tool", "tool_call_id": streamed["id"], "content": "rain"}]
parts, finish = [], None
for chunk in client.chat.completions.create(model=model, messages=follow,
                                            tools=tools, stream=True):
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream_final"] = {"content": "".join(parts), "finish_reason": finish}

# JSON Schema output, plain and streamed; JSON mode.
schema = {"type": "object", "properties": {"city": {"type": "string"},
          "warm": {"type": "boolean"}}, "required": ["city", "warm"],
          "additionalProperties": False}
fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}
r = client.chat.completions.create(model=model, messages=question, response_format=fmt)
out["json_schema"] = {"finish_reason": r.choices[0].finish_reason,
                      "tool_calls": r.choices[0].message.tool_calls,
                      "value": json.loads(r.choices[0].message.content)}
parts, finish = [], None
for chunk in client.chat.completions.create(model=model, messages=question,
                                            response_format=fmt, stream=True):
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.delta.tool_calls:
            parts.append("TOOL CALL")
        if c.finish_reason:
            finish = c.finish_reason
out["json_schema_stream"] = {"parts": len(parts), "finish_reason": finish,
                             "value": json.loads("".join(parts))}
r = client.chat.completions.create(model=model, messages=question,
                                   response_format={"type": "json_object"})
out["json_object"] = json.loads(r.choices[0].message.content)
print(json.dumps(out))
"#;

/// The `anthropic` plugin against the mock upstream's Messages API: a
/// tool-call round trip plain and streamed, two results of one turn fed
/// back, JSON Schema output plain and streamed and JSON mode, all through
/// the official OpenAI SDK; and what went upstream is the Messages API's
/// shape (the mock refuses tool blocks out of place as Anthropic does).
async fn anthropic_maps_tool_calls_and_json_output(b: Backend) {
    let upstream = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    s.integration(
        &admin,
        json!({ "name": "claude", "provider": "anthropic", "base_url": upstream.base_url(),
                "default_model": "claude-3-5-sonnet", "api_key": "sk-ant-tools-test-0123456789",
                "timeout_ms": 10_000 }),
    )
    .await;
    let key = s.api_key(&admin, "anthropic-tools", "task_executor").await;
    let out = run_sdk(&s, &key, ANTHROPIC_SCRIPT).await;
    let sent: Vec<Value> = upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .filter_map(|r| r.body.clone())
        .collect();
    assert_eq!(sent.len(), 8, "{sent:?}");

    let call = &out["plain_call"];
    assert_eq!(call["finish_reason"], "tool_calls", "{out}");
    assert_eq!(call["content"], Value::Null, "{out}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], json!({ "city": "Paris" }));
    assert!(
        call["id"].as_str().unwrap().starts_with("toolu_mock_"),
        "{out}"
    );
    assert_eq!(
        sent[0]["tools"],
        json!([{ "name": "get_weather", "description": "The weather in a city",
                 "input_schema": { "type": "object", "properties": { "city": { "type": "string" } },
                                   "required": ["city"] } }])
    );
    assert_eq!(
        sent[0]["tool_choice"],
        json!({ "type": "any", "disable_parallel_tool_use": true })
    );
    assert_eq!(
        out["plain_final"],
        json!({ "finish_reason": "stop", "content": "echo: sunny, 21 C", "tool_calls": null })
    );
    assert_eq!(
        sent[1]["messages"][1],
        json!({ "role": "assistant", "content": [{ "type": "tool_use", "id": call["id"],
                "name": "get_weather", "input": { "city": "Paris" } }] })
    );
    assert_eq!(
        sent[1]["messages"][2],
        json!({ "role": "user", "content": [{ "type": "tool_result",
                "tool_use_id": call["id"], "content": "sunny, 21 C" }] })
    );

    assert_eq!(out["two_results"], "echo: sunny\nwindy", "{out}");
    let results = &sent[2]["messages"];
    assert_eq!(results.as_array().unwrap().len(), 3, "{results}");
    assert_eq!(
        results[1]["content"][0],
        json!({ "type": "text", "text": "Checking both." })
    );
    assert_eq!(
        results[2]["content"],
        json!([
            { "type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny" },
            { "type": "tool_result", "tool_use_id": "toolu_b", "content": "windy" },
        ])
    );

    let streamed = &out["stream_call"];
    assert_eq!(streamed["finish_reason"], "tool_calls", "{out}");
    assert_eq!(streamed["calls"], 1, "{out}");
    assert_eq!(streamed["name"], "get_weather");
    assert_eq!(streamed["arguments"], json!({ "city": "Paris" }));
    assert!(streamed["pieces"].as_u64().unwrap() >= 3, "{out}");
    assert_eq!(sent[3]["stream"], true);
    assert_eq!(
        out["stream_final"],
        json!({ "content": "echo: rain", "finish_reason": "stop" })
    );

    let weather = json!({ "city": "Paris", "warm": true });
    assert_eq!(
        out["json_schema"],
        json!({ "finish_reason": "stop", "tool_calls": null, "value": weather }),
        "{out}"
    );
    assert_eq!(sent[5]["tools"][0]["name"], "json_answer", "{}", sent[5]);
    assert_eq!(
        sent[5]["tools"][0]["input_schema"]["properties"]["warm"],
        json!({ "type": "boolean" })
    );
    assert_eq!(
        sent[5]["tool_choice"],
        json!({ "type": "tool", "name": "json_answer", "disable_parallel_tool_use": true })
    );
    let js = &out["json_schema_stream"];
    assert_eq!(js["finish_reason"], "stop", "{out}");
    assert_eq!(js["value"], weather, "{out}");
    assert!(js["parts"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["json_object"], json!({}), "{out}");
    assert_eq!(
        sent[7]["tools"][0]["input_schema"],
        json!({ "type": "object" })
    );
}

/// A request that needs tools, JSON output or logprobs, routed (by `auto`
/// or pinned) to an organization whose only integration is `perplexity`,
/// is a 400 naming the feature and the model that lacks it, and nothing
/// goes upstream; a plain request is served.
async fn perplexity_refuses_tools_json_and_logprobs_naming_the_feature(b: Backend) {
    let upstream = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "researchers").await;
    s.integration(
        &owner,
        json!({ "name": "pplx", "provider": "perplexity", "base_url": upstream.base_url(),
                "default_model": "sonar", "api_key": "pplx-tools-test-0123456789",
                "timeout_ms": 10_000 }),
    )
    .await;
    let key = s.api_key(&owner, "research", "task_executor").await;
    let messages = json!([{ "role": "user", "content": "hi" }]);
    let r = s
        .post(
            "/v1/chat/completions",
            &key,
            json!({ "model": "pplx/sonar", "messages": messages }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let text = r.body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with("echo: hi"), "{text}");
    let served = upstream.requests().len();

    let tools = json!([{ "type": "function", "function": {
        "name": "lookup", "parameters": { "type": "object" } } }]);
    let schema = json!({ "type": "json_schema", "json_schema": {
        "name": "w", "schema": { "type": "object" } } });
    let cases = [
        (json!({ "tools": tools }), "tools"),
        (
            json!({ "response_format": { "type": "json_object" } }),
            "json-mode",
        ),
        (json!({ "response_format": schema }), "json-schema"),
        (json!({ "logprobs": true, "top_logprobs": 2 }), "logprobs"),
    ];
    for (extra, feature) in cases {
        for model in ["auto", "pplx/sonar"] {
            let mut body = json!({ "model": model, "messages": messages });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = s.post("/v1/chat/completions", &key, body).await;
            assert_eq!(r.status.as_u16(), 400, "{model} {feature}: {}", r.body);
            assert_eq!(
                r.body["error"]["type"], "invalid_request_error",
                "{}",
                r.body
            );
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("needs ({feature})")),
                "{model} {feature}: {message}"
            );
            assert!(
                message.contains(&format!("pplx/sonar lacks {feature}")),
                "{model} {feature}: {message}"
            );
        }
    }
    assert_eq!(
        upstream.requests().len(),
        served,
        "a refused request went upstream"
    );
}

/// `logprobs` through `openai-compatible`: plain, the upstream's per-token
/// log probabilities come back; streamed, the plugin collects them from the
/// upstream's chunks and the finishing chunk carries them all (the
/// contract's `stream.emit` carries text only), in a shape the official
/// SDK reads.
async fn openai_compatible_returns_logprobs_plain_and_streamed(b: Backend) {
    let upstream = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let base_url = format!("{}/v1", upstream.base_url());
    s.upstream_integration(
        &admin,
        "up",
        &base_url,
        "sk-logprobs-test-0123456789",
        10_000,
    )
    .await;
    let key = s.api_key(&admin, "logprobs", "task_executor").await;
    let out = run_sdk(&s, &key, LOGPROBS_SCRIPT).await;
    let expected = json!({
        "tokens": ["echo:", " alpha", " beta"],
        "logprobs": [-0.1, -0.2, -0.3],
        "top": [[" alpha", "alt1"], 2],
    });
    assert_eq!(out["plain"], expected, "{out}");
    assert_eq!(out["stream"], expected, "{out}");
    assert_eq!(out["stream_text"], "echo: alpha beta", "{out}");
    // Every chunk before the finishing one has none; that one has them all.
    assert_eq!(out["chunks_with_logprobs"], 1, "{out}");
    assert_eq!(out["on_finish_chunk"], true, "{out}");
    let sent = upstream.requests().last().unwrap().body.clone().unwrap();
    assert_eq!(
        (&sent["stream"], &sent["logprobs"], &sent["top_logprobs"]),
        (&json!(true), &json!(true), &json!(2)),
        "{sent}"
    );
}

const LOGPROBS_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
question = [{"role": "user", "content": "alpha beta"}]

def summary(tokens):
    return {"tokens": [t.token for t in tokens], "logprobs": [t.logprob for t in tokens],
            "top": [[t.token for t in tokens[1].top_logprobs], len(tokens[2].top_logprobs)]}

out = {}
r = client.chat.completions.create(model="up/gpt-4o-mini", messages=question,
                                   logprobs=True, top_logprobs=2)
out["plain"] = summary(r.choices[0].logprobs.content)
tokens, text, with_logprobs, on_finish = [], "", 0, False
for chunk in client.chat.completions.create(model="up/gpt-4o-mini", messages=question,
                                            logprobs=True, top_logprobs=2, stream=True):
    for c in chunk.choices:
        text += c.delta.content or ""
        if c.logprobs and c.logprobs.content:
            with_logprobs += 1
            on_finish = c.finish_reason is not None
            tokens += c.logprobs.content
out["stream"] = summary(tokens)
out["stream_text"] = text
out["chunks_with_logprobs"] = with_logprobs
out["on_finish_chunk"] = on_finish
print(json.dumps(out))
"#;

dual_backend_tests!(
    tool_calls_and_structured_output_with_the_openai_sdk,
    openai_compatible_passes_tools_through_and_maps_calls_back,
    anthropic_maps_tool_calls_and_json_output,
    perplexity_refuses_tools_json_and_logprobs_naming_the_feature,
    openai_compatible_returns_logprobs_plain_and_streamed,
);
