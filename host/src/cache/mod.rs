//! A cache of compiled components, so that a component is compiled once and
//! later loads (a forked worker's start above all) only read it back.
//!
//! The host runs the native code of an entry, so nothing in the cache is
//! trusted because of where it is; every entry is checked before wasmtime
//! sees it (issue 12).
//!
//! # Layout
//!
//! ```text
//! DIR/                 the cache directory (mode 0700, owned by the host's euid)
//! DIR/key              32 random bytes, the host key (0600, one link)
//! DIR/entries/         0700
//! DIR/entries/HEX.cwasm  one compiled component (0600, one link)
//! ```
//!
//! `DIR` is `$WASMPROC_CACHE`, else `$XDG_CACHE_HOME/wasmproc/components`,
//! else `~/.cache/wasmproc/components`. `HEX` is the cache key: SHA-256 of
//! the component's bytes and of the engine's compatibility hash.
//!
//! The key lives beside the entries directory, not in it: whatever can list
//! or replace entries by name does not thereby reach the key. It is made
//! once, atomically (a temporary file created with `O_EXCL`, then renamed
//! with `RENAME_NOREPLACE`, so racing hosts agree on one key), and checked
//! like an entry on every open.
//!
//! # An entry
//!
//! `MAGIC (16 bytes) | TAG (32 bytes) | CODE` where `CODE` is what
//! [`Component::serialize`] returned and `TAG` is
//! `HMAC-SHA256(key, DOMAIN | cache key | CODE)`. Covering the cache key
//! makes an entry copied over another component's name fail, and keeping
//! the tag inside the entry makes entry and tag one file, replaced by one
//! `rename`: racing writers can never pair one writer's code with another's
//! tag, as a separate index file could without locking.
//!
//! # Checks
//!
//! - The cache directory: owned by the euid, not writable by group or
//!   others; each of its ancestors (walked through `..` from the open
//!   directory, so symlinks in the path do not matter) owned by root or the
//!   euid, and not writable by group or others unless sticky (as `/tmp`,
//!   where others cannot rename or delete what is ours). Anyone who could
//!   rename a directory on the way could swap the cache for their own.
//! - Every entry and the key: opened relative to the open directory with
//!   `O_NOFOLLOW`, a regular file, owned by the euid, mode exactly 0600,
//!   exactly one link (a hard link from elsewhere could be written through
//!   another name); then read whole into memory and, for an entry, its tag
//!   verified (in constant time) before wasmtime deserializes the bytes. A
//!   failed check is a `tracing` warning and a recompile that rewrites the
//!   entry, never an error.
//! - Loaded code lives in the host's private memory (wasmtime copies the
//!   verified bytes into its own mapping): a later write to, or truncation
//!   of, the file cannot change or fault code that is running.
//! - Grants: [`CacheGuard`] refuses a directory grant that reaches the
//!   cache by any name: the cache, a directory containing it or inside it,
//!   or one holding any directory the cache's path passes through, links
//!   followed (the CLI checks every `--dir`, `--dir-ro` and policy-file
//!   directory, and `ProcessCtxBuilder::cache_guard` checks every grant and,
//!   again, each directory a fork passes on). The guard needs no cache: a
//!   cache the host refuses still guards its location (issue 22).
//! - Only the host opens the cache, once, and holds it by descriptor from
//!   then on. Worker processes never open it, resolve its path or hold its
//!   key: the host hands them compiled code in sealed memfds
//!   ([`crate::code`]).
//!
//! Entries are written to a temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`,
//! mode 0600) and renamed into place, without `fsync`: an entry torn by a
//! crash fails its tag and is recompiled.

use anyhow::{Context as _, Result, anyhow, bail};
use hmac::{Hmac, Mac};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use sha2::Sha256;
use std::fmt;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

mod files;
mod guard;
#[cfg(test)]
mod tests;

pub(crate) use files::cache_key;
use files::{
    check_private_dir, create_private_file, entry_name, load_or_create_key, open_dir,
    read_private_file, temp_name,
};
pub use guard::CacheGuard;
use guard::{check_trusted_chain, id_of};

/// The entries' subdirectory of the cache directory.
const ENTRIES: &str = "entries";
/// The host key's file in the cache directory.
const KEY_FILE: &str = "key";
/// The first bytes of an entry (format version 1).
const MAGIC: &[u8; 16] = b"wasmproc-cwasm1\n";
/// What the tag of an entry authenticates, before the cache key.
const DOMAIN: &[u8] = b"wasmproc component cache entry v1\0";
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + TAG_LEN;
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A directory of compiled components, checked as the module docs describe.
#[derive(Clone)]
pub struct ComponentCache {
    /// The cache directory, symlinks resolved (for messages).
    dir: PathBuf,
    /// Every name of the cache a grant could reach it by.
    guard: CacheGuard,
    /// The open entries directory.
    entries: Arc<OwnedFd>,
    /// The host key.
    key: Arc<[u8; KEY_LEN]>,
}

impl fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How [`ComponentCache::fetch`] found an entry.
enum Found {
    /// A verified entry: the whole file, header included.
    Valid(Vec<u8>),
    /// No entry.
    Missing,
    /// An entry that failed its checks (logged already).
    Bad,
}

impl ComponentCache {
    /// Uses (and creates, mode 0700) the directory `dir`, its `entries`
    /// subdirectory and its host key, after checking that only this user
    /// (and root) can change them (see the module docs): anyone who can
    /// write an entry the host accepts can make it run their code.
    pub fn new(dir: impl Into<PathBuf>) -> Result<ComponentCache> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the component cache {}", dir.display()))?;
        let shown = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let root = open_dir(&dir, OFlags::empty())
            .with_context(|| format!("opening the component cache {}", shown.display()))?;
        check_private_dir(&root, &shown)?;
        let itself = rustix::fs::openat(&root, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        check_trusted_chain(itself, &shown, &shown, false)?;
        let guard = CacheGuard::at(&dir)?;
        guard.check_trusted()?;
        if guard.cache != Some(id_of(&root)?) {
            bail!(
                "the component cache {} moved while it was opened",
                dir.display()
            );
        }

        match rustix::fs::mkdirat(&root, ENTRIES, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating {}", shown.join(ENTRIES).display()));
            }
        }
        let entries_shown = shown.join(ENTRIES);
        let entries = rustix::fs::openat(
            &root,
            ENTRIES,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", entries_shown.display()))?;
        check_private_dir(&entries, &entries_shown)?;
        let key = load_or_create_key(&root, &shown.join(KEY_FILE))?;
        Ok(ComponentCache {
            dir: shown,
            guard,
            entries: Arc::new(entries),
            key: Arc::new(key),
        })
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

    /// The cache directory (symlinks resolved).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses (with an error naming both paths) a directory grant `grant`
    /// that reaches the cache by any name (see [`CacheGuard`]): a guest, or
    /// a child, that can write there could replace the native code the
    /// host runs. Call it for every directory a guest or its children get.
    pub fn check_grant(&self, grant: &Path) -> Result<()> {
        self.guard.check(grant)
    }

    /// Every name of this cache a grant could reach it by.
    pub fn guard(&self) -> &CacheGuard {
        &self.guard
    }

    /// The component at `path`: from a verified cache entry, else compiled
    /// (and the entry written). A bad entry is logged and replaced; an
    /// entry that cannot be written is logged.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Component> {
        let source = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (key, name) = self.names(engine, &source);
        if let Some(component) = self.verified(engine, &name, &key) {
            return Ok(component);
        }
        let component = Component::new(engine, &source)?;
        let written = (component.serialize())
            .map_err(anyhow::Error::from)
            .and_then(|code| self.store(&name, &key, &code));
        if let Err(e) = written {
            tracing::warn!(entry = %self.entry_path(&name).display(), error = %e,
                "cannot write a compiled-component cache entry");
        }
        Ok(component)
    }

    /// The cache key of `source` and its entry's name.
    fn names(&self, engine: &Engine, source: &[u8]) -> ([u8; 32], String) {
        let key = cache_key(engine, source);
        let name = entry_name(&key);
        (key, name)
    }

    /// The component of entry `name`, if it verifies against `key` and
    /// wasmtime takes it.
    fn verified(&self, engine: &Engine, name: &str, key: &[u8; 32]) -> Option<Component> {
        let Found::Valid(bytes) = self.fetch(name, key) else {
            return None;
        };
        match crate::sys::deserialize_component(engine, &bytes[HEADER_LEN..]) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(
                    entry = %self.entry_path(name).display(),
                    error = %e,
                    "recompiling: wasmtime refused a verified cache entry"
                );
                None
            }
        }
    }

    /// Fills the cache with the component at `path` (compiling it unless a
    /// verified entry is there already) and returns the entry's path.
    /// Unlike [`load`](Self::load), failing to write the entry is an error.
    pub fn compile(&self, engine: &Engine, path: &Path) -> Result<PathBuf> {
        let source = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = cache_key(engine, &source);
        let name = entry_name(&key);
        let entry = self.entry_path(&name);
        if let Found::Valid(_) = self.fetch(&name, &key) {
            return Ok(entry);
        }
        let code = engine
            .precompile_component(&source)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {}", path.display()))?;
        self.store(&name, &key, &code)
            .with_context(|| format!("writing {}", entry.display()))?;
        Ok(entry)
    }

    /// The compiled code of `source` (whose cache key is `key`): from a
    /// verified entry, else, if `compile`, compiled and written to the
    /// cache (an entry that cannot be written is logged); `None` if not
    /// `compile` and there is no verified entry.
    pub(crate) fn code(
        &self,
        engine: &Engine,
        key: &[u8; 32],
        source: &[u8],
        compile: bool,
    ) -> Result<Option<Vec<u8>>> {
        let name = entry_name(key);
        if let Found::Valid(mut bytes) = self.fetch(&name, key) {
            bytes.drain(..HEADER_LEN);
            return Ok(Some(bytes));
        }
        if !compile {
            return Ok(None);
        }
        let code = engine.precompile_component(source)?;
        if let Err(e) = self.store(&name, key, &code) {
            tracing::warn!(entry = %self.entry_path(&name).display(), error = %e,
                "cannot write a compiled-component cache entry");
        }
        Ok(Some(code))
    }

    /// The path of the entry named `name`.
    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(ENTRIES).join(name)
    }

    /// Reads and verifies the entry `name` for `key`, logging why a bad
    /// one is bad.
    fn fetch(&self, name: &str, key: &[u8; 32]) -> Found {
        match self.read_verified(name, key) {
            Ok(Some(bytes)) => Found::Valid(bytes),
            Ok(None) => Found::Missing,
            Err(e) => {
                tracing::warn!(
                    entry = %self.entry_path(name).display(),
                    reason = %format!("{e:#}"),
                    "recompiling: a compiled-component cache entry failed verification"
                );
                Found::Bad
            }
        }
    }

    /// The whole entry `name` if it passes every check, `None` if there is
    /// none, else why not.
    fn read_verified(&self, name: &str, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let fd = match rustix::fs::openat(
            &*self.entries,
            name,
            // NONBLOCK: a FIFO planted under the name must not hang the host.
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => bail!("it is a symbolic link"),
            Err(e) => return Err(e).context("opening it"),
        };
        let bytes = read_private_file(fd, None)?;
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            bail!("not an entry of this format ({} bytes)", bytes.len());
        }
        let (tag, code) = bytes[MAGIC.len()..].split_at(TAG_LEN);
        self.mac(key, code)
            .verify_slice(tag)
            .map_err(|_| anyhow!("its MAC does not match (altered, or another entry's)"))?;
        Ok(Some(bytes))
    }

    /// The MAC of `code` as the entry for `key`, not yet finalized.
    fn mac(&self, key: &[u8; 32], code: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&*self.key)
            .expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac.update(key);
        mac.update(code);
        mac
    }

    /// Writes `code` as the entry `name` for `key`: a new 0600 file under
    /// a temporary name, renamed over whatever was there.
    fn store(&self, name: &str, key: &[u8; 32], code: &[u8]) -> Result<()> {
        let tag = self.mac(key, code).finalize().into_bytes();
        let temp = temp_name(name);
        let written = (|| -> Result<()> {
            let mut file = create_private_file(&self.entries, &temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&tag)?;
            file.write_all(code)?;
            rustix::fs::renameat(&*self.entries, &temp, &*self.entries, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&*self.entries, &temp, AtFlags::empty());
        }
        written
    }
}
