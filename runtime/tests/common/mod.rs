//! Shared by the runtime's test binaries: one `Runtime` per binary, plugins
//! loaded (and compiled) once, and sample inputs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use vel_runtime::types::{
    Candidate, CircuitState, CompletionRequest, ConditionInput, Features, Preference, Priority,
    ResponseFormat, TaskInfo, TaskType,
};
use vel_runtime::{AllowPrivate, OutboundConfig, Plugin, Runtime, RuntimeConfig};

/// As in the `vel` binary: host memory a call makes the host allocate is
/// charged to the call.
#[global_allocator]
static ALLOCATOR: vel_runtime::Accounted<std::alloc::System> =
    vel_runtime::Accounted(std::alloc::System);

/// The loopback ranges, which the mock upstream listens on.
pub(crate) fn loopback() -> AllowPrivate {
    "127.0.0.0/8,::1/128".parse().expect("valid ranges")
}

/// A runtime with these outbound settings. Compiled components are cached
/// under Cargo's per-target temporary directory, so a re-run does not
/// recompile them.
pub(crate) fn runtime_with(outbound: OutboundConfig) -> Runtime {
    let config = RuntimeConfig {
        cache_dir: Some(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vel-compile-cache"),
        ),
        outbound,
        ..RuntimeConfig::default()
    };
    Runtime::new(config).expect("runtime starts")
}

/// The binary's runtime; outbound requests may reach loopback (the mock
/// upstream).
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        runtime_with(OutboundConfig {
            allow_private: loopback(),
            ..OutboundConfig::default()
        })
    })
}

static LOADED: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();

async fn load_once(key: String, bytes: impl FnOnce() -> Vec<u8>) -> Plugin {
    let loaded = LOADED.get_or_init(Default::default);
    if let Some(plugin) = loaded.lock().unwrap().get(&key) {
        return plugin.clone();
    }
    let plugin = runtime()
        .load(&bytes())
        .await
        .unwrap_or_else(|e| panic!("loading {key}: {e}"));
    loaded.lock().unwrap().insert(key, plugin.clone());
    plugin
}

/// A built-in plugin by manifest name.
pub(crate) async fn builtin(name: &str) -> Plugin {
    load_once(format!("builtin:{name}"), || {
        vel_plugin_artifacts::builtin(name)
            .unwrap_or_else(|| panic!("no built-in plugin {name}"))
            .bytes
            .to_vec()
    })
    .await
}

/// The bytes of a hostile component by directory name.
pub(crate) fn hostile_bytes(name: &str) -> Vec<u8> {
    let path = vel_plugin_artifacts::hostile_path(name)
        .unwrap_or_else(|| panic!("no hostile crate {name}"));
    std::fs::read(path).unwrap()
}

/// A hostile plugin by directory name.
pub(crate) async fn hostile(name: &str) -> Plugin {
    load_once(format!("hostile:{name}"), || hostile_bytes(name)).await
}

/// A task of the given type with the given preference.
pub(crate) fn task(task_type: TaskType, prefer: Preference) -> TaskInfo {
    TaskInfo {
        id: "task-1".to_string(),
        organization_id: "org-1".to_string(),
        task_type,
        priority: Priority::Medium,
        requested_model: None,
        estimated_input_tokens: 500,
        max_tokens: Some(500),
        prefer,
        metadata: "{}".to_string(),
        required_features: Features::empty(),
    }
}

/// One candidate.
pub(crate) fn candidate(
    provider: &str,
    model: &str,
    input_price: f64,
    output_price: f64,
    p50: u32,
    good_for: Vec<TaskType>,
) -> Candidate {
    Candidate {
        provider: provider.to_string(),
        model: model.to_string(),
        input_price_per_1k: input_price,
        output_price_per_1k: output_price,
        good_for,
        circuit: CircuitState::Closed,
        p50_latency_ms: p50,
        p95_latency_ms: p50 * 3,
        error_rate: 0.01,
        remaining_budget: None,
        features: Features::empty(),
    }
}

/// The seeds' four providers with realistic prices and latencies.
pub(crate) fn candidates() -> Vec<Candidate> {
    vec![
        candidate(
            "openai",
            "gpt-4o",
            0.0025,
            0.01,
            900,
            vec![TaskType::Reasoning],
        ),
        candidate(
            "openai",
            "gpt-4o-mini",
            0.00015,
            0.0006,
            400,
            vec![TaskType::Light],
        ),
        candidate(
            "groq",
            "llama-3.1-70b-versatile",
            0.00059,
            0.00079,
            250,
            vec![TaskType::CodeGeneration],
        ),
        candidate(
            "perplexity",
            "sonar",
            0.001,
            0.001,
            1200,
            vec![TaskType::Research],
        ),
    ]
}

/// A condition input.
pub(crate) fn condition_input(output: &str, state: &str, args: &str) -> ConditionInput {
    ConditionInput {
        output: output.to_string(),
        state: state.to_string(),
        args: args.to_string(),
    }
}

/// The first attempt's `provider/model`.
pub(crate) fn first(plan: &vel_runtime::types::Plan) -> String {
    let a = &plan.attempts[0];
    format!("{}/{}", a.provider, a.model)
}

/// LEB128 of `n` (unsigned), as the binary format encodes sizes and counts.
fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, its size, its contents.
fn section(id: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(leb(contents.len()));
    out.extend_from_slice(contents);
    out
}

/// A component that exports nothing and holds one core module with
/// `functions` functions of type `() -> ()`, each a body of about
/// `body_bytes` bytes that adds one to a local over and over: the kind of
/// code that makes Cranelift's time and memory grow with the body.
pub(crate) fn component_with_code(functions: usize, body_bytes: usize) -> Vec<u8> {
    // local.get 0, i32.const 1, i32.add, local.set 0
    const STEP: [u8; 7] = [0x20, 0x00, 0x41, 0x01, 0x6a, 0x21, 0x00];
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(1, &[1, 0x60, 0, 0]));
    let mut declared = leb(functions);
    declared.extend(std::iter::repeat_n(0u8, functions));
    module.extend(section(3, &declared));
    let mut code = leb(functions);
    for _ in 0..functions {
        let mut body = vec![1, 1, 0x7f]; // one group of locals: one i32
        while body.len() + STEP.len() < body_bytes {
            body.extend_from_slice(&STEP);
        }
        body.push(0x0b);
        code.extend(leb(body.len()));
        code.extend(body);
    }
    module.extend(section(10, &code));
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.extend(section(1, &module));
    component
}

/// A fresh, empty directory for one test's compile cache.
pub(crate) fn empty_cache_dir(test: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vel-cache-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The files in a directory, by name.
pub(crate) fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A completion request for `model` with no messages and defaults elsewhere.
pub(crate) fn completion_request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        messages: vec![],
        temperature: None,
        max_tokens: None,
        stop: vec![],
        task_type: TaskType::General,
        metadata: "{}".into(),
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: ResponseFormat::Text,
        seed: None,
        logprobs: false,
        top_logprobs: None,
    }
}
