//! Organizations, members and roles.

use reqwest::Method;
use serde_json::{Value, json};

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

    // The owner manages members: invite a user of the default org, who
    // accepts; change role, remove. Adding an account directly is the
    // platform admin's (accounts are global).
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "dev@test.local", "password": USER_PASSWORD }),
    )
    .await
    .expect(201);
    let members_path = format!("/api/organizations/{org_id}/members");
    s.post(
        &members_path,
        &owner,
        json!({ "email": "dev@test.local", "role": "viewer" }),
    )
    .await
    .expect_error(403, "forbidden");
    let invitations_path = format!("/api/organizations/{org_id}/invitations");
    let invite = |email: &str, role: &str| {
        s.post(
            &invitations_path,
            &owner,
            json!({ "email": email, "role": role }),
        )
    };
    let invited = invite("dev@test.local", "viewer").await.expect(201);
    let token = invited.body["token"].as_str().unwrap().to_string();
    // The same answer for an email without an account.
    let ghost = invite("ghost@test.local", "viewer").await.expect(201);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&invited.body), keys(&ghost.body));
    invite("dev@test.local", "emperor")
        .await
        .expect_error(422, "validation_failed");
    let pending = s.get(&invitations_path, &owner).await.expect(200);
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 2);
    assert!(pending.body["items"][0].get("token").is_none());

    // Only the account's password accepts for an existing account.
    let accept = |token: &str, password: &str| {
        s.call(
            Method::POST,
            "/api/invitations/accept",
            None,
            Some(json!({ "token": token, "password": password })),
        )
    };
    accept(&token, "not-the-password-1234")
        .await
        .expect_error(401, "unauthorized");
    let added = accept(&token, USER_PASSWORD).await.expect(200);
    assert_eq!(added.body["org_id"], org_id.as_str());
    assert_eq!(added.body["role"], "viewer");
    let dev_id = added.body["user_id"].as_str().unwrap().to_string();
    // A token is used once.
    accept(&token, USER_PASSWORD)
        .await
        .expect_error(404, "not_found");
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
    s.mock_integration(&owner, "perplexity").await;
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
    // Adding an account directly is platform admins' work: refused before
    // the organization is looked up, whichever it is.
    s.post(
        &format!("/api/organizations/{org_a}/members"),
        &owner_b,
        json!({ "email": "owner@beta.test", "role": "org_admin" }),
    )
    .await
    .expect_error(403, "forbidden");
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

/// The squatting of the security review: organization B claims the email
/// of A's new hire. B cannot create the account; by inviting the email
/// and accepting itself it gets an account that is B's member only, and
/// A's invitation of the same email cannot be accepted without that
/// account's password: nobody B controls gets into A.
async fn accounts_join_an_organization_only_by_accepting(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_a, owner_a) = s.tenant(&admin, "acorp").await;
    let (org_b, owner_b) = s.tenant(&admin, "bcorp").await;
    let hire = "new.hire@a-corp.example";
    s.post(
        "/api/users",
        &owner_b,
        json!({ "email": hire, "password": USER_PASSWORD }),
    )
    .await
    .expect_error(403, "forbidden");
    let invite = async |org: &str, token: &str| {
        s.post(
            &format!("/api/organizations/{org}/invitations"),
            token,
            json!({ "email": hire, "role": "org_admin" }),
        )
        .await
    };
    let accept = |token: String, password: &'static str| {
        s.call(
            Method::POST,
            "/api/invitations/accept",
            None,
            Some(json!({ "token": token, "password": password })),
        )
    };
    let from_b = invite(&org_b, &owner_b).await.expect(201);
    let squatter = "Squatter-Chose-This-2024!";
    let joined = accept(from_b.body["token"].as_str().unwrap().into(), squatter)
        .await
        .expect(200);
    assert_eq!(joined.body["org_id"], org_b.as_str());

    let from_a = invite(&org_a, &owner_a).await.expect(201);
    accept(
        from_a.body["token"].as_str().unwrap().into(),
        "The-Real-Hire-Chose-2024!",
    )
    .await
    .expect_error(401, "unauthorized");
    s.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({ "email": hire, "password": squatter, "org_id": org_a })),
    )
    .await
    .expect_error(404, "not_found");
    let members = s
        .get(&format!("/api/organizations/{org_a}/members"), &owner_a)
        .await
        .expect(200);
    assert!(!members.body.to_string().contains(hire), "{}", members.body);
    let audit = s
        .get("/api/audit-logs?action=invitation_created", &owner_a)
        .await
        .expect(200);
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 1);
}

/// An organization's stream failover default: read by its members, set by
/// its org_admin (or a platform admin), checked, audited, and invisible to
/// other tenants. (What it does to streams: gateway.rs and tasks.rs.)
async fn stream_failover_default_is_the_org_admins(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (org_id, owner) = s.tenant(&admin, "acme").await;
    let (_, other) = s.tenant(&admin, "globex").await;
    s.post(
        "/api/users",
        &admin,
        json!({ "email": "viewer@acme.test", "password": USER_PASSWORD, "role": "viewer", "org_id": org_id }),
    )
    .await
    .expect(201);
    let viewer = s.login("viewer@acme.test", USER_PASSWORD).await;
    let path = format!("/api/organizations/{org_id}/stream-failover");

    let unset = json!({ "mode": null, "effective": "fail" });
    assert_eq!(s.get(&path, &viewer).await.expect(200).body, unset);
    let set = s
        .put(&path, &owner, json!({ "mode": "continue" }))
        .await
        .expect(200);
    assert_eq!(
        set.body,
        json!({ "mode": "continue", "effective": "continue" })
    );
    assert_eq!(
        s.get(&path, &viewer).await.expect(200).body["mode"],
        "continue"
    );

    s.put(&path, &viewer, json!({ "mode": "fail" }))
        .await
        .expect_error(403, "forbidden");
    s.put(&path, &owner, json!({ "mode": "restart" }))
        .await
        .expect_error(422, "validation_failed");
    s.put(&path, &owner, json!({ "mode": "fail", "extra": 1 }))
        .await
        .expect_error(422, "validation_failed");
    s.get(&path, &other).await.expect_error(404, "not_found");
    s.put(&path, &other, json!({ "mode": "fail" }))
        .await
        .expect_error(404, "not_found");
    s.put(
        "/api/organizations/no-such-org/stream-failover",
        &admin,
        json!({ "mode": "fail" }),
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(
        s.get(&path, &owner).await.expect(200).body["mode"],
        "continue"
    );

    // A platform admin may set it for any organization; null unsets it.
    let reset = s
        .put(&path, &admin, json!({ "mode": null }))
        .await
        .expect(200);
    assert_eq!(reset.body, unset);
    assert_eq!(s.get(&path, &owner).await.expect(200).body, unset);

    let audit = s
        .get("/api/audit-logs?action=stream_failover_set", &owner)
        .await
        .expect(200);
    let modes: Vec<Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["mode"].clone())
        .collect();
    assert_eq!(modes, [Value::Null, json!("continue")], "{}", audit.body);
}

dual_backend_tests!(
    stream_failover_default_is_the_org_admins,
    organizations_and_members,
    other_tenant_cannot_see_organization,
    accounts_join_an_organization_only_by_accepting
);
