//! Command-line entry points: `vel serve`, `vel migrate`, `vel plugin …`.

pub mod plugin;
pub mod remote;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// vel — orchestrates AI tasks across providers through WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "vel", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP API (configuration from the environment and vel.toml; see README).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Plugin-author tools: check and run a component locally; publish, list, activate and roll back on a running server.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Run a parsed command line and turn its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve => serve(),
        Command::Migrate => migrate(),
        Command::Plugin(cmd) => plugin::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::server::init_tracing(&config.log);
    runtime()?.block_on(crate::server::serve(config))
}

fn migrate() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::server::init_tracing(&config.log);
    runtime()?.block_on(async {
        crate::store::Db::migrate(&config.database_url).await?;
        println!(
            "migrated {}",
            crate::config::redact_url(&config.database_url)
        );
        anyhow::Ok(())
    })
}
