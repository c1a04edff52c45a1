//! Builds the test-only plugin crates under `tests/plugins/` into
//! components, so the registry's end-to-end tests can upload them to a
//! running server, and writes the manifests that go with them.
//!
//! The crates are compiled with the same target, profile and target
//! directory (`<target>/wasm-plugins`) as `plugins/artifacts/build.rs`
//! compiles the built-ins, so `wit-bindgen` is already built and only the
//! fixture itself compiles (well under a second). Building a crate with and
//! without a feature writes the same output file, so builds are serialised
//! (a mutex inside this process, a file lock across processes) and the
//! bytes are read right after each build; every (package, features) variant
//! is built once per test binary and cached.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Package of the `shout` provider fixture (`tests/plugins/shout-provider`):
/// version 1.0.0, or 2.0.0 with the `v2` feature.
pub(crate) const SHOUT_PROVIDER: &str = "vel-fixture-shout-provider";
/// Package of the `flip-router` fixture (`tests/plugins/flip-router`):
/// version 1.0.0 (providers ascending), or 2.0.0 (descending) with `v2`.
pub(crate) const FLIP_ROUTER: &str = "vel-fixture-flip-router";

/// The target guests are compiled for (as in `plugins/artifacts/build.rs`).
const WASM_TARGET: &str = "wasm32-wasip2";
/// The Cargo profile guests are compiled with (as in `plugins/artifacts/build.rs`).
const WASM_PROFILE: &str = "wasm";

/// A build variant: package and sorted, deduplicated features.
type Variant = (String, Vec<String>);

/// Components already built by this process.
fn cache() -> &'static Mutex<HashMap<Variant, Vec<u8>>> {
    static CACHE: OnceLock<Mutex<HashMap<Variant, Vec<u8>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Held for the whole of a build, so two variants never overwrite each
/// other's output file between building and reading.
static BUILD: Mutex<()> = Mutex::new(());

/// The workspace root: the `api` test binary belongs to the `host` package.
pub(crate) fn workspace_root() -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    host.parent()
        .expect("the host package has a parent directory")
        .to_path_buf()
}

/// The target directory the guests are built in: `<target>/wasm-plugins`,
/// where `<target>` is `CARGO_TARGET_DIR` (relative to the workspace root)
/// or `<workspace>/target`, exactly as `plugins/artifacts/build.rs` picks it.
pub(crate) fn wasm_target_dir() -> PathBuf {
    let workspace = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
    .join("wasm-plugins")
}

/// The component bytes of `package` (a workspace member such as
/// [`SHOUT_PROVIDER`]) built with `features`, compiled on first use.
/// Panics with cargo's output when the build fails.
pub(crate) fn build_guest(package: &str, features: &[&str]) -> Vec<u8> {
    let mut wanted: Vec<String> = features.iter().map(|f| f.to_string()).collect();
    wanted.sort();
    wanted.dedup();
    let variant = (package.to_string(), wanted);

    // A panicking build poisons the locks; later callers still get a clean
    // attempt (and their own panic) rather than a PoisonError.
    let _build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bytes) = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&variant)
    {
        return bytes.clone();
    }
    let bytes = compile(&variant.0, &variant.1);
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(variant, bytes.clone());
    bytes
}

/// Runs `cargo build` for one variant and reads its component while other
/// processes (nextest runs each test in its own) are kept out by a lock file.
fn compile(package: &str, features: &[String]) -> Vec<u8> {
    let target_dir = wasm_target_dir();
    fs::create_dir_all(&target_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", target_dir.display()));
    let lock_path = target_dir.join("vel-test-guests.lock");
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--target", WASM_TARGET, "--profile", WASM_PROFILE])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["-p", package]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // Same clean environment as the build script's nested build, so both
    // share compiled dependencies (flags and wrappers are for the host).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let drop = matches!(
            key.as_ref(),
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "CARGO_BUILD_RUSTFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_BUILD_DIR"
        ) || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("__CARGO");
        if drop {
            cmd.env_remove(key.as_ref());
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cargo:?}: {e}"));
    if !output.status.success() {
        panic!(
            "building {package} (features {features:?}) failed ({}): {cmd:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let file = target_dir
        .join(WASM_TARGET)
        .join(WASM_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_")));
    let bytes = fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    drop(lock);
    bytes
}

/// A manifest (`vel-plugin.toml` text) with `name`, `version`, `kind` and,
/// unless `extra_toml` sets one, a description; `extra_toml` is appended
/// as is (more top-level keys first, then tables such as `[outbound]`,
/// `[limits]` or `[config_schema]`).
pub(crate) fn manifest(name: &str, version: &str, kind: &str, extra_toml: &str) -> String {
    let mut text = format!(
        "name = {}\nversion = {}\nkind = {}\n",
        toml_string(name),
        toml_string(version),
        toml_string(kind)
    );
    if !sets_description(extra_toml) {
        text.push_str(&format!(
            "description = {}\n",
            toml_string(&format!("Test fixture {name} {version}"))
        ));
    }
    if !extra_toml.is_empty() {
        text.push_str(extra_toml);
        if !extra_toml.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

/// Whether `toml` sets the top-level `description` key (before any table).
fn sets_description(toml: &str) -> bool {
    toml.lines()
        .map(str::trim_start)
        .take_while(|line| !line.starts_with('['))
        .any(|line| {
            line.strip_prefix("description")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
