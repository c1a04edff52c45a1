//! `vel-bench`: the load generator behind `bench/*.sh` and the figures in
//! `docs/benchmarks.md`.
//!
//! - `vel-bench http`: a fixed number of requests over N keep-alive
//!   connections (one per worker, sequential requests on each), with exact
//!   latency percentiles, requests per second, and a failed run when any
//!   response has an unexpected status.
//! - `vel-bench wait`: poll objects created by a run (`--ids-out`) until a
//!   field reaches a value, for end-to-end throughput.

mod conn;
mod load;
mod stats;
mod wait;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "vel-bench", version, about)]
struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a fixed number of requests and report latency percentiles and throughput.
    Http(load::HttpArgs),
    /// Poll objects by id until a JSON field reaches a value.
    Wait(wait::WaitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vel-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Http(args) => {
                let json = args.json;
                match load::run(args).await {
                    Ok(report) => finish(
                        report.passed(),
                        json,
                        || serde_json::to_string(&report),
                        || report.render(),
                    ),
                    Err(e) => fail(&e),
                }
            }
            Command::Wait(args) => {
                let json = args.json;
                match wait::run(args).await {
                    Ok(report) => finish(
                        report.passed(),
                        json,
                        || serde_json::to_string(&report),
                        || report.render(),
                    ),
                    Err(e) => fail(&e),
                }
            }
        }
    })
}

/// Print a report (JSON or text) and turn its verdict into the exit code.
fn finish(
    passed: bool,
    json: bool,
    as_json: impl FnOnce() -> serde_json::Result<String>,
    as_text: impl FnOnce() -> String,
) -> ExitCode {
    if json {
        match as_json() {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&e),
        }
    } else {
        println!("{}", as_text());
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("vel-bench: some requests failed (see the report)");
        ExitCode::FAILURE
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vel-bench: {e}");
    ExitCode::FAILURE
}
