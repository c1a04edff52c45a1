//! Host memory a call makes the host allocate: header fields, bodies,
//! streams, resource-table entries, strings copied out of the guest.
//!
//! Linear memory is capped by wasmtime's resource limiter, but what a
//! guest asks the *host* to allocate (a `wasi:http` `fields` per call of
//! the constructor, say) lives outside the sandbox. [`Accounted`] wraps
//! the process's global allocator: while a call's future is being polled
//! ([`HostMemory::charge_while`]), every allocation and free on that thread
//! is charged to the call, net of what it frees. The call's memory limit
//! covers linear memory plus this balance, checked each time the guest
//! comes back from a host function, and the call's stats report its peak.
//!
//! A binary that does not install [`Accounted`] as its global allocator
//! still runs, without this check: [`installed`] tells, and the runtime
//! warns at start-up.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A global allocator that charges allocations made while a plugin call
/// runs to that call. Install it in every binary that runs plugins:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: vel_runtime::Accounted<std::alloc::System> =
///     vel_runtime::Accounted(std::alloc::System);
/// ```
pub struct Accounted<A>(pub A);

thread_local! {
    /// The call being polled on this thread, if any.
    static CHARGED: Cell<*const HostMemory> = const { Cell::new(std::ptr::null()) };
}

/// Charges `bytes` (positive: allocated, negative: freed) to the call
/// being polled on this thread, if any.
#[inline]
fn charge(allocated: usize, freed: usize) {
    // `try_with`: the slot may already be gone while the thread exits.
    let meter = CHARGED.try_with(Cell::get).unwrap_or(std::ptr::null());
    if !meter.is_null() {
        // SAFETY: `charge_while` sets the pointer only for the duration of
        // a borrow of the `HostMemory` it points to, on this thread.
        unsafe { (*meter).record(allocated, freed) };
    }
}

// SAFETY: every method forwards to the wrapped allocator unchanged and only
// adds bookkeeping, which itself never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Accounted<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            charge(layout.size(), 0);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            charge(layout.size(), 0);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(ptr, layout) };
        charge(0, layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            charge(new_size, layout.size());
        }
        new
    }
}

/// One call's host-memory balance and its peak, in bytes.
#[derive(Debug, Default)]
pub(crate) struct HostMemory {
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl HostMemory {
    /// Runs `poll` with this call charged for the thread's allocations.
    pub(crate) fn charge_while<R>(&self, poll: impl FnOnce() -> R) -> R {
        /// Puts the previous call back even when `poll` unwinds.
        struct Restore(*const HostMemory);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = CHARGED.try_with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CHARGED.with(|c| c.replace(self)));
        poll()
    }

    /// Bytes held now: allocated while charged, net of what was freed
    /// (never below zero: freeing memory the call did not allocate earns
    /// it no credit beyond what it holds).
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most held at any time.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn record(&self, allocated: usize, freed: usize) {
        // Only the thread polling the call writes (one at a time), so a
        // plain load and store suffice.
        let held = self
            .held
            .load(Ordering::Relaxed)
            .saturating_add(allocated)
            .saturating_sub(freed);
        self.held.store(held, Ordering::Relaxed);
        if held > self.peak.load(Ordering::Relaxed) {
            self.peak.store(held, Ordering::Relaxed);
        }
    }
}

/// Whether this process's global allocator is [`Accounted`]: an
/// allocation made while charged shows up in the balance.
pub fn installed() -> bool {
    let meter = HostMemory::default();
    meter.charge_while(|| drop(std::hint::black_box(Box::new([0u8; 64]))));
    meter.peak() >= 64
}
