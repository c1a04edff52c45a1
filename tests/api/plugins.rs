//! The plugin registry end to end: components built in the test from
//! source that is not a built-in (`tests/plugins/*`), uploaded to a running
//! server, activated, rolled back and swapped under load, with no rebuild
//! or restart. Waiting is on the server's own answers, never on sleeps.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::guests::{build_guest, manifest};
use crate::support::{Backend, Server};

const ROUTER: &str = "vel-fixture-flip-router";
const SHOUT: &str = "vel-fixture-shout-provider";

fn router(version: &str) -> Vec<u8> {
    build_guest(ROUTER, if version == "2.0.0" { &["v2"] } else { &[] })
}

fn shout(version: &str) -> Vec<u8> {
    build_guest(SHOUT, if version == "2.0.0" { &["v2"] } else { &[] })
}

fn router_manifest(version: &str) -> String {
    manifest("flip-router", version, "router", "")
}

fn shout_manifest(version: &str) -> String {
    manifest("shout", version, "provider", "")
}

/// The names of the plugins `token` can see.
async fn visible(s: &Server, token: &str) -> BTreeSet<String> {
    let list = s.get("/api/plugins", token).await.expect(200);
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// An API key of `token`'s organization for the gateway.
async fn gateway_key(s: &Server, token: &str) -> String {
    s.api_key(token, "registry-test", "task_executor").await
}

/// Two integrations: `alpha` on the built-in mock provider, `beta` on the
/// uploaded `shout` provider. `flip-router` 1.0.0 puts alpha first, 2.0.0 beta.
async fn integrations(s: &Server, token: &str) {
    for (name, plugin) in [("alpha", "mock"), ("beta", "shout")] {
        s.post(
            "/api/integrations",
            token,
            json!({ "name": name, "provider": "mock", "plugin": plugin }),
        )
        .await
        .expect(201);
    }
}

/// Who answered a gateway request: `alpha`, or `shout <version>`. Panics
/// on a failed request or an answer that is not wholly one version's.
async fn served_by(s: &Server, key: &str, prompt: &str) -> String {
    let r = s
        .post(
            "/v1/chat/completions",
            key,
            json!({ "model": "echo", "messages": [{"role": "user", "content": prompt}] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "gateway request failed: {}", r.body);
    let text = r.body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    let provider = r.headers["x-vel-provider"].to_str().unwrap().to_string();
    match provider.as_str() {
        "alpha" => {
            assert_eq!(text, format!("echo: {prompt}"));
            "alpha".into()
        }
        "beta" => {
            let version = ["1.0.0", "2.0.0"]
                .into_iter()
                .find(|v| text == format!("[shout {v}] {}", prompt.to_uppercase()))
                .unwrap_or_else(|| panic!("not one shout version's answer: {text:?}"));
            format!("shout {version}")
        }
        other => panic!("unexpected provider {other}"),
    }
}

async fn upload_and_activate(s: &Server, token: &str, bytes: Vec<u8>, manifest: &str) -> Value {
    s.upload_plugin(token, "?activate=true", bytes, manifest)
        .await
        .expect(201)
        .body
}

async fn set_policy(s: &Server, token: &str, org_id: &str, router: Option<&str>) {
    s.put(
        &format!("/api/organizations/{org_id}/routing-policy"),
        token,
        json!({ "router": router }),
    )
    .await
    .expect(200);
}

async fn test_bad_uploads_are_refused_and_store_nothing(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;

    // Built-ins are in the registry as active platform plugins.
    let list = s.get("/api/plugins", &owner).await.expect(200);
    let default_router = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default-router")
        .expect("default-router listed")
        .clone();
    assert_eq!(default_router["scope"], "platform");
    assert_eq!(default_router["builtin"], true);
    assert_eq!(default_router["kind"], "router");
    assert_eq!(default_router["active_version"], "0.1.0");
    assert_eq!(default_router["live_version"], "0.1.0");
    let before = visible(&s, &owner).await;
    // Platform plugins are the platform admins'; the fallback router stays on.
    s.post("/api/plugins/default-router/disable", &owner, json!({}))
        .await
        .expect_error(403, "forbidden");
    s.post("/api/plugins/default-router/disable", &admin, json!({}))
        .await
        .expect_error(409, "default_router");

    let v1 = router("1.0.0");
    let bad = |bytes: Vec<u8>, manifest: String, query: &'static str| {
        let s = &s;
        let owner = owner.clone();
        async move { s.upload_plugin(&owner, query, bytes, &manifest).await }
    };
    bad(b"hello".to_vec(), router_manifest("1.0.0"), "")
        .await
        .expect_error(400, "not_a_component");
    bad(b"\0asm\x01\0\0\0".to_vec(), router_manifest("1.0.0"), "")
        .await
        .expect_error(400, "not_a_component");
    bad(
        v1.clone(),
        manifest("flip-router", "1.0.0", "condition", ""),
        "",
    )
    .await
    .expect_error(400, "wrong_world");
    bad(
        v1.clone(),
        manifest("other-router", "1.0.0", "router", ""),
        "",
    )
    .await
    .expect_error(400, "manifest_mismatch");
    bad(v1.clone(), router_manifest("1.2.0"), "")
        .await
        .expect_error(400, "manifest_mismatch");
    bad(v1.clone(), "name = 3".into(), "")
        .await
        .expect_error(400, "invalid_manifest");
    let greedy = manifest(
        "flip-router",
        "1.0.0",
        "router",
        "[limits]\nmemory_bytes = 1099511627776\n",
    );
    let r = bad(v1.clone(), greedy, "")
        .await
        .expect_error(400, "limits_above_maximum");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory_bytes"),
        "{}",
        r.body
    );
    bad(
        vec![0u8; 10 * 1024 * 1024 + 1],
        router_manifest("1.0.0"),
        "",
    )
    .await
    .expect_error(413, "payload_too_large");
    // Tenants cannot take a platform plugin's name.
    bad(
        v1.clone(),
        manifest("default-router", "1.0.0", "router", ""),
        "",
    )
    .await
    .expect_error(409, "name_taken");
    // Only org admins upload.
    let key = gateway_key(&s, &owner).await;
    let refused = s
        .upload_plugin(&key, "", v1.clone(), &router_manifest("1.0.0"))
        .await;
    // Refused before its body was read: the server closes the connection,
    // and says so, so the client does not send its next request on it.
    assert_eq!(
        refused.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{:?}",
        refused.headers
    );
    refused.expect_error(403, "forbidden");

    assert_eq!(
        visible(&s, &owner).await,
        before,
        "a refused upload stored a plugin"
    );
    s.get("/api/plugins/flip-router", &owner)
        .await
        .expect_error(404, "not_found");

    // A good upload, then the same version with other bytes.
    let up = s
        .upload_plugin(&owner, "", v1.clone(), &router_manifest("1.0.0"))
        .await
        .expect(201)
        .body;
    assert_eq!(up["plugin"], "flip-router");
    assert_eq!(up["scope"], "organization");
    assert_eq!(up["active"], false);
    assert_eq!(up["hosts_approved"], true);
    assert_eq!(up["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(up["size_bytes"], v1.len());
    // A tenant's router runs under the tenant limits: fuel-metered, tighter.
    assert_eq!(up["limits"]["fuel"], 20_000_000, "{up}");
    assert_eq!(up["limits"]["wall_time"], 250, "{up}");
    bad(router("2.0.0"), router_manifest("1.0.0"), "")
        .await
        .expect_error(409, "version_exists");
    let shown = s
        .get("/api/plugins/flip-router", &owner)
        .await
        .expect(200)
        .body;
    assert_eq!(shown["versions"].as_array().unwrap().len(), 1, "{shown}");
    assert!(shown["active_version"].is_null());
    let audit = s
        .get("/api/audit-logs?action=plugin_uploaded", &owner)
        .await
        .expect(200);
    assert_eq!(
        audit.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        audit.body
    );
}

async fn test_tenant_plugins_go_live_for_that_tenant_only(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (acme, owner) = s.tenant(&admin, "acme").await;
    let (globex, other) = s.tenant(&admin, "globex").await;
    integrations(&s, &owner).await;
    integrations(&s, &other).await;
    let key = gateway_key(&s, &owner).await;
    let other_key = gateway_key(&s, &other).await;

    // Before: `beta`'s plugin does not exist, so only alpha can answer.
    assert_eq!(served_by(&s, &key, "hello").await, "alpha");

    // A brand-new provider, uploaded by the tenant, asking for a host: it
    // waits for a platform admin's approval. Asked to activate at once, it
    // is stored and left inactive.
    let wants_hosts = manifest(
        "shout",
        "1.0.0",
        "provider",
        "[outbound]\nhosts = [\"api.shout.example\"]\n",
    );
    let up = s
        .upload_plugin(&owner, "?activate=true", shout("1.0.0"), &wants_hosts)
        .await
        .expect(201)
        .body;
    assert_eq!(up["hosts_approved"], false);
    assert_eq!(up["active"], false, "{up}");
    let shown = s.get("/api/plugins/shout", &owner).await.expect(200).body;
    assert!(shown["active_version"].is_null(), "{shown}");
    s.post(
        "/api/plugins/shout/versions/1.0.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect_error(409, "hosts_not_approved");
    s.get("/api/plugin-approvals", &owner)
        .await
        .expect_error(403, "forbidden");
    let pending = s
        .get("/api/plugin-approvals", &admin)
        .await
        .expect(200)
        .body;
    let id = pending["items"][0]["id"]
        .as_str()
        .expect("pending version")
        .to_string();
    assert_eq!(pending["items"][0]["organization_id"], acme.as_str());
    s.post(
        &format!("/api/plugin-approvals/{id}/approve"),
        &admin,
        json!({}),
    )
    .await
    .expect(200);
    let live = s
        .post(
            "/api/plugins/shout/versions/1.0.0/activate",
            &owner,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(live["active_version"], "1.0.0");
    assert_eq!(live["live_version"], "1.0.0");

    // The tenant's routing policy: 1.0.0 puts alpha first, 2.0.0 beta.
    upload_and_activate(&s, &owner, router("1.0.0"), &router_manifest("1.0.0")).await;
    set_policy(&s, &owner, &acme, Some("flip-router")).await;
    assert_eq!(served_by(&s, &key, "hello").await, "alpha");
    let v2 = upload_and_activate(&s, &owner, router("2.0.0"), &router_manifest("2.0.0")).await;
    assert_eq!(v2["active"], true);
    assert_eq!(served_by(&s, &key, "hello").await, "shout 1.0.0");

    // A queued task takes the same route.
    let task = s
        .post(
            "/api/tasks",
            &owner,
            json!({ "description": "routed by the tenant's policy", "prompt": "queued work",
                    "parameters": { "model": "echo" } }),
        )
        .await
        .expect(201)
        .body;
    let id = task["id"].as_str().unwrap().to_string();
    let done = wait_task(&s, &owner, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["provider"], "beta");
    assert_eq!(done["result"]["text"], "[shout 1.0.0] QUEUED WORK");
    // The task shows its plan: the router, its version, no fallback.
    assert_eq!(done["plan"]["router"], "flip-router", "{done}");
    assert_eq!(done["plan"]["router_version"], "2.0.0", "{done}");
    let first = done["plan"]["attempts"][0].as_str().unwrap_or_default();
    assert!(first.starts_with("beta/"), "{done}");
    assert!(done["plan"]["fallback"].is_null(), "{done}");
    // So does a gateway answer, in a header, plain or streamed.
    assert_eq!(router_header(&s, &key, false).await, "flip-router@2.0.0");
    assert_eq!(router_header(&s, &key, true).await, "flip-router@2.0.0");

    // The other tenant sees none of it and cannot use it.
    let theirs = visible(&s, &other).await;
    assert!(
        !theirs.contains("flip-router") && !theirs.contains("shout"),
        "{theirs:?}"
    );
    s.put(
        &format!("/api/organizations/{globex}/routing-policy"),
        &other,
        json!({ "router": "flip-router" }),
    )
    .await
    .expect_error(422, "validation_failed");
    s.get("/api/plugins/flip-router/stats", &other)
        .await
        .expect_error(404, "not_found");
    assert_eq!(served_by(&s, &other_key, "hello").await, "alpha");

    // Rollback restores the previous behaviour at once.
    let back = s
        .post("/api/plugins/flip-router/rollback", &owner, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(back["active_version"], "1.0.0");
    assert_eq!(back["previous_version"], "2.0.0");
    assert_eq!(served_by(&s, &key, "hello").await, "alpha");

    // Statistics per version (this instance's).
    let stats = s
        .get("/api/plugins/flip-router/stats", &owner)
        .await
        .expect(200)
        .body;
    let versions: Vec<&str> = stats["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"2.0.0"),
        "{stats}"
    );
    assert!(
        stats["versions"][0]["calls"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    // The same figures in Prometheus form, for platform admins only.
    s.get("/metrics", &owner)
        .await
        .expect_error(403, "forbidden");
    let text = s.metrics(&admin).await;
    let calls = format!(
        "vel_plugin_calls_total{{plugin=\"flip-router\",version=\"2.0.0\",kind=\"router\",scope=\"{acme}\"}}"
    );
    assert!(text.contains(&calls), "{calls} not in:\n{text}");
    assert!(text.contains("vel_plugin_call_duration_seconds"), "{text}");
    assert!(text.contains("\nvel_db_connections "), "{text}");

    // A version in use cannot be deleted; another can (and its statistics go).
    s.delete("/api/plugins/flip-router/versions/1.0.0", &owner)
        .await
        .expect_error(409, "version_active");
    s.delete("/api/plugins/flip-router/versions/2.0.0", &owner)
        .await
        .expect(204);
    s.post("/api/plugins/flip-router/rollback", &owner, json!({}))
        .await
        .expect_error(409, "no_previous_version");
    let stats = s
        .get("/api/plugins/flip-router/stats", &owner)
        .await
        .expect(200)
        .body;
    assert_eq!(stats["versions"].as_array().unwrap().len(), 1, "{stats}");

    // Disabling the provider takes beta out of the catalogue.
    s.post("/api/plugins/shout/disable", &owner, json!({}))
        .await
        .expect(200);
    let r = s
        .post(
            "/v1/chat/completions",
            &key,
            json!({ "model": "beta/shout-1", "messages": [{"role": "user", "content": "x"}] }),
        )
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{}",
        r.body
    );
    s.post("/api/plugins/shout/enable", &owner, json!({}))
        .await
        .expect(200);

    // A policy whose router is disabled falls back to the default router,
    // and callers see it: in the header and in the task's plan.
    s.post("/api/plugins/flip-router/disable", &owner, json!({}))
        .await
        .expect(200);
    let header = router_header(&s, &key, false).await;
    assert!(
        header.starts_with("default-router@") && header.ends_with("; fallback"),
        "{header}"
    );
    let task = s
        .post(
            "/api/tasks",
            &owner,
            json!({ "description": "fallback", "prompt": "fallback work",
                    "parameters": { "model": "echo" } }),
        )
        .await
        .expect(201)
        .body;
    let done = wait_task(&s, &owner, task["id"].as_str().unwrap()).await;
    assert_eq!(done["plan"]["router"], "default-router", "{done}");
    let why = done["plan"]["fallback"].as_str().unwrap_or_default();
    assert!(why.contains("flip-router"), "{done}");
    s.post("/api/plugins/flip-router/enable", &owner, json!({}))
        .await
        .expect(200);

    // Every change is in the audit log.
    let log = s
        .get("/api/audit-logs?limit=100", &owner)
        .await
        .expect(200)
        .body;
    let actions: BTreeSet<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "plugin_uploaded",
        "plugin_activated",
        "plugin_hosts_approved",
        "plugin_rolled_back",
        "plugin_version_deleted",
        "plugin_disabled",
        "plugin_enabled",
        "routing_policy_set",
    ] {
        assert!(
            actions.contains(action),
            "{action} not audited: {actions:?}"
        );
    }
}

/// The `x-vel-router` header of a gateway answer (plain or streamed), which
/// must succeed.
async fn router_header(s: &Server, key: &str, stream: bool) -> String {
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({ "model": "echo", "stream": stream,
                       "metadata": { "tier": "gold" },
                       "messages": [{"role": "user", "content": "which router?"}] }))
        .send()
        .await
        .expect("gateway request");
    assert_eq!(r.status().as_u16(), 200);
    let header = r
        .headers()
        .get("x-vel-router")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Read the whole answer, so a stream's run ends before the next request.
    let _ = r.bytes().await.expect("body");
    header
}

/// Poll the task until it is terminal (each poll is a real request; the
/// executor runs it on its own schedule).
async fn wait_task(s: &Server, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = s
            .get(&format!("/api/tasks/{id}"), token)
            .await
            .expect(200)
            .body;
        if ["completed", "failed", "cancelled"].contains(&t["status"].as_str().unwrap_or("")) {
            return t;
        }
        assert!(Instant::now() < deadline, "task never finished: {t}");
        tokio::task::yield_now().await;
    }
}

/// Let ten more requests through (between two swaps), or stop waiting as
/// soon as a client stopped: it failed a request, and its panic is
/// reported when it is joined.
async fn let_through<T>(served: &AtomicUsize, clients: &[tokio::task::JoinHandle<T>]) {
    let target = served.load(Ordering::Acquire) + 10;
    while served.load(Ordering::Acquire) < target
        && !clients.iter().any(tokio::task::JoinHandle::is_finished)
    {
        tokio::task::yield_now().await;
    }
}

async fn test_hot_swap_under_load_fails_nothing(b: Backend) {
    let s = Arc::new(Server::start(b).await);
    let admin = s.admin_token().await;
    let (acme, owner) = s.tenant(&admin, "acme").await;
    integrations(&s, &owner).await;
    let key = gateway_key(&s, &owner).await;
    upload_and_activate(&s, &owner, shout("1.0.0"), &shout_manifest("1.0.0")).await;
    upload_and_activate(&s, &owner, router("1.0.0"), &router_manifest("1.0.0")).await;
    set_policy(&s, &owner, &acme, Some("flip-router")).await;
    s.upload_plugin(&owner, "", router("2.0.0"), &router_manifest("2.0.0"))
        .await
        .expect(201);
    s.upload_plugin(&owner, "", shout("2.0.0"), &shout_manifest("2.0.0"))
        .await
        .expect(201);

    // Clients send requests back to back while the router and the provider
    // are swapped; every answer must be whole and from one version.
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (s, key, done, served) = (s.clone(), key.clone(), done.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                seen.insert(served_by(&s, &key, &format!("client {c} request {n}")).await);
                served.fetch_add(1, Ordering::AcqRel);
                n += 1;
            }
            (n, seen)
        }));
    }
    let swaps = [
        "/api/plugins/flip-router/versions/2.0.0/activate",
        "/api/plugins/shout/versions/2.0.0/activate",
        "/api/plugins/flip-router/rollback",
        "/api/plugins/shout/rollback",
        "/api/plugins/flip-router/rollback",
        "/api/plugins/flip-router/rollback",
        "/api/plugins/shout/rollback",
        "/api/plugins/flip-router/versions/2.0.0/activate",
    ];
    for path in swaps {
        let_through(&served, &clients).await;
        if clients.iter().any(tokio::task::JoinHandle::is_finished) {
            break;
        }
        s.post(path, &owner, json!({})).await.expect(200);
    }
    let_through(&served, &clients).await;
    done.store(true, Ordering::Release);
    let mut total = 0;
    let mut seen = BTreeSet::new();
    for c in clients {
        let (n, s) = c
            .await
            .expect("client panicked: a request failed or was mixed");
        total += n;
        seen.extend(s);
    }
    assert!(total >= 90, "{total} requests");
    // Both router versions and both provider versions served requests.
    for who in ["alpha", "shout 1.0.0", "shout 2.0.0"] {
        assert!(seen.contains(who), "{who} never served: {seen:?}");
    }
    // Ends on router 2.0.0 (beta first) with shout 2.0.0 (activated, then
    // rolled back twice: 2.0.0 → 1.0.0 → 2.0.0).
    assert_eq!(served_by(&s, &key, "last").await, "shout 2.0.0");
}

async fn test_trusted_keys_admit_only_signed_components(b: Backend) {
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};
    let trusted = SigningKey::from_bytes(&[7u8; 32]);
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let public =
        base64::engine::general_purpose::STANDARD.encode(trusted.verifying_key().as_bytes());
    let s = Server::start_with(b, &[("VEL_PLUGIN_TRUSTED_KEYS", public.as_str())]).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;
    let v1 = router("1.0.0");
    let signed = |key: &SigningKey, bytes: &[u8]| {
        base64::engine::general_purpose::STANDARD.encode(key.sign(bytes).to_bytes())
    };
    let upload = |bytes: Vec<u8>, signature: Option<String>, query: &'static str| {
        let form = reqwest::multipart::Form::new()
            .part("component", reqwest::multipart::Part::bytes(bytes))
            .text("manifest", router_manifest("1.0.0"));
        let form = match signature {
            Some(sig) => form.text("signature", sig),
            None => form,
        };
        s.http
            .post(s.url(&format!("/api/plugins{query}")))
            .bearer_auth(&owner)
            .multipart(form)
            .send()
    };
    let status_code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
            body,
        )
    };
    // Unsigned, asking to activate: refused, nothing stored.
    let (status, code, _) =
        status_code(upload(v1.clone(), None, "?activate=true").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "signature_required"));
    // Signed by a key nobody trusts: refused.
    let (status, code, _) = status_code(
        upload(v1.clone(), Some(signed(&stranger, &v1)), "")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_signature"));
    // A signature of other bytes: refused.
    let (status, code, _) = status_code(
        upload(v1.clone(), Some(signed(&trusted, b"other bytes")), "")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_signature"));
    s.get("/api/plugins/flip-router", &owner)
        .await
        .expect_error(404, "not_found");
    // Signed by the trusted key: stored as signed and activated.
    let (status, _, body) = status_code(
        upload(v1.clone(), Some(signed(&trusted, &v1)), "?activate=true")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["signed"], true);
    assert_eq!(body["active"], true);
    // An unsigned later version may be stored but not activated.
    s.upload_plugin(&owner, "", router("2.0.0"), &router_manifest("2.0.0"))
        .await
        .expect(201);
    s.post(
        "/api/plugins/flip-router/versions/2.0.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect_error(409, "signature_required");
}

/// Two organizations uploaded the same bytes: deleting one's version
/// keeps the bytes the other still uses (row-level security hides the
/// other's version from the deleting tenant; the question is the
/// platform's), and answers 204 rather than an error that would tell.
async fn test_deleting_a_version_whose_bytes_another_tenant_shares(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (_acme, acme) = s.tenant(&admin, "acme").await;
    let (_globex, globex) = s.tenant(&admin, "globex").await;
    for owner in [&acme, &globex] {
        s.upload_plugin(owner, "", router("1.0.0"), &router_manifest("1.0.0"))
            .await
            .expect(201);
    }
    s.delete("/api/plugins/flip-router/versions/1.0.0", &acme)
        .await
        .expect(204);
    s.post(
        "/api/plugins/flip-router/versions/1.0.0/activate",
        &globex,
        json!({}),
    )
    .await
    .expect(200);
    assert!(visible(&s, &globex).await.contains("flip-router"));
}

/// A platform admin rejects a tenant provider version awaiting approval:
/// the version leaves the queue, shows as rejected (with the reason) to
/// its organization, can never be approved or activated afterwards, and
/// both audit logs record it; nobody else may reject.
async fn test_a_rejected_version_never_goes_live(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let (acme, owner) = s.tenant(&admin, "acme").await;
    let wants_hosts = manifest(
        "shout",
        "1.0.0",
        "provider",
        "[outbound]\nhosts = [\"api.shout.example\"]\n",
    );
    let up = s
        .upload_plugin(&owner, "", shout("1.0.0"), &wants_hosts)
        .await
        .expect(201)
        .body;
    assert_eq!(up["approval"], "pending", "{up}");
    let id = up["id"].as_str().expect("version id").to_string();
    let reject = format!("/api/plugin-approvals/{id}/reject");

    // Only platform admins; a bad reason changes nothing.
    s.post(&reject, &owner, json!({ "reason": "mine" }))
        .await
        .expect_error(403, "forbidden");
    s.post(&reject, &admin, json!({ "reason": "x".repeat(2001) }))
        .await
        .expect_error(422, "validation_failed");
    s.post(&reject, &admin, json!({ "why": "typo" }))
        .await
        .expect_error(422, "validation_failed");
    s.post("/api/plugin-approvals/no-such-id/reject", &admin, json!({}))
        .await
        .expect_error(404, "not_found");
    let pending = s
        .get("/api/plugin-approvals", &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1, "{pending}");

    let rejected = s
        .post(&reject, &admin, json!({ "reason": "  unknown host  " }))
        .await
        .expect(200)
        .body;
    assert_eq!(rejected["approval"], "rejected", "{rejected}");
    assert_eq!(rejected["rejection_reason"], "unknown host");
    assert_eq!(rejected["hosts_approved"], false);
    // Again: nothing changes (the first reason stays).
    let again = s
        .post(&reject, &admin, json!({ "reason": "other" }))
        .await
        .expect(200)
        .body;
    assert_eq!(again["rejection_reason"], "unknown host");
    let pending = s
        .get("/api/plugin-approvals", &admin)
        .await
        .expect(200)
        .body;
    assert!(pending["items"].as_array().unwrap().is_empty(), "{pending}");

    // Never approved, never activated.
    let err = s
        .post(
            &format!("/api/plugin-approvals/{id}/approve"),
            &admin,
            json!({}),
        )
        .await
        .expect_error(409, "version_rejected")
        .body;
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown host")),
        "{err}"
    );
    s.post(
        "/api/plugins/shout/versions/1.0.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect_error(409, "version_rejected");

    // The tenant sees it rejected, with the reason.
    let shown = s.get("/api/plugins/shout", &owner).await.expect(200).body;
    let v = &shown["versions"][0];
    assert_eq!(v["approval"], "rejected", "{shown}");
    assert_eq!(v["rejection_reason"], "unknown host");
    assert!(shown["active_version"].is_null());

    // Both logs, once each.
    for (who, token) in [("tenant", &owner), ("platform", &admin)] {
        let audit = s
            .get("/api/audit-logs?action=plugin_version_rejected", token)
            .await
            .expect(200)
            .body;
        let items = audit["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{who}: {audit}");
        assert_eq!(items[0]["payload"]["reason"], "unknown host", "{audit}");
        assert_eq!(items[0]["payload"]["organization_id"], acme.as_str());
    }

    // An approved version cannot be rejected.
    let v2 = manifest(
        "shout",
        "2.0.0",
        "provider",
        "[outbound]\nhosts = [\"api.shout.example\"]\n",
    );
    let up = s
        .upload_plugin(&owner, "", shout("2.0.0"), &v2)
        .await
        .expect(201)
        .body;
    let id2 = up["id"].as_str().unwrap().to_string();
    s.post(
        &format!("/api/plugin-approvals/{id2}/approve"),
        &admin,
        json!({}),
    )
    .await
    .expect(200);
    s.post(
        &format!("/api/plugin-approvals/{id2}/reject"),
        &admin,
        json!({}),
    )
    .await
    .expect_error(409, "already_approved");
    let shown = s.get("/api/plugins/shout", &owner).await.expect(200).body;
    let approvals: Vec<_> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or(""),
                v["approval"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(approvals.contains(&("2.0.0", "approved")), "{shown}");
    assert!(approvals.contains(&("1.0.0", "rejected")), "{shown}");
}

crate::dual_backend_tests!(
    test_a_rejected_version_never_goes_live,
    test_deleting_a_version_whose_bytes_another_tenant_shares,
    test_trusted_keys_admit_only_signed_components,
    test_bad_uploads_are_refused_and_store_nothing,
    test_tenant_plugins_go_live_for_that_tenant_only,
    test_hot_swap_under_load_fails_nothing,
);

/// Two instances on one PostgreSQL: an activation on one is live on the
/// other within a second (PostgreSQL NOTIFY; the periodic reconciliation
/// is set far beyond that so it cannot be what delivers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_reaches_another_instance_within_a_second() {
    let a = Server::start_with(Backend::Postgres, &[("VEL_PLUGIN_RECONCILE_MS", "600000")]).await;
    let b = a.sibling(&[("VEL_PLUGIN_RECONCILE_MS", "600000")]);
    let admin = a.admin_token().await;
    let (acme, owner) = a.tenant(&admin, "acme").await;
    integrations(&a, &owner).await;
    let key = gateway_key(&a, &owner).await;
    upload_and_activate(&a, &owner, shout("1.0.0"), &shout_manifest("1.0.0")).await;
    upload_and_activate(&a, &owner, router("1.0.0"), &router_manifest("1.0.0")).await;
    set_policy(&a, &owner, &acme, Some("flip-router")).await;
    a.upload_plugin(&owner, "", router("2.0.0"), &router_manifest("2.0.0"))
        .await
        .expect(201);
    let owner_b = b
        .login("owner@acme.test", crate::support::USER_PASSWORD)
        .await;
    // B serves 1.0.0 (it learnt of the first activation the same way).
    let seen = live_on(&b, &owner_b, "1.0.0", Duration::from_secs(5)).await;
    assert!(seen.is_some(), "instance B never served flip-router 1.0.0");
    assert_eq!(served_by(&b, &key, "before").await, "alpha");

    let activated = Instant::now();
    a.post(
        "/api/plugins/flip-router/versions/2.0.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect(200);
    let took = live_on(&b, &owner_b, "2.0.0", Duration::from_secs(5))
        .await
        .map(|at| at.duration_since(activated));
    eprintln!("activation reached instance B after {took:?}");
    let took = took.expect("instance B never served flip-router 2.0.0");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(served_by(&b, &key, "after").await, "shout 1.0.0");
}

/// When (if within `limit`) instance `s` reports `version` of flip-router live.
async fn live_on(s: &Server, token: &str, version: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let p = s
            .get("/api/plugins/flip-router", token)
            .await
            .expect(200)
            .body;
        if p["live_version"] == version {
            return Some(Instant::now());
        }
        tokio::task::yield_now().await;
    }
    None
}
