//! The one wasmtime [`Engine`] every plugin runs on, and the background
//! thread that advances its epoch (the clock behind CPU-time limits).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::RuntimeError;

/// Bytes of linear memory per slot reset in place rather than released.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// What sizes the engine; taken from the runtime's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineSizes {
    /// Instances that may exist at once (concurrent calls).
    pub(crate) max_instances: u32,
    /// Hard ceiling on one instance's linear memory.
    pub(crate) max_memory_bytes: u64,
    /// WebAssembly stack per call, in bytes.
    pub(crate) max_wasm_stack: usize,
    /// Most core instances one component may create: the default
    /// ([`crate::class::DEFAULT_CORE_INSTANCES`]) or a configured class's
    /// larger one. Each component's own class is checked when it is
    /// inspected; this is the engine's ceiling.
    pub(crate) max_core_instances: u32,
}

/// Builds the engine: component model, fuel, epoch interruption, and a
/// pooling allocator sized for `config.max_instances` concurrent calls.
pub(crate) fn build_engine(config: &EngineSizes) -> Result<Engine, RuntimeError> {
    let mut pool = PoolingAllocationConfig::new();
    let instances = config.max_instances.max(1);
    // Four core instances per component on average; with a class of larger
    // components configured (a Python plugin creates 38), room for every
    // instance to be one, so that such calls cannot take the slots of the
    // rest. Slots are address space, committed only when used.
    let core_per_instance = if config.max_core_instances > crate::class::DEFAULT_CORE_INSTANCES {
        config.max_core_instances
    } else {
        4
    };
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(core_per_instance))
        .max_core_instances_per_component(config.max_core_instances)
        .total_memories(instances.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(instances.saturating_mul(4))
        .max_tables_per_component(8)
        .total_stacks(instances)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        // Keep what a call dirtied resident and reset it in place: with the
        // PAGEMAP_SCAN ioctl (Linux 6.7+) only the dirty pages are copied back,
        // which is far cheaper than madvise plus page faults on the next call.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 * 1024)
        .async_stack_keep_resident(256 * 1024);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .concurrency_support(false)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Ticks without a call in progress before the ticker thread sleeps.
const IDLE_TICKS_BEFORE_SLEEP: u32 = 100;

/// Advances the engine's epoch every `tick` on a background thread while
/// plugin calls run, and sleeps once none has run for
/// [`IDLE_TICKS_BEFORE_SLEEP`] ticks, so an idle server does not wake a
/// thousand times a second. Stopped when dropped.
pub(crate) struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

/// What the ticker thread and the calls share.
struct TickerShared {
    /// Calls in progress (each holds an [`ActiveCall`]).
    running: AtomicUsize,
    /// The thread sleeps (or is about to) until a call starts.
    asleep: AtomicBool,
    /// Set when the ticker is dropped.
    stop: AtomicBool,
}

/// Marks one call in progress for the ticker, from [`EpochTicker::enter`]
/// (which wakes a sleeping ticker) until it is dropped.
pub(crate) struct ActiveCall<'a> {
    running: &'a AtomicUsize,
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Starts the ticker thread.
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let shared = Arc::new(TickerShared {
            running: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vel-epoch-ticker".to_string())
            .spawn(move || tick_while_calls_run(&engine, &state, tick))
            .map_err(|e| RuntimeError::Engine(format!("could not start the epoch ticker: {e}")))?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers a call about to run guest code; the returned guard ends it.
    pub(crate) fn enter(&self) -> ActiveCall<'_> {
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        if self.shared.asleep.load(Ordering::SeqCst)
            && self.shared.asleep.swap(false, Ordering::SeqCst)
            && let Some(thread) = &self.thread
        {
            thread.thread().unpark();
        }
        ActiveCall {
            running: &self.shared.running,
        }
    }
}

/// The ticker thread's loop. Sleeping is race-free: the thread announces
/// `asleep` before its last look at `running`, and a call counts itself in
/// `running` before looking at `asleep`, so either the thread sees the call
/// or the call sees the thread asleep and unparks it (an unpark that comes
/// before the park makes the park return at once).
fn tick_while_calls_run(engine: &Engine, shared: &TickerShared, tick: Duration) {
    let mut idle_ticks = 0u32;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.running.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
        } else if idle_ticks >= IDLE_TICKS_BEFORE_SLEEP {
            shared.asleep.store(true, Ordering::SeqCst);
            if shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.asleep.store(false, Ordering::SeqCst);
            idle_ticks = 0;
            continue;
        } else {
            idle_ticks += 1;
        }
        std::thread::park_timeout(tick);
        engine.increment_epoch();
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only sleeps and ticks; it cannot panic.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use wasmtime::{Instance, Module, Store, Trap};

    use super::{EngineSizes, EpochTicker, build_engine};

    /// `(module (func (export "spin") (loop (br 0))))`: runs until interrupted.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // func 0 has type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
    ];

    #[test]
    fn an_idle_ticker_sleeps_and_wakes_for_the_next_call() {
        let config = EngineSizes {
            max_instances: 4,
            max_memory_bytes: 256 * 1024 * 1024,
            max_wasm_stack: 512 * 1024,
            max_core_instances: crate::class::DEFAULT_CORE_INSTANCES,
        };
        let engine = build_engine(&config).expect("engine");
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1)).expect("ticker");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ticker.shared.asleep.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the idle ticker never went to sleep"
            );
            std::thread::sleep(Duration::from_millis(1));
        }

        // A call that starts now must still be interrupted: only the
        // ticker's waking up can advance the epoch past its deadline.
        let _active = ticker.enter();
        let module = Module::new(&engine, SPIN).expect("module");
        let (done, trapped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut store = Store::new(&engine, ());
            store.set_fuel(u64::MAX).expect("fuel");
            store.set_epoch_deadline(1);
            store.epoch_deadline_trap();
            let instance = Instance::new(&mut store, &module, &[]).expect("instance");
            let spin = instance
                .get_typed_func::<(), ()>(&mut store, "spin")
                .expect("spin");
            let error = spin
                .call(&mut store, ())
                .expect_err("an endless loop cannot return");
            let _ = done.send(error.downcast_ref::<Trap>().copied());
        });
        let trap = trapped
            .recv_timeout(Duration::from_secs(10))
            .expect("the endless loop was never interrupted: the ticker did not wake up");
        assert_eq!(trap, Some(Trap::Interrupt));
    }
}
