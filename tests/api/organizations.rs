//! Organizations, members and roles.

use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server, USER_PASSWORD};

async fn organizations_and_members(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let org = s
        .post("/api/organizations", &admin, json!({ "name": "acme" }))
        .await
        .expect(201);
    let org_id = org.body["id"].as_str().unwrap().to_string();
    s.post("/api/organizations", &admin, json!({ "name": "acme" }))
        .await
        .expect_error(409, "conflict");
    s.post("/api/organizations", &admin, json!({ "name": "" }))
        .await
        .expect_error(422, "validation_failed");
    let all = s.get("/api/organizations", &admin).await.expect(200);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    s.get(&format!("/api/organizations/{org_id}"), &admin)
        .await
        .expect(200);

    // Platform admin adds an owner to acme.
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "owner@acme.test", "password": USER_PASSWORD, "role": "org_admin", "org_id": org_id }),
    )
    .await
    .expect(201);
    let owner = s.login("owner@acme.test", USER_PASSWORD).await;
    // Only platform admins create organizations.
    s.post("/api/organizations", &owner, json!({ "name": "other" }))
        .await
        .expect_error(403, "forbidden");
    let mine = s.get("/api/organizations", &owner).await.expect(200);
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);

    // The owner manages members: add a user from the default org, change role, remove.
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "dev@test.local", "password": USER_PASSWORD }),
    )
    .await
    .expect(201);
    let members_path = format!("/api/organizations/{org_id}/members");
    let added = s
        .post(
            &members_path,
            &owner,
            json!({ "email": "dev@test.local", "role": "viewer" }),
        )
        .await
        .expect(201);
    let dev_id = added.body["user_id"].as_str().unwrap().to_string();
    s.post(
        &members_path,
        &owner,
        json!({ "email": "dev@test.local", "role": "viewer" }),
    )
    .await
    .expect_error(409, "conflict");
    s.post(
        &members_path,
        &owner,
        json!({ "email": "ghost@test.local", "role": "viewer" }),
    )
    .await
    .expect_error(404, "not_found");
    s.post(
        &members_path,
        &owner,
        json!({ "email": "dev@test.local", "role": "emperor" }),
    )
    .await
    .expect_error(422, "validation_failed");
    let list = s.get(&members_path, &owner).await.expect(200);
    // admin (creator), owner, dev
    assert_eq!(list.body["items"].as_array().unwrap().len(), 3);

    // Log dev into acme as a viewer, then promote: the new role applies after refresh.
    let dev = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": "dev@test.local", "password": USER_PASSWORD, "org_id": org_id })),
        )
        .await
        .expect(200);
    let dev_token = dev.body["token"].as_str().unwrap().to_string();
    assert_eq!(dev.body["roles"], json!(["viewer"]));
    let agent = json!({ "name": "a", "type": "researcher", "config": { "provider": "perplexity", "model": "sonar" } });
    s.post("/api/agents", &dev_token, agent.clone())
        .await
        .expect_error(403, "forbidden");
    s.put(
        &format!("{members_path}/{dev_id}"),
        &owner,
        json!({ "role": "agent_manager" }),
    )
    .await
    .expect(200);
    let refreshed = s
        .call(Method::POST, "/api/auth/refresh", Some(&dev_token), None)
        .await
        .expect(200);
    assert_eq!(refreshed.body["roles"], json!(["agent_manager"]));
    let dev_token = refreshed.body["token"].as_str().unwrap().to_string();
    s.post("/api/agents", &dev_token, agent).await.expect(201);
    // A non-admin member cannot manage members.
    s.get(&members_path, &dev_token)
        .await
        .expect_error(403, "forbidden");

    // The last org_admin can be neither demoted nor removed... once it is the last one.
    let admin_id = s.get("/api/users/me", &admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.delete(&format!("{members_path}/{admin_id}"), &owner)
        .await
        .expect(204);
    let owner_id = s.get("/api/users/me", &owner).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.put(
        &format!("{members_path}/{owner_id}"),
        &owner,
        json!({ "role": "viewer" }),
    )
    .await
    .expect_error(409, "conflict");
    s.delete(&format!("{members_path}/{owner_id}"), &owner)
        .await
        .expect_error(409, "conflict");
    s.delete(&format!("{members_path}/{dev_id}"), &owner)
        .await
        .expect(204);
    s.delete(&format!("{members_path}/{dev_id}"), &owner)
        .await
        .expect_error(404, "not_found");
}

async fn other_tenant_cannot_see_organization(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_a, _owner_a) = s.tenant(&admin, "alpha").await;
    let (_org_b, owner_b) = s.tenant(&admin, "beta").await;
    s.get(&format!("/api/organizations/{org_a}"), &owner_b)
        .await
        .expect_error(404, "not_found");
    s.get(&format!("/api/organizations/{org_a}/members"), &owner_b)
        .await
        .expect_error(404, "not_found");
    s.post(
        &format!("/api/organizations/{org_a}/members"),
        &owner_b,
        json!({ "email": "owner@beta.test", "role": "org_admin" }),
    )
    .await
    .expect_error(404, "not_found");
    // Logging into an organization one does not belong to fails.
    s.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({ "email": "owner@beta.test", "password": USER_PASSWORD, "org_id": org_a })),
    )
    .await
    .expect_error(404, "not_found");
}

dual_backend_tests!(
    organizations_and_members,
    other_tenant_cannot_see_organization
);
