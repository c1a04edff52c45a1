//! vel's plugin components, compiled from source.
//!
//! The build script (`build.rs`) compiles every guest crate under `plugins/`
//! to a `wasm32-wasip2` component and generates the tables below, so host
//! code, tests and benchmarks load real components built from this
//! repository — never a checked-in `.wasm` file.

/// One built-in plugin: its manifest and its compiled component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The plugin's name, from its manifest (e.g. `default-router`).
    pub name: &'static str,
    /// The plugin's kind from its manifest: `provider`, `router` or `condition`.
    pub kind: &'static str,
    /// The text of its `vel-plugin.toml` manifest.
    pub manifest: &'static str,
    /// Where the component file lives on disk (inside this build's `OUT_DIR`).
    pub path: &'static str,
    /// The component's bytes.
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The built-in plugin called `name` (its manifest name), if there is one.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The path of the hostile test component built from `plugins/hostile/<name>/`.
pub fn hostile_path(name: &str) -> Option<&'static str> {
    HOSTILE
        .iter()
        .find(|(dir, _)| *dir == name)
        .map(|(_, path)| *path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Component binaries start with `\0asm` and the component-model layer/version.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_builtin_is_a_component_with_a_valid_manifest() {
        assert!(!BUILTINS.is_empty());
        for b in BUILTINS {
            assert_eq!(b.bytes.get(..8), Some(&COMPONENT_HEADER[..]), "{}", b.name);
            assert_eq!(std::fs::read(b.path).unwrap(), b.bytes, "{}", b.name);
            let manifest: toml::Table = b.manifest.parse().unwrap();
            assert_eq!(manifest["name"].as_str(), Some(b.name));
            assert_eq!(manifest["kind"].as_str(), Some(b.kind));
            assert_eq!(builtin(b.name).map(|f| f.path), Some(b.path));
        }
        assert!(builtin("no-such-plugin").is_none());
    }

    #[test]
    fn hostile_components_exist() {
        for (name, path) in HOSTILE {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes.get(..8), Some(&COMPONENT_HEADER[..]), "{name}");
            assert_eq!(hostile_path(name), Some(*path));
        }
        assert!(hostile_path("no-such-crate").is_none());
    }
}
