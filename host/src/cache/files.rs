//! The cache's files, and the names they go by: the host key (made once,
//! atomically), the checks and the `O_EXCL` creation of private files (an
//! entry or the key: the euid's, mode 0600, one link), the check of a
//! private directory, and the names of entries and temporary files.
//!
//! Kept apart from [`ComponentCache`](super::ComponentCache) so that the
//! file-level checks the module docs list can be read, and reviewed, in one
//! place, below the entry format that relies on them.

use super::{KEY_FILE, KEY_LEN};
use anyhow::{Context as _, Result, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;

/// The cache key of `source` compiled by `engine`.
pub(crate) fn cache_key(engine: &Engine, source: &[u8]) -> [u8; 32] {
    key_of(engine_hash(engine), source)
}

/// What identifies `engine`'s settings in a cache key: the hash of its
/// compatibility hash.
pub(super) fn engine_hash(engine: &Engine) -> u64 {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    engine_hash.finish()
}

/// The cache key of `source` compiled by an engine of `engine_hash`: the
/// BLAKE3 of both.
pub(super) fn key_of(engine_hash: u64, source: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    super::hash_into(&mut hasher, source);
    hasher.update(&engine_hash.to_le_bytes());
    hasher.finalize().into()
}

pub(super) fn entry_name(key: &[u8; 32]) -> String {
    format!("{}.cwasm", crate::hex::hex(key))
}

/// A temporary name beside `name`, unique to this process and call (even
/// for loads racing in this process).
pub(super) fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// Opens the directory `path` (following symlinks) with `extra` flags.
pub(super) fn open_dir(path: &Path, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )
}

/// Creates `name` in `dir` as a new file of mode exactly 0600 (whatever the
/// umask), refusing to follow or reuse anything already there.
pub(super) fn create_private_file(dir: &OwnedFd, name: &str) -> Result<std::fs::File> {
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
pub(super) fn read_private_file(fd: OwnedFd, len: Option<usize>) -> Result<Vec<u8>> {
    let st = check_private_file(&fd, len)?;
    let size = usize::try_from(st.st_size).unwrap_or(0);
    let mut bytes = Vec::with_capacity(size);
    std::fs::File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks that the open file `fd` is a regular file of the euid's, mode
/// 0600 and one link (of exactly `len` bytes if given); its status.
pub(super) fn check_private_file(fd: &OwnedFd, len: Option<usize>) -> Result<rustix::fs::Stat> {
    let st = rustix::fs::fstat(fd)?;
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
    Ok(st)
}

/// Checks that the open directory `fd` belongs to the euid and is not
/// writable by group or others.
pub(super) fn check_private_dir(fd: &OwnedFd, shown: &Path) -> Result<()> {
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

/// The host key in `dir` (the open cache directory), made if missing.
pub(super) fn load_or_create_key(dir: &OwnedFd, shown: &Path) -> Result<[u8; KEY_LEN]> {
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
