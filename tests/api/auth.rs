//! Login, refresh, logout, revocation and the login rate limit.

use reqwest::Method;
use serde_json::json;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Server};

async fn login_refresh_logout(b: Backend) {
    let s = Server::start(b).await;
    let r = s.login_resp(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect(200);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let roles = r.body["roles"].as_array().unwrap();
    assert!(
        roles.contains(&json!("admin")) && roles.contains(&json!("org_admin")),
        "{roles:?}"
    );
    assert!(r.body["user"].get("password_hash").is_none());

    s.login_resp(ADMIN_EMAIL, "WrongPassw0rd1")
        .await
        .expect_error(401, "unauthorized");
    s.login_resp("nobody@test.local", ADMIN_PASSWORD)
        .await
        .expect_error(401, "unauthorized");
    s.call(Method::GET, "/api/users/me", None, None)
        .await
        .expect_error(401, "unauthorized");
    s.get("/api/users/me", "not-a-jwt")
        .await
        .expect_error(401, "unauthorized");

    // Refresh: a new working token; the old one is revoked.
    let refreshed = s
        .call(Method::POST, "/api/auth/refresh", Some(&token), None)
        .await
        .expect(200);
    let token2 = refreshed.body["token"].as_str().unwrap().to_string();
    assert_ne!(token, token2);
    s.get("/api/users/me", &token)
        .await
        .expect_error(401, "unauthorized");
    s.get("/api/users/me", &token2).await.expect(200);

    // Logout revokes the token for good.
    s.call(Method::POST, "/api/auth/logout", Some(&token2), None)
        .await
        .expect(204);
    let r = s
        .get("/api/users/me", &token2)
        .await
        .expect_error(401, "unauthorized");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    s.call(Method::POST, "/api/auth/refresh", Some(&token2), None)
        .await
        .expect(401);
}

async fn revocation_is_shared_by_instances(b: Backend) {
    // A token revoked through one server is refused by another on the same
    // database: at once by one that trusted it a moment ago (the revocation
    // is signalled), and by one started afterwards.
    let s = Server::start(b).await;
    let token = s.admin_token().await;
    if b != Backend::Postgres {
        s.call(Method::POST, "/api/auth/logout", Some(&token), None)
            .await
            .expect(204);
        return;
    }
    // The same database (both pools) and secret key.
    let other = s.sibling(&[]);
    // `other` verifies the token now and trusts it for VERIFIED_TTL (2 s).
    let trusted_at = std::time::Instant::now();
    other.get("/api/users/me", &token).await.expect(200);
    s.call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await
        .expect(204);
    // Only the signal can stop it before that trust would have run out.
    let deadline = trusted_at + std::time::Duration::from_millis(1800);
    loop {
        let r = other.get("/api/users/me", &token).await;
        if r.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other instance still accepts the revoked token: {}",
            r.status
        );
        tokio::task::yield_now().await;
    }
    let third = s.sibling(&[]);
    third
        .get("/api/users/me", &token)
        .await
        .expect_error(401, "unauthorized");
    let fresh = other.admin_token().await;
    s.get("/api/users/me", &fresh).await.expect(200);
}

async fn login_rate_limit(b: Backend) {
    let s = Server::start_with(b, &[("VEL_LOGIN_ATTEMPTS_PER_MINUTE", "5")]).await;
    for _ in 0..5 {
        s.login_resp(ADMIN_EMAIL, "WrongPassw0rd1")
            .await
            .expect(401);
    }
    let r = s
        .login_resp(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect_error(429, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // The same IP is limited for other emails too.
    s.login_resp("other@test.local", "WhateverPassw0rd1")
        .await
        .expect(429);
}

async fn login_rejects_bad_input(b: Backend) {
    let s = Server::start(b).await;
    let r = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": ADMIN_EMAIL })),
        )
        .await
        .expect_error(422, "validation_failed");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{}",
        r.body
    );
    s.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "remember": true })),
    )
    .await
    .expect_error(422, "validation_failed");
}

dual_backend_tests!(
    login_refresh_logout,
    revocation_is_shared_by_instances,
    login_rate_limit,
    login_rejects_bad_input
);
