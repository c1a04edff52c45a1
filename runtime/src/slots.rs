//! Compile slots: how many compilations run at once, overall and per
//! tenant. Cranelift uses every core and a lot of memory for one
//! component, so compilations queue for a few global slots; a tenant's
//! compilation also holds that tenant's single slot, so one tenant can
//! occupy at most one global slot and never queues behind itself.
//!
//! A slot is held until the compilation really ends, even when the caller
//! stopped waiting for it (see [`crate::Runtime::stage`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which share of the compile slots was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotsBusy {
    /// The tenant's own slot: one of its compilations is still running.
    Tenant,
    /// Every global slot: other compilations are running.
    Global,
}

/// The process's compile slots. Cheap to share behind the runtime.
#[derive(Debug)]
pub struct CompileSlots {
    global: Arc<Semaphore>,
    size: usize,
    /// One single-permit semaphore per tenant with a compilation running
    /// or waiting; an entry dies with its last holder.
    tenants: Mutex<HashMap<String, Weak<Semaphore>>>,
}

/// Permission to compile: a global slot, and the tenant's slot for a
/// tenant's compilation. Released when dropped.
#[derive(Debug)]
pub struct CompileSlot {
    _global: OwnedSemaphorePermit,
    _tenant: Option<OwnedSemaphorePermit>,
}

impl CompileSlots {
    /// `global` compilations at once (at least one).
    pub fn new(global: usize) -> CompileSlots {
        let size = global.max(1);
        CompileSlots {
            global: Arc::new(Semaphore::new(size)),
            size,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// How many global slots there are.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many global slots are free now.
    pub fn available(&self) -> usize {
        self.global.available_permits()
    }

    /// A global slot, however long it takes: for components already
    /// accepted (built-ins, stored versions), whose compilation must happen.
    pub async fn acquire(&self) -> CompileSlot {
        CompileSlot {
            _global: acquire(&self.global).await,
            _tenant: None,
        }
    }

    /// A slot for a compilation on behalf of `tenant` (`None` for the
    /// platform), waiting at most `wait` in all: first the tenant's own
    /// slot, then a global one. A tenant never holds a global slot while it
    /// waits for its own.
    pub async fn acquire_within(
        &self,
        tenant: Option<&str>,
        wait: Duration,
    ) -> Result<CompileSlot, SlotsBusy> {
        let deadline = tokio::time::Instant::now() + wait;
        let tenant = match tenant {
            Some(key) => {
                let own = self.tenant(key);
                let permit = tokio::time::timeout_at(deadline, acquire(&own))
                    .await
                    .map_err(|_| SlotsBusy::Tenant)?;
                Some(permit)
            }
            None => None,
        };
        let global = tokio::time::timeout_at(deadline, acquire(&self.global))
            .await
            .map_err(|_| SlotsBusy::Global)?;
        Ok(CompileSlot {
            _global: global,
            _tenant: tenant,
        })
    }

    /// The tenant's semaphore, created on first use; entries whose
    /// semaphore no one holds any more are dropped on the way.
    fn tenant(&self, key: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(own) = tenants.get(key).and_then(Weak::upgrade) {
            return own;
        }
        tenants.retain(|_, w| w.strong_count() > 0);
        let own = Arc::new(Semaphore::new(1));
        tenants.insert(key.to_string(), Arc::downgrade(&own));
        own
    }

    /// How many tenants have a compilation running or waiting.
    pub fn tenants_in_use(&self) -> usize {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// A permit of a semaphore that is never closed.
async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    loop {
        // The semaphores are never closed, so this returns on first try.
        if let Ok(permit) = semaphore.clone().acquire_owned().await {
            return permit;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    /// Wait of zero: a free slot is taken on the first poll, a busy one is
    /// refused at once, so these tests need no timing.
    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn one_compilation_per_tenant_and_other_tenants_go_ahead() {
        let slots = CompileSlots::new(2);
        let first = slots.acquire_within(Some("org-a"), NOW).await.unwrap();
        assert_eq!(
            slots.acquire_within(Some("org-a"), NOW).await.unwrap_err(),
            SlotsBusy::Tenant,
            "a tenant's second compilation does not start while its first runs"
        );
        assert_eq!(slots.available(), 1, "the refused one took no global slot");
        let other = slots.acquire_within(Some("org-b"), NOW).await.unwrap();
        assert_eq!(slots.available(), 0);
        assert_eq!(
            slots.acquire_within(Some("org-c"), NOW).await.unwrap_err(),
            SlotsBusy::Global,
            "beyond the global slots everyone waits"
        );
        assert_eq!(
            slots.acquire_within(None, NOW).await.unwrap_err(),
            SlotsBusy::Global
        );
        drop(first);
        let again = slots.acquire_within(Some("org-a"), NOW).await.unwrap();
        drop((again, other));
        assert_eq!(slots.available(), 2);
        assert_eq!(slots.tenants_in_use(), 0, "released tenants leave no entry");
    }

    #[tokio::test]
    async fn a_waiting_compilation_starts_when_the_slot_is_released() {
        let slots = CompileSlots::new(1);
        let first = slots.acquire_within(Some("org-a"), NOW).await.unwrap();
        let waiting = slots.acquire_within(Some("org-a"), Duration::from_secs(3600));
        tokio::pin!(waiting);
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "the tenant's second compilation waits for its first"
        );
        drop(first);
        let second = waiting.await.expect("it starts once the first ends");
        assert_eq!(slots.available(), 0);
        drop(second);
        assert_eq!(slots.available(), 1);
    }

    #[tokio::test]
    async fn stored_components_wait_for_a_global_slot_only() {
        let slots = CompileSlots::new(1);
        let tenant = slots.acquire_within(Some("org-a"), NOW).await.unwrap();
        let waiting = slots.acquire();
        tokio::pin!(waiting);
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "the only global slot is taken"
        );
        drop(tenant);
        let _slot = waiting.await;
        assert_eq!(slots.available(), 0);
    }
}
