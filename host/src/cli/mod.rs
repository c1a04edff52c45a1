//! Command-line entry points: `vel serve`, `vel migrate`, `vel rotate-keys`,
//! `vel plugin …`.

pub mod plugin;
pub mod remote;
pub mod run_json;
pub mod scaffold;
pub mod scaffold_langs;

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
    /// Re-encrypt every stored secret under the newest key of VEL_SECRET_KEY
    /// (a list, newest first), in small transactions while the servers run;
    /// safe to run again.
    RotateKeys {
        /// Rows re-encrypted per transaction.
        #[arg(long, default_value_t = crate::secrets::rotation::BATCH,
              value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch: i64,
    },
    /// Plugin-author tools: start a project, check, run and test a component locally; publish, list, activate, roll back and approve on a running server.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Run a parsed command line and turn its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve => serve(),
        Command::Migrate => migrate(),
        Command::RotateKeys { batch } => rotate_keys(batch),
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
    crate::server::init_tracing(&config.log, config.operations.log_format);
    runtime()?.block_on(crate::server::serve(config))
}

fn migrate() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::server::init_tracing(&config.log, config.operations.log_format);
    runtime()?.block_on(async {
        crate::store::Db::migrate(&config.database_url).await?;
        println!(
            "migrated {}",
            crate::config::redact_url(&config.database_url)
        );
        anyhow::Ok(())
    })
}

fn rotate_keys(batch: i64) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::server::init_tracing(&config.log, config.operations.log_format);
    let keys =
        crate::secrets::MasterKey::load_existing(config.secret_key.as_deref(), &config.data_dir)?;
    runtime()?.block_on(async {
        let db = crate::store::Db::open(
            &config.database_url,
            config.tenant_database_url.as_deref(),
            2,
        )
        .await?;
        let done = crate::secrets::rotation::rotate(&db, &keys, batch).await;
        db.close().await;
        let done = done?;
        println!(
            "key {}: {} re-encrypted, {} already current, {} changed meanwhile, {} unreadable",
            keys.current_id(),
            done.resealed,
            done.current,
            done.changed,
            done.unreadable.len()
        );
        if !done.unreadable.is_empty() {
            anyhow::bail!(
                "no key of VEL_SECRET_KEY opens the keys of integrations {}",
                done.unreadable.join(", ")
            );
        }
        anyhow::Ok(())
    })
}
