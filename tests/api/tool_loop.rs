//! The agent tool loop: an agent that lists MCP integrations in its
//! `tools` runs its tasks as a bounded loop, against the real
//! `@modelcontextprotocol/server-everything` (see [`crate::mcp`]) and the
//! built-in `mock` provider's scripted `tools` model (metadata `tool`,
//! `tool-arguments`, `tool-rounds`), whose final answer quotes the tool
//! results it was given: so a passing test shows the server's result
//! reached the model. Every round an attempt, every tool call an event
//! pair and an audit row; a tool's error fed back to the model; an
//! unreachable server failing the task; `max_tool_rounds` enforced;
//! cancellation stopping the loop (the call it cut off audited); and the
//! same loop through `/v1/chat/completions` with `X-Vel-Agent`, plain and
//! streamed, driven by the OpenAI Python SDK: a client tool call ending
//! the loop, the server tools' calls never shown, `usage` every round's.

use std::net::TcpListener;

use serde_json::{Value, json};

use crate::mcp::Everything;
use crate::support::{Backend, Server};

/// An org with the `mock` integration `models`, server-everything as
/// `everything`, and an agent on model `tools` with `everything` as its
/// tools (`extra` merged into its config); returns (admin token, agent id).
async fn setup(server: &Server, everything: &Everything, extra: Value) -> (String, String) {
    let admin = server.admin_token().await;
    server.mock_integration(&admin, "models").await;
    everything.integration(server, &admin).await;
    let mut config = json!({ "provider": "models", "model": "tools", "tools": ["everything"] });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let agent = server
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "Tool user", "type": "mcp_orchestrator", "config": config }),
        )
        .await
        .expect(201);
    assert_eq!(agent.body["config"]["tools"], json!(["everything"]));
    (admin, agent.body["id"].as_str().unwrap().to_string())
}

/// A task of `agent` asking `prompt`, the mock scripted by `metadata`.
fn agent_task(agent: &str, prompt: &str, metadata: Value) -> Value {
    json!({ "description": "use tools", "prompt": prompt, "agent_id": agent,
            "metadata": metadata, "stream": true })
}

/// The (event, data) pairs of an SSE body, in order.
fn events(stream: &str) -> Vec<(String, Value)> {
    stream
        .split("\n\n")
        .filter_map(|block| {
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind.to_string(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

/// The `tool_call` audit rows' payloads, oldest first.
async fn audited_calls(server: &Server, admin: &str) -> Vec<Value> {
    let audit = server
        .get("/api/audit-logs?action=tool_call&limit=100", admin)
        .await
        .expect(200);
    let mut rows: Vec<Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["payload"].clone())
        .collect();
    rows.reverse();
    rows
}

/// A dollar amount as the API shows it (a decimal string or a number).
fn usd(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an amount: {v}"))
}

async fn agent_tasks_run_the_tool_loop(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({})).await;

    let created = server
        .post(
            "/api/tasks",
            &admin,
            agent_task(&agent, "hello loop", json!({ "tool": "echo" })),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let stream = server.event_stream(&admin, id, None).await;
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed", "{task}");
    // The model answered with what the server's echo returned.
    assert_eq!(
        task["result"]["text"], "tool said: Echo: hello loop",
        "{task}"
    );
    assert_eq!(task["request"]["agent_tools"]["max_rounds"], 8);
    // One run: the loop's writes (events, audit rows) never wait on each other.
    assert_eq!(task["runs"], 1, "{task}");

    // Two rounds, two attempts, numbered on; the cost is theirs summed.
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{task}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["seq"], i + 1);
        assert_eq!(a["provider"], "models");
        assert_eq!(a["model"], "tools");
        assert_eq!(a["outcome"], "ok");
        assert!(usd(&a["cost_usd"]) > 0.0, "{a}");
    }
    let summed: f64 = attempts.iter().map(|a| usd(&a["cost_usd"])).sum();
    assert!((usd(&task["cost_usd"]) - summed).abs() < 1e-12, "{task}");

    // The loop on the stream: attempt, tool call, its result, attempt, end.
    let events = events(&stream);
    let kinds: Vec<&str> = events
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| ["attempt", "tool_call", "tool_result"].contains(k))
        .collect();
    assert_eq!(
        kinds,
        ["attempt", "tool_call", "tool_result", "attempt"],
        "{stream}"
    );
    let call = &events.iter().find(|(k, _)| k == "tool_call").unwrap().1;
    assert_eq!(call["name"], "everything__echo");
    assert_eq!(call["integration"], "everything");
    assert_eq!(call["tool"], "echo");
    assert_eq!(call["round"], 1);
    assert_eq!(call["arguments"], json!({ "message": "hello loop" }));
    let result = &events.iter().find(|(k, _)| k == "tool_result").unwrap().1;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["text"], "Echo: hello loop");
    assert_eq!(result["id"], call["id"]);
    assert_eq!(events.last().unwrap().1["status"], "completed");

    // Audited without the arguments.
    let audited = audited_calls(&server, &admin).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let row = &audited[0];
    assert_eq!(row["integration"], "everything");
    assert_eq!(row["tool"], "echo");
    assert_eq!(row["ok"], true);
    assert_eq!(row["task_id"], id);
    assert_eq!(row["agent_id"], agent.as_str());
    assert!(row["ms"].as_i64().unwrap() >= 0);
    assert!(!row.to_string().contains("hello loop"), "{row}");

    // Another tool with the model's own arguments; and two rounds.
    let task = server
        .finished_task(
            &admin,
            agent_task(
                &agent,
                "add them",
                json!({ "tool": "get-sum", "tool-arguments": { "a": 2, "b": 3 } }),
            ),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["result"]["text"], "tool said: The sum of 2 and 3 is 5.",
        "{task}"
    );
    let task = server
        .finished_task(
            &admin,
            agent_task(&agent, "twice", json!({ "tool": "echo", "tool-rounds": 2 })),
        )
        .await;
    assert_eq!(
        task["result"]["text"], "tool said: Echo: twice; Echo: twice",
        "{task}"
    );
    assert_eq!(task["attempts"].as_array().unwrap().len(), 3);
    // Not cached: the same request runs its tools again.
    let again = server
        .finished_task(
            &admin,
            agent_task(&agent, "twice", json!({ "tool": "echo", "tool-rounds": 2 })),
        )
        .await;
    assert_eq!(again["cached"], false, "{again}");
    assert_eq!(audited_calls(&server, &admin).await.len(), 6);
}

async fn agent_tools_are_checked(backend: Backend) {
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    server.mock_integration(&admin, "models").await;
    server
        .integration(
            &admin,
            json!({ "name": "tm", "provider": "taskmaster",
                    "base_url": "https://tm.example.com/mcp", "api_key": "k" }),
        )
        .await;
    let refused = |config: Value, field: &'static str| {
        let server = &server;
        let admin = &admin;
        async move {
            let r = server
                .post(
                    "/api/agents",
                    admin,
                    json!({ "name": "a", "type": "mcp_orchestrator", "config": config }),
                )
                .await
                .expect_error(422, "validation_failed");
            assert!(
                r.body["error"]["details"][field].is_array(),
                "{field}: {}",
                r.body
            );
        }
    };
    let base = |extra: Value| {
        let mut c = json!({ "provider": "models", "model": "tools" });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    refused(base(json!({ "tools": ["models"] })), "config.tools[0]").await;
    refused(base(json!({ "tools": ["tm", "nope"] })), "config.tools[1]").await;
    refused(base(json!({ "tools": ["tm", "tm"] })), "config.tools[1]").await;
    refused(
        base(json!({ "max_tool_rounds": 0 })),
        "config.max_tool_rounds",
    )
    .await;
    refused(
        base(json!({ "tools": ["tm"], "max_tool_rounds": 33 })),
        "config.max_tool_rounds",
    )
    .await;
    assert_eq!(
        server.get("/api/agents", &admin).await.expect(200).body["total"],
        0
    );
    // A Task Master agent is accepted, and an update is checked the same way.
    let agent = server
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "planner", "type": "mcp_orchestrator",
                    "config": base(json!({ "tools": ["tm"], "max_tool_rounds": 4 })) }),
        )
        .await
        .expect(201);
    assert_eq!(agent.body["config"]["max_tool_rounds"], 4);
    let id = agent.body["id"].as_str().unwrap();
    let r = server
        .put(
            &format!("/api/agents/{id}"),
            &admin,
            json!({ "config": base(json!({ "tools": ["models"] })) }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(r.body["error"]["details"]["config.tools[0]"].is_array());

    // The contract documents them.
    let spec = server
        .get("/api/openapi.json", &admin)
        .await
        .expect(200)
        .body;
    let config = &spec["components"]["schemas"]["AgentConfig"]["properties"];
    assert_eq!(config["tools"]["type"], "array", "{config}");
    assert_eq!(config["max_tool_rounds"]["maximum"], 32, "{config}");
    let params = spec["paths"]["/v1/chat/completions"]["post"]["parameters"]
        .as_array()
        .unwrap();
    assert!(params.iter().any(|p| p["name"] == "X-Vel-Agent"));
}

async fn the_loop_is_bounded_and_tool_errors_go_to_the_model(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({ "max_tool_rounds": 2 })).await;

    // The model keeps asking: after 2 rounds the task fails, typed.
    let task = server
        .finished_task(
            &admin,
            agent_task(&agent, "again", json!({ "tool": "echo", "tool-rounds": 5 })),
        )
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "tool_rounds_exceeded", "{task}");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 3, "{task}");
    assert!(usd(&task["cost_usd"]) > 0.0);
    assert_eq!(audited_calls(&server, &admin).await.len(), 2);

    // The tool refuses its arguments (isError): the model is told and answers.
    let created = server
        .post(
            "/api/tasks",
            &admin,
            agent_task(
                &agent,
                "broken",
                json!({ "tool": "echo", "tool-arguments": {} }),
            ),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let stream = server.event_stream(&admin, id, None).await;
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed", "{task}");
    let text = task["result"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("tool said: error: tool `echo` reported an error"),
        "{text}"
    );
    let result = events(&stream)
        .into_iter()
        .find(|(k, _)| k == "tool_result")
        .unwrap()
        .1;
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"], "tool_error");
    let audited = audited_calls(&server, &admin).await;
    assert_eq!(audited.last().unwrap()["ok"], false);
    assert_eq!(audited.last().unwrap()["error"], "tool_error");

    // A tool the servers do not have is the model's mistake too.
    let task = server
        .finished_task(
            &admin,
            agent_task(&agent, "hm", json!({ "tool": "everything__no-such-tool" })),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["result"]["text"], "tool said: error: no tool is called `everything__no-such-tool`",
        "{task}"
    );

    // An unreachable tool server fails the task, naming it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    server
        .integration(
            &admin,
            json!({ "name": "gone", "provider": "mcp",
                    "base_url": format!("http://127.0.0.1:{port}/mcp") }),
        )
        .await;
    let gone = server
        .post(
            "/api/agents",
            &admin,
            json!({ "name": "gone", "type": "mcp_orchestrator",
                    "config": { "provider": "models", "model": "tools", "tools": ["gone"] } }),
        )
        .await
        .expect(201);
    let task = server
        .finished_task(
            &admin,
            agent_task(gone.body["id"].as_str().unwrap(), "x", json!({})),
        )
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "tool_server_failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`gone`"),
        "{task}"
    );
}

async fn cancel_stops_the_loop(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({})).await;
    let created = server
        .post(
            "/api/tasks",
            &admin,
            agent_task(
                &agent,
                "wait",
                json!({ "tool": "trigger-long-running-operation",
                        "tool-arguments": { "duration": 600, "steps": 600 } }),
            ),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    // Follow the stream until the tool call starts, then cancel.
    let mut resp = reqwest::Client::new()
        .get(server.url(&format!("/api/tasks/{id}/stream")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("event: tool_call") {
        let chunk = resp.chunk().await.unwrap().expect("the stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    server
        .post(&format!("/api/tasks/{id}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "cancelled", "{task}");
    assert!(!seen.contains("event: tool_result"), "{seen}");
    // One model call was made; no second round.
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
    // The call cut off is audited as such (before the cancel answered).
    let audited = audited_calls(&server, &admin).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let row = &audited[0];
    assert_eq!(row["tool"], "trigger-long-running-operation", "{row}");
    assert_eq!(row["integration"], "everything", "{row}");
    assert_eq!(row["task_id"], id.as_str(), "{row}");
    assert_eq!(row["source"], "task", "{row}");
    assert_eq!(row["ok"], false, "{row}");
    assert_eq!(row["error"], "cancelled", "{row}");
    assert!(row["ms"].as_i64().unwrap() >= 0, "{row}");
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0,
                default_headers={"X-Vel-Agent": sys.argv[3]})
out = {}
question = [{"role": "user", "content": "hello sdk"}]

# Server tools only: vel runs the loop, the client gets the answer.
raw = client.chat.completions.with_raw_response.create(
    model="auto", messages=question, metadata={"tool": "echo"})
r = raw.parse()
out["server"] = {"content": r.choices[0].message.content,
                 "finish_reason": r.choices[0].finish_reason,
                 "tool_calls": r.choices[0].message.tool_calls,
                 "usage": r.usage.model_dump(),
                 "task_id": raw.headers.get("x-vel-task-id")}

# Streamed: vel runs the loop; the client gets the answer's chunks only.
raw = client.chat.completions.with_raw_response.create(
    model="auto", messages=question, metadata={"tool": "echo"}, stream=True,
    stream_options={"include_usage": True})
text, finish, calls, usage = "", None, 0, None
for chunk in raw.parse():
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for c in chunk.choices:
        text += c.delta.content or ""
        calls += len(c.delta.tool_calls or [])
        finish = c.finish_reason or finish
out["stream"] = {"content": text, "finish_reason": finish, "tool_calls": calls,
                 "usage": usage, "task_id": raw.headers.get("x-vel-task-id")}

# A client tool besides: its call ends the loop and comes back.
tools = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
first = client.chat.completions.create(model="auto", messages=question, tools=tools,
                                       metadata={"tool": "get_weather"})
m = first.choices[0].message
call = m.tool_calls[0]
out["client_call"] = {"finish_reason": first.choices[0].finish_reason,
                      "name": call.function.name,
                      "arguments": json.loads(call.function.arguments)}
follow = question + [m.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
final = client.chat.completions.create(model="auto", messages=follow, tools=tools,
                                       metadata={"tool": "get_weather"})
out["client_final"] = final.choices[0].message.content

# Streamed, a client tool's call comes as tool-call deltas.
acc, finish = {}, None
for chunk in client.chat.completions.create(model="auto", messages=question, tools=tools,
                                            metadata={"tool": "get_weather"}, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            e = acc.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            e["id"] = d.id or e["id"]
            if d.function is not None:
                e["name"] += d.function.name or ""
                e["arguments"] += d.function.arguments or ""
        finish = c.finish_reason or finish
out["stream_client_call"] = {"finish_reason": finish, "calls": [
    {"name": e["name"], "arguments": json.loads(e["arguments"]), "id": e["id"]}
    for e in acc.values()]}

# A client tool named like a server tool is refused.
clash = [{"type": "function", "function": {"name": "everything__echo"}}]
try:
    client.chat.completions.create(model="auto", messages=question, tools=clash)
    out["clash"] = None
except openai.BadRequestError as e:
    out["clash"] = {"status": e.status_code, "message": str(e)}

# An agent that does not exist.
other = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0,
               default_headers={"X-Vel-Agent": "no-such-agent"})
try:
    other.chat.completions.create(model="auto", messages=question)
    out["unknown_agent"] = None
except openai.BadRequestError as e:
    out["unknown_agent"] = {"status": e.status_code, "param": e.param}
print(json.dumps(out))
"#;

async fn the_gateway_runs_the_loop_for_an_agent(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({})).await;
    let key = server.api_key(&admin, "loop", "task_executor").await;
    let out = server.openai_sdk(SDK_SCRIPT, &[&key, &agent]).await;

    let answered = &out["server"];
    assert_eq!(answered["content"], "tool said: Echo: hello sdk", "{out}");
    assert_eq!(answered["finish_reason"], "stop");
    assert_eq!(answered["tool_calls"], Value::Null);
    // Recorded as one gateway task of the agent with both rounds, whose
    // tokens the usage sums.
    let task = server
        .recorded_task(&admin, answered["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["source"], "gateway");
    assert_eq!(task["agent_id"], agent.as_str(), "{task}");
    assert_loop_usage(&task, &answered["usage"]);

    // Streamed: the same answer, no tool call shown, the usage summed.
    let streamed = &out["stream"];
    assert_eq!(streamed["content"], "tool said: Echo: hello sdk", "{out}");
    assert_eq!(streamed["finish_reason"], "stop", "{out}");
    assert_eq!(streamed["tool_calls"], 0, "{out}");
    let task = server
        .recorded_task(&admin, streamed["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["stream"], true, "{task}");
    assert_loop_usage(&task, &streamed["usage"]);

    let audited = audited_calls(&server, &admin).await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    for row in &audited {
        assert_eq!(row["source"], "gateway");
        assert_eq!(row["tool"], "echo");
        assert_eq!(row["ok"], true);
    }

    assert_eq!(out["client_call"]["finish_reason"], "tool_calls", "{out}");
    assert_eq!(out["client_call"]["name"], "get_weather");
    assert_eq!(
        out["client_call"]["arguments"],
        json!({ "city": "hello sdk" })
    );
    assert_eq!(out["client_final"], "tool said: sunny", "{out}");
    let call = &out["stream_client_call"];
    assert_eq!(call["finish_reason"], "tool_calls", "{out}");
    assert_eq!(call["calls"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(call["calls"][0]["name"], "get_weather", "{out}");
    assert_eq!(
        call["calls"][0]["arguments"],
        json!({ "city": "hello sdk" })
    );
    assert!(call["calls"][0]["id"].is_string(), "{out}");
    assert_eq!(out["clash"]["status"], 400, "{out}");
    assert!(
        out["clash"]["message"]
            .as_str()
            .unwrap()
            .contains("everything__echo"),
        "{out}"
    );
    assert_eq!(out["unknown_agent"]["status"], 400, "{out}");
    assert_eq!(out["unknown_agent"]["param"], "agent", "{out}");
    // The client's own tool was not run by vel.
    assert_eq!(audited_calls(&server, &admin).await.len(), 2);

    // On the wire, while the server tool ran: an SSE comment, never a
    // chunk naming it.
    let body = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("X-Vel-Agent", &agent)
        .json(
            &json!({ "model": "auto", "stream": true, "metadata": { "tool": "echo" },
                       "messages": [{ "role": "user", "content": "on the wire" }] }),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\n: running a tool\n\n"), "{body}");
    assert!(!body.contains("everything__echo"), "{body}");
    assert!(!body.contains("tool_calls"), "{body}");
    // The comment came while the tool ran, before the answer's text.
    let comment = body.find(": running a tool").unwrap();
    let text = body.find(r#""content":"tool""#).expect("the answer's text");
    assert!(comment < text, "{body}");
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        assert!(
            block.starts_with(": ") || block.starts_with("data: "),
            "{block:?} in {body}"
        );
    }
}

/// A loop's `usage` (OpenAI's) is its task's tokens: every round's,
/// more than the last round's alone.
fn assert_loop_usage(task: &Value, usage: &Value) {
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{task}");
    assert_eq!(
        usage["prompt_tokens"], task["input_tokens"],
        "{usage} {task}"
    );
    assert_eq!(
        usage["completion_tokens"], task["output_tokens"],
        "{usage} {task}"
    );
    let prompt = usage["prompt_tokens"].as_i64().unwrap();
    let completion = usage["completion_tokens"].as_i64().unwrap();
    assert_eq!(usage["total_tokens"], prompt + completion);
    let last = &attempts[1];
    assert!(
        prompt > last["input_tokens"].as_i64().unwrap(),
        "{usage} {task}"
    );
    assert!(
        completion > last["output_tokens"].as_i64().unwrap(),
        "{usage} {task}"
    );
}

async fn a_stream_left_mid_tool_audits_the_cut_off_call(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({})).await;
    let key = server.api_key(&admin, "loop", "task_executor").await;
    let mut resp = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("X-Vel-Agent", &agent)
        // OpenAI's metadata holds strings only: the mock's arguments are
        // the prompt's word count (600 seconds, 600 steps).
        .json(&json!({ "model": "auto", "stream": true,
                       "metadata": { "tool": "trigger-long-running-operation" },
                       "messages": [{ "role": "user", "content": "wait ".repeat(600) }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let task_id = resp.headers()["x-vel-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    // Read until the server tool runs, then leave.
    let mut seen = String::new();
    while !seen.contains(": running a tool") {
        let chunk = resp.chunk().await.unwrap().expect("the stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);
    // Recorded once the run stopped, its cut-off call audited first.
    let task = server.recorded_task(&admin, &task_id).await;
    assert_eq!(task["status"], "cancelled", "{task}");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
    let audited = audited_calls(&server, &admin).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let row = &audited[0];
    assert_eq!(row["source"], "gateway", "{row}");
    assert_eq!(row["task_id"], task_id.as_str(), "{row}");
    assert_eq!(row["tool"], "trigger-long-running-operation", "{row}");
    assert_eq!(row["ok"], false, "{row}");
    assert_eq!(row["error"], "cancelled", "{row}");
}

/// What the model says before it calls a server tool is part of the
/// answer: a streamed loop shows it as it comes, then a blank line, then
/// the next round's text; the plain answer, the record and a task's
/// result read exactly the same.
async fn text_said_before_tools_is_kept(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let (admin, agent) = setup(&server, &everything, json!({})).await;
    let key = server.api_key(&admin, "loop", "task_executor").await;
    let metadata = json!({ "tool": "echo", "tool-preamble": "Let me ask the echo." });
    let said = "Let me ask the echo.\n\ntool said: Echo: kept words";
    let request = |stream: bool| {
        reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("X-Vel-Agent", &agent)
            .json(
                &json!({ "model": "auto", "stream": stream, "metadata": metadata,
                           "messages": [{ "role": "user", "content": "kept words" }] }),
            )
            .send()
    };

    let plain: Value = request(false).await.unwrap().json().await.unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], said, "{plain}");

    let resp = request(true).await.unwrap();
    assert_eq!(resp.status(), 200);
    let task_id = resp.headers()["x-vel-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.text().await.unwrap();
    let mut streamed = String::new();
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(text);
        }
    }
    assert_eq!(streamed, said, "{body}");
    // The preamble came before the tool ran, the rest after.
    let preamble = body.find(r#""content":"Let""#).expect("the preamble");
    assert!(preamble < body.find(": running a tool").unwrap(), "{body}");
    let task = server.recorded_task(&admin, &task_id).await;
    assert_eq!(task["result"]["text"], said, "{task}");

    let created = server
        .post(
            "/api/tasks",
            &admin,
            agent_task(&agent, "kept words", metadata.clone()),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    server.event_stream(&admin, id, None).await;
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["result"]["text"], said, "{task}");
}

dual_backend_tests!(
    text_said_before_tools_is_kept,
    a_stream_left_mid_tool_audits_the_cut_off_call,
    agent_tasks_run_the_tool_loop,
    agent_tools_are_checked,
    the_loop_is_bounded_and_tool_errors_go_to_the_model,
    cancel_stops_the_loop,
    the_gateway_runs_the_loop_for_an_agent,
);
