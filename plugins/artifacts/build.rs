//! Compiles vel's guest crates into `wasm32-wasip2` components.
//!
//! Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`:
//!
//! 1. discover the guest crates: `plugins/*/` (each with a `vel-plugin.toml`
//!    manifest and a `cdylib` library) and the test-only `plugins/hostile/*/`
//!    (a `cdylib`, no manifest needed);
//! 2. run ONE `cargo build --target wasm32-wasip2 --profile wasm -p …` for all
//!    of them, in a target directory of its own (`<target>/wasm-plugins`) that
//!    stays the same across dev, test and clippy builds so they share it;
//! 3. copy the components into `OUT_DIR` and generate `artifacts.rs`, which
//!    `src/lib.rs` includes: names, manifests, paths and bytes.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest is compiled for.
const WASM_TARGET: &str = "wasm32-wasip2";
/// The Cargo profile (root `Cargo.toml`) guests are compiled with.
const WASM_PROFILE: &str = "wasm";
/// The plugin kinds a manifest may declare (one per WIT world).
const KINDS: [&str; 4] = ["provider", "router", "condition", "tool"];

/// A guest crate to compile.
struct Guest {
    /// Cargo package name, e.g. `vel-plugin-mock`.
    package: String,
    /// Library target name: the `.wasm` file's stem.
    lib_name: String,
    /// The crate's directory.
    dir: PathBuf,
    /// What it is: a built-in plugin (with manifest) or a hostile test crate.
    role: Role,
}

/// Whether a guest ships as a plugin or only exists for tests.
enum Role {
    /// A built-in plugin and what its `vel-plugin.toml` says.
    Builtin {
        /// The plugin name from the manifest.
        name: String,
        /// The plugin kind from the manifest.
        kind: String,
        /// Path of `vel-plugin.toml`.
        manifest: PathBuf,
    },
    /// A test-only crate under `plugins/hostile/`, named by its directory.
    Hostile { dir_name: String },
}

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by exiting non-zero; say why first.
        eprintln!("error: vel-plugin-artifacts: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let plugins_dir = manifest_dir
        .parent()
        .ok_or("plugins/artifacts has no parent directory")?
        .to_path_buf();
    let workspace = plugins_dir
        .parent()
        .ok_or("plugins/ has no parent directory")?
        .to_path_buf();

    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let guests = workspace_members(&workspace, discover(&plugins_dir)?)?;
    for guest in &guests {
        println!("cargo:rerun-if-changed={}", guest.dir.display());
    }

    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
    .join("wasm-plugins");

    check_wasm_target()?;
    compile(&workspace, &target_dir, &guests)?;

    let built = target_dir.join(WASM_TARGET).join(WASM_PROFILE);
    let components = out_dir.join("components");
    fs::create_dir_all(&components).map_err(|e| format!("creating {components:?}: {e}"))?;
    let mut code = String::new();
    let mut builtins = Vec::new();
    let mut hostile = Vec::new();
    for guest in &guests {
        let file = format!("{}.wasm", guest.lib_name);
        let from = built.join(&file);
        let to = components.join(&file);
        fs::copy(&from, &to).map_err(|e| {
            format!(
                "copying the component of {} from {from:?}: {e}",
                guest.package
            )
        })?;
        match &guest.role {
            Role::Builtin {
                name,
                kind,
                manifest,
            } => builtins.push(format!(
                "    Builtin {{\n        name: {name:?},\n        kind: {kind:?},\n        \
                 manifest: include_str!({manifest:?}),\n        path: {to:?},\n        \
                 bytes: include_bytes!({to:?}),\n    }},\n",
                manifest = manifest.display().to_string(),
                to = to.display().to_string(),
            )),
            Role::Hostile { dir_name } => hostile.push(format!(
                "    ({dir_name:?}, {:?}),\n",
                to.display().to_string()
            )),
        }
    }
    code.push_str(
        "/// Every built-in plugin, compiled from `plugins/<name>/`, in name order.\n\
         pub static BUILTINS: &[Builtin] = &[\n",
    );
    code.extend(builtins);
    code.push_str("];\n\n");
    code.push_str(
        "/// The test-only hostile components from `plugins/hostile/<dir>/`:\n\
         /// (directory name, path of the component).\n\
         pub static HOSTILE: &[(&str, &str)] = &[\n",
    );
    code.extend(hostile);
    code.push_str("];\n");

    let generated = out_dir.join("artifacts.rs");
    fs::write(&generated, code).map_err(|e| format!("writing {generated:?}: {e}"))?;
    Ok(())
}

/// Finds the guest crates under `plugins/` and `plugins/hostile/`.
fn discover(plugins_dir: &Path) -> Result<Vec<Guest>, String> {
    let mut guests = BTreeMap::new();
    for dir in subdirs(plugins_dir)? {
        let dir_name = file_name(&dir);
        if dir_name == "artifacts" || dir_name == "hostile" {
            continue;
        }
        let manifest = dir.join("vel-plugin.toml");
        let Some(crate_info) = read_cargo_toml(&dir)? else {
            continue;
        };
        // Shared guest libraries (rlib, no manifest) are dependencies, not plugins.
        if !crate_info.cdylib || !manifest.is_file() {
            continue;
        }
        let (name, kind) = read_manifest(&manifest, &crate_info)?;
        guests.insert(
            crate_info.package.clone(),
            Guest {
                package: crate_info.package,
                lib_name: crate_info.lib_name,
                dir,
                role: Role::Builtin {
                    name,
                    kind,
                    manifest,
                },
            },
        );
    }

    let hostile_dir = plugins_dir.join("hostile");
    if hostile_dir.is_dir() {
        // New hostile crates are picked up without editing this script.
        println!("cargo:rerun-if-changed={}", hostile_dir.display());
        for dir in subdirs(&hostile_dir)? {
            let Some(crate_info) = read_cargo_toml(&dir)? else {
                continue;
            };
            if !crate_info.cdylib {
                continue;
            }
            guests.insert(
                crate_info.package.clone(),
                Guest {
                    package: crate_info.package,
                    lib_name: crate_info.lib_name,
                    role: Role::Hostile {
                        dir_name: file_name(&dir),
                    },
                    dir,
                },
            );
        }
    }

    let mut names = BTreeMap::new();
    for guest in guests.values() {
        if let Role::Builtin { name, .. } = &guest.role
            && let Some(other) = names.insert(name.clone(), guest.package.clone())
        {
            return Err(format!(
                "plugins {other} and {} both call themselves {name:?} in vel-plugin.toml",
                guest.package
            ));
        }
    }
    Ok(guests.into_values().collect())
}

/// Keeps only the guests that are workspace members (the nested build could
/// not name the others) and warns about the rest, so a crate being added does
/// not break everyone's build before its `members` line lands.
fn workspace_members(workspace: &Path, guests: Vec<Guest>) -> Result<Vec<Guest>, String> {
    let root = read_toml(&workspace.join("Cargo.toml"))?;
    let members: Vec<&str> = root
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .map(|m| m.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut kept = Vec::new();
    for guest in guests {
        let relative = guest
            .dir
            .strip_prefix(workspace)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let listed = members.iter().any(|m| match m.strip_suffix("/*") {
            Some(parent) => relative
                .rsplit_once('/')
                .is_some_and(|(dir, _)| dir == parent),
            None => *m == relative,
        });
        if listed {
            kept.push(guest);
        } else {
            println!(
                "cargo:warning={relative} ({}) is not a workspace member, so it was not built: \
                 add \"{relative}\" to `members` (not `default-members`) in the root Cargo.toml",
                guest.package
            );
        }
    }
    Ok(kept)
}

/// What the build needs from a guest's `Cargo.toml`.
struct CrateInfo {
    package: String,
    lib_name: String,
    version: Option<String>,
    cdylib: bool,
}

/// Reads `dir/Cargo.toml`; `None` when the directory holds no crate.
fn read_cargo_toml(dir: &Path) -> Result<Option<CrateInfo>, String> {
    let path = dir.join("Cargo.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let table = read_toml(&path)?;
    let package = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{path:?} has no package.name"))?
        .to_string();
    // `version.workspace = true` is a table; only a literal version is checked.
    let version = table
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let lib = table.get("lib");
    let lib_name = lib
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| package.replace('-', "_"));
    let cdylib = lib
        .and_then(|l| l.get("crate-type"))
        .and_then(|t| t.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    Ok(Some(CrateInfo {
        package,
        lib_name,
        version,
        cdylib,
    }))
}

/// Checks a `vel-plugin.toml` and returns the plugin's name and kind.
fn read_manifest(path: &Path, crate_info: &CrateInfo) -> Result<(String, String), String> {
    let table = read_toml(path)?;
    let field = |key: &str| -> Result<String, String> {
        table
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{path:?}: `{key}` (a string) is required"))
    };
    let name = field("name")?;
    let kind = field("kind")?;
    let version = field("version")?;
    field("description")?;
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "{path:?}: kind {kind:?} is not one of {}",
            KINDS.join(", ")
        ));
    }
    let crate_version = crate_info
        .version
        .clone()
        .unwrap_or_else(|| env::var("CARGO_PKG_VERSION").unwrap_or_default());
    if version != crate_version {
        return Err(format!(
            "{path:?}: version {version:?} differs from the crate's {crate_version:?}"
        ));
    }
    if kind == "provider" {
        let hosts = table
            .get("outbound")
            .and_then(|o| o.get("hosts"))
            .and_then(|h| h.as_array());
        if hosts.is_none_or(|h| h.iter().any(|host| host.as_str().is_none())) {
            return Err(format!(
                "{path:?}: a provider must declare `[outbound] hosts = [...]` (may be empty)"
            ));
        }
    }
    Ok((name, kind))
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {path:?}: {e}"))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("parsing {path:?}: {e}"))
}

/// The sorted subdirectories of `dir`.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("listing {dir:?}: {e}"))? {
        let path = entry.map_err(|e| format!("listing {dir:?}: {e}"))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn env_var(key: &str) -> Result<OsString, String> {
    env::var_os(key).ok_or_else(|| format!("cargo did not set {key}"))
}

/// Makes sure the toolchain has the wasm target: installs it with rustup
/// when rustup manages the toolchain (`rust-toolchain.toml` names the target,
/// but rustup adds targets only to toolchains it installs itself), and
/// otherwise fails early, with the fix.
fn check_wasm_target() -> Result<(), String> {
    if wasm_target_installed()? {
        return Ok(());
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    // Its progress goes to the build's stderr; stdout is cargo's.
    rustup.stdout(std::process::Stdio::null());
    let installed = rustup.status().is_ok_and(|status| status.success());
    if installed && wasm_target_installed()? {
        println!(
            "cargo:warning=the Rust target {WASM_TARGET} was missing; this build installed it \
             with rustup for the plugin components"
        );
        return Ok(());
    }
    Err(format!(
        "the Rust target {WASM_TARGET} is not installed and rustup could not add it; the plugin \
         components need it. Install it with: rustup target add {WASM_TARGET}"
    ))
}

/// Whether rustc finds the wasm target's standard library.
fn wasm_target_installed() -> Result<bool, String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|e| format!("running {rustc:?}: {e}"))?;
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(output.status.success() && !libdir.is_empty() && Path::new(&libdir).is_dir())
}

/// Runs one nested `cargo build` for every guest.
fn compile(workspace: &Path, target_dir: &Path, guests: &[Guest]) -> Result<(), String> {
    if guests.is_empty() {
        return Ok(());
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--profile")
        .arg(WASM_PROFILE)
        .arg("--target-dir")
        .arg(target_dir);
    for guest in guests {
        cmd.arg("-p").arg(&guest.package);
    }
    // The outer build's flags, wrappers (clippy, sccache…) and profile
    // overrides are for the host; the guests get a clean build. The
    // jobserver (CARGO_MAKEFLAGS) is kept so both share the CPU budget.
    for (key, _) in env::vars_os() {
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
    // Our stdout is read by cargo for `cargo:` directives; keep it clean.
    cmd.stdout(std::io::stderr());
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("running {cargo:?}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the plugin components failed ({status}); see the cargo output above"
        ));
    }
    Ok(())
}
