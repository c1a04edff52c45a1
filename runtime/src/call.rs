//! What every call shares: a fresh store set up with the call's limits,
//! turning a finished (or failed) call into a [`CallResult`] with
//! [`CallStats`], and the size accounting behind input/output limits.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;
use wasmtime::{CallHook, Engine, Store, Trap, UpdateDeadline};

use crate::engine::{ActiveCall, EpochTicker};
use crate::error::{BusyShare, Limit, PluginError};
use crate::host_memory::HostMemory;
use crate::outbound::{Denial, OutboundHooks};
use crate::plugin::Plugin;
use crate::sandbox::{CallState, DeltaSink, LogSink, MemoryLimiter, ProgressSink};
use crate::shares::{Shares, Taken};
use crate::{Limits, PluginKind};

/// What one call consumed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallStats {
    /// Wall-clock time, instantiation included.
    pub duration: Duration,
    /// Fuel used, when the call was metered.
    pub fuel_consumed: Option<u64>,
    /// Largest memory the call held, in bytes: linear memory plus what it
    /// made the host allocate (at most the two peaks' sum).
    pub peak_memory_bytes: u64,
    /// Largest host memory the call held (header fields, bodies, streams,
    /// resource-table entries), in bytes; part of `peak_memory_bytes`.
    pub peak_host_memory_bytes: u64,
    /// Bytes logged (log import, stdout, stderr).
    pub log_bytes: u64,
}

/// The outcome of a call and what it consumed. `result` is `Err` when the
/// sandbox stopped the call; the guest's own error comes back in `Ok`.
#[derive(Debug)]
pub struct CallResult<T> {
    /// The guest's answer, or why there is none.
    pub result: Result<T, PluginError>,
    /// What the call consumed.
    pub stats: CallStats,
}

impl<T> CallResult<T> {
    /// A call refused before it started.
    pub(crate) fn refused(error: PluginError) -> Self {
        CallResult {
            result: Err(error),
            stats: CallStats::default(),
        }
    }
}

/// Why a call future failed.
pub(crate) enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// The per-call extras a provider needs; routers and conditions use
/// [`CallExtras::pure`].
pub(crate) struct CallExtras {
    pub(crate) hooks: OutboundHooks,
    pub(crate) settings: Arc<Vec<(String, String)>>,
    pub(crate) deltas: Option<DeltaSink>,
    pub(crate) progress: Option<ProgressSink>,
}

impl CallExtras {
    pub(crate) fn pure() -> Self {
        CallExtras {
            hooks: OutboundHooks::deny_all(),
            settings: Arc::default(),
            deltas: None,
            progress: None,
        }
    }
}

/// The refusal of a call that needs a plugin of kind `expected`.
pub(crate) fn wrong_kind(plugin: &Plugin, expected: PluginKind) -> PluginError {
    PluginError::WrongKind {
        expected,
        actual: plugin.kind(),
    }
}

/// Refuses an input over `limits.max_input_bytes`.
pub(crate) fn check_input(limits: &Limits, input_bytes: usize) -> Result<(), PluginError> {
    if as_u64(input_bytes) > limits.max_input_bytes {
        return Err(PluginError::LimitExceeded {
            limit: Limit::InputSize,
            max: limits.max_input_bytes,
        });
    }
    Ok(())
}

/// What the call's future, its store and its hooks watch together.
#[derive(Debug)]
pub(crate) struct CallWatch {
    /// Names the call in its span and in every line its guest logs.
    pub(crate) id: u64,
    /// How many times the call's future has been polled (see [`run`]).
    polls: AtomicU64,
    /// What the call made the host allocate.
    pub(crate) host: HostMemory,
}

impl CallWatch {
    fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        CallWatch {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            polls: AtomicU64::new(0),
            host: HostMemory::default(),
        }
    }
}

/// One running call of a plugin, counted against its
/// [`Limits::max_concurrency`] and its owner's share of the pool until
/// dropped.
pub(crate) struct Occupied {
    plugin: Plugin,
    _share: Taken,
}

impl Occupied {
    /// A place among `plugin`'s running calls and in its owner's share, or
    /// `Busy` naming the share that is full.
    fn take(
        plugin: &Plugin,
        limits: &Limits,
        shares: &Arc<Shares>,
    ) -> Result<Occupied, PluginError> {
        let running = &plugin.inner.running;
        let max = limits.max_concurrency;
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| PluginError::Busy {
                share: BusyShare::Plugin,
                max,
            })?;
        // From here the plugin's place is ours: dropping `occupied` on a
        // refusal below gives it back.
        let mut occupied = Occupied {
            plugin: plugin.clone(),
            _share: Taken::none(),
        };
        occupied._share = shares.take(&limits.share)?;
        Ok(occupied)
    }
}

impl Drop for Occupied {
    fn drop(&mut self) {
        self.plugin.inner.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A started call: its store and what `finish` needs to judge it.
pub(crate) struct Prepared<'a> {
    pub(crate) store: Store<CallState>,
    pub(crate) watch: Arc<CallWatch>,
    _occupied: Occupied,
    started: Instant,
    initial_fuel: u64,
    /// Keeps the epoch ticker awake until the call ends.
    _active: ActiveCall<'a>,
}

/// Runs a call's future under the wall-clock limit, in the call's span,
/// counting its polls (a poll after the first means the guest gave its
/// thread up — it waited for I/O, or yielded — since the last one) and
/// charging what each poll allocates to the call.
pub(crate) async fn run<F: Future>(
    watch: &CallWatch,
    plugin: &Plugin,
    limits: &Limits,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut work = std::pin::pin!(work);
    let counted = std::future::poll_fn(|cx| {
        watch.polls.fetch_add(1, Ordering::Relaxed);
        watch.host.charge_while(|| work.as_mut().poll(cx))
    });
    tokio::time::timeout(limits.wall_time, counted)
        .instrument(call_span(plugin, watch.id))
        .await
}

/// The span every plugin call runs in.
fn call_span(plugin: &Plugin, call: u64) -> tracing::Span {
    tracing::info_span!(
        "plugin_call",
        call,
        plugin = plugin.name(),
        version = plugin.version(),
        kind = plugin.kind().as_str(),
        sha256 = plugin.sha256_prefix(),
    )
}

/// What every call of a runtime runs with: the engine, the epoch ticker
/// behind CPU-time limits, the shares of the instance pool, and the
/// engine-wide ceilings on memory and stack.
pub(crate) struct Calls {
    /// The engine every store is created in.
    pub(crate) engine: Engine,
    /// Interrupts running guests every `epoch_tick`.
    pub(crate) ticker: EpochTicker,
    /// The instance pool, divided between the platform and organizations.
    pub(crate) shares: Arc<Shares>,
    /// Hard ceiling on one instance's linear memory.
    pub(crate) max_memory_bytes: u64,
    /// WebAssembly stack per call, in bytes.
    pub(crate) max_wasm_stack: usize,
    /// The ticker's period: the resolution of CPU-time limits.
    pub(crate) epoch_tick: Duration,
}

impl Calls {
    /// A fresh store for one call of `plugin` under `limits`, or `Busy`
    /// when the plugin already runs its share of calls.
    pub(crate) fn prepare(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        extras: CallExtras,
    ) -> Result<Prepared<'_>, PluginError> {
        let occupied = Occupied::take(plugin, limits, &self.shares)?;
        let watch = Arc::new(CallWatch::new());
        let logs = Arc::new(LogSink::new(
            plugin.inner.name.clone(),
            plugin.inner.version.clone(),
            watch.id,
            limits.max_log_bytes,
        ));
        let memory = limits.memory_bytes.min(self.max_memory_bytes);
        let state = CallState::new(
            MemoryLimiter::new(memory, watch.clone()),
            logs,
            extras.hooks,
            extras.settings,
            extras.deltas,
            extras.progress,
            limits,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Host memory: checked each time the guest comes back from the
        // host, which is where it can have made the host allocate.
        store.call_hook(|mut ctx, hook| match hook {
            CallHook::ReturningFromHost => ctx.data_mut().limiter.check(),
            _ => Ok(()),
        });
        // Fuel is enabled engine-wide; unmetered calls get all of it.
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        let initial_fuel = store.get_fuel().unwrap_or(0);

        // CPU time: every epoch tick that finds the guest running counts
        // one tick. A guest that has kept its thread since the previous
        // tick also yields to the executor, so a busy loop never starves
        // other tasks and the wall-clock timeout can fire. One that gave
        // its thread up meanwhile (it waited for the upstream) does not:
        // it was just scheduled, and a yield would only hand its task to
        // the other worker.
        let tick = self.epoch_tick.max(Duration::from_micros(100));
        let budget = limits.cpu_time.as_nanos().div_ceil(tick.as_nanos()).max(1);
        let budget = u64::try_from(budget).unwrap_or(u64::MAX);
        let cpu_max = millis(limits.cpu_time);
        let polled = watch.clone();
        let mut polls_at_last_tick = 0;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.cpu_ticks += 1;
            if state.cpu_ticks > budget {
                state.exceed(Limit::CpuTime, cpu_max);
                wasmtime::bail!("cpu time limit of {cpu_max} ms exceeded");
            }
            let polls = polled.polls.load(Ordering::Relaxed);
            if polls == polls_at_last_tick {
                // The poll that resumes it after this yield is not the
                // guest giving its thread up.
                polls_at_last_tick = polls + 1;
                // Tokio's yield wakes the task after the poll, not during
                // it, so it is a yield even under a future that polls
                // again on wakes during its poll (the server's connections).
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            } else {
                polls_at_last_tick = polls;
                Ok(UpdateDeadline::Continue(1))
            }
        });
        Ok(Prepared {
            store,
            watch,
            _occupied: occupied,
            started: Instant::now(),
            initial_fuel,
            _active: self.ticker.enter(),
        })
    }

    /// Judges a finished call: limits hit, traps, panics, denied requests,
    /// output size; and what it consumed.
    pub(crate) fn finish<T: WireSize>(
        &self,
        prepared: Prepared<'_>,
        limits: &Limits,
        outcome: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
    ) -> CallResult<T> {
        let Prepared {
            store,
            watch,
            started,
            initial_fuel,
            ..
        } = prepared;
        let fuel_consumed = limits
            .fuel
            .map(|_| initial_fuel.saturating_sub(store.get_fuel().unwrap_or(0)));
        let state = store.data();
        let stats = CallStats {
            duration: started.elapsed(),
            fuel_consumed,
            peak_memory_bytes: as_u64(state.limiter.peak.saturating_add(watch.host.peak())),
            peak_host_memory_bytes: as_u64(watch.host.peak()),
            log_bytes: state.logs.used(),
        };
        let result = match outcome {
            Err(_elapsed) => Err(PluginError::LimitExceeded {
                limit: Limit::WallTime,
                max: millis(limits.wall_time),
            }),
            Ok(Err(failure)) => Err(self.classify(state, limits, failure)),
            Ok(Ok(value)) => {
                let output = as_u64(value.wire_size()).saturating_add(state.streamed_bytes);
                if let Some(denial) = state.hooks.denied() {
                    Err(match denial {
                        Denial::Host(host) => PluginError::HttpRequestDenied { host },
                        Denial::Address(host) => PluginError::DestinationDenied { host },
                    })
                } else if output > limits.max_output_bytes {
                    Err(PluginError::LimitExceeded {
                        limit: Limit::OutputSize,
                        max: limits.max_output_bytes,
                    })
                } else {
                    Ok(value)
                }
            }
        };
        if let Err(error) = &result {
            tracing::warn!(%error, duration_ms = stats.duration.as_secs_f64() * 1e3, "plugin call failed");
        }
        CallResult { result, stats }
    }

    /// Names what stopped a call that failed inside wasmtime.
    fn classify(&self, state: &CallState, limits: &Limits, failure: Failure) -> PluginError {
        if let Some((limit, max)) = state.exceeded {
            return PluginError::LimitExceeded { limit, max };
        }
        if state.limiter.hit {
            return PluginError::LimitExceeded {
                limit: Limit::Memory,
                max: limits.memory_bytes.min(self.max_memory_bytes),
            };
        }
        if state.logs.exceeded() {
            return PluginError::LimitExceeded {
                limit: Limit::LogVolume,
                max: state.logs.max(),
            };
        }
        let err = match failure {
            Failure::Instantiate(err) => return PluginError::Instantiate(format!("{err:#}")),
            Failure::Call(err) => err,
        };
        if let Some(trap) = err.downcast_ref::<Trap>() {
            return match trap {
                Trap::OutOfFuel => PluginError::LimitExceeded {
                    limit: Limit::Fuel,
                    max: limits.fuel.unwrap_or(u64::MAX),
                },
                Trap::StackOverflow => PluginError::LimitExceeded {
                    limit: Limit::Stack,
                    max: as_u64(self.max_wasm_stack),
                },
                Trap::Interrupt => PluginError::LimitExceeded {
                    limit: Limit::CpuTime,
                    max: millis(limits.cpu_time),
                },
                other => match panic_message(&state.logs.stderr_text()) {
                    Some(message) => PluginError::Panic { message },
                    None => PluginError::Trap {
                        message: other.to_string(),
                    },
                },
            };
        }
        if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return PluginError::Trap {
                message: format!(
                    "the plugin exited with status {} instead of answering",
                    exit.0
                ),
            };
        }
        PluginError::Trap {
            message: format!("{err:#}"),
        }
    }
}

/// The message of a Rust panic, from what the guest wrote to stderr:
/// `thread '…' panicked at src/lib.rs:3:5:\nmessage\nnote: …`.
fn panic_message(stderr: &str) -> Option<String> {
    let (_, rest) = stderr.split_once("panicked at ")?;
    let (location, rest) = rest.split_once('\n').unwrap_or((rest, ""));
    let message: Vec<&str> = rest
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect();
    let location = location.trim_end_matches(':');
    Some(format!("{} (at {location})", message.join("\n").trim()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Approximate size of a value as passed across the component boundary:
/// string and list contents plus a few bytes per scalar. Used for the input
/// and output limits.
pub trait WireSize {
    /// Size in bytes.
    fn wire_size(&self) -> usize;
}

impl WireSize for String {
    fn wire_size(&self) -> usize {
        self.len() + 8
    }
}

impl<T: WireSize> WireSize for Option<T> {
    fn wire_size(&self) -> usize {
        1 + self.as_ref().map_or(0, WireSize::wire_size)
    }
}

impl<T: WireSize> WireSize for [T] {
    fn wire_size(&self) -> usize {
        8 + self.iter().map(WireSize::wire_size).sum::<usize>()
    }
}

impl<T: WireSize> WireSize for Vec<T> {
    fn wire_size(&self) -> usize {
        self.as_slice().wire_size()
    }
}

impl<A: WireSize, B: WireSize> WireSize for (A, B) {
    fn wire_size(&self) -> usize {
        self.0.wire_size() + self.1.wire_size()
    }
}

impl<T: WireSize, E: WireSize> WireSize for Result<T, E> {
    fn wire_size(&self) -> usize {
        1 + match self {
            Ok(v) => v.wire_size(),
            Err(e) => e.wire_size(),
        }
    }
}

/// Scalars and enums: a fixed 8 bytes.
macro_rules! fixed_size {
    ($($t:ty),* $(,)?) => {
        $(impl WireSize for $t {
            fn wire_size(&self) -> usize {
                8
            }
        })*
    };
}

mod sizes {
    use super::WireSize;
    use crate::types::*;

    fixed_size!(
        u32,
        f32,
        f64,
        bool,
        TaskType,
        Priority,
        CircuitState,
        Role,
        Preference,
        FinishReason,
        Usage,
        Features,
    );

    impl WireSize for TaskInfo {
        fn wire_size(&self) -> usize {
            self.id.wire_size()
                + self.organization_id.wire_size()
                + self.requested_model.wire_size()
                + self.metadata.wire_size()
                + 48
        }
    }

    impl WireSize for Candidate {
        fn wire_size(&self) -> usize {
            self.provider.wire_size() + self.model.wire_size() + self.good_for.wire_size() + 64
        }
    }

    impl WireSize for Attempt {
        fn wire_size(&self) -> usize {
            self.provider.wire_size() + self.model.wire_size()
        }
    }

    impl WireSize for Plan {
        fn wire_size(&self) -> usize {
            self.attempts.wire_size() + self.reason.wire_size()
        }
    }

    impl WireSize for RouteError {
        fn wire_size(&self) -> usize {
            match self {
                RouteError::NoCandidate(m) | RouteError::InvalidInput(m) => m.wire_size(),
            }
        }
    }

    impl WireSize for ConditionInput {
        fn wire_size(&self) -> usize {
            self.output.wire_size() + self.state.wire_size() + self.args.wire_size()
        }
    }

    impl WireSize for Outcome {
        fn wire_size(&self) -> usize {
            self.branch.wire_size() + self.explanation.wire_size() + 18
        }
    }

    impl WireSize for ConditionError {
        fn wire_size(&self) -> usize {
            match self {
                ConditionError::InvalidArgs(m) | ConditionError::Other(m) => m.wire_size(),
            }
        }
    }

    impl WireSize for ToolCall {
        fn wire_size(&self) -> usize {
            self.id.wire_size() + self.name.wire_size() + self.arguments.wire_size()
        }
    }

    impl WireSize for Message {
        fn wire_size(&self) -> usize {
            self.content.wire_size()
                + self.tool_calls.wire_size()
                + self.tool_call_id.wire_size()
                + self.name.wire_size()
                + 8
        }
    }

    impl WireSize for ToolDefinition {
        fn wire_size(&self) -> usize {
            self.name.wire_size() + self.description.wire_size() + self.parameters.wire_size() + 2
        }
    }

    impl WireSize for ResponseFormat {
        fn wire_size(&self) -> usize {
            1 + match self {
                ResponseFormat::Text | ResponseFormat::JsonObject => 0,
                ResponseFormat::JsonSchema(f) => {
                    f.name.wire_size() + f.description.wire_size() + f.schema.wire_size() + 1
                }
            }
        }
    }

    impl WireSize for CompletionRequest {
        fn wire_size(&self) -> usize {
            let choice = match &self.tool_choice {
                Some(ToolChoice::Named(name)) => name.wire_size(),
                _ => 8,
            };
            self.model.wire_size()
                + self.messages.wire_size()
                + self.stop.wire_size()
                + self.metadata.wire_size()
                + self.tools.wire_size()
                + choice
                + self.response_format.wire_size()
                + 56
        }
    }

    impl WireSize for TokenLogprob {
        fn wire_size(&self) -> usize {
            self.token.wire_size()
                + 8
                + 8
                + self
                    .top
                    .iter()
                    .map(|t| t.token.wire_size() + 8)
                    .sum::<usize>()
        }
    }

    impl WireSize for CompletionResponse {
        fn wire_size(&self) -> usize {
            self.text.wire_size()
                + self.model.wire_size()
                + self.tool_calls.wire_size()
                + self.logprobs.wire_size()
                + 24
        }
    }

    impl WireSize for EmbeddingInput {
        fn wire_size(&self) -> usize {
            match self {
                EmbeddingInput::Text(text) => text.wire_size(),
                EmbeddingInput::Tokens(ids) => ids.wire_size(),
            }
        }
    }

    impl WireSize for EmbeddingRequest {
        fn wire_size(&self) -> usize {
            self.model.wire_size() + self.inputs.wire_size() + self.user.wire_size() + 8
        }
    }

    impl WireSize for EmbeddingResponse {
        fn wire_size(&self) -> usize {
            self.model.wire_size() + self.vectors.wire_size() + 8
        }
    }

    impl WireSize for EmbeddingModel {
        fn wire_size(&self) -> usize {
            self.id.wire_size() + 16
        }
    }

    impl WireSize for EmbeddingError {
        fn wire_size(&self) -> usize {
            match self {
                EmbeddingError::RateLimited(_) | EmbeddingError::Timeout => 8,
                EmbeddingError::Unavailable(m)
                | EmbeddingError::InvalidRequest(m)
                | EmbeddingError::Auth(m)
                | EmbeddingError::Other(m) => m.wire_size(),
            }
        }
    }

    impl WireSize for ProviderError {
        fn wire_size(&self) -> usize {
            match self {
                ProviderError::RateLimited(_) | ProviderError::Timeout => 8,
                ProviderError::Unavailable(m)
                | ProviderError::InvalidRequest(m)
                | ProviderError::Auth(m)
                | ProviderError::ContentFiltered(m)
                | ProviderError::Other(m) => m.wire_size(),
            }
        }
    }

    impl WireSize for ModelInfo {
        fn wire_size(&self) -> usize {
            self.id.wire_size() + self.good_for.wire_size() + 32
        }
    }

    impl WireSize for CredentialHeader {
        fn wire_size(&self) -> usize {
            self.name.wire_size() + self.prefix.wire_size()
        }
    }

    impl WireSize for ProviderInfo {
        fn wire_size(&self) -> usize {
            self.name.wire_size()
                + self.version.wire_size()
                + self.description.wire_size()
                + self.models.wire_size()
                + self.credential.wire_size()
                + self.base_url_setting.wire_size()
                + 8
        }
    }

    impl WireSize for RouterInfo {
        fn wire_size(&self) -> usize {
            self.name.wire_size() + self.version.wire_size() + self.description.wire_size()
        }
    }

    impl WireSize for Tool {
        fn wire_size(&self) -> usize {
            self.name.wire_size()
                + self.title.wire_size()
                + self.description.wire_size()
                + self.input_schema.wire_size()
                + self.output_schema.wire_size()
                + self.annotations.wire_size()
        }
    }

    impl WireSize for ToolResult {
        fn wire_size(&self) -> usize {
            self.content.wire_size() + self.structured_content.wire_size() + 1
        }
    }

    impl WireSize for ToolError {
        fn wire_size(&self) -> usize {
            match self {
                ToolError::RateLimited(_) | ToolError::Timeout => 8,
                ToolError::Server((_, m)) => 8 + m.wire_size(),
                ToolError::UnknownTool(m)
                | ToolError::InvalidArguments(m)
                | ToolError::Auth(m)
                | ToolError::Unavailable(m)
                | ToolError::Protocol(m)
                | ToolError::Other(m) => m.wire_size(),
            }
        }
    }

    impl WireSize for ToolCredentialHeader {
        fn wire_size(&self) -> usize {
            self.name.wire_size() + self.prefix.wire_size()
        }
    }

    impl WireSize for ToolServerInfo {
        fn wire_size(&self) -> usize {
            self.name.wire_size()
                + self.version.wire_size()
                + self.description.wire_size()
                + self.credential.wire_size()
                + self.base_url_setting.wire_size()
        }
    }

    impl WireSize for ConditionInfo {
        fn wire_size(&self) -> usize {
            self.name.wire_size()
                + self.version.wire_size()
                + self.description.wire_size()
                + self.args_schema.wire_size()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_message_is_read_from_rust_panic_output() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:20:9:\nboom on t1\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom on t1 (at src/lib.rs:20:9)")
        );
        assert_eq!(panic_message("just a log line"), None);
    }
}
