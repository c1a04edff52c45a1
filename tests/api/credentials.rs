//! Credentials follow their holder: a demotion, a removal or a password
//! change takes effect at once, on this instance and on others; API keys
//! never act above their creator and may expire; a token is refreshed
//! once; password guessing is limited per address and per (email,
//! address) pair, with the client's address read the configured number of
//! proxies away.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Resp, Server, USER_PASSWORD};

/// The organization the admin's token acts in.
async fn org_of(s: &Server, token: &str) -> String {
    let me = s.get("/api/users/me", token).await.expect(200);
    me.body["org_id"].as_str().expect("org id").to_string()
}

/// The audit entries with `action`, newest first.
async fn audited(s: &Server, admin: &str, action: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/audit-logs?action={action}&limit=100"), admin)
        .await
        .expect(200);
    r.body["items"].as_array().expect("items").clone()
}

async fn demotion_and_removal_reach_tokens_and_keys(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let org = org_of(&s, &admin).await;
    let (manager_id, manager) = s.member(&admin, "manager@cred.test", "org_admin").await;
    let key = s.api_key(&manager, "automation", "org_admin").await;
    let key_id = s.get("/api/api-keys", &admin).await.expect(200).body["items"][0]["id"]
        .as_str()
        .expect("key id")
        .to_string();
    s.get("/api/api-keys", &manager).await.expect(200);
    s.get("/api/api-keys", &key).await.expect(200);

    // Demoted to viewer: the token and the key act as a viewer at once.
    let members = format!("/api/organizations/{org}/members/{manager_id}");
    s.put(&members, &admin, json!({ "role": "viewer" }))
        .await
        .expect(200);
    s.get("/api/api-keys", &manager)
        .await
        .expect_error(403, "forbidden");
    s.get("/api/api-keys", &key)
        .await
        .expect_error(403, "forbidden");
    let escalation =
        json!({ "email": "minion@cred.test", "password": USER_PASSWORD, "role": "org_admin" });
    s.post("/api/users", &key, escalation.clone())
        .await
        .expect_error(403, "forbidden");
    s.post("/api/api-keys", &key, json!({ "name": "another" }))
        .await
        .expect_error(403, "forbidden");
    let me = s.get("/api/users/me", &key).await.expect(200);
    assert_eq!(me.body["roles"], json!(["viewer"]));
    // Reading is what a viewer may do.
    s.get("/api/agents", &manager).await.expect(200);
    s.get("/api/agents", &key).await.expect(200);
    let changed = audited(&s, &admin, "member_role_changed").await;
    assert_eq!(
        changed[0]["payload"]["limited_api_key_ids"],
        json!([key_id])
    );

    // Promoted back: the key is worth its own role again.
    s.put(&members, &admin, json!({ "role": "org_admin" }))
        .await
        .expect(200);
    s.get("/api/api-keys", &key).await.expect(200);

    // Removed: the token stops, and the key is revoked, saying why.
    s.delete(&members, &admin).await.expect(204);
    s.get("/api/agents", &manager)
        .await
        .expect_error(401, "unauthorized");
    s.get("/api/agents", &key)
        .await
        .expect_error(401, "unauthorized");
    s.get("/api/organizations", &key)
        .await
        .expect_error(401, "unauthorized");
    let keys = s.get("/api/api-keys", &admin).await.expect(200);
    let listed = &keys.body["items"][0];
    assert_eq!(listed["id"], key_id.as_str());
    assert_eq!(listed["revoked_reason"], "creator_removed");
    assert!(listed["revoked_at"].is_string());
    let revoked = audited(&s, &admin, "api_key_revoked").await;
    assert_eq!(revoked[0]["payload"]["api_key_id"], key_id.as_str());
    assert_eq!(revoked[0]["payload"]["reason"], "creator_removed");
    let removed = audited(&s, &admin, "member_removed").await;
    assert_eq!(
        removed[0]["payload"]["revoked_api_key_ids"],
        json!([key_id])
    );

    // Added back, the old key stays revoked.
    s.post(
        &format!("/api/organizations/{org}/members"),
        &admin,
        json!({ "user_id": manager_id, "role": "org_admin" }),
    )
    .await
    .expect(201);
    s.get("/api/agents", &key)
        .await
        .expect_error(401, "unauthorized");
}

/// On PostgreSQL, a second instance that verified the credentials a moment
/// ago hears the change through its signal and refuses them at once.
async fn changes_reach_other_instances(b: Backend) {
    let s = Server::start(b).await;
    if b == Backend::Sqlite {
        // One instance per SQLite file: the single-instance test above covers it.
        return;
    }
    let other = s.sibling(&[]);
    let admin = s.admin_token().await;
    let org = org_of(&s, &admin).await;
    let (id, token) = s.member(&admin, "roaming@cred.test", "org_admin").await;
    let key = s.api_key(&token, "roaming", "org_admin").await;
    // Verified, and so trusted for a moment, on the other instance.
    other.get("/api/api-keys", &token).await.expect(200);
    other.get("/api/api-keys", &key).await.expect(200);
    s.put(
        &format!("/api/organizations/{org}/members/{id}"),
        &admin,
        json!({ "role": "viewer" }),
    )
    .await
    .expect(200);
    // The signal travels through PostgreSQL: wait for it, bounded well
    // below the cache's trust period's multiple a missed signal would take.
    let refused = |r: &Resp| r.status.as_u16() == 403;
    assert!(
        eventually(|| async { refused(&other.get("/api/api-keys", &token).await) }).await,
        "the demoted token still worked on the other instance"
    );
    assert!(refused(&other.get("/api/api-keys", &key).await));
    drop(other);
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_keys_expire(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    for bad in ["2000-01-01T00:00:00Z", "tomorrow"] {
        s.post(
            "/api/api-keys",
            &admin,
            json!({ "name": "old", "expires_at": bad }),
        )
        .await
        .expect_error(422, "validation_failed");
    }
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let created = s
        .post(
            "/api/api-keys",
            &admin,
            json!({ "name": "short", "role": "viewer", "expires_at": expires.to_rfc3339() }),
        )
        .await
        .expect(201);
    assert!(created.body["expires_at"].is_string());
    let key = created.body["key"].as_str().expect("key").to_string();
    s.get("/api/agents", &key).await.expect(200);
    // The expiry is the clock's event: poll until the key is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let r = s.get("/api/agents", &key).await;
        if r.status.as_u16() == 401 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{}",
        refused.body
    );
}

async fn password_change_ends_every_session(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_, laptop) = s.member(&admin, "mover@cred.test", "agent_manager").await;
    let phone = s.login("mover@cred.test", USER_PASSWORD).await;
    let key = s.api_key(&admin, "admin-key", "org_admin").await;
    let change = json!({ "current_password": USER_PASSWORD, "password": "Fresh-Secret-42x" });
    // Not over an API key, even the admin's.
    s.put("/api/users/me", &key, change.clone())
        .await
        .expect_error(403, "forbidden");
    let changed = s.put("/api/users/me", &laptop, change).await.expect(200);
    assert_eq!(changed.body["email"], "mover@cred.test");
    let fresh = changed.body["session"]["token"]
        .as_str()
        .expect("a fresh session")
        .to_string();
    for old in [&laptop, &phone] {
        s.get("/api/agents", old)
            .await
            .expect_error(401, "unauthorized");
    }
    s.get("/api/agents", &fresh).await.expect(200);
    s.login_resp("mover@cred.test", USER_PASSWORD)
        .await
        .expect_error(401, "unauthorized");
    s.login("mover@cred.test", "Fresh-Secret-42x").await;
    // Other changes end nothing.
    s.put("/api/users/me", &fresh, json!({ "name": "Mover" }))
        .await
        .expect(200);
    s.get("/api/agents", &fresh).await.expect(200);
    // A common password is refused.
    s.put(
        "/api/users/me",
        &fresh,
        json!({ "current_password": "Fresh-Secret-42x", "password": "Password1234" }),
    )
    .await
    .expect_error(422, "validation_failed");
}

async fn current_password_guesses_are_limited(b: Backend) {
    let s = Server::start_with(b, &[("VEL_LOGIN_ATTEMPTS_PER_MINUTE", "5")]).await;
    let admin = s.admin_token().await;
    // Two logins from this address so far (the admin's, the member's):
    // three guesses are left of the five a minute.
    let (_, token) = s.member(&admin, "guessed@cred.test", "viewer").await;
    let guess = |n: u32| json!({ "current_password": format!("Wrong-Guess-{n}x"), "password": "Fresh-Secret-42x" });
    for n in 0..3 {
        s.put("/api/users/me", &token, guess(n))
            .await
            .expect_error(422, "validation_failed");
    }
    let limited = s
        .put("/api/users/me", &token, guess(3))
        .await
        .expect_error(429, "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
}

async fn a_token_is_refreshed_once(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let token = s
        .login("admin@test.local", crate::support::ADMIN_PASSWORD)
        .await;
    drop(admin);
    let refreshes = (0..6).map(|_| s.call(Method::POST, "/api/auth/refresh", Some(&token), None));
    let answers = futures::future::join_all(refreshes).await;
    let ok: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.status.as_u16() == 200)
        .collect();
    assert_eq!(
        ok.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        answers
            .iter()
            .filter(|r| r.status.as_u16() != 200)
            .all(|r| r.status.as_u16() == 401)
    );
    let fresh = ok[0].body["token"].as_str().expect("token");
    s.get("/api/agents", fresh).await.expect(200);
    s.get("/api/agents", &token)
        .await
        .expect_error(401, "unauthorized");
}

/// Logs in from `ip` (as the proxy in front of vel reports it).
async fn login_from(s: &Server, forwarded_for: &str, email: &str, password: &str) -> u16 {
    let r = s
        .http
        .post(s.url("/api/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("login");
    r.status().as_u16()
}

async fn guessing_does_not_lock_the_owner_out(b: Backend) {
    let s = Server::start_with(
        b,
        &[
            ("VEL_LOGIN_ATTEMPTS_PER_MINUTE", "3"),
            ("VEL_TRUST_PROXY_HEADERS", "true"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    s.member(&admin, "owner@cred.test", "viewer").await;
    // The attacker writes a different address on the left each time; the
    // proxy's own entry on the right is what counts.
    let mut statuses = Vec::new();
    for n in 0..4 {
        let spoofed = format!("10.9.9.{n}, 198.51.100.7");
        statuses.push(login_from(&s, &spoofed, "owner@cred.test", "Wrong-Guess-1x").await);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "the limit counts per address"
    );
    // The owner, from their own address, still gets in.
    assert_eq!(
        login_from(&s, "203.0.113.5", "owner@cred.test", USER_PASSWORD).await,
        200
    );
}

dual_backend_tests!(
    demotion_and_removal_reach_tokens_and_keys,
    changes_reach_other_instances,
    api_keys_expire,
    password_change_ends_every_session,
    current_password_guesses_are_limited,
    a_token_is_refreshed_once,
    guessing_does_not_lock_the_owner_out,
);
