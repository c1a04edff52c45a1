//! `vel plugin check` and `vel plugin run`: try a component locally under
//! the same sandbox the server uses. The registry subcommands (`publish`,
//! `list`, `show`, `activate`, `rollback`) talk to a running server; see
//! [`super::remote`].

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use vel_runtime::types::{Candidate, CompletionRequest, ConditionInput, TaskInfo};
use vel_runtime::{
    AllowPrivate, CallResult, CallStats, Limits, OutboundConfig, Plugin, PluginKind, Profile,
    ProviderCall, Runtime, RuntimeConfig, Secret,
};

use super::remote;

/// Plugin-author subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Validate a component against the vel worlds; print its kind, info
    /// and the limits it will run under.
    Check {
        /// The component (`.wasm`) to check.
        file: PathBuf,
    },
    /// Call a component once under the sandbox and print the result (JSON)
    /// with time, fuel and peak memory.
    ///
    /// Input JSON by kind — router: `{"task": {...}, "candidates": [...]}`;
    /// condition: `{"output": "...", "state": {...}, "args": {...}}`;
    /// provider: a completion request `{"model": "...", "messages":
    /// [{"role": "User", "content": "..."}], "task_type": "General", ...}`.
    /// Field names are snake_case, enum values CamelCase; JSON-typed fields
    /// (`state`, `args`, `metadata`) may be given as JSON values.
    Run(RunArgs),
    /// Upload a component with its manifest to a running server's registry.
    Publish(remote::PublishArgs),
    /// List the plugins the server's registry shows this caller.
    List(remote::RemoteArgs),
    /// Show one plugin of the server's registry with its versions.
    Show(remote::NameArgs),
    /// Make an uploaded version the one the server's calls use.
    Activate(remote::ActivateArgs),
    /// Go back to the previously active version.
    Rollback(remote::NameArgs),
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
    /// Providers: a setting served by the `config` import (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Providers: a host the plugin may call, besides its base URL's (repeatable).
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
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
    /// Providers: call `complete-stream` and print deltas to stderr as they arrive.
    #[arg(long)]
    stream: bool,
}

/// Run one plugin subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    init_plugin_logs();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        match cmd {
            PluginCommand::Check { file } => check(&file).await,
            PluginCommand::Run(args) => run_once(args).await,
            PluginCommand::Publish(args) => remote::publish(args).await,
            PluginCommand::List(args) => remote::list(args).await,
            PluginCommand::Show(args) => remote::show(args).await,
            PluginCommand::Activate(args) => remote::activate(args).await,
            PluginCommand::Rollback(args) => remote::rollback(args).await,
        }
    })
}

/// Guest logs (the `log` import, stdout, stderr) go to stderr.
fn init_plugin_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("vel_plugin=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn load(file: &Path, allow_private: AllowPrivate) -> anyhow::Result<(Runtime, Plugin)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        outbound: OutboundConfig {
            allow_private,
            ..OutboundConfig::default()
        },
        ..RuntimeConfig::default()
    })?;
    let plugin = runtime
        .load(&bytes)
        .await
        .with_context(|| format!("{} is not a valid vel plugin", file.display()))?;
    Ok((runtime, plugin))
}

async fn check(file: &Path) -> anyhow::Result<()> {
    let (runtime, plugin) = load(file, AllowPrivate::default()).await?;
    let kind = plugin.kind();
    println!("{}: a valid vel {kind} plugin", file.display());
    println!("kind:    {kind}");
    println!(
        "world:   vel:plugins/{kind}@0.1.0 (exports {})",
        kind.export()
    );
    println!("name:    {}", plugin.name());
    println!("version: {}", plugin.version());
    println!("sha256:  {}", plugin.sha256());
    println!("size:    {} bytes", plugin.size());
    // What a server with the default compile limits says of it on upload.
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match runtime.inspect(&bytes) {
        Ok(i) => println!(
            "code:    {} bytes in {} functions, the largest {} bytes (within the default upload limits)",
            i.code_bytes, i.functions, i.largest_function_bytes
        ),
        Err(e) => println!("code:    {e} (with the default upload limits)"),
    }
    println!("info:");
    println!("{}", serde_json::to_string_pretty(plugin.info())?);
    for (label, profile) in [("platform", Profile::Platform), ("tenant", Profile::Tenant)] {
        println!(
            "limits ({label}): {}",
            describe(runtime.limits(kind, profile))
        );
    }
    Ok(())
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

/// What `vel plugin run` prints.
#[derive(Serialize)]
struct RunReport<T: Serialize> {
    plugin: String,
    version: String,
    kind: PluginKind,
    /// The guest's answer: `{"Ok": …}` or its own `{"Err": …}`.
    result: T,
    duration_ms: f64,
    fuel_consumed: Option<u64>,
    peak_memory_bytes: u64,
    /// The part of `peak_memory_bytes` the host held for the call.
    peak_host_memory_bytes: u64,
    log_bytes: u64,
}

/// Router input for `vel plugin run`.
#[derive(serde::Deserialize)]
struct RouteInput {
    task: TaskInfo,
    candidates: Vec<Candidate>,
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
    let (runtime, plugin) = load(&args.file, args.allow_private.clone()).await?;
    let profile = if args.tenant {
        Profile::Tenant
    } else {
        Profile::Platform
    };
    let limits = runtime.limits(plugin.kind(), profile).clone();
    match plugin.kind() {
        PluginKind::Router => {
            let mut input = input;
            if let Some(task) = input.get_mut("task") {
                stringify(task, &["metadata"]);
            }
            let input: RouteInput = parse(input, "a router input {\"task\", \"candidates\"}")?;
            let call = runtime
                .route(&plugin, &limits, &input.task, &input.candidates)
                .await;
            report(&plugin, call)
        }
        PluginKind::Condition => {
            let mut input = input;
            stringify(&mut input, &["state", "args"]);
            let input: ConditionInput =
                parse(input, "a condition input {\"output\", \"state\", \"args\"}")?;
            let call = runtime.evaluate(&plugin, &limits, &input).await;
            report(&plugin, call)
        }
        PluginKind::Provider => {
            let mut input = input;
            stringify(&mut input, &["metadata"]);
            if input.get("metadata").is_none()
                && let Some(obj) = input.as_object_mut()
            {
                obj.insert("metadata".into(), Value::String("{}".into()));
            }
            let request: CompletionRequest = parse(input, "a completion request")?;
            let settings = args
                .settings
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--setting `{s}` is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (deltas, printer) = if args.stream {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let printer = tokio::spawn(async move {
                    while let Some(delta) = rx.recv().await {
                        eprint!("{delta}");
                    }
                    eprintln!();
                });
                (Some(tx), Some(printer))
            } else {
                (None, None)
            };
            let call = ProviderCall {
                settings,
                secret: std::env::var("VEL_PLUGIN_SECRET").ok().map(Secret::new),
                allowed_hosts: args.allowed_hosts.clone(),
                allow_base_url_host: true,
                deltas,
            };
            let call = runtime.complete(&plugin, &limits, call, &request).await;
            if let Some(printer) = printer {
                let _ = printer.await;
            }
            report(&plugin, call)
        }
    }
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

/// Prints the result as JSON, or fails with the sandbox's error and stats.
fn report<T: Serialize>(plugin: &Plugin, call: CallResult<T>) -> anyhow::Result<()> {
    let CallResult { result, stats } = call;
    let CallStats {
        duration,
        fuel_consumed,
        peak_memory_bytes,
        peak_host_memory_bytes,
        log_bytes,
    } = stats;
    match result {
        Ok(result) => {
            let report = RunReport {
                plugin: plugin.name().to_string(),
                version: plugin.version().to_string(),
                kind: plugin.kind(),
                result,
                duration_ms: duration.as_secs_f64() * 1e3,
                fuel_consumed,
                peak_memory_bytes,
                peak_host_memory_bytes,
                log_bytes,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Err(error) => bail!(
            "{} {} stopped: {error} (after {:.3} ms, fuel {}, peak memory {} bytes, {} of them held by the host)",
            plugin.name(),
            plugin.version(),
            duration.as_secs_f64() * 1e3,
            fuel_consumed.map_or("unmetered".to_string(), |f| f.to_string()),
            peak_memory_bytes,
            peak_host_memory_bytes
        ),
    }
}
