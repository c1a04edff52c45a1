//! What a call's `Store` holds: the memory limiter, the log budget and
//! captured stdio, a WASI context that grants nothing, the provider's
//! settings, stream sink and outbound-HTTP hooks — and the host functions
//! behind the vel imports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::Limits;
use crate::bindings::provider::vel::plugins::{config, log, stream};
use crate::bindings::tool_server::vel::plugins::progress;
use crate::call::CallWatch;
use crate::error::Limit;
use crate::outbound::OutboundHooks;
use crate::types::ToolCallDelta;

/// How much of the guest's stderr is kept to explain a panic.
const STDERR_TAIL_BYTES: usize = 4096;

/// Per-call store data. Built fresh for every call and dropped with it.
pub(crate) struct CallState {
    pub(crate) table: ResourceTable,
    /// Built on first use: most router and condition calls never touch WASI.
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    pub(crate) hooks: OutboundHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) logs: Arc<LogSink>,
    pub(crate) settings: Arc<Vec<(String, String)>>,
    pub(crate) deltas: Option<DeltaSink>,
    /// Where a tool call's progress reports go.
    pub(crate) progress: Option<ProgressSink>,
    /// Bytes streamed through `stream.emit` so far (count as output).
    pub(crate) streamed_bytes: u64,
    pub(crate) max_output_bytes: u64,
    /// Deltas emitted so far, empty ones included.
    deltas_emitted: u64,
    max_deltas: u64,
    /// Epoch ticks during which guest code was seen running.
    pub(crate) cpu_ticks: u64,
    /// The limit that stopped the call, when a host hook stopped it.
    pub(crate) exceeded: Option<(Limit, u64)>,
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// More text (`stream.emit`).
    Text(String),
    /// A piece of a tool call (`stream.emit-tool-call`).
    ToolCall(ToolCallDelta),
}

/// Where `stream.emit` and `stream.emit-tool-call` send deltas. Dropping
/// the receiver cancels.
pub type DeltaSink = tokio::sync::mpsc::UnboundedSender<Delta>;

/// One progress report of a running tool call (`progress.report`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolProgress {
    /// Progress so far.
    pub progress: f64,
    /// The total, when the server knows it.
    pub total: Option<f64>,
    /// A message for people.
    pub message: Option<String>,
}

/// Where `progress.report` sends a tool call's reports. Dropping the
/// receiver cancels.
pub type ProgressSink = tokio::sync::mpsc::UnboundedSender<ToolProgress>;

impl CallState {
    pub(crate) fn new(
        limiter: MemoryLimiter,
        logs: Arc<LogSink>,
        hooks: OutboundHooks,
        settings: Arc<Vec<(String, String)>>,
        deltas: Option<DeltaSink>,
        progress: Option<ProgressSink>,
        limits: &Limits,
    ) -> Self {
        CallState {
            table: ResourceTable::new(),
            wasi: None,
            http: WasiHttpCtx::new(),
            hooks,
            limiter,
            logs,
            settings,
            deltas,
            progress,
            streamed_bytes: 0,
            max_output_bytes: limits.max_output_bytes,
            deltas_emitted: 0,
            max_deltas: limits.max_deltas,
            cpu_ticks: 0,
            exceeded: None,
        }
    }

    /// Records the first limit a host hook stopped the call for.
    pub(crate) fn exceed(&mut self, limit: Limit, max: u64) {
        self.exceeded.get_or_insert((limit, max));
    }
}

/// A WASI context that grants nothing: no preopened directories, no
/// environment, no arguments, no network; stdin closed; stdout and stderr
/// go to the call's log budget.
fn empty_wasi(logs: &Arc<LogSink>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(GuestStdio {
            logs: logs.clone(),
            stream: StdioStream::Stdout,
        })
        .stderr(GuestStdio {
            logs: logs.clone(),
            stream: StdioStream::Stderr,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let logs = &self.logs;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| empty_wasi(logs)),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps linear memory plus the host memory the call holds, and records
/// linear memory's peak.
pub(crate) struct MemoryLimiter {
    max: usize,
    /// Sum of all memories' current sizes.
    total: usize,
    pub(crate) peak: usize,
    pub(crate) hit: bool,
    /// Where the call's host-memory balance is kept.
    watch: Arc<CallWatch>,
}

impl MemoryLimiter {
    pub(crate) fn new(max: u64, watch: Arc<CallWatch>) -> Self {
        MemoryLimiter {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            total: 0,
            peak: 0,
            hit: false,
            watch,
        }
    }

    /// Fails (and remembers) once linear plus host memory is over the limit.
    pub(crate) fn check(&mut self) -> wasmtime::Result<()> {
        self.admit(self.total)
    }

    fn admit(&mut self, linear: usize) -> wasmtime::Result<()> {
        let host = self.watch.host.held();
        if linear.saturating_add(host) > self.max {
            self.hit = true;
            wasmtime::bail!(
                "memory limit of {} bytes exceeded ({linear} bytes of linear memory, {host} bytes held by the host)",
                self.max
            );
        }
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        self.admit(total)?;
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any
        // plugin's needs and bounds host memory at a few MiB.
        Ok(desired <= 1_000_000)
    }
}

/// The call's log budget, shared by the `log` import, stdout and stderr.
pub(crate) struct LogSink {
    plugin: Arc<str>,
    version: Arc<str>,
    call: u64,
    max: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
    stderr_tail: Mutex<Vec<u8>>,
}

impl LogSink {
    pub(crate) fn new(plugin: Arc<str>, version: Arc<str>, call: u64, max: u64) -> Self {
        LogSink {
            plugin,
            version,
            call,
            max,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            stderr_tail: Mutex::new(Vec::new()),
        }
    }

    /// Takes `bytes` from the budget; false (and remembered) when over it.
    fn charge(&self, bytes: usize) -> bool {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let used = self
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        if used > self.max {
            self.exceeded.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).min(self.max)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// What the guest wrote to stderr (its start), e.g. a panic message.
    pub(crate) fn stderr_text(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        String::from_utf8_lossy(&tail).into_owned()
    }

    fn write_stdio(&self, stream: StdioStream, bytes: &[u8]) {
        if stream == StdioStream::Stderr
            && let Ok(mut tail) = self.stderr_tail.lock()
        {
            let room = STDERR_TAIL_BYTES.saturating_sub(tail.len());
            tail.extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        let text = escape_controls(text);
        let (plugin, version, call) = (&*self.plugin, &*self.version, self.call);
        match stream {
            StdioStream::Stdout => tracing::info!(
                target: "vel_plugin::stdout", plugin, version, call, "{text}"
            ),
            StdioStream::Stderr => tracing::warn!(
                target: "vel_plugin::stderr", plugin, version, call, "{text}"
            ),
        }
    }
}

/// A guest's text as one log line: control characters (newlines, carriage
/// returns, escape sequences) written as Rust escapes, so nothing a guest
/// logs can end its line and forge another record.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Which standard stream a [`GuestStdio`] captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdioStream {
    Stdout,
    Stderr,
}

/// Guest stdout/stderr: forwarded to `tracing`, charged to the log budget.
#[derive(Clone)]
struct GuestStdio {
    logs: Arc<LogSink>,
    stream: StdioStream,
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 streams are linked; p3 is not enabled.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStdio {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if !self.logs.charge(bytes.len()) {
            return Err(StreamError::trap("log limit exceeded"));
        }
        self.logs.write_stdio(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if !self.logs.charge(message.len()) {
            let max = self.logs.max();
            self.exceed(Limit::LogVolume, max);
            wasmtime::bail!("log limit of {max} bytes exceeded");
        }
        let (plugin, version, call) = (&*self.logs.plugin, &*self.logs.version, self.logs.call);
        let message = escape_controls(&message);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "vel_plugin", plugin, version, call, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "vel_plugin", plugin, version, call, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "vel_plugin", plugin, version, call, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "vel_plugin", plugin, version, call, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "vel_plugin", plugin, version, call, "{message}")
            }
        }
        Ok(())
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.settings.as_ref().clone()
    }
}

impl CallState {
    /// Counts one delta of `len` bytes against the call's limits.
    fn charge_delta(&mut self, len: usize) -> wasmtime::Result<()> {
        self.deltas_emitted += 1;
        if self.deltas_emitted > self.max_deltas {
            let max = self.max_deltas;
            self.exceed(Limit::Deltas, max);
            wasmtime::bail!("limit of {max} streamed deltas exceeded");
        }
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.streamed_bytes = self.streamed_bytes.saturating_add(len);
        if self.streamed_bytes > self.max_output_bytes {
            let max = self.max_output_bytes;
            self.exceed(Limit::OutputSize, max);
            wasmtime::bail!("output limit of {max} bytes exceeded while streaming");
        }
        Ok(())
    }

    /// `stream.emit` of any contract version.
    pub(crate) fn emit_text(&mut self, delta: String) -> wasmtime::Result<bool> {
        self.charge_delta(delta.len())?;
        Ok(match &self.deltas {
            // Nothing to tell the client; only whether it still listens.
            Some(sink) if delta.is_empty() => !sink.is_closed(),
            Some(sink) => sink.send(Delta::Text(delta)).is_ok(),
            // A plain `complete` call has nobody listening.
            None => true,
        })
    }
}

impl stream::Host for CallState {
    fn emit(&mut self, delta: String) -> wasmtime::Result<bool> {
        self.emit_text(delta)
    }

    fn emit_tool_call(&mut self, delta: ToolCallDelta) -> wasmtime::Result<bool> {
        let len = delta.arguments.len()
            + delta.id.as_ref().map_or(0, String::len)
            + delta.name.as_ref().map_or(0, String::len);
        self.charge_delta(len)?;
        Ok(match &self.deltas {
            Some(sink) => sink.send(Delta::ToolCall(delta)).is_ok(),
            None => true,
        })
    }
}

impl progress::Host for CallState {
    fn report(
        &mut self,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) -> wasmtime::Result<bool> {
        // Each report counts as a delta of its message's size: a server
        // that floods progress is stopped like a flooding stream.
        self.charge_delta(16 + message.as_ref().map_or(0, String::len))?;
        Ok(match &self.progress {
            Some(sink) => sink
                .send(ToolProgress {
                    progress,
                    total,
                    message,
                })
                .is_ok(),
            None => true,
        })
    }
}

// `types` has no functions, but bindgen still generates a `Host` trait.
impl crate::bindings::provider::vel::plugins::types::Host for CallState {}
