//! `vel plugin publish|list|show|activate|rollback`: the real `vel` binary
//! as a client of a running server's plugin registry, authenticated with an
//! API key that must never appear in what the CLI prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use vel_mock_upstream::MockUpstream;

use crate::support::guests::{build_guest, manifest};
use crate::support::{Backend, Server};

const ROUTER: &str = "vel-fixture-flip-router";
const NAME: &str = "flip-router";
/// Well-formed but unknown to the server.
const BAD_KEY: &str = "vel_not-a-real-key-at-all-000000000000000";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("vel-plugin-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Write `bytes` to `name` in the directory; returns the path as text.
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        text(&path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// What one `vel` run printed.
#[derive(Debug)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert!(self.success, "vel failed: {self:#?}");
        self
    }

    #[track_caller]
    fn failed(self) -> Run {
        assert!(!self.success, "vel should have failed: {self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Run `vel plugin ARGS` with only `env` in its environment (so the
/// developer's own `VEL_*` variables cannot leak in). Every run checks
/// that none of `secrets` appears in its output.
async fn vel(env: &[(&str, &str)], secrets: &[&str], args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vel"))
        .arg("plugin")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run vel");
    let run = Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for secret in secrets {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "vel {args:?} printed the API key: {run:#?}"
        );
    }
    run
}

/// The plugin as the API shows it (through a JWT, not the CLI).
async fn plugin(s: &Server, token: &str) -> Value {
    s.get(&format!("/api/plugins/{NAME}"), token)
        .await
        .expect(200)
        .body
}

async fn publish_list_activate_rollback(b: Backend) {
    let v1 = build_guest(ROUTER, &[]);
    let v2 = build_guest(ROUTER, &["v2"]);
    let dir = TempDir::new();
    let wasm1 = dir.write("flip_router_v1.wasm", &v1);
    let toml1 = dir.write("v1.toml", manifest(NAME, "1.0.0", "router", "").as_bytes());
    let wasm2 = dir.write("flip_router_v2.wasm", &v2);
    let toml2 = dir.write("v2.toml", manifest(NAME, "2.0.0", "router", "").as_bytes());

    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let key = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "cli", "role": "admin" }),
        )
        .await
        .expect(201)
        .body["key"]
        .as_str()
        .expect("key")
        .to_string();
    let env = [
        ("VEL_SERVER", s.base.as_str()),
        ("VEL_API_KEY", key.as_str()),
    ];
    let secrets = [key.as_str()];

    // Publish 1.0.0 and activate it at once (server and key from the environment).
    let run = vel(
        &env,
        &secrets,
        &["publish", &wasm1, "--manifest", &toml1, "--activate"],
    )
    .await
    .ok();
    assert!(
        run.stdout.contains("published flip-router 1.0.0"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("is now active"), "{run:#?}");
    let p = plugin(&s, &admin).await;
    assert_eq!(p["active_version"], "1.0.0", "{p}");
    assert_eq!(p["scope"], "platform", "{p}");

    // Publish 2.0.0 without activating, server and key as flags, JSON out.
    let run = vel(
        &[],
        &secrets,
        &[
            "publish",
            &wasm2,
            "--manifest",
            &toml2,
            "--server",
            &s.base,
            "--api-key",
            &key,
            "--json",
        ],
    )
    .await
    .ok();
    let body = run.json();
    assert_eq!(body["plugin"], NAME, "{body}");
    assert_eq!(body["version"], "2.0.0", "{body}");
    assert_eq!(body["kind"], "router", "{body}");
    assert_eq!(body["active"], false, "{body}");
    assert_eq!(plugin(&s, &admin).await["active_version"], "1.0.0");

    // The same version again: the server's conflict, non-zero exit.
    let run = vel(&env, &secrets, &["publish", &wasm2, "--manifest", &toml2])
        .await
        .failed();
    assert!(run.stderr.contains("version_exists"), "{run:#?}");
    assert!(run.stderr.contains("409"), "{run:#?}");

    // list: a human-readable row, and the server's JSON.
    let run = vel(&env, &secrets, &["list"]).await.ok();
    let row = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(NAME))
        .unwrap_or_else(|| panic!("no {NAME} row: {run:#?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [NAME, "router", "platform", "active", "1.0.0", "-"],
        "{run:#?}"
    );
    let list = vel(&env, &secrets, &["list", "--json"]).await.ok().json();
    let item = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == NAME)
        .unwrap_or_else(|| panic!("{NAME} not listed: {list}"))
        .clone();
    assert_eq!(item["active_version"], "1.0.0", "{list}");

    // activate 2.0.0.
    let run = vel(&env, &secrets, &["activate", NAME, "2.0.0"]).await.ok();
    assert!(
        run.stdout
            .contains("flip-router: active version 2.0.0 (previous 1.0.0)"),
        "{run:#?}"
    );
    let p = plugin(&s, &admin).await;
    assert_eq!(p["active_version"], "2.0.0", "{p}");
    assert_eq!(p["previous_version"], "1.0.0", "{p}");

    // show: both versions, the active one marked.
    let run = vel(&env, &secrets, &["show", NAME]).await.ok();
    assert!(run.stdout.contains("active:   2.0.0"), "{run:#?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with(" * 2.0.0")),
        "{run:#?}"
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("   1.0.0")),
        "{run:#?}"
    );

    // rollback: back to 1.0.0, and a second one returns to 2.0.0.
    let run = vel(&env, &secrets, &["rollback", NAME]).await.ok();
    assert!(
        run.stdout
            .contains("flip-router: rolled back to 1.0.0 (previous 2.0.0)"),
        "{run:#?}"
    );
    assert_eq!(plugin(&s, &admin).await["active_version"], "1.0.0");
    let body = vel(&env, &secrets, &["rollback", NAME, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(body["active_version"], "2.0.0", "{body}");
    assert_eq!(plugin(&s, &admin).await["active_version"], "2.0.0");

    // Unknown version: the server's 404, nothing changes.
    let run = vel(&env, &secrets, &["activate", NAME, "9.9.9"])
        .await
        .failed();
    assert!(run.stderr.contains("not_found"), "{run:#?}");
    assert_eq!(plugin(&s, &admin).await["active_version"], "2.0.0");
}

async fn errors_never_show_the_key(b: Backend) {
    let v1 = build_guest(ROUTER, &[]);
    let dir = TempDir::new();
    let wasm = dir.write("flip_router.wasm", &v1);
    let toml = dir.write("v1.toml", manifest(NAME, "1.0.0", "router", "").as_bytes());
    let not_utf8 = dir.write("bad.toml", &[0xff, 0xfe, b'n', b'a', 0x80]);
    let missing = text(&dir.0.join("missing.wasm"));

    let s = Server::start(b).await;
    let admin = s.admin_token().await;

    // An unknown key: the server's 401 code and message, non-zero exit,
    // and the key in neither stream, whether from a flag or the environment.
    let bad_env = [("VEL_SERVER", s.base.as_str()), ("VEL_API_KEY", BAD_KEY)];
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["publish", &wasm, "--manifest", &toml, "--activate"],
        vec!["rollback", NAME],
    ] {
        let run = vel(&bad_env, &[BAD_KEY], &args).await.failed();
        assert!(run.stderr.contains("unauthorized"), "{run:#?}");
        assert!(run.stderr.contains("401"), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
    let run = vel(
        &[],
        &[BAD_KEY],
        &["list", "--server", &s.base, "--api-key", BAD_KEY],
    )
    .await
    .failed();
    assert!(run.stderr.contains("unauthorized"), "{run:#?}");
    // Nothing was published with it.
    s.get(&format!("/api/plugins/{NAME}"), &admin)
        .await
        .expect_error(404, "not_found");

    // A key with too little power: the server's 403.
    let viewer_key = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "ro", "role": "viewer" }),
        )
        .await
        .expect(201)
        .body["key"]
        .as_str()
        .expect("key")
        .to_string();
    let viewer_env = [
        ("VEL_SERVER", s.base.as_str()),
        ("VEL_API_KEY", viewer_key.as_str()),
    ];
    let run = vel(
        &viewer_env,
        &[&viewer_key],
        &["publish", &wasm, "--manifest", &toml],
    )
    .await
    .failed();
    assert!(run.stderr.contains("forbidden"), "{run:#?}");
    assert!(run.stderr.contains("403"), "{run:#?}");

    // No key at all: refused before any request.
    let run = vel(&[("VEL_SERVER", s.base.as_str())], &[], &["list"])
        .await
        .failed();
    assert!(run.stderr.contains("no API key"), "{run:#?}");

    // Local files are checked before sending.
    let run = vel(
        &viewer_env,
        &[&viewer_key],
        &["publish", &missing, "--manifest", &toml],
    )
    .await
    .failed();
    assert!(run.stderr.contains("cannot read"), "{run:#?}");
    assert!(run.stderr.contains("missing.wasm"), "{run:#?}");
    let run = vel(
        &viewer_env,
        &[&viewer_key],
        &["publish", &wasm, "--manifest", &not_utf8],
    )
    .await
    .failed();
    assert!(run.stderr.contains("not valid UTF-8"), "{run:#?}");

    // Nothing listening: a transport error, still without the key.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let run = vel(
        &[("VEL_SERVER", closed.as_str()), ("VEL_API_KEY", BAD_KEY)],
        &[BAD_KEY],
        &["list"],
    )
    .await
    .failed();
    assert!(run.stderr.contains("no answer from"), "{run:#?}");
}

/// A built-in component's path.
fn builtin(name: &str) -> String {
    vel_plugin_artifacts::builtin(name)
        .unwrap_or_else(|| panic!("no built-in {name}"))
        .path
        .to_string()
}

/// A test-only hostile component's path.
fn hostile(name: &str) -> String {
    vel_plugin_artifacts::hostile_path(name)
        .unwrap_or_else(|| panic!("no hostile component {name}"))
        .to_string()
}

/// A router input with two candidates, `cheap` and `dear`, of task type
/// `task_type` and circuit state `circuit` (in whatever spelling).
fn router_input(task_type: &str, circuit: &str) -> Value {
    let candidate = |provider: &str, price: f64| {
        json!({ "provider": provider, "model": "m", "input_price_per_1k": price,
                "output_price_per_1k": price, "good_for": [task_type], "circuit": circuit,
                "p50_latency_ms": 0, "p95_latency_ms": 0, "error_rate": 0.0,
                "remaining_budget": null })
    };
    json!({
        "task": { "id": "t1", "organization_id": "org", "task_type": task_type,
                  "priority": "medium", "requested_model": null, "estimated_input_tokens": 100,
                  "max_tokens": null, "prefer": "cost", "metadata": { "tier": "gold" } },
        "candidates": [candidate("dear", 0.01), candidate("cheap", 0.001)]
    })
}

/// `vel plugin run` reads every spelling, prints the API's snake_case,
/// reports a guest's own error as `{"kind", "message"}`, and documents its
/// credential variable; `rollback --help` says it toggles; guest logs
/// carry no colour when piped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_speaks_the_apis_json() {
    let router = builtin("cost-router");
    let run = |input: Value| {
        let router = router.clone();
        async move { vel(&[], &[], &["run", &router, "--input", &input.to_string()]).await }
    };
    let snake = run(router_input("code_generation", "closed"))
        .await
        .ok()
        .json();
    assert_eq!(snake["kind"], "router", "{snake}");
    assert_eq!(
        snake["result"]["attempts"][0]["provider"], "cheap",
        "{snake}"
    );
    assert!(snake.get("error").is_none(), "{snake}");
    for (task_type, circuit) in [
        ("CodeGeneration", "Closed"),
        ("code-generation", "closed"),
        ("codeGeneration", "closed"),
    ] {
        let other = run(router_input(task_type, circuit)).await.ok().json();
        assert_eq!(other["result"], snake["result"], "{task_type}: {other}");
    }
    // The guest's own error, in snake_case, exit status 0.
    let none = run(router_input("general", "open")).await.ok().json();
    assert_eq!(none["error"]["kind"], "no_candidate", "{none}");
    assert!(none["error"]["message"].is_string(), "{none}");
    assert!(none.get("result").is_none(), "{none}");
    // Input that is not a router's: a clear error.
    let bad = run(json!({ "task": {} })).await.failed();
    assert!(bad.stderr.contains("not a router input"), "{bad:#?}");

    let help = vel(&[], &[], &["run", "--help"]).await.ok();
    assert!(help.stdout.contains("--secret-env"), "{help:#?}");
    assert!(help.stdout.contains("VEL_PLUGIN_SECRET"), "{help:#?}");
    assert!(help.stdout.contains("--manifest"), "{help:#?}");
    assert!(help.stdout.contains("no_candidate"), "{help:#?}");
    let help = vel(&[], &[], &["rollback", "--help"]).await.ok();
    assert!(help.stdout.contains("toggles"), "{help:#?}");

    // A guest's log line, piped: no ANSI escape codes.
    let flip = TempDir::new();
    let wasm = flip.write("flip.wasm", &build_guest(ROUTER, &[]));
    let logged = vel(
        &[("RUST_LOG", "vel_plugin=debug")],
        &[],
        &[
            "run",
            &wasm,
            "--input",
            &router_input("general", "open").to_string(),
        ],
    )
    .await
    .ok();
    assert!(logged.stderr.contains("no plan"), "{logged:#?}");
    assert!(!logged.stderr.contains('\u{1b}'), "{logged:#?}");
}

/// `vel plugin check --manifest` validates a manifest with or without the
/// component and says which outbound hosts it allows; `vel plugin test`
/// runs a fixture file and fails when a case does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_a_manifest_and_test_a_fixture() {
    let dir = TempDir::new();
    let provider = dir.write(
        "provider.toml",
        manifest(
            "my-provider",
            "1.0.0",
            "provider",
            "[outbound]\nhosts = [\"api.example.com\", \"127.0.0.1:18181\"]\n",
        )
        .as_bytes(),
    );
    let run = vel(&[], &[], &["check", "--manifest", &provider])
        .await
        .ok();
    assert!(run.stdout.contains("a valid manifest"), "{run:#?}");
    assert!(
        run.stdout
            .contains("api.example.com (https on 443 and http on 80 only"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("127.0.0.1:18181 (port 18181 only"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("loopback"), "{run:#?}");
    let bad = dir.write(
        "bad.toml",
        b"name = \"x\"\nversion = \"1\"\nkind = \"router\"\n",
    );
    let run = vel(&[], &[], &["check", "--manifest", &bad]).await.failed();
    assert!(run.stderr.contains("not a semantic version"), "{run:#?}");
    // Against the component: its name must match.
    let router = builtin("cost-router");
    let wrong = dir.write(
        "wrong.toml",
        manifest("other-router", "0.1.0", "router", "").as_bytes(),
    );
    let run = vel(&[], &[], &["check", &router, "--manifest", &wrong])
        .await
        .failed();
    assert!(run.stderr.contains("does not match"), "{run:#?}");
    let right = dir.write(
        "right.toml",
        vel_plugin_artifacts::builtin("cost-router")
            .expect("cost-router")
            .manifest
            .as_bytes(),
    );
    let run = vel(&[], &[], &["check", &router, "--manifest", &right])
        .await
        .ok();
    assert!(run.stdout.contains("matches the component"), "{run:#?}");

    // A fixture: two passing cases, then one failing.
    let cases = |expect_first: &str| {
        json!({
            "component": router.clone(),
            "manifest": "right.toml",
            "cases": [
                { "name": "cheapest first", "input": router_input("general", "closed"),
                  "expect": { "result": { "attempts": [{ "provider": expect_first }, { "provider": "dear" }] } } },
                { "name": "nothing usable", "input": router_input("general", "open"),
                  "expect": { "error": { "kind": "no_candidate" } } }
            ]
        })
        .to_string()
    };
    let good = dir.write("good.json", cases("cheap").as_bytes());
    let run = vel(&[], &[], &["test", &good]).await.ok();
    assert!(run.stdout.contains("ok    cheapest first"), "{run:#?}");
    assert!(run.stdout.contains("2 passed, 0 failed"), "{run:#?}");
    let failing = dir.write("failing.json", cases("dear").as_bytes());
    let run = vel(&[], &[], &["test", &failing]).await.failed();
    assert!(run.stdout.contains("FAIL  cheapest first"), "{run:#?}");
    assert!(
        run.stdout.contains("$.result.attempts[0].provider"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("1 passed, 1 failed"), "{run:#?}");
}

/// `vel plugin run` takes a provider's credential from the variable
/// `--secret-env` names (or VEL_PLUGIN_SECRET), and with `--manifest`
/// allows the manifest's `[outbound]` hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_a_provider_with_a_secret_and_the_manifests_hosts() {
    const KEY: &str = "sk-cli-secret-0123456789";
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some(KEY));
    let openai = builtin("openai-compatible");
    let base = format!("base-url={}/v1", mock.base_url());
    let input = json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "hello" }],
                        "stop": [], "task_type": "general" })
    .to_string();
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "run".to_string(),
            openai.clone(),
            "--input".into(),
            input.clone(),
            "--setting".into(),
            base.clone(),
            "--allow-private".into(),
            "127.0.0.0/8".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let call = |env: Vec<(&'static str, &'static str)>, extra: &'static [&'static str]| {
        let args = args(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vel(&env, &[KEY], &args).await
        }
    };
    let ok = call(vec![("GEN_KEY", KEY)], &["--secret-env", "GEN_KEY"])
        .await
        .ok()
        .json();
    assert!(ok["result"]["text"].is_string(), "{ok}");
    let ok = call(vec![("VEL_PLUGIN_SECRET", KEY)], &[])
        .await
        .ok()
        .json();
    assert!(ok["result"]["text"].is_string(), "{ok}");
    let refused = call(vec![], &[]).await.ok().json();
    assert_eq!(refused["error"]["kind"], "auth", "{refused}");
    let unset = call(vec![], &["--secret-env", "GEN_KEY"]).await.failed();
    assert!(unset.stderr.contains("GEN_KEY"), "{unset:#?}");
    assert!(unset.stderr.contains("not set"), "{unset:#?}");

    // A host besides the base URL's: refused, unless the manifest lists it.
    let outbound = hostile("outbound");
    let exfil = format!("exfil-url={}/steal", mock.base_url());
    let input =
        json!({ "model": "exfiltrate", "messages": [], "stop": [], "task_type": "general" })
            .to_string();
    let dir = TempDir::new();
    let toml = dir.write(
        "vel-plugin.toml",
        manifest(
            "hostile-outbound",
            "0.1.0",
            "provider",
            &format!("[outbound]\nhosts = [\"{}\"]\n", mock.addr()),
        )
        .as_bytes(),
    );
    let base = [
        "run",
        &outbound,
        "--input",
        &input,
        "--setting",
        "base-url=http://127.0.0.1:1",
        "--setting",
        &exfil,
        "--allow-private",
        "127.0.0.0/8",
    ];
    let denied = vel(&[], &[], &base).await.failed();
    assert!(denied.stderr.contains("not an allowed host"), "{denied:#?}");
    assert!(denied.stderr.contains("[outbound] hosts"), "{denied:#?}");
    let mut with_manifest = base.to_vec();
    with_manifest.extend(["--manifest", &toml]);
    let allowed = vel(&[], &[], &with_manifest).await.ok().json();
    let text = allowed["result"]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("exfiltrated:"), "{allowed}");
}

/// `vel plugin new` writes a project whose manifest passes `vel plugin
/// check --manifest`, whose fixture and sample are JSON, and refuses other
/// languages and existing directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_writes_a_project_that_checks() {
    let dir = TempDir::new();
    for kind in ["router", "condition", "provider"] {
        let project = text(&dir.0.join(format!("my-{kind}")));
        let run = vel(
            &[],
            &[],
            &[
                "new",
                &format!("my-{kind}"),
                "--kind",
                kind,
                "--dir",
                &project,
            ],
        )
        .await
        .ok();
        assert!(run.stdout.contains("cargo build --release"), "{run:#?}");
        let root = Path::new(&project);
        for file in [
            "Cargo.toml",
            "build.rs",
            ".cargo/config.toml",
            "src/lib.rs",
            "samples/input.json",
            "tests/cases.json",
            "README.md",
        ] {
            assert!(root.join(file).is_file(), "{kind}: no {file}");
        }
        let manifest = text(&root.join("vel-plugin.toml"));
        let check = vel(&[], &[], &["check", "--manifest", &manifest])
            .await
            .ok();
        assert!(
            check
                .stdout
                .contains(&format!("the {kind} my-{kind} 0.1.0")),
            "{check:#?}"
        );
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("env!(\"VEL_PLUGIN_VERSION\")"), "{lib}");
    }
    let cargo = std::fs::read_to_string(dir.0.join("my-provider/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("vel-guest-http = { path ="), "{cargo}");
    let again = vel(
        &[],
        &[],
        &[
            "new",
            "my-router",
            "--kind",
            "router",
            "--dir",
            &text(&dir.0.join("my-router")),
        ],
    )
    .await
    .failed();
    assert!(again.stderr.contains("exists already"), "{again:#?}");
    let js = vel(
        &[],
        &[],
        &[
            "new",
            "x",
            "--kind",
            "provider",
            "--lang",
            "js",
            "--dir",
            &text(&dir.0.join("x")),
        ],
    )
    .await
    .failed();
    assert!(
        js.stderr.contains("offers routers and conditions"),
        "{js:#?}"
    );
}

/// The router `vel plugin new` writes builds with one command, passes
/// `vel plugin check --manifest` and its own fixture test. The build shares
/// a target directory across runs (`<target>/scaffold-test`), so only the
/// first run compiles `wit-bindgen` (about a minute on one core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_router_builds_checks_and_passes_its_tests() {
    let dir = TempDir::new();
    let project = dir.0.join("built-router");
    vel(
        &[],
        &[],
        &[
            "new",
            "built-router",
            "--kind",
            "router",
            "--dir",
            &text(&project),
        ],
    )
    .await
    .ok();
    let target = crate::support::guests::wasm_target_dir()
        .parent()
        .expect("the target directory")
        .join("scaffold-test");
    let out = tokio::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the new project does not build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = text(&target.join("wasm32-wasip2/release/built_router.wasm"));
    let manifest = text(&project.join("vel-plugin.toml"));
    let check = vel(&[], &[], &["check", &wasm, "--manifest", &manifest])
        .await
        .ok();
    assert!(check.stdout.contains("matches the component"), "{check:#?}");
    let cases = text(&project.join("tests/cases.json"));
    let run = vel(&[], &[], &["test", &cases, "--component", &wasm])
        .await
        .ok();
    assert!(run.stdout.contains("2 passed, 0 failed"), "{run:#?}");
}

/// An organization's provider published with `--activate` is stored and
/// reported as awaiting approval; `vel plugin approve` lists and approves
/// it; an integration (provider `custom`) whose base URL's port is not
/// approved fails with `host_not_approved` naming what to list, and one
/// whose `host:port` is listed works.
async fn approve_and_the_outbound_host_rule(b: Backend) {
    let mock = MockUpstream::start().await;
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let admin_key = s.api_key(&admin, "approver", "admin").await;
    let wasm = hostile("outbound");
    let dir = TempDir::new();
    let bare = dir.write(
        "bare.toml",
        manifest(
            "hostile-outbound",
            "0.1.0",
            "provider",
            "[outbound]\nhosts = [\"127.0.0.1\"]\n",
        )
        .as_bytes(),
    );
    let with_port = dir.write(
        "port.toml",
        manifest(
            "hostile-outbound",
            "0.1.0",
            "provider",
            &format!("[outbound]\nhosts = [\"{}\"]\n", mock.addr()),
        )
        .as_bytes(),
    );
    let admin_env = [
        ("VEL_SERVER", s.base.as_str()),
        ("VEL_API_KEY", admin_key.as_str()),
    ];
    let run = vel(&admin_env, &[&admin_key], &["approve"]).await.ok();
    assert!(run.stdout.contains("no plugin versions await"), "{run:#?}");
    let run = vel(&admin_env, &[&admin_key], &["approve", "hostile-outbound"])
        .await
        .failed();
    assert!(run.stderr.contains("give the version"), "{run:#?}");

    let mut results = Vec::new();
    for (org, toml) in [("bare-host", &bare), ("host-port", &with_port)] {
        let (_org_id, owner) = s.tenant(&admin, org).await;
        let key = s.api_key(&owner, "publisher", "org_admin").await;
        let env = [
            ("VEL_SERVER", s.base.as_str()),
            ("VEL_API_KEY", key.as_str()),
        ];
        let run = vel(
            &env,
            &[&key],
            &["publish", &wasm, "--manifest", toml, "--activate"],
        )
        .await
        .ok();
        assert!(run.stdout.contains("awaiting approval"), "{run:#?}");
        assert!(
            run.stdout
                .contains("vel plugin approve hostile-outbound 0.1.0"),
            "{run:#?}"
        );
        assert!(!run.stdout.contains("is now active"), "{run:#?}");
        let shown = s
            .get("/api/plugins/hostile-outbound", &owner)
            .await
            .expect(200)
            .body;
        assert!(shown["active_version"].is_null(), "{shown}");
        // The organization cannot approve its own.
        vel(&env, &[&key], &["approve"]).await.failed();

        let list = vel(&admin_env, &[&admin_key], &["approve"]).await.ok();
        assert!(list.stdout.contains("hostile-outbound"), "{list:#?}");
        let approved = vel(
            &admin_env,
            &[&admin_key],
            &["approve", "hostile-outbound", "0.1.0"],
        )
        .await
        .ok();
        assert!(
            approved.stdout.contains("approved the outbound hosts"),
            "{approved:#?}"
        );
        vel(&env, &[&key], &["activate", "hostile-outbound", "0.1.0"])
            .await
            .ok();
        let integration = s
            .post(
                "/api/integrations",
                &owner,
                json!({ "name": "gen", "provider": "custom", "plugin": "hostile-outbound",
                        "base_url": mock.base_url(), "default_model": "echo" }),
            )
            .await
            .expect(201)
            .body;
        assert_eq!(integration["provider"], "custom", "{integration}");
        let id = integration["id"].as_str().expect("id").to_string();
        let tested = s
            .post(&format!("/api/integrations/{id}/test"), &owner, json!({}))
            .await
            .expect(200)
            .body;
        results.push(tested);
    }
    // Nothing left to approve; a second approval is refused by name.
    let run = vel(
        &admin_env,
        &[&admin_key],
        &["approve", "hostile-outbound", "0.1.0"],
    )
    .await
    .failed();
    assert!(run.stderr.contains("awaits approval"), "{run:#?}");

    let (bare_host, host_port) = (&results[0], &results[1]);
    assert_eq!(bare_host["ok"], false, "{bare_host}");
    assert_eq!(
        bare_host["error"]["kind"], "host_not_approved",
        "{bare_host}"
    );
    let message = bare_host["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("`{}`", mock.addr())),
        "{bare_host}"
    );
    assert!(message.contains("[outbound] hosts"), "{bare_host}");
    assert_eq!(host_port["ok"], true, "{host_port}");
}

/// `provider: "custom"` needs its plugin (and a base URL), not a key.
async fn custom_integrations_name_their_plugin(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let r = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "c", "provider": "custom", "base_url": "https://api.example.com" }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"]["plugin"].is_array(),
        "{}",
        r.body
    );
    let r = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "c", "provider": "custom", "plugin": "my-provider" }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["details"]["base_url"].is_array(),
        "{}",
        r.body
    );
    let created = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "c", "provider": "custom", "plugin": "my-provider",
                    "base_url": "https://api.example.com" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["plugin"], "my-provider", "{created}");
    assert_eq!(created["provider"], "custom", "{created}");
}

/// `vel plugin reject` (platform admins) rejects a version awaiting
/// approval with a reason: it is no longer listed, activating it is
/// refused naming the reason, and the organization cannot reject.
async fn reject_a_version_awaiting_approval(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let admin_key = s.api_key(&admin, "approver", "admin").await;
    let (_org, owner) = s.tenant(&admin, "acme").await;
    let key = s.api_key(&owner, "publisher", "org_admin").await;
    let wasm = std::fs::read(hostile("outbound")).unwrap();
    let toml = manifest(
        "hostile-outbound",
        "0.1.0",
        "provider",
        "[outbound]\nhosts = [\"api.example.test\"]\n",
    );
    s.upload_plugin(&owner, "", wasm, &toml).await.expect(201);
    let admin_env = [
        ("VEL_SERVER", s.base.as_str()),
        ("VEL_API_KEY", admin_key.as_str()),
    ];
    let env = [
        ("VEL_SERVER", s.base.as_str()),
        ("VEL_API_KEY", key.as_str()),
    ];
    // Not the organization's to decide.
    vel(&env, &[&key], &["reject", "hostile-outbound", "0.1.0"])
        .await
        .failed();
    let run = vel(
        &admin_env,
        &[&admin_key],
        &[
            "reject",
            "hostile-outbound",
            "0.1.0",
            "--reason",
            "not ours",
        ],
    )
    .await
    .ok();
    assert!(
        run.stdout.contains("rejected hostile-outbound 0.1.0"),
        "{run:#?}"
    );
    let list = vel(&admin_env, &[&admin_key], &["approve"]).await.ok();
    assert!(
        list.stdout.contains("no plugin versions await"),
        "{list:#?}"
    );
    let run = vel(&env, &[&key], &["activate", "hostile-outbound", "0.1.0"])
        .await
        .failed();
    assert!(
        run.stderr.contains("version_rejected") && run.stderr.contains("not ours"),
        "{run:#?}"
    );
    let run = vel(
        &admin_env,
        &[&admin_key],
        &["reject", "hostile-outbound", "0.1.0"],
    )
    .await
    .failed();
    assert!(run.stderr.contains("awaits approval"), "{run:#?}");
}

dual_backend_tests!(
    reject_a_version_awaiting_approval,
    publish_list_activate_rollback,
    errors_never_show_the_key,
    approve_and_the_outbound_host_rule,
    custom_integrations_name_their_plugin,
);
