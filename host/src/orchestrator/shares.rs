//! Shares of this instance's gateway capacity: how many requests one
//! credential and one organization may have in flight at once. A caller at
//! its share gets a 429 at once, so one tenant's flood queues nothing in
//! front of the others and never takes the plugin instance pool from them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The caps, and what is in flight now by credential and by organization.
#[derive(Debug)]
pub struct Shares {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    per_credential: usize,
    per_org: usize,
    /// Requests in flight by `k:<credential>` and `o:<organization>`.
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Which share a request found full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The credential's (an API key's, or a user's tokens').
    #[error("this credential already has {0} requests in flight")]
    Credential(usize),
    /// The organization's.
    #[error("the organization already has {0} requests in flight")]
    Organization(usize),
}

/// A request's place in its shares; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
    keys: [String; 2],
}

impl Shares {
    /// Caps of `per_credential` and `per_org` requests in flight.
    pub fn new(per_credential: usize, per_org: usize) -> Shares {
        Shares {
            inner: Arc::new(Inner {
                per_credential,
                per_org,
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A place for one more request of `credential` in `org_id`, or which
    /// share is full.
    pub fn take(&self, credential: &str, org_id: &str) -> Result<Slot, Full> {
        let keys = [format!("k:{credential}"), format!("o:{org_id}")];
        let mut in_flight = self.inner.lock();
        let held = |key: &str| in_flight.get(key).copied().unwrap_or(0);
        if held(&keys[0]) >= self.inner.per_credential {
            return Err(Full::Credential(self.inner.per_credential));
        }
        if held(&keys[1]) >= self.inner.per_org {
            return Err(Full::Organization(self.inner.per_org));
        }
        for key in &keys {
            *in_flight.entry(key.clone()).or_insert(0) += 1;
        }
        drop(in_flight);
        Ok(Slot {
            inner: self.inner.clone(),
            keys,
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_flight = self.inner.lock();
        for key in &self.keys {
            if let Some(n) = in_flight.get_mut(key.as_str()) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(key.as_str());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_share_refuses_only_its_own() {
        let shares = Shares::new(2, 3);
        let a1 = shares.take("key-a", "org-1").unwrap();
        let _a2 = shares.take("key-a", "org-1").unwrap();
        assert_eq!(
            shares.take("key-a", "org-1").unwrap_err(),
            Full::Credential(2)
        );
        // Another key of the same organization fits once more, then the
        // organization is full; another organization is untouched.
        let _b1 = shares.take("key-b", "org-1").unwrap();
        assert_eq!(
            shares.take("key-b", "org-1").unwrap_err(),
            Full::Organization(3)
        );
        let _c1 = shares.take("key-c", "org-2").unwrap();
        // A finished request gives its place back.
        drop(a1);
        let _b2 = shares.take("key-b", "org-1").unwrap();
    }

    #[test]
    fn places_are_forgotten_when_free() {
        let shares = Shares::new(1, 1);
        drop(shares.take("k", "o").unwrap());
        assert!(shares.inner.lock().is_empty());
    }
}
