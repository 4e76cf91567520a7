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
//! DIR/seen/            0700: remembered verifications (see `seen`)
//! ```
//!
//! `DIR` is `$WASMPROC_CACHE`, else `$XDG_CACHE_HOME/wasmproc/components`,
//! else `~/.cache/wasmproc/components`. `HEX` is the cache key: BLAKE3 of
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
//! `CODE | TAG (32 bytes) | MAGIC (16 bytes)` where `CODE` is what
//! [`Component::serialize`] returned and `TAG` is the keyed BLAKE3 of
//! `DOMAIN | cache key | CODE` under the host key. Covering the cache key
//! makes an entry copied over another component's name fail, and keeping
//! the tag inside the entry makes entry and tag one file, replaced by one
//! `rename`: racing writers can never pair one writer's code with another's
//! tag, as a separate index file could without locking. The code comes
//! first so that wasmtime can map the file as it maps its own `.cwasm`
//! files (the trailer is past the end of the ELF image).
//!
//! # The threat model
//!
//! No file a guest could have written is ever run: the host runs an
//! entry's code natively, so an entry is trusted only because the host
//! itself wrote it, which only the holder of the host key can show, in a
//! directory only the host's user can enter, that no grant reaches. A
//! process of the host's own user that can reach the cache can read the
//! key as well, so the tag does not defend against it; it defends against
//! whatever can place or swap files in the cache without being that user
//! (a grant that reached the entries but not the key, a directory swapped
//! on the path), and against torn or foreign entries.
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
//!   another name); then, for an entry, mapped read-only and its tag
//!   verified (in constant time) before wasmtime sees the bytes. A failed
//!   check is a `tracing` warning and a recompile that rewrites the entry,
//!   never an error.
//! - A verification is remembered (`seen`): the next start of the same,
//!   unchanged source file, whose unchanged entry verified, compares file
//!   identities instead of hashing 50 MiB again, under a record tagged by
//!   the host key in the cache's private directory.
//! - Loaded code lives in the host's private memory: wasmtime copies it
//!   from the mapped entry, so a later write to, or truncation of, the
//!   file cannot change or fault code that is running. (Only while the
//!   entry is hashed and copied, a few milliseconds at start, would a
//!   truncation by the host's own user fault the host; entries are never
//!   written in place, only replaced by `rename`.) Mapping the file rather
//!   than reading it saves a copy; wasmtime's own `deserialize_file` maps
//!   the code itself and so would run whatever is written to the file
//!   later, which the cache does not accept.
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
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

mod files;
mod guard;
mod seen;
#[cfg(test)]
mod tests;

pub(crate) use files::cache_key;
use files::{
    check_private_dir, check_private_file, create_private_file, engine_hash, entry_name, key_of,
    load_or_create_key, open_dir, temp_name,
};
pub use guard::CacheGuard;
use guard::{check_trusted_chain, id_of};
use seen::{Records, SEEN, Seen};

/// The entries' subdirectory of the cache directory.
const ENTRIES: &str = "entries";
/// The host key's file in the cache directory.
const KEY_FILE: &str = "key";
/// The last bytes of an entry (format version 2).
const MAGIC: &[u8; 16] = b"wasmproc-cwasm2\n";
/// What the tag of an entry authenticates, before the cache key.
const DOMAIN: &[u8] = b"wasmproc component cache entry v2\0";
const TAG_LEN: usize = 32;
const TRAILER_LEN: usize = TAG_LEN + MAGIC.len();
const KEY_LEN: usize = 32;
/// From this size on, BLAKE3 hashes on every core (rayon).
const PARALLEL_HASH: usize = 1 << 20;

/// Feeds `bytes` to `hasher`, on every core when they are many.
fn hash_into(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= PARALLEL_HASH {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
}

/// A directory of compiled components, checked as the module docs describe.
#[derive(Clone)]
pub struct ComponentCache {
    /// The cache directory, symlinks resolved (for messages).
    dir: PathBuf,
    /// Every name of the cache a grant could reach it by.
    guard: CacheGuard,
    /// The open entries directory.
    entries: Arc<OwnedFd>,
    /// The open directory of remembered verifications.
    seen: Arc<OwnedFd>,
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

/// An entry that passed every check: open, with its status and the length
/// of its code.
struct Verified {
    fd: OwnedFd,
    stat: rustix::fs::Stat,
    code_len: usize,
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

        let entries = private_subdir(&root, &shown, ENTRIES)?;
        let seen = private_subdir(&root, &shown, SEEN)?;
        let key = load_or_create_key(&root, &shown.join(KEY_FILE))?;
        Ok(ComponentCache {
            dir: shown,
            guard,
            entries: Arc::new(entries),
            seen: Arc::new(seen),
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
    /// entry that cannot be written is logged. A start whose verification
    /// is remembered (see `seen`) hashes nothing.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Component> {
        let reading = || format!("reading {}", path.display());
        let file = std::fs::File::open(path).with_context(reading)?;
        let source_stat = rustix::fs::fstat(&file).with_context(reading)?;
        let engine_hash = engine_hash(engine);
        let record = seen::record_name(&source_stat, engine_hash);
        if let Some(component) = self.remembered(engine, &record, &source_stat) {
            return Ok(component);
        }
        let mut source = Vec::with_capacity(usize::try_from(source_stat.st_size).unwrap_or(0));
        { file }.read_to_end(&mut source).with_context(reading)?;
        let key = key_of(engine_hash, &source);
        let name = entry_name(&key);
        if let Some(entry) = self.fetch(&name, &key)
            && let Some(component) = self.deserialize(engine, &name, &entry)
        {
            let seen = Seen {
                source: seen::id(&source_stat),
                cache_key: key,
                entry: seen::id(&entry.stat),
            };
            self.records().write(&record, &seen);
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

    /// The component of the source with status `source` if `record`
    /// remembers that it, as it is now, hashed to an entry that, as it is
    /// now, verified.
    fn remembered(
        &self,
        engine: &Engine,
        record: &str,
        source: &rustix::fs::Stat,
    ) -> Option<Component> {
        let seen = self.records().read(record)?;
        if seen.source != seen::id(source) {
            return None;
        }
        let name = entry_name(&seen.cache_key);
        let (fd, stat) = seen::same_entry(&self.entries, &name, &seen)?;
        let code_len = usize::try_from(stat.st_size)
            .ok()?
            .checked_sub(TRAILER_LEN)?;
        self.deserialize(engine, &name, &Verified { fd, stat, code_len })
    }

    /// The code of the verified `entry`, copied by the kernel into a
    /// sealed memfd: what runs can then not change, whatever happens to the
    /// file, and wasmtime maps it instead of copying it. The entry must
    /// still be the file that was verified after the copy (any write moves
    /// its change time), or the copy might hold what was written.
    fn sealed_code(&self, entry: &Verified) -> Result<OwnedFd> {
        let code = crate::memfd::sealed_copy(entry.fd.as_fd(), entry.code_len)?;
        if seen::id(&rustix::fs::fstat(&entry.fd)?) != seen::id(&entry.stat) {
            bail!("the entry changed while it was read");
        }
        Ok(code)
    }

    fn records(&self) -> Records<'_> {
        Records {
            dir: &self.seen,
            key: &self.key,
        }
    }

    /// The component in the verified entry `name`, if wasmtime takes it:
    /// mapped from a sealed copy of its code (see [`Self::sealed_code`]).
    fn deserialize(&self, engine: &Engine, name: &str, entry: &Verified) -> Option<Component> {
        let loaded = self.sealed_code(entry).and_then(|code| {
            crate::sys::deserialize_sealed_file(engine, code.as_fd())
                .or_else(|_| crate::sys::deserialize_sealed(engine, code.as_fd()))
        });
        match loaded {
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
        if self.fetch(&name, &key).is_some() {
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

    /// The compiled code of `source` (whose cache key is `key`), in a
    /// sealed memfd: from a verified entry, else, if `compile`, compiled
    /// and written to the cache (an entry that cannot be written is
    /// logged); `None` if not `compile` and there is no verified entry.
    pub(crate) fn code(
        &self,
        engine: &Engine,
        key: &[u8; 32],
        source: &[u8],
        compile: bool,
    ) -> Result<Option<OwnedFd>> {
        let name = entry_name(key);
        if let Some(entry) = self.fetch(&name, key) {
            return self.sealed_code(&entry).map(Some);
        }
        if !compile {
            return Ok(None);
        }
        let code = engine.precompile_component(source)?;
        if let Err(e) = self.store(&name, key, &code) {
            tracing::warn!(entry = %self.entry_path(&name).display(), error = %e,
                "cannot write a compiled-component cache entry");
        }
        Ok(Some(crate::memfd::sealed(&code)?))
    }

    /// The path of the entry named `name`.
    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(ENTRIES).join(name)
    }

    /// The entry `name` for `key` if it passes every check, logging why a
    /// bad one is bad.
    fn fetch(&self, name: &str, key: &[u8; 32]) -> Option<Verified> {
        match self.read_verified(name, key) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(
                    entry = %self.entry_path(name).display(),
                    reason = %format!("{e:#}"),
                    "recompiling: a compiled-component cache entry failed verification"
                );
                None
            }
        }
    }

    /// The entry `name` if it passes every check, `None` if there is none,
    /// else why not. Its bytes are mapped, not copied, to be hashed.
    fn read_verified(&self, name: &str, key: &[u8; 32]) -> Result<Option<Verified>> {
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
        let stat = check_private_file(&fd, None)?;
        let len = usize::try_from(stat.st_size)?;
        let Some(code_len) = len.checked_sub(TRAILER_LEN) else {
            bail!("not an entry of this format ({len} bytes)");
        };
        let tagged = crate::sys::with_entry_mapped(fd.as_fd(), len, |bytes| {
            let (code, trailer) = bytes.split_at(code_len);
            let (tag, magic) = trailer.split_at(TAG_LEN);
            if magic != MAGIC {
                return Err(anyhow!("not an entry of this format ({len} bytes)"));
            }
            // (`Hash`'s comparison takes constant time.)
            match blake3::Hash::from_slice(tag).is_ok_and(|tag| self.tag(key, code) == tag) {
                true => Ok(()),
                false => Err(anyhow!(
                    "its tag does not match (altered, or another entry's)"
                )),
            }
        });
        tagged.context("reading it")??;
        Ok(Some(Verified { fd, stat, code_len }))
    }

    /// The tag of `code` as the entry for `key`.
    fn tag(&self, key: &[u8; 32], code: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(DOMAIN);
        mac.update(key);
        hash_into(&mut mac, code);
        mac.finalize()
    }

    /// Writes `code` as the entry `name` for `key`: a new 0600 file under
    /// a temporary name, renamed over whatever was there.
    fn store(&self, name: &str, key: &[u8; 32], code: &[u8]) -> Result<()> {
        let tag = self.tag(key, code);
        let temp = temp_name(name);
        let written = (|| -> Result<()> {
            let mut file = create_private_file(&self.entries, &temp)?;
            file.write_all(code)?;
            file.write_all(tag.as_bytes())?;
            file.write_all(MAGIC)?;
            rustix::fs::renameat(&*self.entries, &temp, &*self.entries, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&*self.entries, &temp, AtFlags::empty());
        }
        written
    }
}

/// Creates (mode 0700) and opens the subdirectory `name` of the cache
/// directory `root` (shown as `shown`), checked private.
fn private_subdir(root: &OwnedFd, shown: &Path, name: &str) -> Result<OwnedFd> {
    let path = shown.join(name);
    match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    let dir = rustix::fs::openat(
        root,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", path.display()))?;
    check_private_dir(&dir, &path)?;
    Ok(dir)
}
