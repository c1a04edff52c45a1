//! `/api/users/me` and admin user management.

use serde_json::json;

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
    // Taking someone else's email is a conflict.
    s.put(
        "/api/users/me",
        &token,
        json!({ "email": ADMIN_EMAIL, "current_password": "NewPassw0rd123" }),
    )
    .await
    .expect_error(409, "conflict");
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
    .expect_error(404, "not_found");
}

dual_backend_tests!(me_read_and_update, create_and_list_users);
