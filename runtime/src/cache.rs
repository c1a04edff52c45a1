//! On-disk cache of compiled components, keyed by the component's sha256
//! and the engine's compatibility hash, so a restart does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Where compiled components are kept; `None` means compile every time.
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    /// Hex digest of the engine's compatibility hash (wasmtime version,
    /// target, settings): part of every file name.
    engine_key: String,
}

impl CompileCache {
    /// A cache in `dir` (which must exist) for `engine`.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        CompileCache { dir, engine_key }
    }

    /// The compiled component for `wasm` (whose sha256 is `sha256`) and
    /// whether it came from the cache.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(Component, bool), LoadError> {
        let Some(dir) = &self.dir else {
            let component =
                Component::new(engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
            return Ok((component, false));
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if path.is_file() {
            // A file that fails to deserialise is recompiled and replaced.
            if let Some(component) =
                map_entry(engine, &path, "ignoring unreadable compile-cache entry")
            {
                return Ok((component, true));
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        // Once written, the code is mapped from the file, as on a restart:
        // its pages are shared with the page cache and only the ones a call
        // touches become resident, where a copy in memory would keep all of
        // it resident.
        if store(&path, &compiled)
            && let Some(component) = map_entry(
                engine,
                &path,
                "cannot map the compile-cache entry just written",
            )
        {
            return Ok((component, false));
        }
        // SAFETY: `compiled` was produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok((component, false))
    }
}

/// Maps a cache entry's compiled code from its file; `None` (logged with
/// `failure`) when it cannot be deserialised.
fn map_entry(engine: &Engine, path: &Path, failure: &str) -> Option<Component> {
    // SAFETY: files in the cache directory are written only by `store` from
    // this engine's own compilation output (the key includes the engine's
    // compatibility hash); the directory belongs to the operator, like the
    // binary itself.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "{failure}");
            None
        }
    }
}

/// Writes a cache entry atomically (a temporary file unique to this write,
/// then rename), so a concurrent reader never sees half a file and two
/// concurrent compilations of one component never share a temporary file.
/// The cache only saves time: a failed write is logged, returns false, and
/// the load goes on.
fn store(path: &Path, bytes: &[u8]) -> bool {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    if let Err(err) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %err, "cannot write compile-cache entry");
        return false;
    }
    true
}

/// Feeds `Hash` output into a sha256 so the key is stable across runs.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `finalize` on the inner digest is used.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
