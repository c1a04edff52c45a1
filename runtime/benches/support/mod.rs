//! What the runtime's benchmarks share: a runtime with built-in plugins
//! loaded on a single-threaded executor, and timing a call many times to
//! print its percentiles.

use std::time::{Duration, Instant};

use vel_runtime::{OutboundConfig, Plugin, Runtime, RuntimeConfig};

/// As in the `vel` binary: host memory a call makes the host allocate is
/// charged to the call.
#[global_allocator]
static ALLOCATOR: vel_runtime::Accounted<std::alloc::System> =
    vel_runtime::Accounted(std::alloc::System);

/// A default runtime and the current-thread executor its calls run on.
pub(crate) struct Harness {
    /// Drives every call (`block_on`).
    pub tokio: tokio::runtime::Runtime,
    /// The runtime under measurement.
    pub runtime: Runtime,
}

impl Harness {
    /// A runtime with the default configuration, except that outbound
    /// requests may reach loopback (where the benchmarks' mock upstream is).
    pub(crate) fn new() -> Self {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let runtime = Runtime::new(RuntimeConfig {
            outbound: OutboundConfig {
                allow_private: "127.0.0.0/8,::1/128".parse().expect("valid ranges"),
                ..OutboundConfig::default()
            },
            ..RuntimeConfig::default()
        })
        .expect("vel runtime");
        Harness { tokio, runtime }
    }

    /// Loads (compiles) the built-in plugin `name`, or, when
    /// `VEL_BENCH_PLUGIN_DIR` is set, the component `<dir>/<name>.wasm`
    /// instead: two builds of a guest can then be compared with the same
    /// bench executable, one run after the other.
    pub(crate) fn load(&self, name: &str) -> Plugin {
        let bytes = match std::env::var_os("VEL_BENCH_PLUGIN_DIR") {
            Some(dir) => {
                let path = std::path::Path::new(&dir).join(format!("{name}.wasm"));
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
            }
            None => vel_plugin_artifacts::builtin(name)
                .unwrap_or_else(|| panic!("{name} is built"))
                .bytes
                .to_vec(),
        };
        self.tokio
            .block_on(self.runtime.load(&bytes))
            .expect("plugin loads")
    }
}

/// Runs `call` `warmup` times untimed, then `samples` times timed, and
/// prints p50/p90/p99/p99.9 and the maximum in microseconds.
pub(crate) fn percentiles(name: &str, warmup: usize, samples: usize, call: impl FnMut()) {
    percentiles_after(name, warmup, samples, || {}, call);
}

/// [`percentiles`], running `before` (untimed) ahead of every call.
pub(crate) fn percentiles_after(
    name: &str,
    warmup: usize,
    samples: usize,
    mut before: impl FnMut(),
    mut call: impl FnMut(),
) {
    for _ in 0..warmup {
        call();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            before();
            let start = Instant::now();
            call();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name}: {samples} calls  p50 {:.2} µs  p90 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
        us(at(0.50)),
        us(at(0.90)),
        us(at(0.99)),
        us(at(0.999)),
        us(times[times.len() - 1]),
    );
}
