//! `vel plugin new`, `check`, `run` and `test`: start a plugin, and try a
//! component locally under the same sandbox the server uses. The registry
//! subcommands (`publish`, `list`, `show`, `activate`, `rollback`,
//! `approve`) talk to a running server; see [`super::remote`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vel_runtime::types::{
    Candidate, CompletionRequest, ConditionInput, EmbeddingRequest, TaskInfo,
};
use vel_runtime::{
    AllowPrivate, CallResult, CallStats, Delta, Limits, OutboundConfig, Plugin, PluginKind,
    Profile, ProviderCall, Runtime, RuntimeConfig, Secret, ToolServerCall,
};

use super::run_json::{contains, guest_error, normalise_input, snake_output};
use super::{remote, scaffold};
use crate::api::handlers::gateway::embeddings::EmbeddingsRequest;
use crate::plugins::manifest::{Manifest, host_of};

/// The variable `vel plugin run` and `test` read a provider's credential
/// from when `--secret-env` names none.
pub const DEFAULT_SECRET_ENV: &str = "VEL_PLUGIN_SECRET";

/// Plugin-author subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Start a plugin project: a Rust crate with its manifest, sample
    /// inputs and a fixture test, that builds with one command and passes
    /// `vel plugin check`.
    New(scaffold::NewArgs),
    /// Validate a component against the vel worlds and print its kind,
    /// info and the limits it will run under; with `--manifest`, check the
    /// manifest too (alone, or against the component) and print the
    /// outbound hosts it will be allowed to reach. Nothing is published.
    Check(CheckArgs),
    /// Call a component once under the sandbox and print the result as JSON.
    ///
    /// Input JSON by kind, in the API's snake_case (kebab-case, camelCase
    /// and CamelCase spellings of field names and enum values are accepted
    /// too) — router: `{"task": {"task_type": "code_generation", ...},
    /// "candidates": [...]}`; condition: `{"output": "...", "state": {...},
    /// "args": {...}}`; provider: a completion request `{"model": "...",
    /// "messages": [{"role": "user", "content": "..."}], "task_type":
    /// "general", ...}`, or an embeddings request as `/v1/embeddings`
    /// takes it (`{"model": "...", "input": "text" | ["texts"] | [token
    /// ids], "dimensions": N}`), which calls the provider's `embed`.
    /// JSON-typed fields (`state`, `args`, `metadata`)
    /// are given as JSON values.
    ///
    /// Output (stdout): `{"plugin", "version", "kind", "result"` (the
    /// guest's answer, snake_case) or `"error"` (the guest's own error:
    /// `{"kind": "no_candidate", "message": "..."}`), `"duration_ms",
    /// "fuel_consumed", "peak_memory_bytes", "peak_host_memory_bytes",
    /// "log_bytes"}`. When the sandbox stops the call (a limit, a trap, a
    /// refused host), the reason goes to stderr and the exit status is 1.
    /// Guest logs go to stderr.
    ///
    /// A provider's credential comes from the environment variable named by
    /// `--secret-env` (default `VEL_PLUGIN_SECRET`); the host adds it to
    /// requests as the header the provider's `info()` names, and it never
    /// enters the guest.
    Run(RunArgs),
    /// Run a fixture file of inputs and expected outputs against a
    /// component; exit status 1 when any case fails.
    ///
    /// The file is JSON: `{"component": "path.wasm", "manifest":
    /// "vel-plugin.toml", "tenant": false, "settings": {"k": "v"},
    /// "allow_hosts": [...], "cases": [{"name": "...", "input": {...},
    /// "expect": {...}} ...]}` (paths relative to the file; `component`
    /// may come from `--component` instead). `input` is what `vel plugin
    /// run` reads; `expect` is matched against what it prints: every
    /// field given must be there with that value (objects may hold more),
    /// e.g. `{"result": {"attempts": [{"provider": "cheap", "model":
    /// "m"}]}}` or `{"error": {"kind": "no_candidate"}}`. A case whose
    /// call the sandbox must stop gives `"expect_stopped": "text"`, text
    /// its reason contains.
    Test(TestArgs),
    /// Upload a component with its manifest to a running server's
    /// registry. With `--activate`, an organization's provider whose
    /// outbound hosts need a platform admin's approval is uploaded and
    /// reported as awaiting approval; activate it once approved.
    Publish(remote::PublishArgs),
    /// List the plugins the server's registry shows this caller.
    List(remote::RemoteArgs),
    /// Show one plugin of the server's registry with its versions.
    Show(remote::NameArgs),
    /// Make an uploaded version the one the server's calls use.
    Activate(remote::ActivateArgs),
    /// Swap the active version with the previous one: a rollback goes back
    /// to the version active before, and a second rollback returns (it
    /// toggles between the two).
    Rollback(remote::NameArgs),
    /// Platform admins: approve the outbound hosts of an organization's
    /// provider version (`vel plugin approve NAME VERSION`); without
    /// arguments, list the versions awaiting approval.
    Approve(remote::ApproveArgs),
    /// Platform admins: reject an organization's provider version awaiting
    /// approval (`vel plugin reject NAME VERSION --reason TEXT`); it can
    /// never be approved or activated afterwards.
    Reject(remote::RejectArgs),
}

/// Arguments of `vel plugin check`.
#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct CheckArgs {
    /// The component (`.wasm`) to check.
    file: Option<PathBuf>,
    /// Its manifest (`vel-plugin.toml`): checked as the server checks it on
    /// upload (alone when no component is given).
    #[arg(long)]
    manifest: Option<PathBuf>,
}

/// What a provider call gets besides its input (`run` and `test`).
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// Providers: a setting served by the `config` import (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Providers: a host the plugin may call, besides its base URL's and
    /// the manifest's (repeatable). `host` allows https on 443 and http on
    /// 80; `host:port` that port only.
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Providers: the environment variable holding the credential the host
    /// adds to the plugin's requests (never passed to the guest).
    #[arg(long = "secret-env", value_name = "VAR", default_value = DEFAULT_SECRET_ENV)]
    secret_env: String,
    /// Providers: restricted destinations (loopback, private, …) the plugin
    /// may still reach, as the server's setting of the same name: CIDR
    /// ranges, addresses and host names, comma-separated (e.g.
    /// `127.0.0.0/8,::1/128` for an upstream on this machine).
    #[arg(
        long = "allow-private",
        env = "VEL_OUTBOUND_ALLOW_PRIVATE",
        value_name = "LIST",
        default_value = ""
    )]
    allow_private: AllowPrivate,
}

/// Arguments of `vel plugin run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`) to run.
    file: PathBuf,
    /// The input, as JSON text.
    #[arg(
        long,
        conflicts_with = "input_file",
        required_unless_present = "input_file"
    )]
    input: Option<String>,
    /// Read the input JSON from this file.
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Run under the tenant limits instead of the platform ones.
    #[arg(long)]
    tenant: bool,
    /// The plugin's manifest: checked against the component; its limits
    /// apply and its `[outbound]` hosts are allowed, as on the server.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Providers: call `complete-stream` and print deltas to stderr as they arrive.
    #[arg(long)]
    stream: bool,
    /// Provider settings, hosts and credential.
    #[command(flatten)]
    provider: ProviderArgs,
}

/// Arguments of `vel plugin test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The fixture file (JSON).
    file: PathBuf,
    /// The component, instead of the fixture's `component`.
    #[arg(long)]
    component: Option<PathBuf>,
    /// The manifest, instead of the fixture's `manifest`.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Provider settings, hosts and credential (added to the fixture's).
    #[command(flatten)]
    provider: ProviderArgs,
}

/// Run one plugin subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    init_plugin_logs();
    if let PluginCommand::New(args) = &cmd {
        return scaffold::new(args);
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        match cmd {
            PluginCommand::New(_) => Ok(()),
            PluginCommand::Check(args) => check(&args).await,
            PluginCommand::Run(args) => run_once(args).await,
            PluginCommand::Test(args) => test(args).await,
            PluginCommand::Publish(args) => remote::publish(args).await,
            PluginCommand::List(args) => remote::list(args).await,
            PluginCommand::Show(args) => remote::show(args).await,
            PluginCommand::Activate(args) => remote::activate(args).await,
            PluginCommand::Rollback(args) => remote::rollback(args).await,
            PluginCommand::Approve(args) => remote::approve(args).await,
            PluginCommand::Reject(args) => remote::reject(args).await,
        }
    })
}

/// Guest logs (the `log` import, stdout, stderr) go to stderr, coloured
/// only when stderr is a terminal.
fn init_plugin_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("vel_plugin=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The plugin classes the local sandbox offers: `VEL_PLUGIN_CLASSES` as
/// the server reads it, else every preset (a server offers only those its
/// operator configured).
fn local_classes() -> anyhow::Result<std::collections::BTreeMap<String, vel_runtime::PluginClass>> {
    let raw = std::env::var("VEL_PLUGIN_CLASSES").unwrap_or_else(|_| "python".to_string());
    crate::config::classes::parse(&raw)
        .map_err(|e| anyhow::anyhow!("VEL_PLUGIN_CLASSES={raw:?}: {e}"))
}

/// Longest a local compilation may take: a Python component's takes tens
/// of seconds on a busy laptop, and nobody else waits for a compile slot.
const LOCAL_COMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A runtime as a server's, with the local classes, compiling into the
/// cache directory `VEL_PLUGIN_CACHE_DIR` when it is set (as the server's
/// setting of that name), else compiling on every run.
fn local_runtime(allow_private: AllowPrivate) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: std::env::var_os("VEL_PLUGIN_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        outbound: OutboundConfig {
            allow_private,
            ..OutboundConfig::default()
        },
        compile: vel_runtime::CompileConfig {
            timeout: LOCAL_COMPILE_TIMEOUT,
            ..vel_runtime::CompileConfig::default()
        },
        classes: local_classes()?,
        ..RuntimeConfig::default()
    })?)
}

/// Loads `file` in the plugin class `class` (its manifest's).
async fn load(
    file: &Path,
    allow_private: AllowPrivate,
    class: Option<&str>,
) -> anyhow::Result<(Runtime, Plugin)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = local_runtime(allow_private)?;
    let plugin = runtime
        .load_in(&bytes, class)
        .await
        .with_context(|| format!("{} is not a valid vel plugin", file.display()))?;
    Ok((runtime, plugin))
}

/// Reads and parses a manifest as the server does.
fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    Manifest::parse(&text).with_context(|| format!("{} is refused", path.display()))
}

async fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let manifest = match &args.manifest {
        Some(path) => Some((path, read_manifest(path)?)),
        None => None,
    };
    let Some(file) = &args.file else {
        let Some((path, manifest)) = &manifest else {
            bail!("give a component, a --manifest, or both");
        };
        let runtime = local_runtime(AllowPrivate::default())?;
        let kind = manifest.plugin_kind()?;
        println!(
            "{}: a valid manifest for the {kind} {} {}",
            path.display(),
            manifest.name,
            manifest.version
        );
        describe_manifest(&runtime, manifest, kind);
        return Ok(());
    };
    let class = manifest.as_ref().and_then(|(_, m)| m.class.as_deref());
    let (runtime, plugin) = load(file, AllowPrivate::default(), class).await?;
    let kind = plugin.kind();
    println!("{}: a valid vel {kind} plugin", file.display());
    println!("kind:    {kind}");
    let contract = plugin.contract();
    let world = match kind {
        PluginKind::Tool => "tool-server",
        other => other.as_str(),
    };
    println!(
        "world:   vel:plugins/{world}@{contract} (exports {})",
        kind.export_for(contract)
    );
    println!("name:    {}", plugin.name());
    println!("version: {}", plugin.version());
    println!("sha256:  {}", plugin.sha256());
    println!("size:    {} bytes", plugin.size());
    // What a server with the default compile limits says of it on upload.
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let limits_name = class.map_or_else(
        || "the default upload limits".to_string(),
        |c| format!("the upload limits of class `{c}`"),
    );
    match runtime.inspect_in(&bytes, class) {
        Ok(i) => println!(
            "code:    {} bytes in {} functions, the largest {} bytes, {} core instances (within {limits_name})",
            i.code_bytes, i.functions, i.largest_function_bytes, i.core_instances
        ),
        Err(e) => println!("code:    {e} (with {limits_name})"),
    }
    println!("info:");
    println!("{}", serde_json::to_string_pretty(plugin.info())?);
    match &manifest {
        Some((path, manifest)) => {
            manifest
                .check_against(&plugin)
                .with_context(|| format!("{} does not match the component", path.display()))?;
            println!(
                "manifest: {} matches the component (name, version, kind)",
                path.display()
            );
            describe_manifest(&runtime, manifest, kind);
        }
        None => {
            for (label, profile) in [("platform", Profile::Platform), ("tenant", Profile::Tenant)] {
                println!(
                    "limits ({label}): {}",
                    describe(runtime.limits(kind, profile))
                );
            }
        }
    }
    Ok(())
}

/// The outbound hosts a manifest allows and the limits it gets, as a
/// server with the default settings sees them.
fn describe_manifest(runtime: &Runtime, manifest: &Manifest, kind: PluginKind) {
    if kind == PluginKind::Provider {
        if manifest.outbound.hosts.is_empty() {
            println!("outbound: no hosts besides the base URL's (a platform provider's only)");
        }
        let defaults = AllowPrivate::default();
        for entry in &manifest.outbound.hosts {
            let refused = defaults
                .refused_host(host_of(entry))
                .map(|why| {
                    format!(
                        "; a {why} address: refused unless the server's VEL_OUTBOUND_ALLOW_PRIVATE allows it"
                    )
                })
                .unwrap_or_default();
            println!(
                "outbound: {}{refused}",
                vel_runtime::describe_host_entry(entry)
            );
        }
        if !manifest.outbound.hosts.is_empty() {
            println!(
                "outbound: published by an organization, these hosts wait for a platform admin's approval"
            );
        }
    }
    if let Some(class) = &manifest.class {
        println!(
            "class:   {class}: a server must offer it (VEL_PLUGIN_CLASSES); its limits replace the defaults"
        );
    }
    for (label, profile) in [("platform", Profile::Platform), ("tenant", Profile::Tenant)] {
        let maxima = match runtime.class_limits(manifest.class.as_deref(), kind, profile) {
            Ok(maxima) => maxima,
            Err(e) => {
                println!("limits ({label}): refused: {e}");
                continue;
            }
        };
        match manifest.effective_limits(maxima) {
            Ok(limits) => println!("limits ({label}): {}", describe(&limits)),
            Err(e) => println!("limits ({label}): refused: {e}"),
        }
    }
}

/// One line describing limits.
fn describe(l: &Limits) -> String {
    let fuel = l.fuel.map_or("unmetered".to_string(), |f| f.to_string());
    format!(
        "memory {} bytes, fuel {fuel}, cpu {} ms, wall {} ms, input {} bytes, output {} bytes, log {} bytes, deltas {}",
        l.memory_bytes,
        l.cpu_time.as_millis(),
        l.wall_time.as_millis(),
        l.max_input_bytes,
        l.max_output_bytes,
        l.max_log_bytes,
        l.max_deltas
    )
}

/// Router input for `vel plugin run`.
#[derive(serde::Deserialize)]
struct RouteInput {
    task: TaskInfo,
    candidates: Vec<Candidate>,
}

/// What one call gets besides its input.
struct CallOptions {
    settings: Vec<(String, String)>,
    secret: Option<String>,
    allowed_hosts: Vec<String>,
    stream: bool,
}

impl CallOptions {
    /// From the command line (and a manifest's hosts); the secret from
    /// `--secret-env`'s variable, which must be set when named explicitly.
    fn new(args: &ProviderArgs, manifest: Option<&Manifest>) -> anyhow::Result<CallOptions> {
        let settings = args
            .settings
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--setting `{s}` is not KEY=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let secret = match std::env::var(&args.secret_env) {
            Ok(secret) => Some(secret),
            Err(_) if args.secret_env == DEFAULT_SECRET_ENV => None,
            Err(_) => bail!(
                "--secret-env {}: the variable is not set (or not UTF-8)",
                args.secret_env
            ),
        };
        let mut allowed_hosts = args.allowed_hosts.clone();
        if let Some(manifest) = manifest {
            allowed_hosts.extend(manifest.outbound.hosts.iter().cloned());
        }
        Ok(CallOptions {
            settings,
            secret,
            allowed_hosts,
            stream: false,
        })
    }
}

/// The limits a call runs under: the manifest's, else the profile's.
fn call_limits(
    runtime: &Runtime,
    plugin: &Plugin,
    manifest: Option<&Manifest>,
    tenant: bool,
) -> anyhow::Result<Limits> {
    let profile = if tenant {
        Profile::Tenant
    } else {
        Profile::Platform
    };
    let class = manifest.and_then(|m| m.class.as_deref());
    let maxima = runtime.class_limits(class, plugin.kind(), profile)?;
    match manifest {
        Some(manifest) => {
            manifest.check_against(plugin)?;
            Ok(manifest.effective_limits(maxima)?)
        }
        None => Ok(maxima.clone()),
    }
}

async fn run_once(args: RunArgs) -> anyhow::Result<()> {
    let input = match (&args.input, &args.input_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => bail!("give the input with --input JSON or --input-file PATH"),
    };
    let input: Value = serde_json::from_str(&input).context("the input is not valid JSON")?;
    let manifest = args.manifest.as_deref().map(read_manifest).transpose()?;
    let class = manifest.as_ref().and_then(|m| m.class.as_deref());
    let (runtime, plugin) = load(&args.file, args.provider.allow_private.clone(), class).await?;
    let limits = call_limits(&runtime, &plugin, manifest.as_ref(), args.tenant)?;
    let mut options = CallOptions::new(&args.provider, manifest.as_ref())?;
    options.stream = args.stream;
    match call(&runtime, &plugin, &limits, input, options).await? {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Err(stopped) => bail!("{stopped}"),
    }
}

/// Calls `plugin` once with `input`: its report, or why the sandbox
/// stopped it; an error for input that is not the kind's.
async fn call(
    runtime: &Runtime,
    plugin: &Plugin,
    limits: &Limits,
    input: Value,
    options: CallOptions,
) -> anyhow::Result<Result<Value, String>> {
    let mut input = normalise_input(input);
    Ok(match plugin.kind() {
        PluginKind::Router => {
            if let Some(task) = input.get_mut("task") {
                stringify(task, &["metadata"]);
                default_metadata(task);
            }
            default_route_fields(&mut input);
            let input: RouteInput = parse(input, "a router input {\"task\", \"candidates\"}")?;
            let call = runtime
                .route(plugin, limits, &input.task, &input.candidates)
                .await;
            report(plugin, call)?
        }
        PluginKind::Condition => {
            stringify(&mut input, &["state", "args"]);
            let input: ConditionInput =
                parse(input, "a condition input {\"output\", \"state\", \"args\"}")?;
            let call = runtime.evaluate(plugin, limits, &input).await;
            report(plugin, call)?
        }
        PluginKind::Provider if input.get("input").is_some() && input.get("messages").is_none() => {
            let body: EmbeddingsRequest = parse(
                input,
                "an embeddings request {\"model\", \"input\", \"dimensions\"}",
            )?;
            let request = EmbeddingRequest {
                model: body.model,
                inputs: body.input.into_inputs(),
                dimensions: body.dimensions,
                user: body.user,
            };
            let call = ProviderCall {
                settings: options.settings,
                secret: options.secret.map(Secret::new),
                allowed_hosts: options.allowed_hosts,
                allow_base_url_host: true,
                deltas: None,
            };
            report(plugin, runtime.embed(plugin, limits, call, &request).await)?
        }
        PluginKind::Provider => {
            stringify(&mut input, &["metadata"]);
            default_metadata(&mut input);
            default_request_fields(&mut input);
            let request: CompletionRequest = parse(input, "a completion request")?;
            let (deltas, printer) = if options.stream {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delta>();
                let printer = tokio::spawn(async move {
                    while let Some(delta) = rx.recv().await {
                        match delta {
                            Delta::Text(text) => eprint!("{text}"),
                            Delta::ToolCall(call) => eprint!(
                                "[tool call {}{}{}]",
                                call.index,
                                call.name.map(|n| format!(" {n}")).unwrap_or_default(),
                                if call.arguments.is_empty() {
                                    String::new()
                                } else {
                                    format!(" {}", call.arguments)
                                }
                            ),
                        }
                    }
                    eprintln!();
                });
                (Some(tx), Some(printer))
            } else {
                (None, None)
            };
            let call = ProviderCall {
                settings: options.settings,
                secret: options.secret.map(Secret::new),
                allowed_hosts: options.allowed_hosts,
                allow_base_url_host: true,
                deltas,
            };
            let call = runtime.complete(plugin, limits, call, &request).await;
            if let Some(printer) = printer {
                let _ = printer.await;
            }
            report(plugin, call)?
        }
        PluginKind::Tool => {
            // `{"name": …, "arguments": {…}}` calls a tool; anything else
            // (e.g. `{}`) lists the tools.
            let call = ToolServerCall {
                settings: options.settings,
                secret: options.secret.map(Secret::new),
                allowed_hosts: options.allowed_hosts,
                allow_base_url_host: true,
                progress: None,
            };
            match input.get("name").and_then(Value::as_str) {
                Some(name) => {
                    let arguments = input
                        .get("arguments")
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({}))
                        .to_string();
                    let call = runtime
                        .call_tool(plugin, limits, call, name, &arguments)
                        .await;
                    report(plugin, call)?
                }
                None => report(plugin, runtime.list_tools(plugin, limits, call).await)?,
            }
        }
    })
}

/// Deserialises `value` as `T`, naming what was expected on failure.
fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| format!("the input is not {what}"))
}

/// WIT `json` fields are strings; let authors write them as JSON values.
fn stringify(value: &mut Value, fields: &[&str]) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    for field in fields {
        if let Some(v) = obj.get_mut(*field)
            && !v.is_string()
        {
            *v = Value::String(v.to_string());
        }
    }
}

/// A missing `metadata` is `{}`.
fn default_metadata(value: &mut Value) {
    if value.get("metadata").is_none()
        && let Some(obj) = value.as_object_mut()
    {
        obj.insert("metadata".into(), Value::String("{}".into()));
    }
}

/// The 0.2.0 routing fields a plain input leaves out take their empty
/// values: the task's `required_features`, each candidate's `features`.
fn default_route_fields(input: &mut Value) {
    if let Some(task) = input.get_mut("task").and_then(Value::as_object_mut) {
        task.entry("required_features")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    if let Some(list) = input.get_mut("candidates").and_then(Value::as_array_mut) {
        for candidate in list.iter_mut().filter_map(Value::as_object_mut) {
            candidate
                .entry("features")
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
}

/// The 0.2.0 fields a plain completion request leaves out (tools,
/// response format, logprobs, a message's tool calls) take their empty
/// values; a tool's `parameters` may be given as JSON rather than text.
fn default_request_fields(value: &mut Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    let defaults = [
        ("tools", Value::Array(Vec::new())),
        ("response_format", Value::String("Text".into())),
        ("logprobs", Value::Bool(false)),
    ];
    for (key, default) in defaults {
        obj.entry(key).or_insert(default);
    }
    if let Some(tools) = obj.get_mut("tools").and_then(Value::as_array_mut) {
        for tool in tools.iter_mut() {
            stringify(tool, &["parameters"]);
        }
    }
    if let Some(messages) = obj.get_mut("messages").and_then(Value::as_array_mut) {
        for message in messages.iter_mut().filter_map(Value::as_object_mut) {
            message
                .entry("tool_calls")
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
}

/// The report of a call the guest answered (its answer or its own error),
/// or the sandbox's reason for stopping it, with its stats.
fn report<T: serde::Serialize, E: serde::Serialize>(
    plugin: &Plugin,
    call: CallResult<Result<T, E>>,
) -> anyhow::Result<Result<Value, String>> {
    let CallResult { result, stats } = call;
    let CallStats {
        duration,
        fuel_consumed,
        peak_memory_bytes,
        peak_host_memory_bytes,
        log_bytes,
    } = stats;
    let answer = match result {
        Ok(answer) => answer,
        Err(error) => {
            return Ok(Err(format!(
                "{} {} stopped: {error} (after {:.3} ms, fuel {}, peak memory {} bytes, {} of them held by the host)",
                plugin.name(),
                plugin.version(),
                duration.as_secs_f64() * 1e3,
                fuel_consumed.map_or("unmetered".to_string(), |f| f.to_string()),
                peak_memory_bytes,
                peak_host_memory_bytes
            )));
        }
    };
    let (field, value) = match answer {
        Ok(value) => ("result", snake_output(serde_json::to_value(value)?)),
        Err(error) => ("error", guest_error(serde_json::to_value(error)?)),
    };
    let mut report = json!({
        "plugin": plugin.name(),
        "version": plugin.version(),
        "kind": plugin.kind(),
    });
    if let Some(obj) = report.as_object_mut() {
        obj.insert(field.into(), value);
        obj.insert("duration_ms".into(), json!(duration.as_secs_f64() * 1e3));
        obj.insert("fuel_consumed".into(), json!(fuel_consumed));
        obj.insert("peak_memory_bytes".into(), json!(peak_memory_bytes));
        obj.insert(
            "peak_host_memory_bytes".into(),
            json!(peak_host_memory_bytes),
        );
        obj.insert("log_bytes".into(), json!(log_bytes));
    }
    Ok(Ok(report))
}

/// A fixture file of `vel plugin test`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// The component, relative to the fixture file.
    #[serde(default)]
    component: Option<PathBuf>,
    /// The manifest, relative to the fixture file.
    #[serde(default)]
    manifest: Option<PathBuf>,
    /// Run under the tenant limits.
    #[serde(default)]
    tenant: bool,
    /// Provider settings.
    #[serde(default)]
    settings: std::collections::BTreeMap<String, String>,
    /// Hosts a provider may call.
    #[serde(default)]
    allow_hosts: Vec<String>,
    /// The cases, run in order.
    cases: Vec<Case>,
}

/// One case of a fixture.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What it checks.
    name: String,
    /// What `vel plugin run` would read.
    input: Value,
    /// Fields the report must have.
    #[serde(default)]
    expect: Option<Value>,
    /// Text the sandbox's reason for stopping the call must contain.
    #[serde(default)]
    expect_stopped: Option<String>,
}

async fn test(args: TestArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let fixture: Fixture = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a fixture file", args.file.display()))?;
    let base = args.file.parent().unwrap_or(Path::new("."));
    let component = match (&args.component, &fixture.component) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => base.join(path),
        (None, None) => bail!("no component: give --component or the fixture's \"component\""),
    };
    let manifest_path = match (&args.manifest, &fixture.manifest) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(path)) => Some(base.join(path)),
        (None, None) => None,
    };
    let manifest = manifest_path.as_deref().map(read_manifest).transpose()?;
    let class = manifest.as_ref().and_then(|m| m.class.as_deref());
    let (runtime, plugin) = load(&component, args.provider.allow_private.clone(), class).await?;
    let limits = call_limits(&runtime, &plugin, manifest.as_ref(), fixture.tenant)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in fixture.cases {
        let mut options = CallOptions::new(&args.provider, manifest.as_ref())?;
        options.settings.extend(fixture.settings.clone());
        options.allowed_hosts.extend(fixture.allow_hosts.clone());
        let outcome = call(&runtime, &plugin, &limits, case.input, options).await;
        let verdict = match (outcome, &case.expect_stopped) {
            (Err(e), _) => Err(format!("bad input: {e:#}")),
            (Ok(Ok(report)), None) => match &case.expect {
                Some(expect) => contains(&report, expect, "$")
                    .map(|()| report["duration_ms"].as_f64().unwrap_or_default())
                    .map_err(|diff| format!("{diff}\n    report: {report}")),
                None => Ok(report["duration_ms"].as_f64().unwrap_or_default()),
            },
            (Ok(Ok(report)), Some(want)) => Err(format!(
                "expected the sandbox to stop the call ({want}), got {report}"
            )),
            (Ok(Err(stopped)), Some(want)) if stopped.contains(want.as_str()) => Ok(0.0),
            (Ok(Err(stopped)), _) => Err(stopped),
        };
        match verdict {
            Ok(ms) => {
                passed += 1;
                println!("ok    {} ({ms:.3} ms)", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} of {} cases failed", passed + failed);
    }
    Ok(())
}
