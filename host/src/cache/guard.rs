//! [`CacheGuard`]: every name a directory grant could reach the cache by,
//! found by walking the cache's path as given, through every symbolic link
//! (issue 22); and the checks that no one but root and this user can change
//! a directory on the way (walked up through `..`, by device and inode).
//!
//! Kept apart from the entries and their format: this is the half of the
//! threat model (see the parent module's docs) about where the cache is and
//! who could move it, not about what is in it.

use super::files::open_dir;
use anyhow::{Context as _, Result, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory's identity: device and inode.
type Id = (u64, u64);

/// Checks that the directory `fd` (reached as `at`; `fd` itself only if
/// `itself`) and each of its ancestors (through `..`, so symlinks on the
/// way do not matter) belong to root or the euid and are not writable by
/// group or others unless sticky (as `/tmp`, where others cannot rename
/// what is ours): whoever could change one could replace the cache
/// `cache` below it.
pub(super) fn check_trusted_chain(
    fd: OwnedFd,
    at: &Path,
    cache: &Path,
    itself: bool,
) -> Result<()> {
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
    pub(super) cache: Option<Id>,
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
    pub(super) fn check_trusted(&self) -> Result<()> {
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
pub(super) fn id_of(fd: &impl std::os::fd::AsFd) -> Result<Id> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}
