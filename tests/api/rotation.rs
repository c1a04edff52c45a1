//! Secret key rotation without downtime: `VEL_SECRET_KEY` is a ring, newest
//! first. Tokens name the key that signed them (`kid`) and stay valid while
//! it is in the ring; stored integration keys, sealed before the rotation
//! (even in the format without a key id), still reach the upstream; `vel
//! rotate-keys` seals them under the newest key, idempotently, while the
//! server runs; a token of a key removed from the ring is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use vel_mock_upstream::MockUpstream;

use crate::support::{Backend, Server};

const OLD_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const UPSTREAM_KEY: &str = "sk-rotation-test-key-0123456789";

/// The `kid` in a token's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().expect("a kid").to_string()
}

/// A task through the upstream completes, and the upstream saw the key.
async fn upstream_answers(s: &Server, token: &str, mock: &MockUpstream, prompt: &str) {
    let task = s
        .finished_task(
            token,
            json!({ "description": "rotation", "prompt": prompt, "cache": false }),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    let last = mock.requests().pop().expect("an upstream request");
    assert_eq!(last.bearer_token(), Some(UPSTREAM_KEY));
}

/// The integration's sealed key as stored.
async fn sealed(s: &Server, id: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let value: String = sqlx::query_scalar("SELECT key_ciphertext FROM integrations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    value
}

/// A webhook's sealed `column` as stored.
async fn webhook_sealed(s: &Server, id: &str, column: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {column} FROM webhooks WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    value
}

/// Store `value` as the integration's sealed key.
async fn set_sealed(s: &Server, id: &str, value: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.database_url).await.unwrap();
    sqlx::query("UPDATE integrations SET key_ciphertext = $1 WHERE id = $2")
        .bind(value)
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}

/// `vel rotate-keys` against the server's database; its stdout.
async fn rotate_keys(s: &Server) -> String {
    let out = s.run_cli(&["rotate-keys", "--batch", "1"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rotate-keys failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn tokens_and_stored_keys_survive_a_rotation(b: Backend) {
    let mock = MockUpstream::start().await;
    let mut s = Server::start_with(
        b,
        &[
            ("VEL_SECRET_KEY", OLD_KEY),
            ("VEL_WEBHOOK_ALLOW_HTTP", "true"),
            ("VEL_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let old_kid = kid(&admin);
    let base_url = format!("{}/v1", mock.base_url());
    let integration = s
        .upstream_integration(&admin, "upstream", &base_url, UPSTREAM_KEY, 5_000)
        .await;
    // A second integration whose key is in the format written before keys
    // had ids (`v1:`), as a database from an earlier version holds it.
    let legacy = s
        .upstream_integration(&admin, "legacy", &base_url, UPSTREAM_KEY, 5_000)
        .await;
    let stored = sealed(&s, &integration).await;
    assert!(
        stored.starts_with(&format!("v2:{old_kid}:")),
        "sealed under the signing key's id: {stored}"
    );
    let body = stored.rsplit(':').next().unwrap();
    let legacy_stored = sealed(&s, &legacy).await;
    set_sealed(
        &s,
        &legacy,
        &format!("v1:{}", legacy_stored.rsplit(':').next().unwrap()),
    )
    .await;
    upstream_answers(&s, &admin, &mock, "before").await;
    // A webhook's signing secret is sealed too, and after a rotation of
    // that secret the one it replaced (still signing) as well.
    let webhook = s
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": "http://127.0.0.1:9/hook", "events": ["task.completed"] }),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/webhooks/{webhook}/rotate-secret"),
        &admin,
        json!({}),
    )
    .await
    .expect(200);

    // A new key first, the old one still accepted: the old token and both
    // stored keys still work; new tokens name the new key.
    s.kill();
    s.restart_with(&[("VEL_SECRET_KEY", &format!("{NEW_KEY},{OLD_KEY}"))]);
    s.get("/api/users/me", &admin).await.expect(200);
    let fresh = s.admin_token().await;
    let new_kid = kid(&fresh);
    assert_ne!(new_kid, old_kid);
    upstream_answers(&s, &fresh, &mock, "after the restart").await;
    // Pinned to the legacy integration.
    let task = s
        .finished_task(
            &fresh,
            json!({ "description": "legacy", "prompt": "legacy",
                    "parameters": { "model": "legacy/gpt-4o-mini" }, "cache": false }),
        )
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["provider"], "legacy", "{task}");
    assert_eq!(
        mock.requests().pop().unwrap().bearer_token(),
        Some(UPSTREAM_KEY)
    );

    // `vel rotate-keys` while the server runs: both keys sealed again under
    // the new key; a second run has nothing to do.
    let first = rotate_keys(&s).await;
    assert!(
        first.contains(&format!("key {new_kid}: 4 re-encrypted, 0 already current")),
        "{first}"
    );
    for id in [&integration, &legacy] {
        let now = sealed(&s, id).await;
        assert!(now.starts_with(&format!("v2:{new_kid}:")), "{now}");
        assert!(!now.contains(body));
    }
    for column in ["secret_ciphertext", "previous_secret_ciphertext"] {
        let now = webhook_sealed(&s, &webhook, column).await;
        assert!(
            now.starts_with(&format!("v2:{new_kid}:")),
            "{column}: {now}"
        );
    }
    let second = rotate_keys(&s).await;
    assert!(
        second.contains(&format!("key {new_kid}: 0 re-encrypted, 4 already current")),
        "{second}"
    );
    upstream_answers(&s, &fresh, &mock, "after rotate-keys").await;

    // The old key retired: its token is refused, the new one's works, and
    // the stored keys (now under the new key) still reach the upstream.
    s.kill();
    s.restart_with(&[("VEL_SECRET_KEY", NEW_KEY)]);
    s.get("/api/users/me", &admin)
        .await
        .expect_error(401, "unauthorized");
    s.get("/api/users/me", &fresh).await.expect(200);
    upstream_answers(&s, &fresh, &mock, "old key retired").await;

    // A bad ring is refused with a message naming the setting.
    let mut bad = std::process::Command::new(env!("CARGO_BIN_EXE_vel"));
    bad.arg("rotate-keys")
        .env_clear()
        .env("VEL_SECRET_KEY", format!("{NEW_KEY},{NEW_KEY}"))
        .env("DATABASE_URL", &s.database_url)
        .current_dir(&s.data_dir);
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VEL_SECRET_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

dual_backend_tests!(tokens_and_stored_keys_survive_a_rotation);
