//! The `vel` binary: the server and its command-line tools.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = vel::cli::Cli::parse();
    vel::cli::run(cli)
}
