//! `vel-mock-upstream`: the mock upstream as a standalone process, for benchmarks.
//! Prints `listening on http://ADDR` as its first line, then serves until
//! interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vel_mock_upstream::MockUpstream;

/// Command line of the standalone mock.
#[derive(Debug, Parser)]
#[command(name = "vel-mock-upstream", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Latency added to every completion request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Every Nth completion request fails (0: never).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// Status of the failing requests.
    #[arg(long, default_value_t = 503)]
    fail_status: u16,
    /// Do not record requests (recommended for load: records grow without bound).
    #[arg(long)]
    no_record: bool,
    /// Require this API key (Bearer or x-api-key).
    #[arg(long)]
    api_key: Option<String>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    let mock = MockUpstream::bind(args.listen).await?;
    mock.set_latency(Duration::from_millis(args.latency_ms));
    mock.fail_every(args.fail_every, args.fail_status);
    mock.set_recording(!args.no_record);
    mock.require_api_key(args.api_key.as_deref());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", mock.base_url())?;
    stdout.flush()?;
    drop(stdout);
    tokio::signal::ctrl_c().await?;
    mock.shutdown().await;
    Ok(())
}
