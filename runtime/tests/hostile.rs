//! The hostile corpus: each plugin is stopped with its own typed error
//! while well-behaved plugins called at the same time keep succeeding.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use vel_runtime::types::{Plan, Preference, RouteError, TaskType};
use vel_runtime::{
    CallResult, Limit, LoadError, PluginError, PluginKind, Profile, ProviderCall, Runtime,
    RuntimeConfig,
};

/// Runs `hostile` while two well-behaved plugins are called repeatedly on
/// the same runtime, and checks every one of those calls succeeded.
async fn alongside_neighbours<T>(hostile: impl Future<Output = T>) -> T {
    let rt = runtime();
    let router = builtin("default-router").await;
    let cond = builtin("text-match").await;
    let (task, candidates) = (task(TaskType::Light, Preference::Balanced), candidates());
    let input = condition_input("all good", "{}", r#"{"mode":"contains","pattern":"good"}"#);
    let neighbours = async {
        let mut ok = 0;
        for _ in 0..25 {
            let (plan, outcome) = tokio::join!(
                rt.route(
                    &router,
                    rt.limits(PluginKind::Router, Profile::Platform),
                    &task,
                    &candidates,
                ),
                rt.evaluate(
                    &cond,
                    rt.limits(PluginKind::Condition, Profile::Platform),
                    &input,
                ),
            );
            assert_eq!(first(&plan.result.unwrap().unwrap()), "openai/gpt-4o-mini");
            assert!(outcome.result.unwrap().unwrap().matched);
            ok += 1;
            tokio::task::yield_now().await;
        }
        ok
    };
    let (result, ok) = tokio::join!(hostile, neighbours);
    assert_eq!(ok, 25);
    result
}

fn error_of<T: std::fmt::Debug>(call: CallResult<T>) -> PluginError {
    match call.result {
        Ok(value) => panic!("expected the sandbox to stop the call, got {value:?}"),
        Err(error) => error,
    }
}

async fn evaluate_hostile(name: &str, args: &str, limits: vel_runtime::Limits) -> PluginError {
    let plugin = hostile(name).await;
    let rt = runtime();
    let input = condition_input("hostile", "{}", args);
    error_of(alongside_neighbours(rt.evaluate(&plugin, &limits, &input)).await)
}

/// Routes with the `infinite-loop` router under `limits`, alongside
/// well-behaved neighbours.
async fn spin_alongside_neighbours(
    limits: &vel_runtime::Limits,
) -> CallResult<Result<Plan, RouteError>> {
    let plugin = hostile("infinite-loop").await;
    let task = task(TaskType::Light, Preference::Cost);
    alongside_neighbours(runtime().route(&plugin, limits, &task, &candidates())).await
}

fn condition_limits() -> vel_runtime::Limits {
    runtime()
        .limits(PluginKind::Condition, Profile::Platform)
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel_or_cpu_time() {
    let mut limits = runtime()
        .limits(PluginKind::Router, Profile::Tenant)
        .clone();
    let call = spin_alongside_neighbours(&limits).await;
    let fuel = limits.fuel.unwrap();
    assert_eq!(call.stats.fuel_consumed, Some(fuel));
    assert_eq!(
        error_of(call),
        PluginError::LimitExceeded {
            limit: Limit::Fuel,
            max: fuel
        }
    );

    // Without fuel metering, the CPU-time deadline stops it. The wall
    // time is far longer, so a loaded machine (the guest waiting for a
    // core) cannot make the wall clock run out first.
    limits.fuel = None;
    limits.cpu_time = Duration::from_millis(30);
    limits.wall_time = Duration::from_secs(30);
    let call = spin_alongside_neighbours(&limits).await;
    assert_eq!(
        error_of(call),
        PluginError::LimitExceeded {
            limit: Limit::CpuTime,
            max: 30
        }
    );
}

/// On one thread, a guest in a busy loop must give the thread up at the
/// epoch ticks: otherwise neither the wall-clock limit nor its neighbours
/// would run until the CPU-time limit stopped it.
#[tokio::test(flavor = "current_thread")]
async fn a_busy_plugin_gives_its_thread_up() {
    let mut limits = runtime()
        .limits(PluginKind::Router, Profile::Tenant)
        .clone();
    limits.fuel = None;
    limits.cpu_time = Duration::from_secs(5);
    limits.wall_time = Duration::from_millis(200);
    let call = spin_alongside_neighbours(&limits).await;
    assert_eq!(
        error_of(call),
        PluginError::LimitExceeded {
            limit: Limit::WallTime,
            max: 200
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_stops_at_the_memory_limit() {
    let limits = condition_limits();
    let error = evaluate_hostile("memory-hog", "{}", limits.clone()).await;
    assert_eq!(
        error,
        PluginError::LimitExceeded {
            limit: Limit::Memory,
            max: limits.memory_bytes
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_overflows_the_stack() {
    let error = evaluate_hostile("deep-recursion", "{}", condition_limits()).await;
    assert_eq!(
        error,
        PluginError::LimitExceeded {
            limit: Limit::Stack,
            max: runtime().config().max_wasm_stack as u64
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_reported_with_its_message() {
    let rt = runtime();
    let plugin = hostile("panic").await;
    let call = alongside_neighbours(rt.route(
        &plugin,
        rt.limits(PluginKind::Router, Profile::Platform),
        &task(TaskType::Light, Preference::Cost),
        &candidates(),
    ))
    .await;
    match error_of(call) {
        PluginError::Panic { message } => {
            assert!(
                message.contains("hostile router gave up on task task-1"),
                "{message}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_reported_as_a_trap() {
    match evaluate_hostile("trap", "{}", condition_limits()).await {
        PluginError::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused() {
    let limits = condition_limits();
    let error = evaluate_hostile("oversized-output", "{}", limits.clone()).await;
    assert_eq!(
        error,
        PluginError::LimitExceeded {
            limit: Limit::OutputSize,
            max: limits.max_output_bytes
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_logging_hits_the_log_limit_through_log_and_stdout() {
    let limits = condition_limits();
    for args in [r#"{"via":"log"}"#, r#"{"via":"stdout"}"#] {
        let error = evaluate_hostile("log-flood", args, limits.clone()).await;
        assert_eq!(
            error,
            PluginError::LimitExceeded {
                limit: Limit::LogVolume,
                max: limits.max_log_bytes
            },
            "{args}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_plugin_is_stopped_at_the_wall_clock_limit() {
    let mut limits = condition_limits();
    limits.wall_time = Duration::from_millis(100);
    let error = evaluate_hostile("slow", "{}", limits).await;
    assert_eq!(
        error,
        PluginError::LimitExceeded {
            limit: Limit::WallTime,
            max: 100
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_environment_and_arguments_are_not_there() {
    // Set something the guest must not see.
    let rt = runtime();
    let plugin = hostile("snoop").await;
    let input = condition_input("", "{}", "{}");
    let call = alongside_neighbours(rt.evaluate(&plugin, &condition_limits(), &input)).await;
    let outcome = call.result.unwrap().unwrap();
    assert!(
        !outcome.matched,
        "the guest got at something: {}",
        outcome.explanation
    );
    for seen in [
        "read /etc/passwd: denied",
        "write: denied",
        "environment: empty",
        "arguments: empty",
    ] {
        assert!(
            outcome.explanation.contains(seen),
            "{}",
            outcome.explanation
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_calling_a_host_not_allowed_is_denied() {
    let rt = runtime();
    let plugin = hostile("outbound").await;
    let call = ProviderCall {
        settings: vec![("base-url".into(), "http://127.0.0.1:9".into())],
        allowed_hosts: vec!["api.openai.com".into()],
        allow_base_url_host: true,
        ..ProviderCall::default()
    };
    let request = completion_request("exfiltrate");
    let result = alongside_neighbours(rt.complete(
        &plugin,
        rt.limits(PluginKind::Provider, Profile::Tenant),
        call,
        &request,
    ))
    .await;
    assert_eq!(
        error_of(result),
        PluginError::HttpRequestDenied {
            host: "evil.example:80".into()
        }
    );
}

#[tokio::test]
async fn a_router_importing_http_is_refused_at_load() {
    let err = runtime()
        .load(&hostile_bytes("router-http"))
        .await
        .expect_err("routers may not import wasi:http");
    match &err {
        LoadError::ForbiddenImport { import, kind } => {
            assert!(import.starts_with("wasi:http/"), "{err}");
            assert_eq!(*kind, PluginKind::Router);
        }
        other => panic!("expected a forbidden import, got {other}"),
    }
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused() {
    let rt = runtime();
    assert!(matches!(rt.load(b"hello").await, Err(LoadError::NotWasm)));
    let mut truncated = hostile_bytes("trap");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.load(&truncated).await,
        Err(LoadError::Malformed(_))
    ));
}

/// `wasi:http` `fields` live in host memory, outside the sandbox: 20,000 of
/// them holding 120 KB each would be 2.4 GB. They count against the call's
/// memory limit, and its stats say how much the host held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_a_guest_makes_the_host_allocate_counts_against_its_limit() {
    assert!(
        vel_runtime::host_memory_accounted(),
        "the test binary's allocator must be vel_runtime::Accounted"
    );
    let rt = runtime();
    let plugin = hostile("host-memory").await;
    let limits = rt.limits(PluginKind::Provider, Profile::Tenant).clone();
    let call = alongside_neighbours(rt.complete(
        &plugin,
        &limits,
        ProviderCall::default(),
        &completion_request("fill"),
    ))
    .await;
    let stats = call.stats.clone();
    assert_eq!(
        error_of(call),
        PluginError::LimitExceeded {
            limit: Limit::Memory,
            max: limits.memory_bytes
        }
    );
    // Stopped within one header value of the limit.
    assert!(
        stats.peak_host_memory_bytes > limits.memory_bytes / 2,
        "{stats:?}"
    );
    assert!(
        stats.peak_memory_bytes < limits.memory_bytes + 2 * 1024 * 1024,
        "{stats:?}"
    );
}

/// Empty deltas cost no output bytes, but each would be a chunk on a
/// client's stream: their number is bounded, and none reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_empty_deltas_is_stopped_at_the_delta_limit() {
    let rt = runtime();
    let plugin = hostile("empty-deltas").await;
    let mut limits = rt.limits(PluginKind::Provider, Profile::Tenant).clone();
    limits.wall_time = Duration::from_secs(20);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let call = ProviderCall {
        deltas: Some(tx),
        ..ProviderCall::default()
    };
    let result =
        alongside_neighbours(rt.complete(&plugin, &limits, call, &completion_request("flood")))
            .await;
    assert_eq!(
        error_of(result),
        PluginError::LimitExceeded {
            limit: Limit::Deltas,
            max: limits.max_deltas
        }
    );
    assert!(rx.try_recv().is_err(), "an empty delta reached the client");
}

/// What a guest logs stays on its own line, tagged with plugin and call:
/// newlines and escape sequences cannot forge a server log record.
#[tokio::test(flavor = "current_thread")]
async fn guest_logs_cannot_forge_server_log_lines() {
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let forged = "done\nERROR vel::auth: admin password reset\r\x1b[2Kok";
    let rt = runtime();
    let plugin = hostile("log-forge").await;
    let input = condition_input(forged, "{}", "{}");
    let call = rt.evaluate(&plugin, &condition_limits(), &input).await;
    assert!(call.result.unwrap().unwrap().matched);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // Every line is one record, as the subscriber wrote it: it starts with
    // its timestamp, whatever the guest put in its text.
    assert!(log.lines().all(|l| l.starts_with("20")), "{log}");
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin password reset"))
        .collect();
    assert!(!forged.is_empty(), "{log}");
    for line in &forged {
        assert!(
            line.contains(" vel_plugin: ") || line.contains(" vel_plugin::stdout: "),
            "not tagged as the guest's: {line}"
        );
        assert!(line.contains("plugin=\"hostile-log-forge\""), "{line}");
        assert!(line.contains("call="), "{line}");
        assert!(!line.contains('\x1b') && !line.contains('\r'), "{line}");
    }
    // Through the log import, the whole text is one line, escaped.
    assert!(
        log.contains(r"done\nERROR vel::auth: admin password reset\r\u{1b}[2Kok"),
        "{log}"
    );
}

/// An exit is reported with the status the guest gave (`exit-with-code`;
/// Rust's `std::process::exit` on wasip2 can only say success or failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_is_reported_with_its_status() {
    match evaluate_hostile("exit-code", "{}", condition_limits()).await {
        PluginError::Trap { message } => {
            assert!(message.contains("exited with status 7"), "{message}")
        }
        other => panic!("expected the exit as a trap, got {other:?}"),
    }
}

/// A plugin whose `info()` takes longer than the runtime's `info_time`
/// is refused at load once that time is up, not after the kind's
/// wall-clock limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_info_is_slow_is_refused_at_load_within_info_time() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 8,
        info_time: Duration::from_millis(200),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let err = alongside_neighbours(rt.load(&hostile_bytes("slow-info")))
        .await
        .expect_err("info() takes a second");
    assert!(
        matches!(
            err,
            LoadError::Info(PluginError::LimitExceeded {
                limit: Limit::WallTime,
                max: 200
            })
        ),
        "{err}"
    );
}
