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
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

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

/// A directory's identity: device and inode.
type Id = (u64, u64);

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

/// The cache key of `source` compiled by `engine`.
pub(crate) fn cache_key(engine: &Engine, source: &[u8]) -> [u8; 32] {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    Sha256::new()
        .chain_update(source)
        .chain_update(engine_hash.finish().to_le_bytes())
        .finalize()
        .into()
}

fn entry_name(key: &[u8; 32]) -> String {
    format!("{}.cwasm", crate::hex(key))
}

/// A temporary name beside `name`, unique to this process and call (even
/// for loads racing in this process).
fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// Opens the directory `path` (following symlinks) with `extra` flags.
fn open_dir(path: &Path, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )
}

/// Creates `name` in `dir` as a new file of mode exactly 0600 (whatever the
/// umask), refusing to follow or reuse anything already there.
fn create_private_file(dir: &OwnedFd, name: &str) -> Result<std::fs::File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
    Ok(std::fs::File::from(fd))
}

/// Checks that the open file `fd` is a regular file of the euid's, mode
/// 0600 and one link (of exactly `len` bytes if given), then reads it whole.
fn read_private_file(fd: OwnedFd, len: Option<usize>) -> Result<Vec<u8>> {
    let st = rustix::fs::fstat(&fd)?;
    let euid = rustix::process::geteuid().as_raw();
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        bail!("it is not a regular file");
    }
    if st.st_uid != euid {
        bail!("it belongs to uid {}, not to {euid}", st.st_uid);
    }
    if st.st_mode & 0o7777 != 0o600 {
        bail!("its mode is {:04o}, not 0600", st.st_mode & 0o7777);
    }
    if st.st_nlink != 1 {
        bail!("it has {} links, not 1", st.st_nlink);
    }
    let size = usize::try_from(st.st_size).unwrap_or(0);
    if let Some(len) = len
        && size != len
    {
        bail!("it holds {size} bytes, not {len}");
    }
    let mut bytes = Vec::with_capacity(size);
    std::fs::File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks that the open directory `fd` belongs to the euid and is not
/// writable by group or others.
fn check_private_dir(fd: &OwnedFd, shown: &Path) -> Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid || st.st_mode & 0o022 != 0 {
        bail!(
            "the component cache directory {} must belong to this user (uid {euid}) and not be \
             writable by others (it has uid {}, mode {:04o})",
            shown.display(),
            st.st_uid,
            st.st_mode & 0o7777
        );
    }
    Ok(())
}

/// Checks that the directory `fd` (reached as `at`; `fd` itself only if
/// `itself`) and each of its ancestors (through `..`, so symlinks on the
/// way do not matter) belong to root or the euid and are not writable by
/// group or others unless sticky (as `/tmp`, where others cannot rename
/// what is ours): whoever could change one could replace the cache
/// `cache` below it.
fn check_trusted_chain(fd: OwnedFd, at: &Path, cache: &Path, itself: bool) -> Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    let mut names = at.ancestors();
    walk_up(fd, |depth, st| {
        let name = names.next().unwrap_or(Path::new("?"));
        if depth == 0 && !itself {
            return Ok(());
        }
        let sticky = st.st_mode & 0o1000 != 0;
        if st.st_uid != 0 && st.st_uid != euid {
            bail!(
                "the component cache {} is below {}, which belongs to uid {} (only root or \
                 uid {euid} may own the directories above the cache)",
                cache.display(),
                name.display(),
                st.st_uid
            );
        }
        if st.st_mode & 0o022 != 0 && !sticky {
            bail!(
                "the component cache {} is below {}, which others may write to (mode {:04o}): \
                 they could replace the cache",
                cache.display(),
                name.display(),
                st.st_mode & 0o7777
            );
        }
        Ok(())
    })
    .map(drop)
}

/// The identities of the directory `fd` and its ancestors, `fd` first.
fn ancestry(fd: OwnedFd) -> Result<Vec<Id>> {
    walk_up(fd, |_, _| Ok(()))
}

/// The identities of the directory `fd` and its ancestors, `fd` first,
/// calling `check` with each one's depth (0 for `fd`) and status.
fn walk_up(
    fd: OwnedFd,
    mut check: impl FnMut(usize, &rustix::fs::Stat) -> Result<()>,
) -> Result<Vec<Id>> {
    let mut ids: Vec<Id> = Vec::new();
    let mut current = fd;
    loop {
        let st = rustix::fs::fstat(&current)?;
        let id = (st.st_dev, st.st_ino);
        // `..` of the root is the root.
        if ids.last() == Some(&id) {
            return Ok(ids);
        }
        check(ids.len(), &st)?;
        ids.push(id);
        current = rustix::fs::openat(
            &current,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
}

/// The most symbolic links followed on the way to the cache (as Linux's
/// `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Every name of a component cache that a directory grant could reach it
/// by, so that a grant over any of them is refused (issue 22, rows 1–2).
///
/// Comparing resolved paths is not enough: with the cache at
/// `~/.cache/wasmproc/components` and `~/.cache` a symbolic link to a
/// directory outside `~`, a grant of `~` does not contain the resolved
/// cache, yet it holds the link, and a guest that replaces the link with a
/// directory of its own moves the cache into its grant for every process
/// that resolves the path again. So the guard walks the path as given,
/// component by component and through every symbolic link, and records
/// each directory whose entries the walk consults: a grant that is one of
/// them, or any of their ancestors (by device and inode), is refused, as
/// is a grant inside the cache. It needs no cache to exist: a cache the
/// host refuses to use (a bad mode or owner) still guards its location,
/// and one not made yet guards the directories it would be made in.
#[derive(Clone, Debug)]
pub struct CacheGuard {
    /// The path as given (for messages).
    path: PathBuf,
    /// The cache directory, if it exists.
    cache: Option<Id>,
    /// Each directory the walk consulted, with the path it was reached
    /// by, and the identities of it and its ancestors.
    consulted: Arc<[(PathBuf, Vec<Id>)]>,
    /// The owners of the symbolic links followed, with their paths.
    links: Arc<[(PathBuf, u32)]>,
}

impl CacheGuard {
    /// Walks `path` (the cache directory, which need not exist) as the
    /// module docs describe; fails only if the walk itself does (a loop of
    /// links, a component that is not a directory, a directory it cannot
    /// search).
    pub fn at(path: &Path) -> Result<CacheGuard> {
        walk_path(path).with_context(|| {
            format!(
                "cannot tell where the component cache {} is, so no grant could be checked \
                 against it (set WASMPROC_CACHE to a plain directory)",
                path.display()
            )
        })
    }

    /// Refuses (naming both) a directory grant `grant` that is, contains or
    /// lies inside the cache, or contains a directory on the way to it.
    pub fn check(&self, grant: &Path) -> Result<()> {
        let fd = open_dir(grant, OFlags::PATH)
            .with_context(|| format!("cannot open directory {}", grant.display()))?;
        self.check_open(&fd, grant)
    }

    /// As [`check`](Self::check), for the open directory `grant` (shown as
    /// `shown`): for a directory opened on a guest's behalf, checked again
    /// when it is used.
    pub fn check_open(&self, grant: &impl std::os::fd::AsFd, shown: &Path) -> Result<()> {
        let fd = rustix::fs::openat(grant, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        let grant_ancestry =
            ancestry(fd).with_context(|| format!("walking up {}", shown.display()))?;
        let id = grant_ancestry[0];
        if let Some(cache) = self.cache {
            if let Some((_, ids)) = self.consulted.last()
                && ids.contains(&id)
            {
                return Err(self.refusal(shown, "contains the compiled-component cache"));
            }
            if grant_ancestry.contains(&cache) {
                return Err(self.refusal(shown, "lies inside the compiled-component cache"));
            }
        }
        match self.consulted.iter().find(|(_, ids)| ids.contains(&id)) {
            Some((step, _)) if self.cache.is_none() => Err(self.refusal(
                shown,
                &format!(
                    "contains {}, where the compiled-component cache would be made,",
                    step.display()
                ),
            )),
            Some((step, _)) => Err(self.refusal(
                shown,
                &format!(
                    "contains {}, a step on the path to the compiled-component cache,",
                    step.display()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks that no one but root and this user can change a directory the
    /// walk consulted, any of their ancestors, or a link it followed:
    /// whoever can could move the cache.
    fn check_trusted(&self) -> Result<()> {
        let euid = rustix::process::geteuid().as_raw();
        for (link, uid) in self.links.iter() {
            if *uid != 0 && *uid != euid {
                bail!(
                    "the path to the component cache {} follows the symbolic link {}, which \
                     belongs to uid {uid} (only root or uid {euid} may own it)",
                    self.path.display(),
                    link.display()
                );
            }
        }
        let steps = self.consulted.len().saturating_sub(1);
        for (step, _) in &self.consulted[..steps] {
            let fd = open_dir(step, OFlags::PATH)?;
            check_trusted_chain(fd, step, &self.path, true)?;
        }
        Ok(())
    }

    fn refusal(&self, grant: &Path, relation: &str) -> anyhow::Error {
        let mut shown = grant.display().to_string();
        if let Ok(real) = std::fs::canonicalize(grant)
            && real != grant
        {
            shown = format!("{shown} (that is, {})", real.display());
        }
        let cache = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        anyhow!(
            "refusing the directory grant {shown}: it {relation} {}, whose native code the \
             host runs; grant a directory apart from it, or move the cache (WASMPROC_CACHE) \
             out of every grant",
            cache.display()
        )
    }
}

/// The walk of [`CacheGuard::at`].
fn walk_path(path: &Path) -> Result<CacheGuard> {
    use std::path::Component;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = Default::default();
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = open_dir(Path::new(start), OFlags::PATH)?;
    let mut at = std::fs::canonicalize(start)?;
    let mut consulted: Vec<(PathBuf, Vec<Id>)> = Vec::new();
    let mut links = Vec::new();
    let push = |todo: &mut std::collections::VecDeque<_>, p: &Path, front: bool| {
        let parts: Vec<std::ffi::OsString> = (p.components())
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                Component::RootDir => Some("/".into()),
                Component::CurDir | Component::Prefix(_) => None,
            })
            .collect();
        if front {
            parts.into_iter().rev().for_each(|p| todo.push_front(p));
        } else {
            todo.extend(parts);
        }
    };
    push(&mut todo, path, false);
    let mut exists = true;
    while let Some(name) = todo.pop_front() {
        if name == "/" {
            dir = open_dir(Path::new("/"), OFlags::PATH)?;
            at = PathBuf::from("/");
            continue;
        }
        record(&mut consulted, &dir, &at)?;
        let st = match rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                exists = false;
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("looking up {}", at.join(&name).display()));
            }
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                if links.len() == MAX_SYMLINKS {
                    bail!("more than {MAX_SYMLINKS} symbolic links");
                }
                let target = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())?;
                let target: PathBuf = std::ffi::OsString::from_vec(target.into_bytes()).into();
                links.push((at.join(&name), st.st_uid));
                push(&mut todo, &target, true);
            }
            FileType::Directory => {
                dir = rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                at = if name == ".." {
                    at.parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
                } else {
                    at.join(&name)
                };
            }
            _ => bail!("{} is not a directory", at.join(&name).display()),
        }
    }
    let cache = if exists {
        record(&mut consulted, &dir, &at)?;
        Some(id_of(&dir)?)
    } else {
        None
    };
    Ok(CacheGuard {
        path: path.to_owned(),
        cache,
        consulted: consulted.into(),
        links: links.into(),
    })
}

/// Records the directory `dir` (reached as `at`) and its ancestors, once.
fn record(consulted: &mut Vec<(PathBuf, Vec<Id>)>, dir: &OwnedFd, at: &Path) -> Result<()> {
    let id = id_of(dir)?;
    if let Some(i) = consulted.iter().position(|(_, ids)| ids[0] == id) {
        // The last one recorded is the deepest: keep the order a walk ends in.
        let again = consulted.remove(i);
        consulted.push(again);
        return Ok(());
    }
    let fd = rustix::fs::openat(dir, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    consulted.push((at.to_owned(), ancestry(fd)?));
    Ok(())
}

/// The identity of the open file `fd`.
fn id_of(fd: &impl std::os::fd::AsFd) -> Result<Id> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The host key in `dir` (the open cache directory), made if missing.
fn load_or_create_key(dir: &OwnedFd, shown: &Path) -> Result<[u8; KEY_LEN]> {
    for _ in 0..3 {
        match rustix::fs::openat(
            dir,
            KEY_FILE,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let bytes = read_private_file(fd, Some(KEY_LEN)).with_context(|| {
                    format!(
                        "the component cache's key {} is not usable (remove it to make a new one)",
                        shown.display()
                    )
                })?;
                return bytes
                    .try_into()
                    .map_err(|_| anyhow!("the key {} changed size", shown.display()));
            }
            Err(Errno::NOENT) => create_key(dir)
                .with_context(|| format!("creating the cache key {}", shown.display()))?,
            Err(Errno::LOOP) => bail!("the cache key {} is a symbolic link", shown.display()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", shown.display())),
        }
    }
    bail!("the cache key {} keeps disappearing", shown.display())
}

/// Writes a new random key to a temporary file and moves it to `key`
/// unless a racing host made one first (then that one is used).
fn create_key(dir: &OwnedFd) -> Result<()> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let temp = temp_name(KEY_FILE);
    let mut file = create_private_file(dir, &temp)?;
    let placed = file
        .write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            match rustix::fs::renameat_with(dir, &temp, dir, KEY_FILE, RenameFlags::NOREPLACE) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                // A file system without RENAME_NOREPLACE: link(2) never
                // replaces either.
                Err(Errno::INVAL | Errno::NOSYS) => {
                    match rustix::fs::linkat(dir, &temp, dir, KEY_FILE, AtFlags::empty()) {
                        Ok(()) | Err(Errno::EXIST) => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        });
    let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn cache() -> (tempfile::TempDir, ComponentCache) {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(tmp.path().join("cache")).unwrap();
        (tmp, cache)
    }

    const KEY_A: [u8; 32] = [1; 32];
    const KEY_B: [u8; 32] = [2; 32];

    fn stored(cache: &ComponentCache, key: &[u8; 32], code: &[u8]) -> PathBuf {
        let name = entry_name(key);
        cache.store(&name, key, code).unwrap();
        cache.entry_path(&name)
    }

    fn verdict(cache: &ComponentCache, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        cache.read_verified(&entry_name(key), key)
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_entry_written_by_the_cache_reads_back_verified() {
        let (_tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        let bytes = verdict(&cache, &KEY_A).unwrap().unwrap();
        assert_eq!(&bytes[HEADER_LEN..], b"code");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert!(verdict(&cache, &KEY_B).unwrap().is_none(), "no entry");
    }

    #[test]
    fn the_cache_makes_a_0600_key_once_and_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let first = ComponentCache::new(&dir).unwrap();
        let meta = std::fs::symlink_metadata(dir.join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(meta.len(), 32);
        let second = ComponentCache::new(&dir).unwrap();
        assert_eq!(first.key, second.key);
        let path = stored(&first, &KEY_A, b"code");
        assert!(verdict(&second, &KEY_A).unwrap().is_some());
        assert!(path.starts_with(std::fs::canonicalize(&dir).unwrap().join(ENTRIES)));
    }

    #[test]
    fn an_entry_of_another_mode_is_refused() {
        let (_tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        set_mode(&path, 0o644);
        let e = verdict(&cache, &KEY_A).unwrap_err();
        assert!(format!("{e}").contains("mode is 0644"), "{e}");
    }

    #[test]
    fn an_entry_with_a_second_link_is_refused() {
        let (tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        std::fs::hard_link(&path, tmp.path().join("elsewhere")).unwrap();
        let e = verdict(&cache, &KEY_A).unwrap_err();
        assert!(format!("{e}").contains("2 links"), "{e}");
    }

    #[test]
    fn an_entry_that_is_a_symlink_is_refused_even_to_a_valid_entry() {
        let (_tmp, cache) = cache();
        let real = stored(&cache, &KEY_A, b"code");
        let name = entry_name(&KEY_B);
        std::os::unix::fs::symlink(&real, cache.entry_path(&name)).unwrap();
        let e = verdict(&cache, &KEY_B).unwrap_err();
        assert!(format!("{e}").contains("symbolic link"), "{e}");
    }

    #[test]
    fn an_entry_with_altered_code_fails_its_mac() {
        let (_tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let e = verdict(&cache, &KEY_A).unwrap_err();
        assert!(format!("{e}").contains("MAC does not match"), "{e}");
    }

    #[test]
    fn an_entry_copied_over_another_name_fails_its_mac() {
        let (_tmp, cache) = cache();
        let a = stored(&cache, &KEY_A, b"code of A");
        let b = stored(&cache, &KEY_B, b"code of B");
        std::fs::copy(&a, &b).unwrap();
        let e = verdict(&cache, &KEY_B).unwrap_err();
        assert!(format!("{e}").contains("MAC does not match"), "{e}");
    }

    #[test]
    fn an_entry_made_under_another_key_fails_its_mac() {
        let tmp = tempfile::tempdir().unwrap();
        let (_other_tmp, other) = cache();
        let cache = ComponentCache::new(tmp.path().join("cache")).unwrap();
        let theirs = stored(&other, &KEY_A, b"code");
        std::fs::copy(&theirs, cache.entry_path(&entry_name(&KEY_A))).unwrap();
        assert!(verdict(&cache, &KEY_A).is_err());
    }

    #[test]
    fn a_truncated_entry_fails() {
        let (_tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(20).unwrap();
        assert!(verdict(&cache, &KEY_A).is_err());
    }

    #[test]
    fn a_bad_entry_is_replaced_by_the_next_store() {
        let (_tmp, cache) = cache();
        let path = stored(&cache, &KEY_A, b"code");
        set_mode(&path, 0o666);
        assert!(verdict(&cache, &KEY_A).is_err());
        stored(&cache, &KEY_A, b"code");
        assert!(verdict(&cache, &KEY_A).unwrap().is_some());
    }

    #[test]
    fn a_key_of_another_mode_or_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        ComponentCache::new(&dir).unwrap();
        set_mode(&dir.join(KEY_FILE), 0o644);
        let e = ComponentCache::new(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("mode is 0644"), "{e:#}");
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
        set_mode(&dir.join(KEY_FILE), 0o600);
        let e = ComponentCache::new(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("not 32"), "{e:#}");
    }

    #[test]
    fn a_key_that_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        ComponentCache::new(&dir).unwrap();
        std::fs::rename(dir.join(KEY_FILE), tmp.path().join("mine")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("mine"), dir.join(KEY_FILE)).unwrap();
        let e = ComponentCache::new(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
    }

    #[test]
    fn a_cache_writable_by_others_or_below_such_a_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o777);
        let e = ComponentCache::new(open.join("cache")).unwrap_err();
        assert!(format!("{e:#}").contains("others may write"), "{e:#}");
        // Sticky, as /tmp: others cannot rename what is ours.
        set_mode(&open, 0o1777);
        ComponentCache::new(open.join("cache")).unwrap();
        let leaf = tmp.path().join("leaf");
        std::fs::create_dir(&leaf).unwrap();
        set_mode(&leaf, 0o770);
        let e = ComponentCache::new(&leaf).unwrap_err();
        assert!(
            format!("{e:#}").contains("not be writable by others"),
            "{e:#}"
        );
    }

    #[test]
    fn a_cache_below_another_users_directory_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(12345), Some(12345)).unwrap();
        let e = ComponentCache::new(theirs.join("cache")).unwrap_err();
        assert!(format!("{e:#}").contains("belongs to uid 12345"), "{e:#}");
    }

    #[test]
    fn grants_containing_or_inside_the_cache_are_refused_and_others_accepted() {
        let (tmp, cache) = cache();
        let base = tmp.path();
        std::fs::create_dir(base.join("beside")).unwrap();
        std::os::unix::fs::symlink(base, base.join("beside/link")).unwrap();
        for grant in [
            base.to_path_buf(),
            base.join("cache"),
            base.join("beside/link"),
            PathBuf::from("/"),
        ] {
            let e = cache.check_grant(&grant).unwrap_err().to_string();
            assert!(e.contains("contains the compiled-component cache"), "{e}");
            assert!(e.contains(&grant.display().to_string()), "{e}");
            assert!(e.contains(&cache.dir().display().to_string()), "{e}");
        }
        let e = cache
            .check_grant(&base.join("cache/entries"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lies inside the compiled-component cache"),
            "{e}"
        );
        cache.check_grant(&base.join("beside")).unwrap();
        // Without an instance, and for a cache not made yet.
        let guard = |dir: &Path| CacheGuard::at(dir).unwrap();
        guard(&base.join("cache")).check(base).unwrap_err();
        let later = guard(&base.join("later/cache"));
        let e = later.check(base).unwrap_err().to_string();
        assert!(
            e.contains("where the compiled-component cache would be made"),
            "{e}"
        );
        later.check(&base.join("beside")).unwrap();
    }

    #[test]
    fn a_grant_holding_a_symlink_on_the_way_to_the_cache_is_refused() {
        // home/.cache -> elsewhere/cache: home does not contain the resolved
        // cache, but it holds the link a guest could replace.
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let (home, elsewhere) = (base.join("home"), base.join("elsewhere"));
        std::fs::create_dir_all(elsewhere.join("cache")).unwrap();
        std::fs::create_dir_all(home.join("work")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("cache"), home.join(".cache")).unwrap();
        let cache = ComponentCache::new(home.join(".cache/wasmproc/components")).unwrap();
        let e = cache.check_grant(&home).unwrap_err().to_string();
        assert!(
            e.contains("a step on the path to the compiled-component cache"),
            "{e}"
        );
        assert!(e.contains(&home.display().to_string()), "{e}");
        // The link's target and what lies beyond are the cache's ancestors.
        for grant in [elsewhere.join("cache"), elsewhere.clone()] {
            let e = cache.check_grant(&grant).unwrap_err().to_string();
            assert!(e.contains("contains the compiled-component cache"), "{e}");
        }
        // Beside every step: accepted.
        cache.check_grant(&home.join("work")).unwrap();
    }

    #[test]
    fn a_relative_link_with_dot_dot_on_the_way_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink("../../real", base.join("a/b/link")).unwrap();
        let guard = CacheGuard::at(&base.join("a/b/link/cache")).unwrap();
        // Where it would be made is `real`; the link lives in `a/b`.
        guard.check(&base.join("real")).unwrap_err();
        guard.check(&base.join("a/b")).unwrap_err();
        guard.check(&base.join("a")).unwrap_err();
    }

    #[test]
    fn a_loop_of_links_fails_the_walk() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("loop", tmp.path().join("loop")).unwrap();
        let e = CacheGuard::at(&tmp.path().join("loop/cache")).unwrap_err();
        assert!(format!("{e:#}").contains("symbolic links"), "{e:#}");
    }
}
