//! Plugin classes: limits of their own for plugins that cannot fit the
//! default ones — a Python plugin carries the CPython interpreter (38 core
//! modules, 6.5 MB of code, an 18 MB component) where a Rust router has
//! one module and a few hundred kilobytes. A class exists only when the
//! operator configures it ([`crate::RuntimeConfig::classes`]); a plugin is
//! in one when its manifest names it. Plugins in no class keep the default
//! limits, which a class never changes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inspect::CodeLimits;
use crate::limits::{KindLimits, Limits, Profile};
use crate::plugin::PluginKind;

const MIB: u64 = 1024 * 1024;

/// Core instances a component in no class may contain: the guest module
/// plus the small adapter and shim modules `wit-component` adds (a
/// componentize-qjs JavaScript component has 11).
pub const DEFAULT_CORE_INSTANCES: u32 = 16;

/// What one class of plugins may be: its components' structure and size,
/// and the limits its calls run under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginClass {
    /// Core module instances one of its components may create.
    pub max_core_instances: u32,
    /// Largest component, in bytes (the upload limit for its plugins).
    pub max_component_bytes: u64,
    /// How much code an upload may ask the compiler to translate.
    pub code: CodeLimits,
    /// Limits of platform plugins in the class, per kind.
    pub platform: KindLimits,
    /// Limits of organizations' plugins in the class, per kind.
    pub tenant: KindLimits,
}

impl PluginClass {
    /// The preset for componentize-py components (Python 3.14 with
    /// `--stub-wasi`): 38 core instances, 6.5 MB of code whose largest
    /// function (the interpreter's loop) is 420 KB, an 18 MB component, a
    /// 13 MB heap, and about 250 thousand instructions per small
    /// call. Routers and conditions only; its provider limits are the
    /// defaults, too small for the interpreter, so a Python provider is
    /// refused when it loads.
    pub fn python() -> Self {
        let widen = |limits: &mut Limits, memory: u64, fuel: u64, cpu: u64, wall: u64| {
            limits.memory_bytes = limits.memory_bytes.max(memory);
            limits.fuel = limits.fuel.map(|f| f.max(fuel));
            limits.cpu_time = limits.cpu_time.max(Duration::from_millis(cpu));
            limits.wall_time = limits.wall_time.max(Duration::from_millis(wall));
        };
        let mut platform = KindLimits::platform();
        widen(&mut platform.router, 96 * MIB, 400_000_000, 400, 2_000);
        widen(&mut platform.condition, 96 * MIB, 400_000_000, 400, 2_000);
        let mut tenant = KindLimits::tenant();
        widen(&mut tenant.router, 64 * MIB, 100_000_000, 100, 500);
        widen(&mut tenant.condition, 64 * MIB, 100_000_000, 200, 1_000);
        PluginClass {
            max_core_instances: 48,
            max_component_bytes: 24 * MIB,
            code: CodeLimits {
                max_code_bytes: 8 * 1024 * 1024,
                max_function_bytes: 512 * 1024,
            },
            platform,
            tenant,
        }
    }

    /// A built-in preset by name: `python`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "python" => Some(Self::python()),
            _ => None,
        }
    }

    /// The limits for one kind under a profile.
    pub fn limits(&self, kind: PluginKind, profile: Profile) -> &Limits {
        match profile {
            Profile::Platform => self.platform.for_kind(kind),
            Profile::Tenant => self.tenant.for_kind(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_preset_never_tightens_a_default_and_keeps_tenants_below_the_platform() {
        let python = PluginClass::python();
        assert!(python.max_core_instances > DEFAULT_CORE_INSTANCES);
        for kind in PluginKind::ALL {
            let (p, t) = (
                python.limits(kind, Profile::Platform),
                python.limits(kind, Profile::Tenant),
            );
            assert!(t.memory_bytes <= p.memory_bytes, "{kind}");
            assert!(t.cpu_time <= p.cpu_time, "{kind}");
            assert!(t.wall_time <= p.wall_time, "{kind}");
            assert!(
                t.fuel.unwrap_or(u64::MAX) <= p.fuel.unwrap_or(u64::MAX),
                "{kind}"
            );
        }
        // Tenant routers stay fuel-metered in the class too.
        assert!(python.tenant.router.fuel.is_some());
        assert!(python.tenant.condition.fuel.is_some());
    }
}
