//! MCP tool servers: integrations of kind `mcp` and `taskmaster` served by
//! the built-in `mcp` plugin (the `tool-server` world, in the sandbox),
//! against the real `@modelcontextprotocol/server-everything` from npm
//! (installed by `.ci/run` into `target/mcp-tools`, started here in
//! Streamable HTTP mode on a free loopback port): its tools listed, `echo`
//! called by a task, a long-running tool's progress on the task's stream,
//! tool errors failing the task, the integration's timeout enforced. And a
//! hostile MCP server (the mock upstream's `/mcp/…` modes: a huge answer,
//! an endless event stream, invalid JSON-RPC, a stall, a JSON-RPC error)
//! contained with a clear error while the server keeps serving; the
//! integration's key reaching the server as a bearer token, added by the
//! host, and never shown.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use vel_mock_upstream::MockUpstream;

use crate::support::guests::workspace_root;
use crate::support::{Backend, Server};

/// The version `.ci/run` installs.
const EVERYTHING: &str = "@modelcontextprotocol/server-everything@2026.8.31";

/// Makes `listen(port)` listen on loopback only: the server listens on
/// every interface otherwise.
const LOOPBACK_ONLY: &str = "import net from 'node:net';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    const callback = args.find((a) => typeof a === 'function');
    return listen.call(this, { port: Number(args[0]), host: '127.0.0.1' }, callback);
  }
  return listen.apply(this, args);
};
";

/// A running server-everything in Streamable HTTP mode; killed on drop.
pub(crate) struct Everything {
    child: Child,
    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub(crate) url: String,
    dir: PathBuf,
}

impl Everything {
    /// Starts it on a free loopback port and waits for its "listening" line.
    pub(crate) fn start() -> Everything {
        let entry = workspace_root().join(
            "target/mcp-tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        );
        assert!(
            entry.exists(),
            "the MCP tests need server-everything at {}: run \
             `npm install --prefix target/mcp-tools --no-save {EVERYTHING}` (as .ci/run does)",
            entry.display()
        );
        let dir = std::env::temp_dir().join(format!("vel-mcp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let preload = dir.join("loopback.mjs");
        std::fs::write(&preload, LOOPBACK_ONLY).unwrap();
        // A port the OS just gave out is free; taken meanwhile, the server
        // says so and another is tried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("node")
                .arg("--import")
                .arg(&preload)
                .arg(&entry)
                .arg("streamableHttp")
                .env("PORT", port.to_string())
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start node");
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let mut seen = Vec::new();
            let listening = loop {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(line) if line.contains("listening on port") => break true,
                    Ok(line) => seen.push(line),
                    Err(_) => break false,
                }
            };
            if listening {
                return Everything {
                    child,
                    url: format!("http://127.0.0.1:{port}/mcp"),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                seen.iter().any(|l| l.contains("already in use")),
                "server-everything did not start: {seen:?}"
            );
        }
        panic!("server-everything found no free port");
    }
}

impl Everything {
    /// An `mcp` integration called `everything` of `server`, pointing at it.
    pub(crate) async fn integration(&self, server: &Server, token: &str) -> String {
        server
            .integration(
                token,
                json!({ "name": "everything", "provider": "mcp", "base_url": self.url }),
            )
            .await
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tool task's body.
fn tool_task(integration: &str, name: &str, arguments: Value) -> Value {
    json!({ "description": format!("call {name}"),
            "tool": { "integration": integration, "name": name, "arguments": arguments } })
}

/// The `data` of every `progress` event in a task's event stream.
fn progress_events(stream: &str) -> Vec<Value> {
    stream
        .split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: progress"))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
        })
        .collect()
}

async fn tools_are_listed_and_called(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    let created = server
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "everything", "provider": "mcp", "base_url": everything.url }),
        )
        .await
        .expect(201);
    assert_eq!(created.body["plugin"], "mcp");
    assert_eq!(created.body["timeout_ms"], 120_000, "{}", created.body);
    let id = created.body["id"].as_str().unwrap();
    // Its connectivity test lists its tools.
    let test = server
        .post(&format!("/api/integrations/{id}/test"), &admin, json!({}))
        .await
        .expect(200);
    assert_eq!(test.body["ok"], true, "{}", test.body);

    let tools = server
        .get(&format!("/api/integrations/{id}/tools"), &admin)
        .await
        .expect(200);
    assert_eq!(tools.body["integration"], "everything");
    let items = tools.body["items"].as_array().unwrap();
    let echo = items
        .iter()
        .find(|t| t["name"] == "echo")
        .unwrap_or_else(|| panic!("no echo tool: {}", tools.body));
    assert_eq!(
        echo["input_schema"]["properties"]["message"]["type"],
        "string"
    );
    assert!(echo["description"].as_str().unwrap().contains("Echo"));
    assert!(
        items
            .iter()
            .any(|t| t["name"] == "trigger-long-running-operation")
    );

    let task = server
        .finished_task(
            &admin,
            tool_task("everything", "echo", json!({ "message": "hello vel" })),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["text"], "Echo: hello vel");
    assert_eq!(task["result"]["content"][0]["type"], "text");
    assert_eq!(task["result"]["tool"]["name"], "echo");
    assert_eq!(task["request"]["tool"]["arguments"]["message"], "hello vel");
    let attempt = &task["attempts"][0];
    assert_eq!(attempt["provider"], "everything");
    assert_eq!(attempt["model"], "echo");
    assert_eq!(attempt["outcome"], "ok");
    assert!(attempt["plugin"].as_str().unwrap().starts_with("mcp@"));

    // Tool calls are never answered from the cache: the same call runs again.
    let again = server
        .finished_task(
            &admin,
            tool_task("everything", "echo", json!({ "message": "hello vel" })),
        )
        .await;
    assert_eq!(again["status"], "completed");
    assert_eq!(again["result"]["cached"], false);
}

async fn long_running_tools_report_progress(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    everything.integration(&server, &admin).await;
    let created = server
        .post(
            "/api/tasks",
            &admin,
            tool_task(
                "everything",
                "trigger-long-running-operation",
                json!({ "duration": 1, "steps": 4 }),
            ),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let stream = server.event_stream(&admin, id, None).await;
    let progress = progress_events(&stream);
    let steps: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0], "{stream}");
    assert!(progress.iter().all(|p| p["total"] == 4.0));
    // Progress comes before the end.
    let last_progress = stream.rfind("event: progress").unwrap();
    assert!(stream.rfind("\"status\":\"completed\"").unwrap() > last_progress);
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed");
    assert!(
        task["result"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Long running operation completed"),
        "{task}"
    );
}

async fn tool_errors_fail_the_task(backend: Backend) {
    let everything = Everything::start();
    let mock = MockUpstream::start().await;
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    everything.integration(&server, &admin).await;
    // The tool refuses its arguments (`isError: true`).
    let task = server
        .finished_task(&admin, tool_task("everything", "echo", json!({})))
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "tool_error");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tool `echo` reported an error"),
        "{message}"
    );
    assert!(message.contains("message"), "{message}");
    assert_eq!(task["attempts"][0]["outcome"], "error");
    // A tool the server does not have.
    let task = server
        .finished_task(&admin, tool_task("everything", "no-such-tool", json!({})))
        .await;
    assert_eq!(task["status"], "failed");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-tool"),
        "{task}"
    );
    // A JSON-RPC error answer.
    server
        .integration(
            &admin,
            json!({ "name": "broken", "provider": "mcp",
                    "base_url": format!("{}/mcp/rpc-error", mock.base_url()) }),
        )
        .await;
    let task = server
        .finished_task(&admin, tool_task("broken", "anything", json!({})))
        .await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["error"]["kind"], "server_error", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("-32603"),
        "{task}"
    );
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the tool broke")
    );
    // An integration that is no tool server, or none at all.
    server.mock_integration(&admin, "models").await;
    let task = server
        .finished_task(&admin, tool_task("models", "echo", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "not_a_tool_server", "{task}");
    let task = server
        .finished_task(&admin, tool_task("nobody", "echo", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "integration_not_found", "{task}");
}

async fn bad_tool_tasks_are_refused(backend: Backend) {
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    let models = server.mock_integration(&admin, "models").await;
    let refused = |body: Value, field: &'static str| {
        let server = &server;
        let admin = &admin;
        async move {
            let r = server
                .post("/api/tasks", admin, body)
                .await
                .expect_error(422, "validation_failed");
            assert!(
                r.body["error"]["details"][field].is_array(),
                "{field}: {}",
                r.body
            );
        }
    };
    let mut with_prompt = tool_task("x", "echo", json!({}));
    with_prompt["prompt"] = json!("hi");
    refused(with_prompt, "tool").await;
    refused(tool_task("x", "echo", json!([1, 2])), "tool.arguments").await;
    refused(tool_task("", "echo", json!({})), "tool.integration").await;
    refused(tool_task("x", "", json!({})), "tool.name").await;
    let r = server
        .post(
            "/api/tasks",
            &admin,
            json!({ "description": "d", "tool": { "integration": "x", "name": "y", "extra": 1 } }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    // A model integration has no tools to list.
    server
        .get(&format!("/api/integrations/{models}/tools"), &admin)
        .await
        .expect_error(400, "not_a_tool_server");
    server
        .get("/api/integrations/nope/tools", &admin)
        .await
        .expect_error(404, "not_found");
    // Task Master's preset needs its URL and key.
    let r = server
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "tm", "provider": "taskmaster" }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(r.body["error"]["details"]["base_url"].is_array());
    assert!(r.body["error"]["details"]["api_key"].is_array());
    // Nothing was queued.
    let tasks = server.get("/api/tasks", &admin).await.expect(200);
    assert_eq!(tasks.body["total"], 0);
}

async fn the_timeout_and_the_key_are_the_integrations(backend: Backend) {
    let everything = Everything::start();
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some("tm-secret-key"));
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    let preset = server
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "taskmaster", "provider": "taskmaster",
                    "base_url": everything.url, "api_key": "tm-secret-key", "timeout_ms": 1000 }),
        )
        .await
        .expect(201);
    assert_eq!(preset.body["plugin"], "mcp");
    assert_eq!(preset.body["has_api_key"], true);
    let started = std::time::Instant::now();
    let task = server
        .finished_task(
            &admin,
            tool_task(
                "taskmaster",
                "trigger-long-running-operation",
                json!({ "duration": 30, "steps": 30 }),
            ),
        )
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "timeout", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 ms"),
        "{task}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // The key reaches the server as a bearer token, added by the host; a
    // wrong key is refused by it, and the key is never shown.
    let keyed = server
        .integration(
            &admin,
            json!({ "name": "keyed", "provider": "taskmaster", "api_key": "tm-secret-key",
                    "base_url": format!("{}/mcp/rpc-error", mock.base_url()) }),
        )
        .await;
    let task = server
        .finished_task(&admin, tool_task("keyed", "anything", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "server_error", "{task}");
    let requests = mock.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.bearer_token() == Some("tm-secret-key"))
    );
    server
        .put(
            &format!("/api/integrations/{keyed}"),
            &admin,
            json!({ "api_key": "wrong-key-for-tm" }),
        )
        .await
        .expect(200);
    let task = server
        .finished_task(&admin, tool_task("keyed", "anything", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "auth", "{task}");
    assert!(!task.to_string().contains("wrong-key-for-tm"));
    assert!(!server.stderr().contains("wrong-key-for-tm"));
    assert!(!server.stderr().contains("tm-secret-key"));
}

async fn hostile_servers_are_contained(backend: Backend) {
    let mock = MockUpstream::start().await;
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    let hostile = |mode: &str, timeout_ms: u64| {
        json!({ "name": mode, "provider": "mcp", "timeout_ms": timeout_ms,
                "base_url": format!("{}/mcp/{mode}", mock.base_url()) })
    };
    for mode in ["huge", "endless", "invalid"] {
        server.integration(&admin, hostile(mode, 30_000)).await;
    }
    let stall = server.integration(&admin, hostile("stall", 1000)).await;

    let task = server
        .finished_task(&admin, tool_task("huge", "anything", json!({})))
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 4194304 bytes"),
        "{task}"
    );

    let created = server
        .post(
            "/api/tasks",
            &admin,
            tool_task("endless", "anything", json!({})),
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
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{task}"
    );
    // The flood of progress reports is cut to the task's share.
    let progress = progress_events(&stream).len();
    assert!((1..=1000).contains(&progress), "{progress} progress events");

    let task = server
        .finished_task(&admin, tool_task("invalid", "anything", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "protocol", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON-RPC"),
        "{task}"
    );

    let task = server
        .finished_task(&admin, tool_task("stall", "anything", json!({})))
        .await;
    assert_eq!(task["error"]["kind"], "timeout", "{task}");

    // Listing on a hostile server is a clear 5xx, not a crash.
    server
        .get(&format!("/api/integrations/{stall}/tools"), &admin)
        .await
        .expect_error(504, "timeout");

    let test = server
        .post(
            &format!("/api/integrations/{stall}/test"),
            &admin,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(test.body["ok"], false, "{}", test.body);
    assert_eq!(test.body["error"]["source"], "provider");
    assert_eq!(test.body["error"]["kind"], "timeout");

    // The server keeps serving: a model task still completes.
    server.mock_integration(&admin, "models").await;
    let task = server
        .finished_task(
            &admin,
            json!({ "description": "after", "prompt": "still here" }),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    server.get("/api/health", &admin).await.expect(200);
}

/// A tool the server runs only as an MCP task (`simulate-research-query`,
/// `execution.taskSupport: "required"`): called as a task, its status
/// messages followed as progress, its result fetched at the end.
async fn task_tools_are_polled_to_their_end(backend: Backend) {
    let everything = Everything::start();
    let server = Server::start(backend).await;
    let admin = server.admin_token().await;
    everything.integration(&server, &admin).await;
    let created = server
        .post(
            "/api/tasks",
            &admin,
            tool_task(
                "everything",
                "simulate-research-query",
                json!({ "topic": "wasm sandboxes" }),
            ),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let stream = server.event_stream(&admin, id, None).await;
    let messages: Vec<String> = progress_events(&stream)
        .iter()
        .filter_map(|p| p["message"].as_str().map(str::to_string))
        .collect();
    for stage in [
        "Gathering sources",
        "Analyzing content",
        "Generating report",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(stage)),
            "{stage} not in {messages:?}"
        );
    }
    let task = server
        .get(&format!("/api/tasks/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed", "{task}");
    let text = task["result"]["text"].as_str().unwrap();
    assert!(text.contains("# Research Report: wasm sandboxes"), "{text}");
}

/// Two instances on one PostgreSQL database share an integration's five
/// concurrent calls: eight calls of a server that never answers (each
/// ended by the integration's timeout) are never more than five at the
/// server at once, and each instance alone would let five through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_bounded_across_instances_postgres() {
    let mock = MockUpstream::start().await;
    let first = Server::start(Backend::Postgres).await;
    let second = first.sibling(&[]);
    let admin = first.admin_token().await;
    first
        .integration(
            &admin,
            json!({ "name": "stall", "provider": "mcp", "timeout_ms": 1500,
                    "base_url": format!("{}/mcp/stall", mock.base_url()) }),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { &first } else { &second };
        let created = server
            .post(
                "/api/tasks",
                &admin,
                tool_task("stall", "anything", json!({})),
            )
            .await
            .expect(201);
        ids.push(created.body["id"].as_str().unwrap().to_string());
    }
    // Five at the server at once: the limit is reached, not exceeded.
    mock.wait_until(|s| s.in_flight >= 5).await;
    for id in &ids {
        first.event_stream(&admin, id, None).await;
        let task = first
            .get(&format!("/api/tasks/{id}"), &admin)
            .await
            .expect(200);
        assert_eq!(task.body["status"], "failed", "{}", task.body);
    }
    let stats = mock.stats();
    assert_eq!(stats.peak_in_flight, 5, "{stats:?}");
}

dual_backend_tests!(
    tools_are_listed_and_called,
    long_running_tools_report_progress,
    task_tools_are_polled_to_their_end,
    tool_errors_fail_the_task,
    bad_tool_tasks_are_refused,
    the_timeout_and_the_key_are_the_integrations,
    hostile_servers_are_contained,
);
