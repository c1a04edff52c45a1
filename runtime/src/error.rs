//! Errors: loading a component ([`LoadError`]) and calling one
//! ([`PluginError`]), with [`Limit`] naming which limit a call exceeded.

use std::fmt;

/// One of the limits a call runs under (see [`crate::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Linear memory, in bytes.
    Memory,
    /// Fuel: a deterministic instruction budget.
    Fuel,
    /// CPU time spent running guest code, in milliseconds.
    CpuTime,
    /// Wall-clock time of the whole call, in milliseconds.
    WallTime,
    /// Size of the call's input, in bytes.
    InputSize,
    /// Size of the call's output (result and streamed deltas), in bytes.
    OutputSize,
    /// Bytes written to the log, stdout and stderr.
    LogVolume,
    /// The WebAssembly call stack, in bytes (deep recursion).
    Stack,
    /// Deltas streamed by one call (empty ones included).
    Deltas,
}

impl Limit {
    /// The unit the limit's `max` is expressed in.
    pub fn unit(self) -> &'static str {
        match self {
            Limit::Memory
            | Limit::InputSize
            | Limit::OutputSize
            | Limit::LogVolume
            | Limit::Stack => "bytes",
            Limit::Fuel => "fuel units",
            Limit::CpuTime | Limit::WallTime => "ms",
            Limit::Deltas => "deltas",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Memory => "memory",
            Limit::Fuel => "fuel",
            Limit::CpuTime => "cpu time",
            Limit::WallTime => "wall-clock time",
            Limit::InputSize => "input size",
            Limit::OutputSize => "output size",
            Limit::LogVolume => "log volume",
            Limit::Stack => "stack",
            Limit::Deltas => "streamed deltas",
        })
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component: the file does not start with the `\\0asm` header")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "not a component: this is a core WebAssembly module; build with `--target wasm32-wasip2` \
         (or run `wasm-tools component new`) to make a component"
    )]
    CoreModule,
    /// The bytes are not a well-formed component.
    #[error("not a valid component: {0}")]
    Malformed(String),
    /// The component's code is larger than the compiler may take on.
    #[error(
        "the component's code is too large to compile: {bytes} bytes of function bodies, \
         at most {max} are accepted"
    )]
    CodeTooLarge {
        /// Its function bodies' total size so far, in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// One of the component's functions is larger than the compiler may
    /// take on.
    #[error(
        "the component has a function too large to compile: {bytes} bytes, at most {max} are \
         accepted"
    )]
    FunctionTooLarge {
        /// The function body's size, in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The component creates more core module instances than its class
    /// allows (a Python component needs a class the operator configured).
    #[error(
        "the component creates {count} core module instances, more than the {max} {class} \
         allows (a Python component needs a plugin class such as `python`, named by the \
         manifest's `class` and enabled by the operator)"
    )]
    TooManyCoreInstances {
        /// How many it creates.
        count: usize,
        /// The limit.
        max: u32,
        /// Which limit: "default" or `class NAME`.
        class: String,
    },
    /// The plugin names a class this runtime has not been configured with.
    #[error("unknown plugin class `{class}`: this server offers {offered}")]
    UnknownClass {
        /// The class asked for.
        class: String,
        /// The configured classes, for the message.
        offered: String,
    },
    /// The component exports none of the vel worlds.
    #[error(
        "unknown world: the component exports none of vel:plugins/completion, routing or \
         evaluation @0.2.0 or @0.1.0 (it exports: {exports})"
    )]
    UnknownWorld {
        /// What it does export, comma separated.
        exports: String,
    },
    /// The component exports more than one vel world.
    #[error("ambiguous world: the component exports {exports}; a plugin implements exactly one")]
    AmbiguousWorld {
        /// The vel interfaces it exports.
        exports: String,
    },
    /// The world's interface is exported without the world's functions.
    #[error("the component's {interface} export does not match the {kind} world: {message}")]
    WrongExports {
        /// The interface, e.g. `vel:plugins/routing@0.2.0`.
        interface: String,
        /// The world it belongs to.
        kind: crate::PluginKind,
        /// What is wrong with it.
        message: String,
    },
    /// The component implements another world than the caller expected.
    #[error("the component implements the {actual} world, not the {expected} world")]
    KindMismatch {
        /// The world expected (e.g. a manifest's kind).
        expected: crate::PluginKind,
        /// The world the component exports.
        actual: crate::PluginKind,
    },
    /// The component imports something its kind may not use.
    #[error("forbidden import `{import}`: a {kind} plugin may not import it")]
    ForbiddenImport {
        /// The import's full name, e.g. `wasi:sockets/tcp@0.2.0`.
        import: String,
        /// The plugin's kind.
        kind: crate::PluginKind,
    },
    /// Compilation failed (invalid or unsupported WebAssembly).
    #[error("failed to compile the component: {0}")]
    Compile(String),
    /// No compile slot became free in time.
    #[error("{}", match .0 {
        crate::SlotsBusy::Tenant => "another compilation for this organization is still running; try again later",
        crate::SlotsBusy::Global => "every compile slot is busy; try again later",
    })]
    Busy(crate::SlotsBusy),
    /// Compilation took longer than allowed and was abandoned.
    #[error("compiling the component took longer than {limit_ms} ms and was abandoned")]
    CompileTimeout {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The component's imports or exports do not match the world's types.
    #[error("the component does not match the {kind} world: {message}")]
    Link {
        /// The plugin's kind.
        kind: crate::PluginKind,
        /// What wasmtime reported.
        message: String,
    },
    /// `info()` failed when called at load time.
    #[error("calling info() failed: {0}")]
    Info(#[source] PluginError),
}

/// The share of the instance pool a refused call was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyShare {
    /// The plugin version's own.
    Plugin,
    /// Its organization's, every plugin of it together.
    Organization,
    /// The tenants' together (the rest is reserved for platform plugins).
    Tenants,
}

/// `PluginError::Busy`'s message.
fn busy_message(share: BusyShare, max: u64) -> String {
    match share {
        BusyShare::Plugin => {
            format!("the plugin already runs {max} calls at once, its share of the instance pool")
        }
        BusyShare::Organization => format!(
            "the organization's plugins already run {max} calls at once, its share of the \
             instance pool"
        ),
        BusyShare::Tenants => format!(
            "organizations' plugins already run {max} calls at once; the rest of the instance \
             pool is reserved for platform plugins"
        ),
    }
}

/// Why a plugin call failed. A guest's own error (`route-error`,
/// `provider-error`, `condition-error`) is not a `PluginError`: it is the
/// guest's answer and comes back inside the call's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The call exceeded one of its limits.
    #[error("{limit} limit exceeded (max {max} {})", limit.unit())]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured value, in [`Limit::unit`].
        max: u64,
    },
    /// The guest trapped (e.g. `unreachable`, out-of-bounds access).
    #[error("plugin trapped: {message}")]
    Trap {
        /// The trap, as wasmtime describes it.
        message: String,
    },
    /// The guest panicked; `message` is its panic message.
    #[error("plugin panicked: {message}")]
    Panic {
        /// The panic message the guest printed.
        message: String,
    },
    /// A provider tried to reach a host that is not allowed.
    #[error(
        "outbound request to `{host}` denied: not an allowed host (allow it with `{host}` in the \
         manifest's [outbound] hosts; a host without a port allows only 443 and 80)"
    )]
    HttpRequestDenied {
        /// The host it tried to reach.
        host: String,
    },
    /// A provider's request went to an allowed host whose address is
    /// restricted (loopback, private, link-local, …), as found when
    /// connecting: no connection was made.
    #[error("outbound request to `{host}` denied: destination address not allowed")]
    DestinationDenied {
        /// The host (`host:port`) it tried to reach.
        host: String,
    },
    /// The plugin is not of the kind this call needs.
    #[error("wrong plugin kind: expected a {expected}, got a {actual}")]
    WrongKind {
        /// The kind the call needs.
        expected: crate::PluginKind,
        /// The plugin's kind.
        actual: crate::PluginKind,
    },
    /// The call would go over a share of the instance pool: the plugin
    /// version's ([`crate::Limits::max_concurrency`]), its organization's,
    /// or the tenants' together ([`crate::ShareConfig`]).
    #[error("{}", busy_message(*share, *max))]
    Busy {
        /// Which share is full.
        share: BusyShare,
        /// That share's size.
        max: u64,
    },
    /// No instance slot was free (too many concurrent calls) or
    /// instantiation failed for another host-side reason.
    #[error("could not instantiate the plugin: {0}")]
    Instantiate(String),
    /// The host's side of the call failed unexpectedly.
    #[error("host error: {0}")]
    Host(String),
}

impl PluginError {
    /// The limit this error reports, if it is a limit error.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            PluginError::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be created with this configuration.
    #[error("could not create the wasmtime engine: {0}")]
    Engine(String),
    /// The host functions could not be linked.
    #[error("could not set up host functions: {0}")]
    Linker(String),
    /// The outbound HTTP client could not be built.
    #[error("could not set up outbound HTTP: {0}")]
    Http(String),
    /// The compile cache directory could not be created.
    #[error("compile cache directory {path}: {message}")]
    CacheDir {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
}
