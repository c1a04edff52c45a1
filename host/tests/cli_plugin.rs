//! `vel plugin check` and `vel plugin run`, through the real binary, on a
//! built-in component and on hostile ones.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

use std::process::{Command, Output};

fn vel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vel"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("vel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn builtin(name: &str) -> &'static str {
    vel_plugin_artifacts::builtin(name).unwrap().path
}

fn hostile(name: &str) -> &'static str {
    vel_plugin_artifacts::hostile_path(name).unwrap()
}

#[test]
fn check_prints_kind_info_and_limits() {
    let out = vel(&["plugin", "check", builtin("text-match")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("kind:    condition"), "{stdout}");
    assert!(stdout.contains("name:    text-match"), "{stdout}");
    assert!(stdout.contains("\"args_schema\""), "{stdout}");
    assert!(stdout.contains("limits (platform): memory"), "{stdout}");
    assert!(stdout.contains("limits (tenant): memory"), "{stdout}");
}

#[test]
fn check_refuses_what_is_not_a_plugin() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = vel(&["plugin", "check", manifest]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a WebAssembly component"),
        "{}",
        text(&out.stderr)
    );

    let out = vel(&["plugin", "check", hostile("router-http")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("forbidden import `wasi:http/"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_prints_the_result_with_time_fuel_and_memory() {
    let input =
        r#"{"output": "Ship it!", "state": {}, "args": {"mode": "contains", "pattern": "ship"}}"#;
    let out = vel(&["plugin", "run", builtin("text-match"), "--input", input]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["plugin"], "text-match");
    assert_eq!(report["result"]["matched"], true);
    assert!(report["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);

    // Tenant limits meter fuel for conditions.
    let out = vel(&[
        "plugin",
        "run",
        builtin("text-match"),
        "--tenant",
        "--input",
        input,
    ]);
    let report: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert!(report["fuel_consumed"].as_u64().unwrap() > 0);
}

#[test]
fn run_stops_a_hostile_plugin_with_a_clear_error() {
    let input = r#"{
        "task": {"id": "t1", "organization_id": "o1", "task_type": "Light", "priority": "Low",
                 "requested_model": null, "estimated_input_tokens": 10, "max_tokens": null,
                 "prefer": "Cost", "metadata": {}},
        "candidates": []
    }"#;
    let out = vel(&["plugin", "run", hostile("infinite-loop"), "--input", input]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        stderr.contains("fuel limit exceeded (max 100000000 fuel units)"),
        "{stderr}"
    );

    let out = vel(&[
        "plugin",
        "run",
        hostile("infinite-loop"),
        "--input",
        "{not json",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_calls_a_providers_embed_for_an_embeddings_input() {
    let input =
        r#"{"model": "embed", "input": ["red apple", "APPLE red", "pear"], "dimensions": 16}"#;
    let out = vel(&["plugin", "run", builtin("mock"), "--input", input]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let vectors = report["result"]["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3, "{report}");
    assert_eq!(vectors[0], vectors[1], "the same words, the same vector");
    assert_ne!(vectors[0], vectors[2]);
    assert_eq!(vectors[2].as_array().unwrap().len(), 16);
    assert_eq!(report["result"]["usage"]["input_tokens"], 5, "{report}");

    // A model the provider does not embed with is the guest's own error.
    let out = vel(&[
        "plugin",
        "run",
        builtin("mock"),
        "--input",
        r#"{"model": "echo", "input": "x"}"#,
    ]);
    let report: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["error"]["kind"], "invalid_request", "{report}");
    // Not an embeddings request: named.
    let out = vel(&[
        "plugin",
        "run",
        builtin("mock"),
        "--input",
        r#"{"model": "embed", "input": {"not": "text"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("an embeddings request"),
        "{}",
        text(&out.stderr)
    );
}
