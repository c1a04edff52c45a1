//! On-disk cache of compiled components, keyed by the component's sha256
//! and the engine's compatibility hash, so a restart does not recompile.
//! Compiling and storing are separate steps: an upload is compiled in
//! memory and written here only once its version is stored, so a refused
//! upload leaves nothing behind.

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

    /// The entry for the component whose sha256 is `sha256`, its code
    /// mapped from the file; `None` when there is none (or it cannot be
    /// read, in which case it is compiled again and replaced).
    pub(crate) fn lookup(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256)?;
        if !path.is_file() {
            return None;
        }
        map_entry(engine, &path, "ignoring unreadable compile-cache entry")
    }

    /// Writes `compiled` (this engine's output for the component whose
    /// sha256 is `sha256`) as its entry, and returns the component with its
    /// code mapped from the file: its pages are shared with the page cache
    /// and only the ones a call touches become resident, where a copy in
    /// memory would keep all of it resident. `None` when there is no cache
    /// directory or the entry could not be written or mapped.
    pub(crate) fn store(
        &self,
        engine: &Engine,
        sha256: &str,
        compiled: &[u8],
    ) -> Option<Component> {
        let path = self.path(sha256)?;
        if !write_atomically(&path, compiled) {
            return None;
        }
        map_entry(
            engine,
            &path,
            "cannot map the compile-cache entry just written",
        )
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{}.cwasm", self.engine_key)))
    }
}

/// Compiles a component to the engine's serialised form, in memory.
pub(crate) fn compile(engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
    engine
        .precompile_component(wasm)
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
}

/// The component compiled by [`compile`], loaded from memory.
pub(crate) fn from_memory(engine: &Engine, compiled: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: `compiled` comes from `compile` with this same engine.
    unsafe { Component::deserialize(engine, compiled) }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
}

/// Maps a cache entry's compiled code from its file; `None` (logged with
/// `failure`) when it cannot be deserialised.
fn map_entry(engine: &Engine, path: &Path, failure: &str) -> Option<Component> {
    // SAFETY: files in the cache directory are written only by
    // `CompileCache::store` from this engine's own compilation output (the
    // key includes the engine's compatibility hash); the directory belongs
    // to the operator, like the binary itself.
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
fn write_atomically(path: &Path, bytes: &[u8]) -> bool {
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
