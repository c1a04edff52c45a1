//! What a single plugin call may consume, per plugin kind and trust profile.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PluginKind;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Limits for one call. Exceeding any of them fails the call with
/// [`crate::PluginError::LimitExceeded`] naming the limit and this value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory the instance may grow to, in bytes (capped by
    /// [`crate::RuntimeConfig::max_memory_bytes`]).
    pub memory_bytes: u64,
    /// Deterministic instruction budget; `None` = not metered.
    pub fuel: Option<u64>,
    /// Time the guest may spend running code (sampled at the engine's epoch
    /// ticks; time waiting on the network does not count).
    #[serde(with = "millis")]
    pub cpu_time: Duration,
    /// Wall-clock time of the whole call, waiting included.
    #[serde(with = "millis")]
    pub wall_time: Duration,
    /// Largest input (arguments as passed to the guest), in bytes; refused
    /// before the call.
    pub max_input_bytes: u64,
    /// Largest result plus streamed deltas, in bytes.
    pub max_output_bytes: u64,
    /// Largest volume written to the log import, stdout and stderr, in bytes.
    pub max_log_bytes: u64,
    /// Most deltas one streaming call may emit, empty ones included (each
    /// becomes a chunk on a client's stream).
    #[serde(default = "default_max_deltas")]
    pub max_deltas: u64,
    /// Calls of this plugin version that may run at once: its share of the
    /// instance pool. One more is refused with [`crate::PluginError::Busy`]
    /// before it takes an instance, so a flood of one plugin's calls cannot
    /// take the pool from the others.
    #[serde(default = "unshared")]
    pub max_concurrency: u64,
    /// Whose share of the instance pool the calls count against: set by
    /// whoever deploys the plugin for an owner, never stored.
    #[serde(skip)]
    pub share: crate::Share,
}

/// No share of its own: what platform plugins (which serve every tenant)
/// and limits stored before the setting get.
fn unshared() -> u64 {
    u64::MAX
}

/// A tenant plugin's share of the pool (1,000 instances by default).
const TENANT_MAX_CONCURRENCY: u64 = 64;

/// Deltas allowed when stored limits predate the setting: the tenant value.
fn default_max_deltas() -> u64 {
    TENANT_MAX_DELTAS
}

/// A long answer streams a few tens of thousands of tokens.
const PLATFORM_MAX_DELTAS: u64 = 100_000;
const TENANT_MAX_DELTAS: u64 = 50_000;

/// Whose plugin it is: platform plugins are trusted more than tenant uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Built-in and platform-admin plugins.
    Platform,
    /// Plugins an organization uploaded: tighter limits.
    Tenant,
}

/// One [`Limits`] per plugin kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindLimits {
    /// For provider plugins.
    pub provider: Limits,
    /// For router plugins.
    pub router: Limits,
    /// For condition plugins.
    pub condition: Limits,
    /// For tool-server plugins (configurations written before the kind
    /// existed get the platform defaults).
    #[serde(default = "platform_tool")]
    pub tool: Limits,
}

/// The platform's tool-server limits (see [`KindLimits::platform`]).
fn platform_tool() -> Limits {
    KindLimits::platform().tool
}

impl KindLimits {
    /// Platform defaults: generous enough for real providers and policies.
    pub fn platform() -> Self {
        KindLimits {
            provider: Limits {
                memory_bytes: 64 * MIB,
                fuel: None,
                cpu_time: Duration::from_secs(5),
                wall_time: Duration::from_secs(120),
                max_input_bytes: 4 * MIB,
                max_output_bytes: 8 * MIB,
                max_log_bytes: 256 * KIB,
                max_deltas: PLATFORM_MAX_DELTAS,
                max_concurrency: unshared(),
                share: crate::Share::Platform,
            },
            router: Limits {
                memory_bytes: 16 * MIB,
                fuel: Some(100_000_000),
                cpu_time: Duration::from_millis(200),
                wall_time: Duration::from_secs(1),
                max_input_bytes: MIB,
                max_output_bytes: 256 * KIB,
                max_log_bytes: 64 * KIB,
                max_deltas: PLATFORM_MAX_DELTAS,
                max_concurrency: unshared(),
                share: crate::Share::Platform,
            },
            condition: Limits {
                memory_bytes: 32 * MIB,
                fuel: None,
                cpu_time: Duration::from_millis(200),
                wall_time: Duration::from_secs(1),
                max_input_bytes: 4 * MIB,
                max_output_bytes: 256 * KIB,
                max_log_bytes: 64 * KIB,
                max_deltas: PLATFORM_MAX_DELTAS,
                max_concurrency: unshared(),
                share: crate::Share::Platform,
            },
            // Tool calls wait on the tool server (an MCP tool may work
            // for minutes, reporting progress), so the wall clock is long;
            // what the plugin itself does is bounded like a provider's.
            tool: Limits {
                memory_bytes: 64 * MIB,
                fuel: None,
                cpu_time: Duration::from_secs(5),
                wall_time: Duration::from_secs(600),
                max_input_bytes: 4 * MIB,
                max_output_bytes: 8 * MIB,
                max_log_bytes: 256 * KIB,
                max_deltas: PLATFORM_MAX_DELTAS,
                max_concurrency: unshared(),
                share: crate::Share::Platform,
            },
        }
    }

    /// Tenant defaults: tighter everywhere, and fuel-metered routers and
    /// conditions so a tenant's policy has a deterministic budget.
    pub fn tenant() -> Self {
        KindLimits {
            provider: Limits {
                memory_bytes: 32 * MIB,
                fuel: None,
                cpu_time: Duration::from_secs(2),
                wall_time: Duration::from_secs(60),
                max_input_bytes: MIB,
                max_output_bytes: 4 * MIB,
                max_log_bytes: 64 * KIB,
                max_deltas: TENANT_MAX_DELTAS,
                max_concurrency: TENANT_MAX_CONCURRENCY,
                share: crate::Share::Platform,
            },
            router: Limits {
                memory_bytes: 8 * MIB,
                fuel: Some(20_000_000),
                cpu_time: Duration::from_millis(50),
                wall_time: Duration::from_millis(250),
                max_input_bytes: 512 * KIB,
                max_output_bytes: 64 * KIB,
                max_log_bytes: 16 * KIB,
                max_deltas: TENANT_MAX_DELTAS,
                max_concurrency: TENANT_MAX_CONCURRENCY,
                share: crate::Share::Platform,
            },
            condition: Limits {
                memory_bytes: 16 * MIB,
                fuel: Some(50_000_000),
                cpu_time: Duration::from_millis(100),
                wall_time: Duration::from_millis(500),
                max_input_bytes: MIB,
                max_output_bytes: 64 * KIB,
                max_log_bytes: 16 * KIB,
                max_deltas: TENANT_MAX_DELTAS,
                max_concurrency: TENANT_MAX_CONCURRENCY,
                share: crate::Share::Platform,
            },
            tool: Limits {
                memory_bytes: 32 * MIB,
                fuel: None,
                cpu_time: Duration::from_secs(2),
                wall_time: Duration::from_secs(300),
                max_input_bytes: MIB,
                max_output_bytes: 4 * MIB,
                max_log_bytes: 64 * KIB,
                max_deltas: TENANT_MAX_DELTAS,
                max_concurrency: TENANT_MAX_CONCURRENCY,
                share: crate::Share::Platform,
            },
        }
    }

    /// The limits for one kind.
    pub fn for_kind(&self, kind: PluginKind) -> &Limits {
        match kind {
            PluginKind::Provider => &self.provider,
            PluginKind::Router => &self.router,
            PluginKind::Condition => &self.condition,
            PluginKind::Tool => &self.tool,
        }
    }
}

/// Serialise durations as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_limits_are_never_looser_than_platform_ones() {
        let (p, t) = (KindLimits::platform(), KindLimits::tenant());
        for kind in PluginKind::ALL {
            let (p, t) = (p.for_kind(kind), t.for_kind(kind));
            assert!(t.memory_bytes <= p.memory_bytes, "{kind}");
            assert!(t.cpu_time <= p.cpu_time, "{kind}");
            assert!(t.wall_time <= p.wall_time, "{kind}");
            assert!(t.max_input_bytes <= p.max_input_bytes, "{kind}");
            assert!(t.max_output_bytes <= p.max_output_bytes, "{kind}");
            assert!(t.max_log_bytes <= p.max_log_bytes, "{kind}");
            assert!(t.max_deltas <= p.max_deltas, "{kind}");
            assert!(t.max_concurrency <= p.max_concurrency, "{kind}");
            assert!(
                t.fuel.unwrap_or(u64::MAX) <= p.fuel.unwrap_or(u64::MAX),
                "{kind}"
            );
        }
        assert!(t.router.fuel.is_some() && p.router.fuel.is_some());
    }
}
