//! A cgroup v2 per guest, so that every process its children started can
//! be killed at once — also those that left their process group (a
//! double-forking daemon), which a process-group kill misses.
//!
//! The cgroup is created under the host's own cgroup (`wasmproc-PID-N`),
//! children are started in it with `clone3(CLONE_INTO_CGROUP)` (see
//! `sys::spawn`), and dropping it writes `1` to `cgroup.kill` (Linux ≥ 5.14)
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

/// A cgroup this host created for a guest's children.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
    /// The directory, for CLONE_INTO_CGROUP.
    dir: File,
    /// Names the next [`ChildCgroup`].
    next_child: AtomicU64,
}

/// A cgroup for one child, inside its guest's (with
/// `ProcessCtxBuilder::cgroup_per_child`). Dropping it kills what is left
/// in it and removes it.
#[derive(Debug)]
pub(crate) struct ChildCgroup {
    path: PathBuf,
    dir: File,
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
        let path = parent.join(name);
        std::fs::create_dir(&path)?;
        let opened = File::open(&path).and_then(|dir| {
            // Only a kernel with cgroup.kill lets us kill the whole cgroup.
            std::fs::metadata(path.join("cgroup.kill"))?;
            Ok(dir)
        });
        match opened {
            Ok(dir) => Ok(Cgroup {
                path,
                dir,
                next_child: AtomicU64::new(0),
            }),
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

    /// Kills every process in the cgroup (and its descendant cgroups).
    pub fn kill(&self) -> io::Result<()> {
        kill(&self.path)
    }

    /// A new cgroup inside this one, for one child.
    pub fn child(&self) -> io::Result<ChildCgroup> {
        let n = self.next_child.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("child-{n}"));
        std::fs::create_dir(&path)?;
        match File::open(&path) {
            Ok(dir) => Ok(ChildCgroup { path, dir }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }
}

impl ChildCgroup {
    /// The cgroup's directory (for logs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory, to start the child in.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Kills every process in the cgroup.
    pub fn kill(&self) -> io::Result<()> {
        kill(&self.path)
    }
}

impl Drop for ChildCgroup {
    /// Kills what is left (descendants that left the child's process group)
    /// and removes the cgroup — at once when it is empty, else in the
    /// background once the killed processes are gone (or, failing that,
    /// with the guest's cgroup).
    fn drop(&mut self) {
        if populated(&self.path).unwrap_or(false)
            && let Err(e) = kill(&self.path)
        {
            tracing::error!(cgroup = %self.path.display(), error = %e, "cannot kill the cgroup");
        }
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        let path = std::mem::take(&mut self.path);
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

/// Kills every process in the cgroup at `path` (and below it).
fn kill(path: &Path) -> io::Result<()> {
    let mut kill = File::options().write(true).open(path.join("cgroup.kill"))?;
    kill.write_all(b"1")
}

/// Whether a process is left in the cgroup at `path` (or below it).
fn populated(path: &Path) -> io::Result<bool> {
    let events = std::fs::read_to_string(path.join("cgroup.events"))?;
    Ok(events.lines().any(|line| line == "populated 1"))
}

impl Drop for Cgroup {
    /// Kills whatever is left and removes the cgroup.
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::error!(cgroup = %self.path.display(), error = %e, "cannot kill the cgroup");
        }
        let deadline = Instant::now() + EMPTY_WAIT;
        while populated(&self.path).unwrap_or(false) && Instant::now() < deadline {
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
        drop(Cgroup {
            path: entry.path(),
            dir: match File::open(entry.path()) {
                Ok(dir) => dir,
                Err(_) => continue,
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
