//! `/api/users/me` and admin user management.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{ADMIN_EMAIL, Backend, Server, USER_PASSWORD};

async fn me_read_and_update(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let me = s.get("/api/users/me", &admin).await.expect(200);
    assert_eq!(me.body["email"], ADMIN_EMAIL);
    assert_eq!(me.body["platform_role"], "admin");

    let token = s.user_with_role(&admin, "eve@test.local", "viewer").await;
    let r = s
        .put("/api/users/me", &token, json!({ "name": "Eve" }))
        .await
        .expect(200);
    assert_eq!(r.body["name"], "Eve");
    // Password change needs the current password, and the right one.
    s.put(
        "/api/users/me",
        &token,
        json!({ "password": "NewPassw0rd123" }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.put(
        "/api/users/me",
        &token,
        json!({ "password": "NewPassw0rd123", "current_password": "WrongPassw0rd9" }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.put(
        "/api/users/me",
        &token,
        json!({ "password": "weak", "current_password": USER_PASSWORD }),
    )
    .await
    .expect_error(422, "validation_failed");
    // A password change ends every session, this one too, and answers
    // with a fresh one.
    let changed = s
        .put(
            "/api/users/me",
            &token,
            json!({ "password": "NewPassw0rd123", "current_password": USER_PASSWORD }),
        )
        .await
        .expect(200);
    s.get("/api/users/me", &token)
        .await
        .expect_error(401, "unauthorized");
    let token = changed.body["session"]["token"]
        .as_str()
        .expect("a fresh session")
        .to_string();
    s.login("eve@test.local", "NewPassw0rd123").await;
    s.login_resp("eve@test.local", USER_PASSWORD)
        .await
        .expect(401);
    // No notification hook: a change of email is refused, for any address,
    // and nothing changes.
    for email in [ADMIN_EMAIL, "free@test.local"] {
        let r = s
            .put(
                "/api/users/me",
                &token,
                json!({ "email": email, "current_password": "NewPassw0rd123", "name": "Changed" }),
            )
            .await
            .expect_error(422, "email_change_unavailable");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("VEL_NOTIFY_URL")),
            "{}",
            r.body
        );
    }
    let me = s.get("/api/users/me", &token).await.expect(200);
    assert_eq!(
        (&me.body["email"], &me.body["name"]),
        (&json!("eve@test.local"), &json!("Eve"))
    );
}

/// A loopback listener standing in for the operator's notification hook:
/// every JSON body POSTed to it arrives on the channel.
async fn notification_hook() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (sent, received) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sent = sent.clone();
            async move {
                sent.send(body).ok();
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// The next message the hook receives (failing after a while).
async fn next_message(received: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(std::time::Duration::from_secs(20), received.recv())
        .await
        .expect("no notification arrived")
        .expect("the hook stopped")
}

async fn email_changes_are_confirmed_and_reveal_nothing(b: Backend) {
    let (hook, mut received) = notification_hook().await;
    let s = Server::start_with(b, &[("VEL_NOTIFY_URL", &hook)]).await;
    let admin = s.admin_token().await;
    let token = s.user_with_role(&admin, "eve@test.local", "viewer").await;
    let change = |email: &str| json!({ "email": email, "current_password": USER_PASSWORD });

    // A taken address and a free one get the same answer; only the free
    // one is sent a token, and nothing changes yet.
    let taken = s
        .put("/api/users/me", &token, change(ADMIN_EMAIL))
        .await
        .expect(202);
    let free = s
        .put("/api/users/me", &token, change("New@Test.Local"))
        .await
        .expect(202);
    for r in [&taken, &free] {
        assert_eq!(r.body["email_change"], "pending", "{}", r.body);
        assert!(r.body["expires_at"].is_string(), "{}", r.body);
        assert_eq!(r.body["email"], "eve@test.local", "{}", r.body);
    }
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&taken.body), keys(&free.body));
    let message = next_message(&mut received).await;
    assert_eq!(message["kind"], "email_change", "{message}");
    assert_eq!(message["to"], "new@test.local", "{message}");
    assert_eq!(message["expires_at"], free.body["expires_at"], "{message}");
    let sent = message["token"].as_str().expect("a token").to_string();
    let me = s.get("/api/users/me", &token).await.expect(200);
    assert_eq!(me.body["email"], "eve@test.local");

    // A wrong token, and any token over an API key, change nothing.
    let confirm = |token: &str| json!({ "token": token });
    s.post(
        "/api/users/me/email/confirm",
        &token,
        confirm("vel_ec_not-a-token"),
    )
    .await
    .expect_error(422, "invalid_token");
    let key = s.api_key(&admin, "k", "org_admin").await;
    s.post("/api/users/me/email/confirm", &key, confirm(&sent))
        .await
        .expect_error(403, "forbidden");
    // Another user cannot use it either.
    let other = s
        .user_with_role(&admin, "mallory@test.local", "viewer")
        .await;
    s.post("/api/users/me/email/confirm", &other, confirm(&sent))
        .await
        .expect_error(422, "invalid_token");

    // The right token applies the change, once.
    let confirmed = s
        .post("/api/users/me/email/confirm", &token, confirm(&sent))
        .await
        .expect(200);
    assert_eq!(confirmed.body["email"], "new@test.local");
    s.login("new@test.local", USER_PASSWORD).await;
    s.login_resp("eve@test.local", USER_PASSWORD)
        .await
        .expect(401);
    s.post("/api/users/me/email/confirm", &token, confirm(&sent))
        .await
        .expect_error(422, "invalid_token");

    // A later request replaces an earlier one.
    s.put("/api/users/me", &token, change("first@test.local"))
        .await
        .expect(202);
    let first = next_message(&mut received).await;
    s.put("/api/users/me", &token, change("second@test.local"))
        .await
        .expect(202);
    let second = next_message(&mut received).await;
    assert_eq!(second["to"], "second@test.local", "{second}");
    s.post(
        "/api/users/me/email/confirm",
        &token,
        confirm(first["token"].as_str().unwrap()),
    )
    .await
    .expect_error(422, "invalid_token");

    // An address taken meanwhile: the same answer as an invalid token.
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "second@test.local", "password": USER_PASSWORD }),
    )
    .await
    .expect(201);
    s.post(
        "/api/users/me/email/confirm",
        &token,
        confirm(second["token"].as_str().unwrap()),
    )
    .await
    .expect_error(422, "invalid_token");
    let me = s.get("/api/users/me", &token).await.expect(200);
    assert_eq!(me.body["email"], "new@test.local");
    // Of all this, the hook got exactly the three tokens for free addresses.
    assert!(received.try_recv().is_err(), "an extra message was sent");
}

async fn create_and_list_users(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let created = s
        .post(
            "/api/users",
            &admin,
            json!({ "email": "Bob@Test.Local", "password": USER_PASSWORD, "name": "Bob", "role": "agent_manager" }),
        )
        .await
        .expect(201);
    assert_eq!(created.body["email"], "bob@test.local");
    assert_eq!(created.body["roles"], json!(["agent_manager"]));
    assert!(created.body.get("password").is_none() && created.body.get("password_hash").is_none());
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "bob@test.local", "password": USER_PASSWORD }),
    )
    .await
    .expect_error(409, "conflict");
    let r = s
        .post(
            "/api/users",
            &admin,
            json!({ "email": "weak@test.local", "password": "alllowercase1234" }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(r.body["error"]["details"]["password"].is_array());
    let long = format!("{}@test.local", "x".repeat(160));
    let r = s
        .post(
            "/api/users",
            &admin,
            json!({ "email": long, "password": USER_PASSWORD }),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(r.body["error"]["details"]["email"].is_array());
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "r@test.local", "password": USER_PASSWORD, "role": "owner" }),
    )
    .await
    .expect_error(422, "validation_failed");

    for i in 0..3 {
        s.post(
            "/api/users",
            &admin,
            json!({ "email": format!("u{i}@test.local"), "password": USER_PASSWORD }),
        )
        .await
        .expect(201);
    }
    // admin + bob + 3
    let page = s
        .get("/api/users?limit=2&offset=1", &admin)
        .await
        .expect(200);
    assert_eq!(page.body["total"], 5);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["limit"], 2);
    assert_eq!(page.body["offset"], 1);

    // Non-admin roles may neither create nor list users.
    let viewer = s.login("u0@test.local", USER_PASSWORD).await;
    s.get("/api/users", &viewer)
        .await
        .expect_error(403, "forbidden");
    s.post(
        "/api/users",
        &viewer,
        json!({ "email": "z@test.local", "password": USER_PASSWORD }),
    )
    .await
    .expect_error(403, "forbidden");
    let manager = s.login("bob@test.local", USER_PASSWORD).await;
    s.get("/api/users", &manager)
        .await
        .expect_error(403, "forbidden");

    // A tenant's org_admin sees only its own members and cannot create users elsewhere.
    let (_org_b, owner_b) = s.tenant(&admin, "acme").await;
    let list_b = s.get("/api/users", &owner_b).await.expect(200);
    // The creating platform admin and the owner.
    assert_eq!(list_b.body["total"], 2);
    let default_org = s.get("/api/users/me", &admin).await.body["org_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        "/api/users",
        &owner_b,
        json!({ "email": "x@test.local", "password": USER_PASSWORD, "org_id": default_org }),
    )
    .await
    .expect_error(403, "forbidden");
}

dual_backend_tests!(
    me_read_and_update,
    create_and_list_users,
    email_changes_are_confirmed_and_reveal_nothing,
);
