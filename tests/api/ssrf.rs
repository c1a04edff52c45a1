//! Provider calls cannot reach the server's own network: with
//! `VEL_OUTBOUND_ALLOW_PRIVATE` empty, integrations and plugin manifests
//! naming restricted addresses are refused up front (422), and a base URL
//! whose name resolves to loopback is refused when connecting, with the
//! same error whether its port is open or closed.

use serde_json::{Value, json};
use vel_mock_upstream::MockUpstream;

use crate::support::guests::manifest;
use crate::support::{Backend, Server};

const KEY: &str = "sk-ssrf-test-key-0123456789";

/// No exceptions: the production default.
const STRICT: &[(&str, &str)] = &[("VEL_OUTBOUND_ALLOW_PRIVATE", "")];

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn restricted_base_urls_are_refused(b: Backend) {
    let s = Server::start_with(b, STRICT).await;
    let admin = s.admin_token().await;
    let created = s
        .post(
            "/api/integrations",
            &admin,
            json!({ "name": "fine", "provider": "openai_compatible",
                    "base_url": "https://llm.example.com/v1", "api_key": KEY }),
        )
        .await
        .expect(201);
    let path = format!("/api/integrations/{}", created.body["id"].as_str().unwrap());
    for (url, kind) in [
        ("http://169.254.169.254/v1", "link-local"),
        ("http://[::1]:5432", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0.0.0.0:8080/v1", "unspecified"),
        ("http://10.1.2.3/v1", "private"),
        ("https://192.168.0.10/v1", "private"),
        ("http://[::ffff:172.16.0.1]/v1", "private"),
        ("http://[fd00::1]/v1", "unique-local"),
        ("http://100.64.0.1/v1", "CGNAT"),
        ("http://localhost:8080/v1", "loopback"),
        (
            "http://metadata.google.internal/computeMetadata/v1",
            "link-local",
        ),
    ] {
        let r = s
            .post(
                "/api/integrations",
                &admin,
                json!({ "name": "internal", "provider": "openai_compatible",
                        "base_url": url, "api_key": KEY }),
            )
            .await
            .expect_error(422, "validation_failed");
        let message = r.body["error"]["details"]["base_url"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: {}", r.body));
        assert!(
            message.contains("destination address not allowed") && message.contains(kind),
            "{url}: {message}"
        );
        assert!(!r.body.to_string().contains(KEY), "{}", r.body);
        // An update to the same URL is refused too, and changes nothing.
        s.put(&path, &admin, json!({ "base_url": url }))
            .await
            .expect_error(422, "validation_failed");
    }
    let list = s.get("/api/integrations", &admin).await.expect(200);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", list.body);
    assert_eq!(items[0]["base_url"], "https://llm.example.com/v1");

    // The operator's exceptions let the same URLs through.
    let open =
        Server::start_with(b, &[("VEL_OUTBOUND_ALLOW_PRIVATE", "127.0.0.0/8,::1/128")]).await;
    let admin = open.admin_token().await;
    for (i, url) in ["http://[::1]:5432", "http://2130706433/", "http://127.1/"]
        .into_iter()
        .enumerate()
    {
        open.post(
            "/api/integrations",
            &admin,
            json!({ "name": format!("local-{i}"), "provider": "openai_compatible",
                    "base_url": url, "api_key": KEY }),
        )
        .await
        .expect(201);
    }
    open.post(
        "/api/integrations",
        &admin,
        json!({ "name": "metadata", "provider": "openai_compatible",
                "base_url": "http://169.254.169.254/v1", "api_key": KEY }),
    )
    .await
    .expect_error(422, "validation_failed");
}

async fn manifests_asking_for_restricted_hosts_are_refused(b: Backend) {
    let s = Server::start_with(b, STRICT).await;
    let admin = s.admin_token().await;
    let (_, owner) = s.tenant(&admin, "ssrf-tenant").await;
    // The host check comes before the component is even read: these bytes
    // are not a component.
    let bytes = b"not a component".to_vec();
    for host in [
        "169.254.169.254",
        "127.0.0.1:5432",
        "2130706433",
        "localhost:8080",
        "10.0.0.7",
    ] {
        let text = manifest(
            "prober",
            "1.0.0",
            "provider",
            &format!("[outbound]\nhosts = [\"api.example.com\", \"{host}\"]\n"),
        );
        for token in [&owner, &admin] {
            let r = s
                .upload_plugin(token, "", bytes.clone(), &text)
                .await
                .expect_error(422, "validation_failed");
            let message = r.body["error"]["details"]["outbound.hosts"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{host}: {}", r.body));
            assert!(
                message.contains("destination address not allowed"),
                "{host}: {message}"
            );
        }
    }
    // A public host passes this check and fails on the bytes instead.
    let text = manifest(
        "prober",
        "1.0.0",
        "provider",
        "[outbound]\nhosts = [\"api.example.com\"]\n",
    );
    let r = s.upload_plugin(&owner, "", bytes, &text).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
}

/// The `all_attempts_failed` answer of a gateway request, with `port`
/// written as `PORT`.
fn normalised(r: &Value, port: u16) -> String {
    r["error"].to_string().replace(&port.to_string(), "PORT")
}

async fn names_resolving_to_loopback_are_refused_when_connecting(b: Backend) {
    let mock = MockUpstream::start().await;
    let port = mock.addr().port();
    let closed = closed_port();
    // The integrations are stored while loopback is allowed (on an API-only
    // instance); a second instance on the same database, without the
    // exception, runs the calls. `localhost` resolves to loopback only
    // when the connection is made.
    let first = Server::start_with(b, &[("VEL_TASK_WORKERS", "0")]).await;
    let admin = first.admin_token().await;
    first
        .upstream_integration(
            &admin,
            "open",
            &format!("http://localhost:{port}/v1"),
            KEY,
            5_000,
        )
        .await;
    first
        .upstream_integration(
            &admin,
            "closed",
            &format!("http://localhost:{closed}/v1"),
            KEY,
            5_000,
        )
        .await;
    let key = first.api_key(&admin, "ssrf", "task_executor").await;
    let s = first.sibling(&[
        ("VEL_OUTBOUND_ALLOW_PRIVATE", ""),
        ("VEL_TASK_WORKERS", "4"),
    ]);

    let chat = |model: &'static str| {
        let s = &s;
        let key = &key;
        async move {
            s.post(
                "/v1/chat/completions",
                key,
                json!({ "model": model, "messages": [{"role": "user", "content": "hi"}] }),
            )
            .await
            .expect_error(502, "all_attempts_failed")
        }
    };
    let open = chat("open/gpt-4o-mini").await;
    let message = open.body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", open.body));
    let attempt = format!(
        "open/gpt-4o-mini: destination_denied: outbound request to `localhost:{port}` \
         denied: destination address not allowed"
    );
    assert!(message.contains(&attempt), "{message}");
    // A closed port answers exactly the same (but for the port it names).
    let shut = chat("closed/gpt-4o-mini").await;
    assert_eq!(
        normalised(&open.body, port).replace("open/", "X/"),
        normalised(&shut.body, closed).replace("closed/", "X/")
    );

    // A task through the same integration fails the same way.
    let task = s
        .post(
            "/api/tasks",
            &key,
            json!({ "description": "ssrf", "prompt": "hi", "task_type": "light",
                    "parameters": { "model": "open/gpt-4o-mini" } }),
        )
        .await
        .expect(201);
    let id = task.body["id"].as_str().unwrap().to_string();
    // The event stream ends after the terminal status.
    let stream = s
        .http
        .get(s.url(&format!("/api/tasks/{id}/stream")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let _ = stream.text().await.expect("stream ends");
    let task = s.get(&format!("/api/tasks/{id}"), &key).await.expect(200);
    assert_eq!(task.body["status"], "failed", "{}", task.body);
    let attempts = task.body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{}", task.body);
    assert_eq!(attempts[0]["error"]["kind"], "destination_denied");
    assert_eq!(
        attempts[0]["error"]["message"],
        format!("outbound request to `localhost:{port}` denied: destination address not allowed")
    );

    // Nothing reached the upstream; the log names the host, never the key.
    let stats = mock.stats();
    assert_eq!((stats.connections_accepted, stats.received), (0, 0));
    let log = s.stderr();
    assert!(
        log.contains("destination address not allowed") && log.contains("localhost"),
        "{log}"
    );
    assert!(!log.contains(KEY), "{log}");
    assert!(!task.body.to_string().contains(KEY));
    drop(s);
}

dual_backend_tests!(
    restricted_base_urls_are_refused,
    manifests_asking_for_restricted_hosts_are_refused,
    names_resolving_to_loopback_are_refused_when_connecting,
);
