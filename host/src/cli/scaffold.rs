//! `vel plugin new NAME --kind provider|router|condition [--lang
//! rust|js|python]`: a plugin project that builds with one command (Rust:
//! `cargo build --release`, the target set in `.cargo/config.toml`;
//! JavaScript and Python: see [`super::scaffold_langs`]), passes `vel
//! plugin check --manifest`, and carries a sample input and a fixture for
//! `vel plugin test`. The plugin's name and version live in
//! `vel-plugin.toml` only: the build hands them to the code, so `info()`
//! and the manifest cannot disagree.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::plugins::manifest::is_plugin_name;

/// The WIT the router and condition templates compile against (the
/// provider template gets it through the provider SDK).
const WIT: &str = include_str!("../../../wit/vel-plugins.wit");

/// The provider SDK (`plugins/guest-http`) of the source tree this binary
/// was built from, used when `--sdk` is not given and it still exists.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/guest-http");

/// The `wit-bindgen` the templates use (the version vel's own plugins use).
const WIT_BINDGEN: &str = "0.61";

/// Which world the plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Calls an upstream model API (`provider` world, imports wasi:http).
    Provider,
    /// Orders the candidates for a task (`router` world).
    Router,
    /// Decides a workflow branch from a step's output (`condition` world).
    Condition,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Provider => "provider",
            Kind::Router => "router",
            Kind::Condition => "condition",
        }
    }
}

/// The language of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Rust crate built for wasm32-wasip2 with wit-bindgen.
    Rust,
    /// JavaScript built with componentize-qjs (routers and conditions).
    Js,
    /// Python built with componentize-py (routers and conditions; runs in
    /// the plugin class `python`, which the server must offer).
    Python,
}

/// Arguments of `vel plugin new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Which world it implements.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The language: `rust` (every kind), `js` or `python` (routers and
    /// conditions).
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to create the project (default: `./NAME`); must not exist.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Providers: the provider SDK crate (`plugins/guest-http` of a vel
    /// checkout) the project depends on by path. Default: the one of the
    /// source tree this `vel` was built from, when it is there.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

/// `vel plugin new`.
pub fn new(args: &NewArgs) -> anyhow::Result<()> {
    if args.lang != Lang::Rust && args.kind == Kind::Provider {
        bail!(
            "`--lang {}` offers routers and conditions; write a provider in Rust \
             (`--lang rust`, the default), with the provider SDK",
            if args.lang == Lang::Js {
                "js"
            } else {
                "python"
            }
        );
    }
    if !is_plugin_name(&args.name) {
        bail!(
            "`{}` is not a plugin name: 1–64 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            args.name
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!("{} exists already; choose another --dir", dir.display());
    }
    let sdk = match (args.kind, &args.sdk) {
        (Kind::Provider, Some(sdk)) => Some(sdk.clone()),
        (Kind::Provider, None) if Path::new(BUILT_SDK).join("Cargo.toml").is_file() => {
            Some(PathBuf::from(BUILT_SDK))
        }
        (Kind::Provider, None) => bail!(
            "a provider depends on the provider SDK: give --sdk PATH (plugins/guest-http of a vel checkout)"
        ),
        _ => None,
    };
    let sdk = match sdk {
        Some(sdk) => Some(
            std::fs::canonicalize(&sdk)
                .with_context(|| format!("the provider SDK {} is not there", sdk.display()))?,
        ),
        None => None,
    };
    let files = match args.lang {
        Lang::Rust => files(&args.name, args.kind, sdk.as_deref()),
        Lang::Js => super::scaffold_langs::js_files(&args.name, args.kind, WIT),
        Lang::Python => super::scaffold_langs::python_files(&args.name, args.kind, WIT),
    };
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let lib = args.name.replace('-', "_");
    println!(
        "created the {} {} in {}",
        args.kind.as_str(),
        args.name,
        dir.display()
    );
    println!("next:");
    println!("  cd {}", dir.display());
    let wasm = match args.lang {
        Lang::Rust => {
            println!("  cargo build --release");
            format!("target/wasm32-wasip2/release/{lib}.wasm")
        }
        Lang::Js => {
            println!("  npm install");
            println!("  npm run build");
            super::scaffold_langs::component_path(&args.name)
        }
        Lang::Python => {
            println!("  python3 -m pip install -r requirements.txt");
            println!("  python3 build.py");
            super::scaffold_langs::component_path(&args.name)
        }
    };
    println!("  vel plugin check {wasm} --manifest vel-plugin.toml");
    println!("  vel plugin test tests/cases.json");
    Ok(())
}

/// The project's files: relative path and text.
fn files(name: &str, kind: Kind, sdk: Option<&Path>) -> Vec<(&'static str, String)> {
    let lib = name.replace('-', "_");
    let mut files = vec![
        ("Cargo.toml", cargo_toml(name, kind, sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        ("build.rs", BUILD_RS.to_string()),
        ("vel-plugin.toml", manifest(name, kind)),
        ("README.md", readme(name, kind, &lib)),
        ("tests/cases.json", cases(kind, &lib)),
    ];
    match kind {
        Kind::Router => {
            files.push(("wit/vel-plugins.wit", WIT.to_string()));
            files.push(("src/lib.rs", ROUTER_LIB.to_string()));
            files.push(("samples/input.json", ROUTER_INPUT.to_string()));
        }
        Kind::Condition => {
            files.push(("wit/vel-plugins.wit", WIT.to_string()));
            files.push(("src/lib.rs", CONDITION_LIB.to_string()));
            files.push(("samples/input.json", CONDITION_INPUT.to_string()));
        }
        Kind::Provider => {
            files.push(("src/lib.rs", PROVIDER_LIB.to_string()));
            files.push(("samples/input.json", PROVIDER_INPUT.to_string()));
        }
    }
    files
}

fn cargo_toml(name: &str, kind: Kind, sdk: Option<&Path>) -> String {
    let deps = match (kind, sdk) {
        (Kind::Provider, Some(sdk)) => format!(
            "wit-bindgen = \"{WIT_BINDGEN}\"\nserde_json = \"1\"\n# The provider SDK: bindings, a wasi:http client, errors, settings, SSE.\nvel-guest-http = {{ path = {:?} }}\n",
            sdk.display().to_string()
        ),
        (Kind::Condition, _) => format!("wit-bindgen = \"{WIT_BINDGEN}\"\nserde_json = \"1\"\n"),
        _ => format!("wit-bindgen = \"{WIT_BINDGEN}\"\n"),
    };
    format!(
        r#"[package]
name = "{name}"
# The plugin's version is vel-plugin.toml's; build.rs hands it to the code.
version = "0.0.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{deps}
# Small, fast components.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A project of its own, even when created inside another workspace.
[workspace]
"#
    )
}

const CARGO_CONFIG: &str =
    "# `cargo build --release` builds the component.\n[build]\ntarget = \"wasm32-wasip2\"\n";

const BUILD_RS: &str = r#"//! Hands the plugin's name and version from vel-plugin.toml (their one
//! place) to the code as VEL_PLUGIN_NAME and VEL_PLUGIN_VERSION.

fn main() {
    println!("cargo::rerun-if-changed=vel-plugin.toml");
    let manifest = std::fs::read_to_string("vel-plugin.toml").expect("reading vel-plugin.toml");
    for key in ["name", "version"] {
        let value = manifest
            .lines()
            .take_while(|line| !line.trim_start().starts_with('['))
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("vel-plugin.toml has no top-level `{key}`"));
        println!("cargo::rustc-env=VEL_PLUGIN_{}={value}", key.to_uppercase());
    }
}
"#;

fn manifest(name: &str, kind: Kind) -> String {
    let kind_str = kind.as_str();
    let extra = match kind {
        Kind::Provider => {
            "\n# Hosts it may reach besides its integration's base URL. `host` allows https\n\
             # on 443 and http on 80; `host:port` that port only. An organization's\n\
             # provider waits for a platform admin's approval of them.\n\
             [outbound]\nhosts = [\"api.example.com\"]\n"
        }
        _ => "",
    };
    format!(
        "# vel plugin manifest. `version` is the plugin's only version: build.rs\n\
         # passes it to info(). Check it with:\n\
         #   vel plugin check --manifest vel-plugin.toml\n\
         name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         kind = \"{kind_str}\"\n\
         description = \"A {kind_str} made with vel plugin new\"\n{extra}"
    )
}

fn readme(name: &str, kind: Kind, lib: &str) -> String {
    let kind = kind.as_str();
    format!(
        "# {name}\n\n\
         A vel {kind} plugin. Build, check, test and publish:\n\n\
         ```sh\n\
         cargo build --release\n\
         vel plugin check target/wasm32-wasip2/release/{lib}.wasm --manifest vel-plugin.toml\n\
         vel plugin run target/wasm32-wasip2/release/{lib}.wasm --manifest vel-plugin.toml --input-file samples/input.json\n\
         vel plugin test tests/cases.json\n\
         vel plugin publish target/wasm32-wasip2/release/{lib}.wasm --manifest vel-plugin.toml --activate\n\
         ```\n\n\
         A new version: raise `version` in `vel-plugin.toml` (its only place) and rebuild.\n\
         `tests/cases.json` holds inputs and what the answers must contain; see\n\
         `vel plugin test --help`.\n"
    )
}

fn cases(kind: Kind, lib: &str) -> String {
    let head = format!(
        "  \"component\": \"../target/wasm32-wasip2/release/{lib}.wasm\",\n  \"manifest\": \"../vel-plugin.toml\",\n"
    );
    let body = match kind {
        Kind::Router => ROUTER_CASES,
        Kind::Condition => CONDITION_CASES,
        Kind::Provider => PROVIDER_CASES,
    };
    format!("{{\n{head}{body}}}\n")
}

const ROUTER_LIB: &str = r#"//! A vel router: the cheapest usable candidate first.

wit_bindgen::generate!({ path: "wit", world: "router" });

use exports::vel::plugins::routing::{
    Attempt, Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo,
};
use vel::plugins::types::CircuitState;

struct Component;

impl Guest for Component {
    fn info() -> RouterInfo {
        RouterInfo {
            name: env!("VEL_PLUGIN_NAME").to_string(),
            version: env!("VEL_PLUGIN_VERSION").to_string(),
            description: "The cheapest candidate with a usable circuit first".to_string(),
        }
    }

    fn route(_task: TaskInfo, candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        let mut usable: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.circuit != CircuitState::Open)
            .collect();
        if usable.is_empty() {
            return Err(RouteError::NoCandidate(
                "every candidate's circuit is open".to_string(),
            ));
        }
        usable.sort_by(|a, b| {
            (a.input_price_per_1k + a.output_price_per_1k)
                .total_cmp(&(b.input_price_per_1k + b.output_price_per_1k))
        });
        Ok(Plan {
            attempts: usable
                .iter()
                .map(|c| Attempt {
                    provider: c.provider.clone(),
                    model: c.model.clone(),
                })
                .collect(),
            reason: format!("cheapest first among {} usable candidates", usable.len()),
        })
    }
}

export!(Component);
"#;

pub(crate) const ROUTER_INPUT: &str = r#"{
  "task": {
    "id": "t1",
    "organization_id": "org",
    "task_type": "general",
    "priority": "medium",
    "requested_model": null,
    "estimated_input_tokens": 100,
    "max_tokens": null,
    "prefer": "cost",
    "metadata": {}
  },
  "candidates": [
    {
      "provider": "dear", "model": "large", "input_price_per_1k": 0.01, "output_price_per_1k": 0.03,
      "good_for": ["general"], "circuit": "closed", "p50_latency_ms": 0, "p95_latency_ms": 0,
      "error_rate": 0.0, "remaining_budget": null
    },
    {
      "provider": "cheap", "model": "small", "input_price_per_1k": 0.001, "output_price_per_1k": 0.002,
      "good_for": ["light"], "circuit": "closed", "p50_latency_ms": 0, "p95_latency_ms": 0,
      "error_rate": 0.0, "remaining_budget": null
    }
  ]
}
"#;

pub(crate) const ROUTER_CASES: &str = r#"  "cases": [
    {
      "name": "cheapest first",
      "input": {
        "task": { "id": "t1", "organization_id": "org", "task_type": "general", "priority": "medium",
                  "estimated_input_tokens": 100, "prefer": "cost" },
        "candidates": [
          { "provider": "dear", "model": "large", "input_price_per_1k": 0.01, "output_price_per_1k": 0.03,
            "good_for": [], "circuit": "closed", "p50_latency_ms": 0, "p95_latency_ms": 0, "error_rate": 0.0 },
          { "provider": "cheap", "model": "small", "input_price_per_1k": 0.001, "output_price_per_1k": 0.002,
            "good_for": [], "circuit": "closed", "p50_latency_ms": 0, "p95_latency_ms": 0, "error_rate": 0.0 }
        ]
      },
      "expect": { "result": { "attempts": [ { "provider": "cheap", "model": "small" },
                                            { "provider": "dear", "model": "large" } ] } }
    },
    {
      "name": "no usable candidate",
      "input": {
        "task": { "id": "t2", "organization_id": "org", "task_type": "general", "priority": "medium",
                  "estimated_input_tokens": 100, "prefer": "cost" },
        "candidates": [
          { "provider": "down", "model": "m", "input_price_per_1k": 0.001, "output_price_per_1k": 0.002,
            "good_for": [], "circuit": "open", "p50_latency_ms": 0, "p95_latency_ms": 0, "error_rate": 1.0 }
        ]
      },
      "expect": { "error": { "kind": "no_candidate" } }
    }
  ]
"#;

const CONDITION_LIB: &str = r##"//! A vel condition: matched when the step's output contains `args.contains`.

wit_bindgen::generate!({ path: "wit", world: "condition" });

use exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Guest, Outcome,
};

struct Component;

impl Guest for Component {
    fn info() -> ConditionInfo {
        ConditionInfo {
            name: env!("VEL_PLUGIN_NAME").to_string(),
            version: env!("VEL_PLUGIN_VERSION").to_string(),
            description: "Matched when the output contains a text".to_string(),
            args_schema: r#"{"type":"object","properties":{"contains":{"type":"string"}},"required":["contains"]}"#
                .to_string(),
        }
    }

    fn evaluate(input: ConditionInput) -> Result<Outcome, ConditionError> {
        let args: serde_json::Value = serde_json::from_str(&input.args)
            .map_err(|e| ConditionError::InvalidArgs(format!("not JSON: {e}")))?;
        let Some(needle) = args.get("contains").and_then(|v| v.as_str()) else {
            return Err(ConditionError::InvalidArgs(
                "`contains` must be a string".to_string(),
            ));
        };
        let matched = input.output.contains(needle);
        Ok(Outcome {
            matched,
            branch: None,
            score: None,
            explanation: if matched {
                format!("the output contains {needle:?}")
            } else {
                format!("the output does not contain {needle:?}")
            },
        })
    }
}

export!(Component);
"##;

pub(crate) const CONDITION_INPUT: &str = r#"{
  "output": "The build passed.",
  "state": {},
  "args": { "contains": "passed" }
}
"#;

pub(crate) const CONDITION_CASES: &str = r#"  "cases": [
    {
      "name": "matched",
      "input": { "output": "The build passed.", "state": {}, "args": { "contains": "passed" } },
      "expect": { "result": { "matched": true } }
    },
    {
      "name": "not matched",
      "input": { "output": "The build failed.", "state": {}, "args": { "contains": "passed" } },
      "expect": { "result": { "matched": false } }
    },
    {
      "name": "bad arguments",
      "input": { "output": "x", "state": {}, "args": { "contains": 3 } },
      "expect": { "error": { "kind": "invalid_args" } }
    }
  ]
"#;

const PROVIDER_LIB: &str = r#"//! A vel provider for a JSON API that is not OpenAI's:
//! `POST {base-url}/v1/generate` with `{"model", "prompt", "max_tokens"}`,
//! answered by `{"output": "...", "tokens_in": 12, "tokens_out": 34}`.
//! The host adds the key as `Authorization: Bearer …`; it never enters here.

use vel_guest_http::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, FinishReason, Guest, ModelInfo,
    ProviderError, ProviderInfo,
};
use vel_guest_http::http::{self, Post};
use vel_guest_http::settings::Settings;
use vel_guest_http::types::{Features, TaskType, Usage};
use vel_guest_http::{role_name, stream};

/// Used when the integration sets no `base_url`.
const DEFAULT_BASE_URL: &str = "https://api.example.com";
/// Used when neither the request nor `default-model` names one.
const DEFAULT_MODEL: &str = "example-1";
/// Largest response body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

struct Component;

impl Guest for Component {
    fn info() -> ProviderInfo {
        ProviderInfo {
            name: env!("VEL_PLUGIN_NAME").to_string(),
            version: env!("VEL_PLUGIN_VERSION").to_string(),
            description: "An example JSON API".to_string(),
            models: vec![ModelInfo {
                id: DEFAULT_MODEL.to_string(),
                input_price_per_1k: 0.0005,
                output_price_per_1k: 0.0015,
                context_window: 32_000,
                good_for: vec![TaskType::General, TaskType::Light],
                features: Features::empty(),
            }],
            features: Features::empty(),
            credential: Some(CredentialHeader {
                name: "authorization".to_string(),
                prefix: "Bearer ".to_string(),
            }),
            base_url_setting: Some("base-url".to_string()),
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        // No tools, JSON modes or logprobs here: refuse such requests clearly.
        vel_guest_http::require_features(&request, "example", Features::empty())?;
        let settings = Settings::from_config(DEFAULT_BASE_URL, DEFAULT_MODEL)?;
        let model = settings.model_for(&request.model).to_string();
        let prompt: Vec<String> = request
            .messages
            .iter()
            .map(|m| format!("{}: {}", role_name(m.role), m.content))
            .collect();
        let body = serde_json::json!({
            "model": model,
            "prompt": prompt.join("\n"),
            "max_tokens": request.max_tokens.or(settings.max_tokens),
        })
        .to_string();
        let url = format!("{}/v1/generate", settings.base_url);
        // Non-2xx statuses become typed errors (429 rate-limited, 401 auth, …).
        let mut response = http::post(&Post {
            url: &url,
            headers: vec![("content-type", "application/json")],
            body: body.as_bytes(),
            timeout: settings.timeout,
        })?
        .error_for_status()?;
        let bytes = response.read_to_end(MAX_BODY)?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Other(format!("the upstream answer is not JSON: {e}")))?;
        let count = |field: &str| {
            answer[field]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok(CompletionResponse {
            text: answer["output"].as_str().unwrap_or_default().to_string(),
            finish_reason: FinishReason::Stop,
            model,
            usage: Usage {
                input_tokens: count("tokens_in"),
                output_tokens: count("tokens_out"),
            },
            tool_calls: Vec::new(),
            logprobs: None,
        })
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        // This API does not stream: send the whole answer as one delta.
        let response = Self::complete(request)?;
        stream::emit(&response.text);
        Ok(response)
    }
}

vel_guest_http::export_provider!(Component);
"#;

const PROVIDER_INPUT: &str = r#"{
  "model": "example-1",
  "messages": [{ "role": "user", "content": "Say hello" }],
  "temperature": null,
  "max_tokens": 64,
  "stop": [],
  "task_type": "general",
  "metadata": {}
}
"#;

const PROVIDER_CASES: &str = r#"  "settings": { "base-url": "http://127.0.0.1:9" },
  "cases": [
    {
      "name": "an upstream on this machine is refused without --allow-private",
      "input": { "model": "example-1", "messages": [{ "role": "user", "content": "hi" }],
                 "stop": [], "task_type": "general" },
      "expect_stopped": "destination address not allowed"
    }
  ]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_files_and_one_version() {
        for kind in [Kind::Router, Kind::Condition, Kind::Provider] {
            let files = files("my-plugin", kind, Some(Path::new("/sdk")));
            let get = |name: &str| {
                files
                    .iter()
                    .find(|(path, _)| *path == name)
                    .map(|(_, text)| text.clone())
                    .unwrap_or_else(|| panic!("{kind:?} has no {name}"))
            };
            let manifest = crate::plugins::manifest::Manifest::parse(&get("vel-plugin.toml"))
                .expect("the manifest is valid");
            assert_eq!(manifest.name, "my-plugin");
            assert_eq!(manifest.kind, kind.as_str());
            assert!(get("src/lib.rs").contains("env!(\"VEL_PLUGIN_VERSION\")"));
            assert!(get("Cargo.toml").contains("version = \"0.0.0\""));
            let cases: serde_json::Value =
                serde_json::from_str(&get("tests/cases.json")).expect("cases are JSON");
            assert_eq!(
                cases["component"],
                "../target/wasm32-wasip2/release/my_plugin.wasm"
            );
            let _: serde_json::Value =
                serde_json::from_str(&get("samples/input.json")).expect("the sample is JSON");
        }
    }
}
