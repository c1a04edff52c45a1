//! `vel plugin publish|list|show|activate|rollback`: the real `vel` binary
//! as a client of a running server's plugin registry, authenticated with an
//! API key that must never appear in what the CLI prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

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

dual_backend_tests!(publish_list_activate_rollback, errors_never_show_the_key);
