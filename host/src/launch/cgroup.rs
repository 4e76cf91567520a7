//! A cgroup v2 per guest, so that every process its children started can
//! be killed at once — also those that left their process group (a
//! double-forking daemon), which a process-group kill misses.
//!
//! The cgroup is created under the host's own cgroup (`wasmproc-PID-N`),
//! children are started in it with `clone3(CLONE_INTO_CGROUP)` (see
//! `sys::clone_and_exec`), and dropping it writes `1` to `cgroup.kill` (Linux ≥ 5.14)
//! and removes the directory once it is empty. A host killed with SIGKILL
//! cannot clean up: the next host that makes a cgroup in the same place
//! kills and removes the cgroups of hosts that are gone. Creating it needs write
//! access to the host's cgroup (root, or a delegated subtree as systemd's
//! `Delegate=yes` gives); without it the host goes on without one.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long dropping a cgroup waits for its killed processes to be gone
/// before it leaves the directory behind (with a warning).
const EMPTY_WAIT: Duration = Duration::from_secs(1);

/// A cgroup directory this host made, open.
#[derive(Debug)]
pub(crate) struct CgroupDir {
    path: PathBuf,
    /// The directory, for CLONE_INTO_CGROUP.
    dir: File,
}

impl CgroupDir {
    /// Makes the cgroup `path` and opens it.
    fn make(path: PathBuf) -> io::Result<CgroupDir> {
        std::fs::create_dir(&path)?;
        match File::open(&path) {
            Ok(dir) => Ok(CgroupDir { path, dir }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    /// The cgroup's directory (for logs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory, to start children in.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Kills every process in the cgroup (and in the cgroups below it).
    pub fn kill(&self) -> io::Result<()> {
        let mut kill = File::options()
            .write(true)
            .open(self.path.join("cgroup.kill"))?;
        kill.write_all(b"1")
    }

    /// Whether a process is left in the cgroup (or below it).
    fn populated(&self) -> io::Result<bool> {
        let events = std::fs::read_to_string(self.path.join("cgroup.events"))?;
        Ok(events.lines().any(|line| line == "populated 1"))
    }
}

/// A cgroup this host created for a guest's children.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: CgroupDir,
    /// Names the next [`ChildCgroup`].
    next_child: AtomicU64,
}

/// A cgroup for one child, inside its guest's (with
/// `ProcessCtxBuilder::cgroup_per_child`). Dropping it kills what is left
/// in it and removes it.
#[derive(Debug)]
pub(crate) struct ChildCgroup(CgroupDir);

impl std::ops::Deref for Cgroup {
    type Target = CgroupDir;
    fn deref(&self) -> &CgroupDir {
        &self.dir
    }
}

impl std::ops::Deref for ChildCgroup {
    type Target = CgroupDir;
    fn deref(&self) -> &CgroupDir {
        &self.0
    }
}

impl Cgroup {
    /// Creates a new cgroup under this process's cgroup v2.
    pub fn create() -> io::Result<Cgroup> {
        if !cfg!(target_arch = "x86_64") {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "starting children in a cgroup is implemented for x86_64 only",
            ));
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = own_cgroup_dir()?;
        sweep_stale(&parent);
        let name = format!(
            "wasmproc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = CgroupDir::make(parent.join(name))?;
        // Only a kernel with cgroup.kill lets us kill the whole cgroup.
        if let Err(e) = std::fs::metadata(dir.path.join("cgroup.kill")) {
            let _ = std::fs::remove_dir(&dir.path);
            return Err(e);
        }
        Ok(Cgroup {
            dir,
            next_child: AtomicU64::new(0),
        })
    }

    /// A new cgroup inside this one, for one child.
    pub fn child(&self) -> io::Result<ChildCgroup> {
        let n = self.next_child.fetch_add(1, Ordering::Relaxed);
        Ok(ChildCgroup(CgroupDir::make(
            self.path.join(format!("child-{n}")),
        )?))
    }
}

impl Drop for ChildCgroup {
    /// Kills what is left (descendants that left the child's process group)
    /// and removes the cgroup — at once when it is empty, else in the
    /// background once the killed processes are gone (or, failing that,
    /// with the guest's cgroup).
    fn drop(&mut self) {
        if self.populated().unwrap_or(false)
            && let Err(e) = self.kill()
        {
            tracing::error!(cgroup = %self.0.path.display(), error = %e, "cannot kill the cgroup");
        }
        if std::fs::remove_dir(&self.0.path).is_ok() {
            return;
        }
        let path = std::mem::take(&mut self.0.path);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if std::fs::remove_dir(&path).is_ok() {
                        return;
                    }
                }
                tracing::debug!(cgroup = %path.display(), "left for the guest's cgroup to remove");
            });
        }
    }
}

impl Drop for Cgroup {
    /// Kills whatever is left and removes the cgroup.
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::error!(cgroup = %self.path.display(), error = %e, "cannot kill the cgroup");
        }
        let deadline = Instant::now() + EMPTY_WAIT;
        while self.populated().unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Cgroups a forked worker made for its own children are left when
        // it was killed: remove them too.
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!(cgroup = %self.path.display(), error = %e, "cannot remove the cgroup");
        }
    }
}

/// Kills and removes the cgroups under `parent` left by hosts that died
/// without cleaning up (named `wasmproc-PID-N` with PID no longer running).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = (name.to_str())
            .and_then(|n| n.strip_prefix("wasmproc-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        if rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH) {
            continue;
        }
        tracing::info!(cgroup = %entry.path().display(), "removing the cgroup of a host that is gone");
        // Dropping it kills what is left and removes it; another host may be
        // doing the same, which is harmless.
        let Ok(dir) = File::open(entry.path()) else {
            continue;
        };
        drop(Cgroup {
            dir: CgroupDir {
                path: entry.path(),
                dir,
            },
            next_child: AtomicU64::new(0),
        });
    }
}

/// Removes the empty cgroup at `path` and every cgroup below it.
fn remove_tree(path: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(path)
}

/// The directory of this process's cgroup in the cgroup v2 hierarchy.
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let not_found = |what: &str| io::Error::new(io::ErrorKind::NotFound, what.to_owned());
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")?;
    let own = (cgroups.lines())
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| not_found("this process is in no cgroup v2"))?;
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS... - FSTYPE SOURCE ...
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = (mounts.lines())
        .find_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            let fields: Vec<_> = fields.split(' ').collect();
            (fs.split(' ').next() == Some("cgroup2") && fields.get(3) == Some(&"/"))
                .then(|| fields.get(4).map(|m| PathBuf::from(unescape(m))))
                .flatten()
        })
        .ok_or_else(|| not_found("no cgroup v2 hierarchy is mounted"))?;
    Ok(mount.join(own.trim_start_matches('/')))
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(path: &str) -> String {
    let mut out = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Moves process `pid` into the cgroup open as `cgroup` (this host may: it
/// is root): a worker that the worker template, which runs as its guest's
/// user and may move nothing, forked.
pub(crate) fn adopt(cgroup: BorrowedFd<'_>, pid: rustix::process::Pid) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let procs = rustix::fs::openat(
        cgroup,
        "cgroup.procs",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::io::write(&procs, pid.as_raw_nonzero().to_string().as_bytes())?;
    Ok(())
}
