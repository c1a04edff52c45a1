//! `VEL_PLUGIN_CLASSES`: the plugin classes an operator offers, each a
//! built-in preset with optional overrides, written
//! `name[:key=value,...]` and separated by `;`, e.g.
//! `python` or `python:memory_bytes=134217728,fuel=200000000`.
//!
//! Overrides set the class's limits for organizations' routers and
//! conditions (and raise its platform limits to them when they are lower,
//! so an organization never gets more than the platform):
//! `memory_bytes`, `fuel`, `cpu_time_ms`, `wall_time_ms`; and what its
//! components may be: `max_core_instances`, `max_component_bytes`,
//! `max_code_bytes`, `max_function_bytes`.

use std::collections::BTreeMap;
use std::time::Duration;

use vel_runtime::{Limits, PluginClass};

/// Most core instances a class may allow: the engine reserves address
/// space for every pooled instance to reach it.
const MAX_CORE_INSTANCES: u64 = 256;

/// Parses the setting; the error says what is wrong.
pub fn parse(raw: &str) -> Result<BTreeMap<String, PluginClass>, String> {
    let mut classes = BTreeMap::new();
    for spec in raw.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, overrides) = spec.split_once(':').unwrap_or((spec, ""));
        let name = name.trim();
        let mut class = PluginClass::preset(name)
            .ok_or_else(|| format!("unknown plugin class `{name}` (the presets are: python)"))?;
        for pair in overrides
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let value: u64 = value.trim().parse().map_err(|e| format!("`{key}`: {e}"))?;
            if value == 0 {
                return Err(format!("`{key}` must be above zero"));
            }
            apply(&mut class, key.trim(), value)?;
        }
        if classes.insert(name.to_string(), class).is_some() {
            return Err(format!("plugin class `{name}` is given twice"));
        }
    }
    Ok(classes)
}

fn apply(class: &mut PluginClass, key: &str, value: u64) -> Result<(), String> {
    let usize_value = || usize::try_from(value).map_err(|e| format!("`{key}`: {e}"));
    match key {
        "max_core_instances" => {
            if value > MAX_CORE_INSTANCES {
                return Err(format!("`{key}` may be at most {MAX_CORE_INSTANCES}"));
            }
            class.max_core_instances = u32::try_from(value).map_err(|e| e.to_string())?;
        }
        "max_component_bytes" => class.max_component_bytes = value,
        "max_code_bytes" => class.code.max_code_bytes = usize_value()?,
        "max_function_bytes" => class.code.max_function_bytes = usize_value()?,
        "memory_bytes" | "fuel" | "cpu_time_ms" | "wall_time_ms" => {
            for (tenant, platform) in [
                (&mut class.tenant.router, &mut class.platform.router),
                (&mut class.tenant.condition, &mut class.platform.condition),
            ] {
                set(tenant, key, value);
                if !within(tenant, platform) {
                    set(platform, key, value);
                }
            }
        }
        other => {
            return Err(format!(
                "unknown key `{other}` (expected memory_bytes, fuel, cpu_time_ms, wall_time_ms, \
                 max_core_instances, max_component_bytes, max_code_bytes or max_function_bytes)"
            ));
        }
    }
    Ok(())
}

fn set(limits: &mut Limits, key: &str, value: u64) {
    match key {
        "memory_bytes" => limits.memory_bytes = value,
        "fuel" => limits.fuel = Some(value),
        "cpu_time_ms" => limits.cpu_time = Duration::from_millis(value),
        _ => limits.wall_time = Duration::from_millis(value),
    }
}

/// Whether `tenant` asks for no more than `platform` allows.
fn within(tenant: &Limits, platform: &Limits) -> bool {
    tenant.memory_bytes <= platform.memory_bytes
        && tenant.fuel.unwrap_or(u64::MAX) <= platform.fuel.unwrap_or(u64::MAX)
        && tenant.cpu_time <= platform.cpu_time
        && tenant.wall_time <= platform.wall_time
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides_parse_and_bad_ones_are_refused() {
        assert!(parse("").unwrap().is_empty());
        let classes = parse("python").unwrap();
        assert_eq!(classes["python"], PluginClass::python());
        let classes = parse(" python : memory_bytes=268435456, fuel=7 ").unwrap();
        let python = &classes["python"];
        assert_eq!(python.tenant.router.memory_bytes, 268_435_456);
        assert_eq!(python.tenant.condition.fuel, Some(7));
        // The platform is raised to what tenants get, never below.
        assert_eq!(python.platform.router.memory_bytes, 268_435_456);
        assert_eq!(
            python.platform.router.fuel,
            PluginClass::python().platform.router.fuel
        );
        assert!(parse("ruby").unwrap_err().contains("unknown plugin class"));
        assert!(
            parse("python:colour=3")
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(parse("python:fuel").unwrap_err().contains("key=value"));
        assert!(parse("python:fuel=0").unwrap_err().contains("above zero"));
        assert!(parse("python:max_core_instances=9999").is_err());
        assert!(parse("python;python").unwrap_err().contains("twice"));
    }
}
