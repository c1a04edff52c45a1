//! A client nobody here wrote, generated from the OpenAPI document the
//! server serves (openapi-python-client), drives a real server: typed
//! requests, typed answers, and typed errors where the document says so.

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Server, python};

/// Uses the generated package `vel_client`: every call's answer must parse
/// into the type the document promises for its status.
const SCRIPT: &str = r#"
import os, sys
from vel_client import AuthenticatedClient, Client
from vel_client.api.auth import login
from vel_client.api.agents import agents_create, agents_get
from vel_client.api.integrations import integrations_create
from vel_client.api.tasks import tasks_create, tasks_get, tasks_list
from vel_client.api.users import me
from vel_client.models import (
    AgentView, CreateAgent, CreateIntegration, CreateTask, ErrorBody, IntegrationView,
    LoginRequest, TaskCreated, TaskList, TaskView, TokenResponse, UserView,
)

base, email, password = sys.argv[1:4]
anonymous = Client(base_url=base, raise_on_unexpected_status=True)

refused = login.sync_detailed(client=anonymous, body=LoginRequest(email=email, password="not-the-password-1A"))
assert refused.status_code == 401, refused
assert isinstance(refused.parsed, ErrorBody), refused.parsed
assert refused.parsed.error.code == "unauthorized", refused.parsed

token = login.sync(client=anonymous, body=LoginRequest(email=email, password=password))
assert isinstance(token, TokenResponse), token
client = AuthenticatedClient(base_url=base, token=token.token, raise_on_unexpected_status=True)

who = me.sync(client=client)
assert isinstance(who, UserView) and who.email == email, who

integration = integrations_create.sync(client=client, body=CreateIntegration.from_dict(
    {"name": "alpha", "provider": "mock", "plugin": "mock"}))
assert isinstance(integration, IntegrationView) and not integration.has_api_key, integration

agent = agents_create.sync(client=client, body=CreateAgent.from_dict(
    {"name": "generated", "type": "researcher", "config": {"provider": "mock", "model": "echo"}}))
assert isinstance(agent, AgentView), agent
assert agents_get.sync(agent.id, client=client).name == "generated"

bad = agents_create.sync_detailed(client=client, body=CreateAgent.from_dict(
    {"name": "", "type": "researcher", "config": {"provider": "mock", "model": "echo"}}))
assert bad.status_code == 422, bad
assert isinstance(bad.parsed, ErrorBody) and "name" in bad.parsed.error.details.to_dict(), bad.parsed

created = tasks_create.sync(client=client, body=CreateTask.from_dict(
    {"description": "from a generated client", "prompt": "hello", "agent_id": agent.id}))
assert isinstance(created, TaskCreated), created
task = tasks_get.sync(created.id, client=client)
assert isinstance(task, TaskView) and task.id == created.id, task
listed = tasks_list.sync(client=client, limit=10)
assert isinstance(listed, TaskList) and any(t.id == created.id for t in listed.items), listed

missing = tasks_get.sync_detailed("no-such-task", client=client)
assert missing.status_code == 404 and isinstance(missing.parsed, ErrorBody), missing
print("ok")
"#;

async fn a_generated_python_client_drives_the_api(b: Backend) {
    let python = python();
    let generator = python.with_file_name("openapi-python-client");
    let s = Server::start(b).await;
    let document = s
        .call(reqwest::Method::GET, "/api/openapi.json", None, None)
        .await
        .expect(200);
    let dir = std::env::temp_dir().join(format!("vel-client-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = dir.join("openapi.json");
    std::fs::write(&spec, document.body.to_string()).expect("write the document");
    // No formatter hooks: the generated code is used, not committed.
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "post_hooks: []\npackage_name_override: vel_client\n",
    )
    .expect("write the config");
    let generated = tokio::process::Command::new(&generator)
        .arg("generate")
        .arg("--path")
        .arg(&spec)
        .arg("--output-path")
        .arg(dir.join("vel_client"))
        .arg("--meta")
        .arg("none")
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run openapi-python-client");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(generated.status.success(), "{report}");
    assert!(
        !report.contains("Warning"),
        "the generator skipped parts: {report}"
    );

    let run = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&s.base)
        .arg(ADMIN_EMAIL)
        .arg(ADMIN_PASSWORD)
        .env("PYTHONPATH", &dir)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.trim() == "ok",
        "the generated client failed:\n{}\nstdout: {stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

dual_backend_tests!(a_generated_python_client_drives_the_api);
