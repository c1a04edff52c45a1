//! Hostile tenant providers, uploaded by an organization's admin and
//! called through the gateway, are stopped with a clear error while
//! another organization's requests keep succeeding: host memory a guest
//! makes the host allocate counts against its limit, a flood of empty
//! deltas is bounded, and a plugin's calls beyond its share of the
//! instance pool get a 429 rather than taking the pool from others.

use serde_json::{Value, json};

use crate::support::guests::manifest;
use crate::support::{Backend, Server};
use vel_mock_upstream::{Fault, MockUpstream};

fn hostile(name: &str) -> Vec<u8> {
    let path = vel_plugin_artifacts::hostile_path(name)
        .unwrap_or_else(|| panic!("no hostile component {name}"));
    std::fs::read(path).expect("hostile component")
}

/// An organization whose only integration, `hostile`, runs the hostile
/// provider `dir` (plugin `hostile-<dir>` 0.1.0, uploaded and activated by
/// its admin, under `limits`); returns a gateway key of it.
async fn hostile_tenant(s: &Server, admin: &str, dir: &str, limits: &str) -> String {
    let (_org, owner) = s.tenant(admin, &format!("evil-{dir}")).await;
    let name = format!("hostile-{dir}");
    let manifest = manifest(&name, "0.1.0", "provider", limits);
    s.upload_plugin(&owner, "?activate=true", hostile(dir), &manifest)
        .await
        .expect(201);
    s.post(
        "/api/integrations",
        &owner,
        json!({ "name": "hostile", "provider": "mock", "plugin": name, "default_model": "echo" }),
    )
    .await
    .expect(201);
    s.api_key(&owner, "evil", "task_executor").await
}

/// A well-behaved organization on the built-in mock provider; returns a
/// gateway key of it.
async fn neighbour(s: &Server, admin: &str) -> String {
    let (_org, owner) = s.tenant(admin, "good").await;
    s.post(
        "/api/integrations",
        &owner,
        json!({ "name": "alpha", "provider": "mock", "plugin": "mock" }),
    )
    .await
    .expect(201);
    s.api_key(&owner, "good", "task_executor").await
}

fn chat_body(prompt: &str, stream: bool) -> Value {
    json!({ "model": "echo", "stream": stream,
            "messages": [{ "role": "user", "content": prompt }] })
}

/// The neighbour's requests, `n` of them one after another: all answered.
async fn neighbour_requests(s: &Server, key: &str, n: usize) {
    for i in 0..n {
        let prompt = format!("neighbour {i}");
        let r = s
            .post("/v1/chat/completions", key, chat_body(&prompt, false))
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
        assert_eq!(
            r.body["choices"][0]["message"]["content"],
            format!("echo: {prompt}")
        );
    }
}

async fn test_host_memory_is_charged_to_the_tenant_call(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let evil = hostile_tenant(&s, &admin, "host-memory", "").await;
    let good = neighbour(&s, &admin).await;
    let attack = async {
        let r = s
            .post("/v1/chat/completions", &evil, chat_body("fill", false))
            .await;
        assert!(r.status.is_server_error(), "{r:?}");
        let text = r.body.to_string();
        assert!(text.contains("memory limit exceeded"), "{text}");
    };
    tokio::join!(attack, neighbour_requests(&s, &good, 10));
}

async fn test_a_flood_of_empty_deltas_is_bounded(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    let evil = hostile_tenant(&s, &admin, "empty-deltas", "").await;
    let good = neighbour(&s, &admin).await;
    let attack = async {
        let resp = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&evil)
            .json(&chat_body("flood", true))
            .send()
            .await
            .expect("request");
        let text = resp.text().await.expect("body");
        // No chunk for an empty delta; the call is stopped at its delta
        // limit and the client told so.
        assert!(text.len() < 64 * 1024, "{} bytes streamed", text.len());
        assert!(text.contains("streamed deltas limit exceeded"), "{text}");
    };
    tokio::join!(attack, neighbour_requests(&s, &good, 10));
}

/// A plugin whose `info()` takes longer than `VEL_PLUGIN_INFO_TIMEOUT_MS`
/// is refused at upload once that time is up, with a clear error, nothing
/// stored, and the neighbours served meanwhile.
async fn test_an_upload_whose_info_is_slow_is_refused(b: Backend) {
    let s = Server::start_with(b, &[("VEL_PLUGIN_INFO_TIMEOUT_MS", "500")]).await;
    let admin = s.admin_token().await;
    let good = neighbour(&s, &admin).await;
    let (_org, owner) = s.tenant(&admin, "evil-slow-info").await;
    let manifest = manifest("hostile-slow-info", "0.1.0", "provider", "");
    let upload = async {
        let r = s
            .upload_plugin(&owner, "", hostile("slow-info"), &manifest)
            .await;
        let r = r.expect_error(400, "info_failed");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("wall-clock time limit exceeded"),
            "{}",
            r.body
        );
    };
    tokio::join!(upload, neighbour_requests(&s, &good, 10));
    let list = s.get("/api/plugins", &owner).await.expect(200);
    assert!(
        !list.body.to_string().contains("hostile-slow-info"),
        "{}",
        list.body
    );
}

/// An organization whose integration `hostile` runs the hostile `outbound`
/// provider against `mock` (its host approved by the platform admin), so
/// each call waits as long as the upstream does; returns a gateway key.
async fn waiting_tenant(s: &Server, admin: &str, name: &str, mock: &MockUpstream) -> String {
    let (_org, owner) = s.tenant(admin, name).await;
    let hosts = format!("[outbound]\nhosts = [\"{}\"]\n", mock.addr());
    let manifest = manifest("hostile-outbound", "0.1.0", "provider", &hosts);
    let up = s
        .upload_plugin(&owner, "", hostile("outbound"), &manifest)
        .await
        .expect(201);
    let id = up.body["id"].as_str().expect("version id").to_string();
    s.post(
        &format!("/api/plugin-approvals/{id}/approve"),
        admin,
        json!({}),
    )
    .await
    .expect(200);
    s.post(
        "/api/plugins/hostile-outbound/versions/0.1.0/activate",
        &owner,
        json!({}),
    )
    .await
    .expect(200);
    s.post(
        "/api/integrations",
        &owner,
        json!({ "name": "hostile", "provider": "mock", "plugin": "hostile-outbound",
                "base_url": mock.base_url(), "default_model": "echo", "timeout_ms": 30_000 }),
    )
    .await
    .expect(201);
    s.api_key(&owner, name, "task_executor").await
}

/// Organizations' plugins hold at most their share of the instance pool
/// and tenants together leave the platform's reserve: a call over either
/// gets 429 `plugin_busy` at once, while platform plugins keep serving
/// everyone, and a share's place comes back when its calls end.
async fn test_tenants_are_held_to_their_shares_of_the_pool(b: Backend) {
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    // A pool of 1,000 with 997 reserved: tenants together hold 3, one
    // organization 2.
    let s = Server::start_with(
        b,
        &[
            ("VEL_PLUGIN_ORG_SHARE", "2"),
            ("VEL_PLUGIN_PLATFORM_RESERVE", "997"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    let first = waiting_tenant(&s, &admin, "first", &mock).await;
    let second = waiting_tenant(&s, &admin, "second", &mock).await;
    let good = neighbour(&s, &admin).await;
    let chat = |key: &str| {
        let (http, url, key) = (
            s.http.clone(),
            s.url("/v1/chat/completions"),
            key.to_string(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&chat_body("wait", false))
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let busy = |(status, body): (u16, Value), share: &str| {
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "plugin_busy", "{body}");
        let text = body.to_string();
        assert!(text.contains(share), "{text}");
    };

    // The first organization fills its share.
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(chat(&first))).collect();
    mock.wait_for_in_flight(2).await;
    busy(
        chat(&first).await,
        "the organization's plugins already run 2 calls",
    );
    // The second gets the last tenant place, then finds the tenants' part full.
    let third = tokio::spawn(chat(&second));
    mock.wait_for_in_flight(3).await;
    busy(
        chat(&second).await,
        "the rest of the instance pool is reserved",
    );
    // Platform plugins serve everyone meanwhile.
    neighbour_requests(&s, &good, 5).await;
    assert_eq!(
        mock.stats().received,
        3,
        "a refused call reached the upstream"
    );

    // The waiting calls end; their places come back.
    mock.set_default(Fault::Ok);
    mock.clear_faults();
    let ended = mock.stats().in_flight;
    assert_eq!(ended, 3);
    for call in held.into_iter().chain([third]) {
        call.abort();
    }
    mock.wait_for_dropped(3).await;
    let (status, body) = chat(&first).await;
    assert_eq!(status, 200, "{body}");
}

crate::dual_backend_tests!(
    test_an_upload_whose_info_is_slow_is_refused,
    test_tenants_are_held_to_their_shares_of_the_pool,
    test_host_memory_is_charged_to_the_tenant_call,
    test_a_flood_of_empty_deltas_is_bounded,
);

/// A stored version whose `info()` is too slow for an instance (its limit
/// is shorter here than where the version was uploaded) does not hold up
/// that instance's start: it starts, serves, skips the version and says so
/// at error level (`plugin_load_failed`).
#[tokio::test]
async fn a_slow_stored_plugin_does_not_hold_up_start_up() {
    let s = Server::start(Backend::Postgres).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "evil-slow-start").await;
    let manifest = manifest("hostile-slow-info", "0.1.0", "provider", "");
    s.upload_plugin(&owner, "?activate=true", hostile("slow-info"), &manifest)
        .await
        .expect(201);
    let other = s.sibling(&[("VEL_PLUGIN_INFO_TIMEOUT_MS", "500")]);
    other
        .call(reqwest::Method::GET, "/api/health", None, None)
        .await
        .expect(200);
    let log = other.stderr();
    assert!(
        log.contains("plugin_load_failed") && log.contains("hostile-slow-info"),
        "{log}"
    );
    // The tenant sees why on that instance.
    let plugin = other
        .get("/api/plugins/hostile-slow-info", &owner)
        .await
        .expect(200);
    let error = plugin.body["versions"][0]["load_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("wall-clock time limit exceeded"),
        "{}",
        plugin.body
    );
    let healthy = s
        .get("/api/plugins/hostile-slow-info", &owner)
        .await
        .expect(200);
    assert!(healthy.body["versions"][0].get("load_error").is_none());
}
