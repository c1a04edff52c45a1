//! Loading components that are not accepted yet (uploads): refused for
//! their world, imports or code size before anything compiles them, bounded
//! by the compile slots and timeout, and never written to the compile cache
//! until the caller commits them.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use vel_runtime::types::{Preference, TaskType};
use vel_runtime::{
    CodeLimits, CompileConfig, LoadError, PluginKind, Profile, Runtime, RuntimeConfig, SlotsBusy,
    StageRequest,
};

/// A runtime of its own with its compile cache in a fresh directory.
fn runtime_in(test: &str, compile: CompileConfig) -> (Runtime, PathBuf) {
    let dir = empty_cache_dir(test);
    let config = RuntimeConfig {
        cache_dir: Some(dir.clone()),
        max_instances: 16,
        compile,
        ..RuntimeConfig::default()
    };
    (Runtime::new(config).expect("runtime starts"), dir)
}

/// An upload of `kind` by the tenant `org-a`, waiting for no slot.
fn upload(kind: PluginKind) -> StageRequest<'static> {
    StageRequest {
        kind,
        tenant: Some("org-a"),
        wait: Duration::ZERO,
        class: None,
    }
}

fn builtin_bytes(name: &str) -> &'static [u8] {
    vel_plugin_artifacts::builtin(name).unwrap().bytes
}

#[track_caller]
fn assert_empty(dir: &Path) {
    assert_eq!(files_in(dir), Vec::<String>::new(), "nothing was compiled");
}

#[tokio::test]
async fn a_component_of_another_world_is_refused_before_compiling() {
    let (rt, dir) = runtime_in("wrong-world", CompileConfig::default());
    let wasm = hostile_bytes("wrong-world");
    match rt.stage(&wasm, upload(PluginKind::Router)).await {
        Err(LoadError::UnknownWorld { exports }) => {
            assert!(exports.contains("hostile:elsewhere/mining"), "{exports}")
        }
        other => panic!("expected an unknown world, got {other:?}"),
    }
    // Accepted components are checked the same way.
    assert!(matches!(
        rt.load(&wasm).await,
        Err(LoadError::UnknownWorld { .. })
    ));
    assert!(matches!(
        rt.inspect(&wasm),
        Err(LoadError::UnknownWorld { .. })
    ));
    assert_empty(&dir);
    assert_eq!(rt.compile_slots().available(), rt.compile_slots().size());
}

#[tokio::test]
async fn an_impostor_of_the_router_world_is_refused_before_compiling() {
    let (rt, dir) = runtime_in("impostor", CompileConfig::default());
    let wasm = hostile_bytes("impostor");
    match rt.stage(&wasm, upload(PluginKind::Router)).await {
        Err(LoadError::WrongExports {
            interface,
            kind,
            message,
        }) => {
            assert_eq!(interface, "vel:plugins/routing@0.1.0");
            assert_eq!(kind, PluginKind::Router);
            assert!(message.contains("info"), "{message}");
        }
        other => panic!("expected the router world's functions missing, got {other:?}"),
    }
    assert!(matches!(
        rt.load(&wasm).await,
        Err(LoadError::WrongExports { .. })
    ));
    assert_empty(&dir);
}

#[tokio::test]
async fn forbidden_imports_and_the_wrong_kind_are_refused_before_compiling() {
    let (rt, dir) = runtime_in("imports", CompileConfig::default());
    let wasm = hostile_bytes("router-http");
    for result in [
        rt.stage(&wasm, upload(PluginKind::Router))
            .await
            .map(|_| ()),
        rt.load(&wasm).await.map(|_| ()),
    ] {
        match result {
            Err(LoadError::ForbiddenImport { import, kind }) => {
                assert!(import.starts_with("wasi:http/"), "{import}");
                assert_eq!(kind, PluginKind::Router);
            }
            other => panic!("expected a forbidden import, got {other:?}"),
        }
    }
    match rt
        .stage(
            builtin_bytes("default-router"),
            upload(PluginKind::Condition),
        )
        .await
    {
        Err(LoadError::KindMismatch { expected, actual }) => {
            assert_eq!(expected, PluginKind::Condition);
            assert_eq!(actual, PluginKind::Router);
        }
        other => panic!("expected a kind mismatch, got {other:?}"),
    }
    assert_empty(&dir);
}

#[tokio::test]
async fn code_over_the_limits_is_refused_before_compiling() {
    let limits = CodeLimits {
        max_code_bytes: 256 * 1024,
        max_function_bytes: 64 * 1024,
    };
    let (rt, dir) = runtime_in(
        "code-limits",
        CompileConfig {
            code: limits,
            ..CompileConfig::default()
        },
    );
    let one_big_function = component_with_code(1, 100 * 1024);
    match rt
        .stage(&one_big_function, upload(PluginKind::Router))
        .await
    {
        Err(LoadError::FunctionTooLarge { bytes, max }) => {
            assert!(bytes > 99 * 1024, "{bytes}");
            assert_eq!(max, limits.max_function_bytes);
        }
        other => panic!("expected a function over the limit, got {other:?}"),
    }
    let many_functions = component_with_code(8, 60 * 1024);
    match rt.stage(&many_functions, upload(PluginKind::Router)).await {
        Err(LoadError::CodeTooLarge { max, .. }) => assert_eq!(max, limits.max_code_bytes),
        other => panic!("expected code over the limit, got {other:?}"),
    }
    let inspection = rt
        .inspect(builtin_bytes("default-router"))
        .expect("a built-in is within the default limits");
    assert_eq!(inspection.kind, PluginKind::Router);
    assert!(inspection.functions > 0 && inspection.largest_function_bytes > 0);
    // Within the limits, the same kind of component is refused for its world.
    assert!(matches!(
        rt.inspect(&component_with_code(2, 1024)),
        Err(LoadError::UnknownWorld { .. })
    ));
    assert_empty(&dir);
}

#[tokio::test]
async fn malformed_components_are_refused_before_compiling() {
    let (rt, dir) = runtime_in("malformed", CompileConfig::default());
    let mut truncated = builtin_bytes("text-match").to_vec();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.stage(&truncated, upload(PluginKind::Condition)).await,
        Err(LoadError::Malformed(_))
    ));
    assert!(matches!(
        rt.stage(b"\0asm\x01\0\0\0", upload(PluginKind::Condition))
            .await,
        Err(LoadError::CoreModule)
    ));
    assert_empty(&dir);
}

#[tokio::test]
async fn a_staged_component_enters_the_cache_only_when_committed() {
    let (rt, dir) = runtime_in("commit", CompileConfig::default());
    let wasm = builtin_bytes("default-router");

    let staged = rt
        .stage(wasm, upload(PluginKind::Router))
        .await
        .expect("compiles");
    assert_eq!(staged.plugin().name(), "default-router");
    assert!(!staged.plugin().loaded_from_cache());
    drop(staged);
    assert_empty(&dir);

    let staged = rt
        .stage(wasm, upload(PluginKind::Router))
        .await
        .expect("compiles");
    assert_empty(&dir);
    let plugin = staged.commit().await;
    assert_eq!(files_in(&dir).len(), 1, "one compiled file once committed");
    // The committed plugin runs, from the code mapped from that file.
    let task = task(TaskType::Light, Preference::Cost);
    let planned = rt
        .route(
            &plugin,
            rt.limits(PluginKind::Router, Profile::Tenant),
            &task,
            &candidates(),
        )
        .await;
    assert!(planned.result.expect("the call runs").is_ok());
    if cfg!(target_os = "linux") {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            maps.lines().any(|l| l.contains(dir.to_str().unwrap())),
            "the committed code is mapped from the cache file"
        );
    }

    // The same bytes again come from the cache, and commit writes nothing new.
    let staged = rt
        .stage(wasm, upload(PluginKind::Router))
        .await
        .expect("loads");
    assert!(staged.plugin().loaded_from_cache());
    staged.commit().await;
    assert_eq!(files_in(&dir).len(), 1);
}

#[tokio::test]
async fn a_tenant_compiles_one_component_at_a_time() {
    let (rt, dir) = runtime_in("tenant-slot", CompileConfig::default());
    let held = rt
        .compile_slots()
        .acquire_within(Some("org-a"), Duration::ZERO)
        .await
        .expect("a free slot");
    let wasm = builtin_bytes("text-match");
    assert!(matches!(
        rt.stage(wasm, upload(PluginKind::Condition)).await,
        Err(LoadError::Busy(SlotsBusy::Tenant))
    ));
    let other_tenant = StageRequest {
        tenant: Some("org-b"),
        ..upload(PluginKind::Condition)
    };
    let staged = rt
        .stage(wasm, other_tenant)
        .await
        .expect("another tenant is not held up");
    assert_eq!(staged.plugin().name(), "text-match");
    drop((held, staged));
    assert_empty(&dir);
}

#[tokio::test]
async fn an_abandoned_compilation_keeps_its_slot_until_it_ends() {
    let (rt, dir) = runtime_in(
        "timeout",
        CompileConfig {
            slots: 1,
            timeout: Duration::ZERO,
            ..CompileConfig::default()
        },
    );
    match rt
        .stage(
            builtin_bytes("openai-compatible"),
            upload(PluginKind::Provider),
        )
        .await
    {
        Err(LoadError::CompileTimeout { limit_ms }) => assert_eq!(limit_ms, 0),
        other => panic!("expected the compilation to be abandoned, got {other:?}"),
    }
    // Cranelift cannot be stopped: the compilation still runs, in its slot
    // (and its tenant's), so neither another compilation nor the same
    // tenant's next one can start.
    assert_eq!(rt.compile_slots().available(), 0);
    assert!(matches!(
        rt.stage(builtin_bytes("text-match"), upload(PluginKind::Condition))
            .await,
        Err(LoadError::Busy(SlotsBusy::Tenant))
    ));
    // Its end frees the slot.
    let _slot = rt.compile_slots().acquire().await;
    assert_empty(&dir);
}
