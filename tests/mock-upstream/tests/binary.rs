//! The standalone `vel-mock-upstream` binary, as benchmarks run it.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

#[tokio::test]
async fn binary_prints_its_address_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vel-mock-upstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--fail-every",
            "2",
            "--fail-status",
            "500",
            "--no-record",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("first line names the address")
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 500, 200, 500]);
    let stats: Value = client
        .get(format!("{base}/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["completed"], 4);
    child.kill().unwrap();
    child.wait().unwrap();
}
