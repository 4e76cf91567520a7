//! The compiled code of the components workers run, made by the host and
//! handed to each worker process in a sealed memfd.
//!
//! The compiled-component cache is a trust root: the host runs its native
//! code. So no worker process opens it, resolves its path or holds its
//! key (issue 22, row 1: a worker that resolved the cache's path again ran
//! a guest's forged entry as root). The host, which opened the cache once
//! by descriptor and checked every grant against it, compiles a component
//! (or reads its verified entry) once, copies the code into a memfd and
//! seals it against writing, growing and shrinking. Each worker gets that
//! descriptor with its specification, and the code of every component it
//! may fork in turn, which it passes down the same way; a warm worker or
//! the worker template gets the code of the components that are already
//! compiled when it starts. Sealed, the code cannot change under any
//! process that holds it, and a worker maps it rather than reading and
//! hashing an entry: a fork no longer verifies the cache.

use crate::cache::ComponentCache;
use crate::memfd::sealed;
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where the compiled code of a worker's components comes from: on a
/// host, its engine and cache (see [`WorkerCode::compiling`]); in a worker,
/// what its parent handed it.
#[derive(Clone)]
pub struct WorkerCode(Arc<Source>);

enum Source {
    /// Compiles with `engine`, or reads verified entries of `cache`,
    /// remembering what it made while the component file is unchanged.
    Compiling {
        engine: Engine,
        cache: Option<ComponentCache>,
        made: Mutex<HashMap<PathBuf, (Stamp, Code)>>,
    },
    /// The code a parent handed this worker, by component path.
    Handed(HashMap<PathBuf, Code>),
}

/// A component file's identity and version: device, inode, size and
/// modification time.
type Stamp = (u64, u64, i64, i64, i64);

/// Compiled code in a sealed memfd, named by its cache key (the component's
/// BLAKE3 and the engine's compatibility hash, in hex).
#[derive(Clone, Debug)]
pub(crate) struct Code {
    pub key: String,
    pub fd: Arc<OwnedFd>,
}

impl std::fmt::Debug for WorkerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::Compiling { cache, .. } => f
                .debug_struct("WorkerCode::Compiling")
                .field("cache", cache)
                .finish_non_exhaustive(),
            Source::Handed(codes) => f
                .debug_struct("WorkerCode::Handed")
                .field("components", &codes.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl WorkerCode {
    /// Code compiled by `engine` (which must be configured as the worker
    /// processes' engines are: the worker executable's), through `cache`
    /// if given. Each component is compiled, or its entry read and
    /// verified, once per version of its file.
    pub fn compiling(engine: Engine, cache: Option<ComponentCache>) -> WorkerCode {
        WorkerCode(Arc::new(Source::Compiling {
            engine,
            cache,
            made: Mutex::default(),
        }))
    }

    /// The code a parent handed a worker.
    pub(crate) fn handed(codes: HashMap<PathBuf, Code>) -> WorkerCode {
        WorkerCode(Arc::new(Source::Handed(codes)))
    }

    /// The code of the component at `path`: compiled now if need be and
    /// `compile`, else only if the cache holds it (`None` otherwise).
    pub(crate) fn code(&self, path: &Path, compile: bool) -> Result<Option<Code>> {
        match &*self.0 {
            Source::Handed(codes) => Ok(codes.get(path).cloned()),
            Source::Compiling {
                engine,
                cache,
                made,
            } => {
                let stamp = stamp(path)?;
                let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((was, code)) = made.get(path)
                    && *was == stamp
                {
                    return Ok(Some(code.clone()));
                }
                let source =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let key = crate::cache::cache_key(engine, &source);
                let fd = match cache {
                    Some(cache) => cache.code(engine, &key, &source, compile)?,
                    None if compile => Some(sealed(&engine.precompile_component(&source)?)?),
                    None => None,
                };
                let Some(fd) = fd else {
                    return Ok(None);
                };
                let code = Code {
                    key: crate::hex::hex(&key),
                    fd: Arc::new(fd),
                };
                made.insert(path.to_owned(), (stamp, code.clone()));
                Ok(Some(code))
            }
        }
    }
}

/// Loads the compiled component in the sealed memfd `code` (as a parent
/// host handed it) into `engine`.
pub fn load(engine: &Engine, code: BorrowedFd<'_>) -> Result<Component> {
    crate::sys::deserialize_sealed(engine, code).context("loading the code the host handed over")
}

/// The identity and version of the file at `path`.
fn stamp(path: &Path) -> Result<Stamp> {
    let st = rustix::fs::stat(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec as i64,
    ))
}

impl Code {
    /// The code in the sealed memfd `fd`, with cache key `key`.
    pub(crate) fn new(key: String, fd: OwnedFd) -> Code {
        Code {
            key,
            fd: Arc::new(fd),
        }
    }

    /// The sealed memfd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::SealFlags;
    use rustix::io::Errno;
    use std::os::fd::AsRawFd;

    fn contents(fd: BorrowedFd<'_>) -> Vec<u8> {
        let size = rustix::fs::fstat(fd).unwrap().st_size as usize;
        let mut buf = vec![0u8; size + 1];
        let n = rustix::io::pread(fd, &mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn handed_code_gives_back_what_was_handed_for_its_path_and_nothing_for_others() {
        let code = Code::new("ab12".to_owned(), sealed(b"native code").unwrap());
        let path = Path::new("/srv/components/worker.wasm");
        let codes = WorkerCode::handed(HashMap::from([(path.to_owned(), code.clone())]));
        for compile in [false, true] {
            let got = codes.code(path, compile).unwrap().expect("handed code");
            assert_eq!(got.key, "ab12");
            assert!(
                Arc::ptr_eq(&got.fd, &code.fd),
                "the same descriptor, not a copy"
            );
            // A path never handed has no code, nor has another spelling of
            // the handed one (paths are matched as given, never resolved),
            // and no file is looked at (none of these exist).
            for other in [
                "/srv/components/other.wasm",
                "/srv/components/../components/worker.wasm",
                "worker.wasm",
            ] {
                assert!(
                    codes.code(Path::new(other), compile).unwrap().is_none(),
                    "{other}"
                );
            }
        }
        assert_eq!(
            format!("{codes:?}"),
            "WorkerCode::Handed { components: [\"/srv/components/worker.wasm\"] }"
        );
    }

    #[test]
    fn code_new_keeps_its_key_and_descriptor_and_clones_share_it() {
        let fd = sealed(b"x").unwrap();
        let raw = fd.as_raw_fd();
        let code = Code::new("key".to_owned(), fd);
        let copy = code.clone();
        assert_eq!(code.key, "key");
        assert_eq!(code.fd().as_raw_fd(), raw);
        assert_eq!(copy.fd().as_raw_fd(), raw);
        assert_eq!(contents(code.fd()), b"x");
    }

    #[test]
    fn sealed_code_holds_its_bytes_and_cannot_be_written_grown_shrunk_or_unsealed() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let fd = sealed(&bytes).unwrap();
        assert_eq!(contents(fd.as_fd()), bytes);
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(
            seals
                .contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL),
            "{seals:?}"
        );
        assert_eq!(rustix::io::pwrite(&fd, b"forged", 0), Err(Errno::PERM));
        assert_eq!(
            rustix::io::pwrite(&fd, b"more", bytes.len() as u64),
            Err(Errno::PERM)
        );
        assert_eq!(
            rustix::fs::ftruncate(&fd, bytes.len() as u64 * 2),
            Err(Errno::PERM)
        );
        assert_eq!(rustix::fs::ftruncate(&fd, 1), Err(Errno::PERM));
        assert_eq!(
            rustix::fs::fcntl_add_seals(&fd, SealFlags::FUTURE_WRITE),
            Err(Errno::PERM),
            "no seal can be added or removed"
        );
        assert_eq!(contents(fd.as_fd()), bytes);
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn a_file_s_stamp_is_the_same_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        std::fs::write(&path, b"version one").unwrap();
        let first = stamp(&path).unwrap();
        assert_eq!(stamp(&path).unwrap(), first);
        std::fs::write(&path, b"version two, longer").unwrap();
        assert_ne!(stamp(&path).unwrap(), first);
        let missing = dir.path().join("missing.wasm");
        let err = stamp(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("missing.wasm"), "{err:#}");
    }

    #[test]
    fn compiling_code_without_a_cache_is_none_unless_asked_to_compile_and_a_missing_file_is_an_error()
     {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        // Not even a component: without `compile` and with no cache it is
        // only read, never compiled.
        std::fs::write(&path, b"not compiled").unwrap();
        let codes = WorkerCode::compiling(Engine::default(), None);
        assert!(codes.code(&path, false).unwrap().is_none());
        assert!(codes.code(&path, true).is_err(), "compiling garbage fails");
        let missing = dir.path().join("gone.wasm");
        let err = codes.code(&missing, false).unwrap_err();
        assert!(format!("{err:#}").contains("gone.wasm"), "{err:#}");
    }
}
