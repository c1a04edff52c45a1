//! The instance pool divided between platform and tenant plugins: each
//! organization's plugins together hold at most its share, tenants
//! together leave a reserve that only platform plugins (which serve every
//! organization) may use, and a call over a share is refused before it
//! takes an instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{BusyShare, PluginError};

/// Whose share of the instance pool a call counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Share {
    /// A platform plugin: it may use the whole pool, the reserve included.
    #[default]
    Platform,
    /// An organization's plugin: its calls count against that
    /// organization's share and against the tenants' part of the pool.
    Organization(Arc<str>),
}

/// How the pool is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShareConfig {
    /// Instances tenant plugins may never take: platform plugins always
    /// find this many free, whatever the tenants run.
    pub platform_reserve: u32,
    /// Instances one organization's plugins may hold at once, all its
    /// plugins together.
    pub per_organization: u32,
}

impl ShareConfig {
    /// A quarter of `max_instances` reserved, an eighth per organization.
    pub fn for_pool(max_instances: u32) -> ShareConfig {
        ShareConfig {
            platform_reserve: max_instances / 4,
            per_organization: (max_instances / 8).max(1),
        }
    }
}

/// Running tenant calls, in total and per organization.
#[derive(Debug)]
pub(crate) struct Shares {
    tenant_max: u64,
    per_organization: u64,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    tenants: u64,
    by_organization: HashMap<Arc<str>, u64>,
}

impl Shares {
    pub(crate) fn new(max_instances: u32, config: ShareConfig) -> Shares {
        Shares {
            tenant_max: u64::from(max_instances.saturating_sub(config.platform_reserve)),
            per_organization: u64::from(config.per_organization),
            running: Mutex::default(),
        }
    }

    /// Count one call against `share`, or refuse it naming the share it
    /// is over. Platform calls are not counted.
    pub(crate) fn take(self: &Arc<Self>, share: &Share) -> Result<Taken, PluginError> {
        let Share::Organization(org) = share else {
            return Ok(Taken(None));
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.tenants >= self.tenant_max {
            return Err(PluginError::Busy {
                share: BusyShare::Tenants,
                max: self.tenant_max,
            });
        }
        let mine = running.by_organization.entry(org.clone()).or_default();
        if *mine >= self.per_organization {
            return Err(PluginError::Busy {
                share: BusyShare::Organization,
                max: self.per_organization,
            });
        }
        *mine += 1;
        running.tenants += 1;
        Ok(Taken(Some((self.clone(), org.clone()))))
    }

    fn give_back(&self, org: &Arc<str>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.tenants = running.tenants.saturating_sub(1);
        if let Some(mine) = running.by_organization.get_mut(org) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                running.by_organization.remove(org);
            }
        }
    }
}

/// One counted call; given back when dropped.
#[derive(Debug)]
pub(crate) struct Taken(Option<(Arc<Shares>, Arc<str>)>);

impl Taken {
    /// Nothing counted (yet).
    pub(crate) fn none() -> Taken {
        Taken(None)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some((shares, org)) = &self.0 {
            shares.give_back(org);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(name: &str) -> Share {
        Share::Organization(name.into())
    }

    #[test]
    fn an_organization_is_held_to_its_share_and_tenants_leave_the_reserve() {
        let shares = Arc::new(Shares::new(
            10,
            ShareConfig {
                platform_reserve: 4,
                per_organization: 4,
            },
        ));
        let a: Vec<_> = (0..4).map(|_| shares.take(&org("a")).unwrap()).collect();
        assert_eq!(
            shares.take(&org("a")).unwrap_err(),
            PluginError::Busy {
                share: BusyShare::Organization,
                max: 4
            }
        );
        let b: Vec<_> = (0..2).map(|_| shares.take(&org("b")).unwrap()).collect();
        // Six tenant calls run: the other four instances are the reserve.
        assert_eq!(
            shares.take(&org("c")).unwrap_err(),
            PluginError::Busy {
                share: BusyShare::Tenants,
                max: 6
            }
        );
        assert!(shares.take(&Share::Platform).is_ok());
        drop(a);
        let c = shares.take(&org("c")).unwrap();
        drop((b, c));
        let running = shares.running.lock().unwrap();
        assert_eq!(running.tenants, 0);
        assert!(running.by_organization.is_empty());
    }
}
