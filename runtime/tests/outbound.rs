//! Outbound HTTP through the host's hook, against the mock upstream on
//! loopback: credentials are added by the host and never seen by the guest,
//! timeouts apply, dropping a call drops the upstream request, and
//! restricted addresses are refused unless the runtime allows them.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::*;
use vel_mock_upstream::{Fault, MockUpstream};
use vel_runtime::types::{CompletionRequest, Message, ProviderError, Role, TaskType};
use vel_runtime::{
    OutboundConfig, PluginError, PluginKind, Profile, ProviderCall, Runtime, RuntimeConfig, Secret,
};

const SECRET: &str = "sk-vel-test-9f8e7d6c5b4a";

fn call_to(mock: &MockUpstream) -> ProviderCall {
    ProviderCall {
        settings: vec![("base-url".into(), mock.base_url())],
        secret: Some(Secret::new(SECRET)),
        allow_base_url_host: true,
        ..ProviderCall::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_adds_the_credential_and_the_guest_never_sees_it() {
    let mock = MockUpstream::start().await;
    mock.require_api_key(Some(SECRET));
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let seen = rt
        .complete(
            &plugin,
            limits,
            call_to(&mock),
            &completion_request("snoop"),
        )
        .await
        .result
        .unwrap()
        .unwrap()
        .text;
    // The upstream accepted the request: the credential was there…
    assert!(seen.contains("status 200"), "{seen}");
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].bearer_token(), Some(SECRET));
    // …yet nothing the guest could read contains it.
    assert!(
        seen.contains(&format!("setting base-url={}", mock.base_url())),
        "{seen}"
    );
    assert!(!seen.contains(SECRET), "the guest saw the secret:\n{seen}");
    assert!(!seen.contains("sk-vel"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_allowed_upstream_and_others_are_denied() {
    let mock = MockUpstream::start().await;
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let answer = rt
        .complete(
            &plugin,
            limits,
            call_to(&mock),
            &completion_request("gpt-4o"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(answer.text.starts_with("200 "), "{}", answer.text);
    assert!(answer.text.contains("echo: hi"), "{}", answer.text);

    // Without the base URL's host allowed, the same call is refused.
    let call = ProviderCall {
        allow_base_url_host: false,
        ..call_to(&mock)
    };
    let denied = rt
        .complete(&plugin, limits, call, &completion_request("gpt-4o"))
        .await;
    assert_eq!(
        denied.result.unwrap_err(),
        PluginError::HttpRequestDenied {
            host: mock.base_url().trim_start_matches("http://").to_string()
        }
    );
    assert_eq!(
        mock.stats().received,
        1,
        "the denied request never left the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_drops_the_upstream_request() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    let plugin = hostile("outbound").await;
    let call = call_to(&mock);
    // Cancel the way the orchestrator does: abort the task running the call.
    let task = tokio::spawn(async move {
        let rt = runtime();
        let limits = rt.limits(PluginKind::Provider, Profile::Platform);
        rt.complete(&plugin, limits, call, &completion_request("gpt-4o"))
            .await
    });
    mock.wait_for_requests(1).await;
    assert_eq!(mock.stats().dropped, 0);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The call is gone: the instance and its upstream connection with it.
    let stats = mock.wait_for_dropped(1).await;
    assert_eq!((stats.dropped, stats.completed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out() {
    let mock = MockUpstream::start().await;
    mock.push(Fault::Hang);
    // A runtime of its own with a short first-byte timeout.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 8,
        outbound: OutboundConfig {
            connect_timeout: Duration::from_millis(200),
            first_byte_timeout: Duration::from_millis(200),
            allow_private: loopback(),
            ..OutboundConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = rt.load(&hostile_bytes("outbound")).await.unwrap();
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let result = rt
        .complete(
            &plugin,
            limits,
            call_to(&mock),
            &completion_request("gpt-4o"),
        )
        .await
        .result
        .unwrap();
    assert_eq!(result, Err(ProviderError::Timeout));
    mock.wait_for_dropped(1).await;
}

/// The built-in `openai-compatible` plugin loaded into `rt`.
async fn openai_compatible(rt: &Runtime) -> vel_runtime::Plugin {
    let bytes = vel_plugin_artifacts::builtin("openai-compatible")
        .expect("built-in openai-compatible")
        .bytes;
    rt.load(bytes).await.expect("loads")
}

/// A real provider call through `plugin` to `base_url` (`…/v1` appended).
async fn chat(
    rt: &Runtime,
    plugin: &vel_runtime::Plugin,
    base_url: &str,
) -> Result<Result<vel_runtime::types::CompletionResponse, ProviderError>, PluginError> {
    let call = ProviderCall {
        settings: vec![
            ("base-url".into(), format!("{base_url}/v1")),
            ("timeout-ms".into(), "5000".into()),
        ],
        secret: Some(Secret::new(SECRET)),
        allow_base_url_host: true,
        ..ProviderCall::default()
    };
    let request = CompletionRequest {
        messages: vec![Message::text(Role::User, "hi")],
        ..completion_request("gpt-4o-mini")
    };
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    rt.complete(plugin, limits, call, &request).await.result
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_destinations_are_refused_after_resolution() {
    let mock = MockUpstream::start().await;
    let port = mock.addr().port();
    // No exceptions: the server's default.
    let strict = runtime_with(OutboundConfig::default());
    let plugin = openai_compatible(&strict).await;
    // Literals (checked before connecting) and names and spellings that
    // getaddrinfo resolves to loopback (checked after resolution).
    for host in [
        "127.0.0.1",
        "localhost",
        "LocalHost",
        "2130706433",
        "127.1",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
    ] {
        let result = chat(&strict, &plugin, &format!("http://{host}:{port}")).await;
        let expected = format!("{}:{port}", host.to_ascii_lowercase());
        assert_eq!(
            result.unwrap_err(),
            PluginError::DestinationDenied { host: expected },
            "{host}"
        );
    }
    assert_eq!(
        mock.stats().connections_accepted,
        0,
        "no connection was made"
    );

    // An open and a closed port give the same error: no port-scan oracle.
    let closed = closed_port();
    let open = chat(&strict, &plugin, &format!("http://localhost:{port}")).await;
    let shut = chat(&strict, &plugin, &format!("http://localhost:{closed}")).await;
    let text = |r: Result<_, PluginError>, p: u16| {
        r.unwrap_err().to_string().replace(&p.to_string(), "PORT")
    };
    let open = text(open, port);
    assert_eq!(open, text(shut, closed));
    assert_eq!(
        open,
        "outbound request to `localhost:PORT` denied: destination address not allowed"
    );

    // With loopback allowed, the same calls reach the upstream.
    let allowed = runtime();
    let plugin = openai_compatible(allowed).await;
    for host in ["127.0.0.1", "localhost", "2130706433"] {
        let answer = chat(allowed, &plugin, &format!("http://{host}:{port}"))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"))
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(answer.text, "echo: hi", "{host}");
    }
    // Refused before connecting: the allowed runtime still refuses other ranges.
    let metadata = chat(allowed, &plugin, "http://169.254.169.254").await;
    assert_eq!(
        metadata.unwrap_err(),
        PluginError::DestinationDenied {
            host: "169.254.169.254:80".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_may_resolve_to_a_restricted_address() {
    let mock = MockUpstream::start().await;
    let port = mock.addr().port();
    let rt = runtime_with(OutboundConfig {
        allow_private: "localhost".parse().unwrap(),
        ..OutboundConfig::default()
    });
    let plugin = openai_compatible(&rt).await;
    let answer = chat(&rt, &plugin, &format!("http://localhost:{port}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.text, "echo: hi");
    // The name is allowed, not the address it resolves to.
    assert_eq!(
        chat(&rt, &plugin, &format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err(),
        PluginError::DestinationDenied {
            host: format!("127.0.0.1:{port}")
        }
    );
    assert_eq!(mock.stats().received, 1);
}

/// The credential goes to the base URL's origin only: a second approved
/// host (here another port on the same address) never receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_goes_only_to_the_base_url_origin() {
    let base = MockUpstream::start().await;
    let other = MockUpstream::start().await;
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let other_authority = other.base_url().trim_start_matches("http://").to_string();
    let mut call = call_to(&base);
    call.settings
        .push(("exfil-url".into(), format!("{}/steal", other.base_url())));
    call.allowed_hosts = vec![other_authority];
    let answer = rt
        .complete(&plugin, limits, call, &completion_request("exfiltrate"))
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(answer.text.starts_with("exfiltrated: "), "{}", answer.text);
    let reached = other.requests();
    assert_eq!(reached.len(), 1);
    assert_eq!(
        reached[0].headers.get("authorization"),
        None,
        "the key reached a host other than the base URL's"
    );
    assert!(!answer.text.contains(SECRET));

    // The base URL's origin still gets it.
    base.require_api_key(Some(SECRET));
    let ok = rt
        .complete(
            &plugin,
            limits,
            call_to(&base),
            &completion_request("gpt-4o"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(ok.text.starts_with("200 "), "{}", ok.text);
}

/// An approval names a host and a port; a bare host means the scheme's
/// default port only, not every service on that host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_bare_host_approves_only_its_default_port() {
    let mock = MockUpstream::start().await;
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Platform);
    let call = ProviderCall {
        allowed_hosts: vec!["127.0.0.1".into()],
        allow_base_url_host: false,
        ..call_to(&mock)
    };
    let denied = rt
        .complete(&plugin, limits, call, &completion_request("gpt-4o"))
        .await;
    assert_eq!(
        denied.result.unwrap_err(),
        PluginError::HttpRequestDenied {
            host: mock.base_url().trim_start_matches("http://").to_string()
        }
    );
    assert_eq!(mock.stats().received, 0);

    // Naming the port approves it.
    let call = ProviderCall {
        allowed_hosts: vec![mock.base_url().trim_start_matches("http://").to_string()],
        allow_base_url_host: false,
        ..call_to(&mock)
    };
    let answer = rt
        .complete(&plugin, limits, call, &completion_request("gpt-4o"))
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(answer.text.starts_with("200 "), "{}", answer.text);
}

/// A plugin version's calls beyond its `max_concurrency` are refused with
/// `Busy` before they take an instance; its place comes back when a call
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_a_plugins_share_of_the_pool_are_refused() {
    let mock = MockUpstream::start().await;
    mock.set_default(Fault::Hang);
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let mut limits = rt.limits(PluginKind::Provider, Profile::Tenant).clone();
    limits.max_concurrency = 2;
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let (plugin, limits, call) = (plugin.clone(), limits.clone(), call_to(&mock));
            tokio::spawn(async move {
                runtime()
                    .complete(&plugin, &limits, call, &completion_request("gpt-4o"))
                    .await
            })
        })
        .collect();
    mock.wait_for_in_flight(2).await;
    let refused = rt
        .complete(
            &plugin,
            &limits,
            call_to(&mock),
            &completion_request("gpt-4o"),
        )
        .await;
    assert_eq!(
        refused.result.unwrap_err(),
        PluginError::Busy {
            share: vel_runtime::BusyShare::Plugin,
            max: 2
        }
    );
    assert_eq!(mock.stats().received, 2, "the refused call sent nothing");

    // Another plugin is not affected by this one's share.
    let router = builtin("default-router").await;
    let plan = rt
        .route(
            &router,
            rt.limits(PluginKind::Router, Profile::Platform),
            &task(TaskType::Light, vel_runtime::types::Preference::Cost),
            &candidates(),
        )
        .await;
    assert!(plan.result.is_ok());

    for call in &hanging {
        call.abort();
    }
    for call in hanging {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    mock.set_default(Fault::Ok);
    let answer = rt
        .complete(
            &plugin,
            &limits,
            call_to(&mock),
            &completion_request("gpt-4o"),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(answer.text.starts_with("200 "), "{}", answer.text);
}
