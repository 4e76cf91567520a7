//! A cache of compiled components, so that a component is compiled once and
//! later loads (a forked worker's start above all) map the compiled code
//! straight from disk.
//!
//! Entries are named by the SHA-256 of the component's bytes and of the
//! engine's compatibility hash, written atomically (temporary file, then
//! rename) into a directory only this user may use.

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// Uses (and creates, mode 0700) the directory `dir`, which must belong
    /// to this user and be closed to others: anyone who can write to it can
    /// make a guest run their code.
    pub fn new(dir: impl Into<PathBuf>) -> Result<ComponentCache> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the component cache {}", dir.display()))?;
        let meta = std::fs::metadata(&dir)?;
        if meta.uid() != rustix::process::geteuid().as_raw()
            || meta.permissions().mode() & 0o022 != 0
        {
            bail!(
                "the component cache {} must belong to this user and not be writable by others",
                dir.display()
            );
        }
        Ok(ComponentCache { dir })
    }

    /// The default location: `$WASMPROC_CACHE`, else
    /// `$XDG_CACHE_HOME/wasmproc/components`, else
    /// `$HOME/.cache/wasmproc/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("WASMPROC_CACHE")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wasmproc/components")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/wasmproc/components")))
    }

    /// The component at `path`, from the cache or compiled (and cached).
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Component> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = Sha256::new()
            .chain_update(&bytes)
            .chain_update(engine_hash.finish().to_le_bytes())
            .finalize();
        let entry = self.dir.join(format!("{key:x}.cwasm"));
        if entry.exists() {
            match crate::sys::deserialize_component(engine, &entry) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), error = %e, "recompiling a bad cache entry")
                }
            }
        }
        let component = Component::new(engine, &bytes)?;
        let serialized = component.serialize()?;
        // A temporary name of its own, even for loads racing in this process.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(format!(".{key:x}.{}.{n}", std::process::id()));
        std::fs::write(&temp, serialized)
            .and_then(|()| std::fs::rename(&temp, &entry))
            .with_context(|| format!("writing {}", entry.display()))?;
        Ok(component)
    }
}
