//! The sandbox children run in: the walls that Landlock ([`crate::launch::confine`])
//! cannot build on its own.
//!
//! Landlock limits which files a child may open, but not what it may do to
//! files it owns (chmod, utime, xattrs), nor Unix sockets by path, UDP,
//! MPTCP, SysV IPC or keys. Those classes are closed by construction, the
//! way bubblewrap, nsjail and minijail close them:
//!
//! | layer | what it does | what it closes |
//! |---|---|---|
//! | identity | a root host's children run as an unprivileged user and group of their guest's own, leased from a range ([`DEFAULT_CHILD_UIDS`] unless set; see `launch::identity`), or one the embedder sets for all, with no supplementary groups | ownership of the host's files: chmod/chown/utime of root's files, setuid-root binaries; signals, `prlimit`, renicing and SysV objects between guests |
//! | mount | a mount namespace whose root is a read-only tmpfs holding only the system directories and files ([`crate::launch::confine::SYSTEM_DIRS`], [`crate::launch::confine::SYSTEM_FILES`], [`DEVICES`]), the granted directories and the granted programs, each bound at its host path; system paths and programs read-only, grants read-only or read-write as granted, every mount `nosuid,nodev` (the device nodes are the only `dev` mounts) | every path outside the grants: stat, chmod, utime, xattrs, Unix sockets by path |
//! | network | a new, empty network namespace (unless the network is granted) | UDP, MPTCP, raw sockets, abstract Unix sockets, every port of the host |
//! | IPC | an IPC namespace of the guest's own, and a session keyring of each child's own | SysV shared memory, semaphores, message queues, POSIX queues of others |
//! | PID | a root host's sandbox: a PID namespace of the guest's own, whose small init (`sys::pid_init`) mounts the namespace's `/proc` in the view (`hidepid=invisible,subset=pid`; Landlock lets children read it) and ends the namespace with the sandbox or the host | seeing, naming or signalling any process outside the guest's tree; the global files of `/proc` |
//! | tmp | a private tmpfs at `/tmp` (mode 1777, `sys::TMP_SIZE`), which Landlock lets children write; grants under `/tmp` are bound inside it | the host's `/tmp` and other guests' |
//! | seccomp | [`SECCOMP_DENIED`]: each refused call fails with `EPERM` (`clone3` and `openat2`, whose arguments a filter cannot read, with `ENOSYS`, so libc falls back to `clone` and `openat`); x32 calls are refused and other architectures' calls kill | new namespaces, keys, ptrace, bpf, perf, userfaultfd, io_uring, mounts, setuid/setgid mode bits |
//! | Landlock | see [`crate::launch::confine`] | a second, independent wall for files and TCP |
//!
//! The namespaces are made once per guest, when its context is built, by a
//! short-lived builder process (see `sys::build_sandbox`), and held by
//! descriptors; each child then only enters them with `setns` before it
//! executes its program, which keeps spawning at native speed. A child is
//! born in the PID namespace instead: the spawning thread sets its own
//! `pid_for_children` for the one `clone`, so the child stays the host's
//! child.
//!
//! Children see the grants at their host paths (as before), so the paths a
//! guest passes them mean what they meant without the sandbox. A child's
//! working directory is reopened inside the sandbox's view and checked to be
//! the very directory the policy approved.

use crate::outcome::Confinement;
use crate::policy::{DirGrant, ProgramGrant};
use anyhow::{Context as _, Result, bail};
use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

pub use crate::launch::identity::{DEFAULT_CHILD_UIDS, LEASE_DIR};
pub use crate::policy::DEFAULT_CHILD_ID;

pub use crate::launch::confine::DEVICES;

/// The system calls the seccomp layer refuses, with the condition (if any)
/// and why: the documentation of the filter's own table (`seccomp::DENIED`;
/// a test checks that both name the same calls).
pub const SECCOMP_DENIED: &[(&str, &str, &str)] = &[
    (
        "unshare",
        "any CLONE_NEW* flag",
        "no new namespaces (user namespaces above all)",
    ),
    ("clone", "any CLONE_NEW* flag", "no new namespaces"),
    (
        "clone3",
        "always (ENOSYS)",
        "its flags cannot be read by a filter; libc falls back to clone",
    ),
    ("setns", "always", "no other namespace"),
    ("keyctl, add_key, request_key", "always", "no kernel keys"),
    (
        "ptrace, process_vm_readv, process_vm_writev",
        "always",
        "no tracing or reading other processes",
    ),
    (
        "bpf, perf_event_open, userfaultfd",
        "always",
        "kernel attack surface",
    ),
    (
        "io_uring_setup, io_uring_enter, io_uring_register",
        "always",
        "io_uring would bypass this filter",
    ),
    (
        "mount, umount2, pivot_root, chroot, open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr",
        "always",
        "no changes to the file system view",
    ),
    (
        "open_by_handle_at",
        "always",
        "no file handles (they bypass paths)",
    ),
    (
        "pidfd_getfd, kcmp, process_madvise",
        "always",
        "no reaching into other processes",
    ),
    (
        "socket, socketpair",
        "a family other than AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (EAFNOSUPPORT)",
        "vsock reaches the hypervisor whatever the network namespace; AF_ALG and others are kernel attack surface",
    ),
    (
        "chmod, fchmod, fchmodat, fchmodat2",
        "mode has S_ISUID or S_ISGID",
        "no setuid or setgid files",
    ),
    (
        "open, openat, creat, mknod, mknodat",
        "mode has S_ISUID or S_ISGID",
        "no setuid or setgid files",
    ),
    (
        "openat2",
        "always (ENOSYS)",
        "its mode cannot be read by a filter; libc falls back to openat",
    ),
    (
        "ioctl",
        "TIOCSTI or TIOCLINUX",
        "no typing into the host's terminal",
    ),
    (
        "prlimit64, sched_setaffinity, sched_setscheduler, sched_setparam, sched_setattr, migrate_pages, move_pages",
        "on any pid but 0 (the caller)",
        "no changing another process's limits, CPUs, scheduling or memory placement: every child of a root host has one uid, so the kernel would allow it across guests",
    ),
    (
        "setpriority, ioprio_set",
        "on anything but the calling process",
        "no renicing another process, or every process of the uid",
    ),
];

/// A guest's sandbox: its namespaces, held open, and the root of its file
/// system view.
#[derive(Debug)]
pub(crate) struct Sandbox {
    fds: crate::sys::SandboxFds,
}

impl Sandbox {
    /// Builds the sandbox for these grants. `network`: the network is
    /// granted (no network namespace).
    pub fn build(dirs: &[DirGrant], programs: &[&ProgramGrant], network: bool) -> Result<Sandbox> {
        let plan = Plan::new(dirs, programs, network, privileged())?;
        let owned = plan.steps();
        let steps = owned.steps();
        let maps = (!privileged()).then(|| {
            let uid = rustix::process::geteuid().as_raw();
            let gid = rustix::process::getegid().as_raw();
            (
                CString::new(format!("{uid} {uid} 1")).expect("no NUL"),
                CString::new(format!("{gid} {gid} 1")).expect("no NUL"),
            )
        });
        let stage = ["/tmp", "/mnt", "/var/tmp"]
            .into_iter()
            .find(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
            .context("no directory (/tmp, /mnt) to stage the sandbox's root on")?;
        let stage = CString::new(stage).expect("no NUL");
        let spec = crate::sys::SandboxSpec {
            user_maps: maps.as_ref().map(|(u, g)| (u.as_c_str(), g.as_c_str())),
            net: !network,
            pid: maps.is_none(),
            stage: &stage,
            steps: &steps,
        };
        // A failure of the builder may be passing (memory, descriptors, a
        // host thread's fork holding a writer for an instant): try again
        // before the walls are lowered.
        let build = || crate::sys::build_sandbox(&spec);
        let fds =
            (build().or_else(|_| build()).or_else(|_| build())).context("building the sandbox")?;
        let sandbox = Sandbox { fds };
        for dir in dirs {
            sandbox.view(&dir.dir).with_context(|| {
                format!(
                    "granted directory {} is not the same inside the sandbox",
                    dir.host_path.display()
                )
            })?;
        }
        Ok(sandbox)
    }

    /// Whether the sandbox has a network namespace of its own (the network
    /// was not granted when it was built).
    pub fn has_network_namespace(&self) -> bool {
        self.fds.net.is_some()
    }

    /// Whether the sandbox has a user namespace of its own (a host without
    /// `CAP_SYS_ADMIN`), which maps only the host's ids.
    pub fn has_user_namespace(&self) -> bool {
        self.fds.user.is_some()
    }

    /// The namespaces for a child to enter.
    pub fn namespaces(&self) -> crate::sys::Namespaces<'_> {
        crate::sys::Namespaces {
            user: self.fds.user.as_ref().map(|fd| fd.as_fd()),
            mnt: self.fds.mnt.as_fd(),
            net: self.fds.net.as_ref().map(|fd| fd.as_fd()),
            ipc: self.fds.ipc.as_fd(),
            pid: self.fds.pid.as_ref().map(|fd| fd.as_fd()),
        }
    }

    /// What children may reach in the view beyond the grants and the
    /// system paths, for their Landlock rules: the sandbox's own `/proc`
    /// (read-only) and its private `/tmp` (read-write), where it has them.
    pub(crate) fn own_dirs(&self) -> Vec<(std::os::fd::BorrowedFd<'_>, bool)> {
        let proc = self.fds.proc.as_ref().map(|fd| (fd.as_fd(), false));
        let tmp = self.fds.tmp.as_ref().map(|fd| (fd.as_fd(), true));
        proc.into_iter().chain(tmp).collect()
    }

    /// Whether children are born in a PID namespace of the sandbox's, with
    /// its own `/proc` (a root host's sandbox).
    pub fn has_pid_namespace(&self) -> bool {
        self.fds.pid.is_some()
    }

    /// `dir` (opened in the host's view) as the sandbox shows it: the same
    /// directory, reached from the sandbox's root without following any
    /// symlink, so that a child entering it stays inside the sandbox's
    /// view (`..` included). Fails if the sandbox shows another directory
    /// there, or none.
    pub fn view(&self, dir: &Dir) -> std::io::Result<OwnedFd> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        let relative = relative(&path);
        let opened = rustix::fs::openat2(
            &self.fds.root,
            relative.as_path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?;
        let (want, got) = (rustix::fs::fstat(dir)?, rustix::fs::fstat(&opened)?);
        if (want.st_dev, want.st_ino) != (got.st_dev, got.st_ino) {
            return Err(std::io::Error::other(format!(
                "{} is another directory inside the sandbox",
                path.display()
            )));
        }
        Ok(opened)
    }
}

/// Whether this process may build the sandbox in the host's own user
/// namespace (it has `CAP_SYS_ADMIN`); otherwise the sandbox gets a user
/// namespace of its own that maps only this process's ids.
fn privileged() -> bool {
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
    })
}

/// Whether this process can make its children another user: it has
/// `CAP_SETUID` and `CAP_SETGID` (a root host; a forked worker of one).
pub(crate) fn can_change_user() -> bool {
    use rustix::thread::CapabilitySet;
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(CapabilitySet::SETUID | CapabilitySet::SETGID)
    })
}

/// The capabilities (a bit per number) a forked worker process (and the
/// worker template) keeps until it has its specification: `CAP_SETUID`
/// and `CAP_SETGID`, to become its guest's user then, which drops them
/// too (see `worker::WorkerProcess::accept`). Its children are started by
/// the host that forked it (`launch::remote`), so it needs no other.
pub(crate) const WORKER_CAPS: u64 = 1 << 7 | 1 << 6;

/// `path` (absolute) relative to `/`; `.` for `/` itself.
fn relative(path: &Path) -> PathBuf {
    let rest: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rest.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rest
    }
}

/// What a path of the sandbox's view is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// An empty directory (a mount point).
    Dir,
    /// A private tmpfs.
    Tmpfs,
    /// A symbolic link with this target.
    Symlink(PathBuf),
    /// A host directory or file bound here with these mount attributes.
    Bind {
        source: PathBuf,
        attr: u64,
        is_dir: bool,
        /// Device and inode of what was granted.
        id: (u64, u64),
    },
}

const READ_ONLY: u64 = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
const READ_WRITE: u64 = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
/// Device nodes keep `dev`, or they could not be opened.
const DEVICE: u64 = libc::MOUNT_ATTR_NOSUID;

/// The sandbox's view, path by path (absolute paths).
#[derive(Debug, Default)]
struct Plan {
    nodes: Vec<(PathBuf, Node)>,
}

impl Plan {
    /// The view for these grants: the system paths (with the network's
    /// files if `network`), the devices, the granted directories and the
    /// granted programs that no directory already shows.
    fn new(
        dirs: &[DirGrant],
        programs: &[&ProgramGrant],
        network: bool,
        proc: bool,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        if proc {
            // Where the PID namespace's init mounts its `/proc`.
            plan.nodes.push((PathBuf::from("/proc"), Node::Dir));
        }
        // A private `/tmp` (a grant of `/tmp` itself replaces it).
        plan.nodes.push((PathBuf::from("/tmp"), Node::Tmpfs));
        for path in crate::launch::confine::SYSTEM_DIRS
            .iter()
            .chain(crate::launch::confine::SYSTEM_FILES)
        {
            plan.system(Path::new(path), READ_ONLY)?;
        }
        for path in crate::launch::confine::NETWORK_FILES
            .iter()
            .filter(|_| network)
        {
            plan.followed(Path::new(path))?;
        }
        for (path, _) in DEVICES {
            plan.system(Path::new(path), DEVICE)?;
        }
        for dir in dirs {
            let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.dir.as_raw_fd()))
                .with_context(|| format!("locating {}", dir.host_path.display()))?;
            if path == Path::new("/") {
                bail!("a grant of `/` leaves the sandbox nothing to hide");
            }
            let attr = match dir.access {
                crate::policy::DirAccess::ReadOnly => READ_ONLY,
                crate::policy::DirAccess::ReadWrite => READ_WRITE,
            };
            let stat = rustix::fs::fstat(&*dir.dir)?;
            plan.bind(path.clone(), path, attr, true, (stat.st_dev, stat.st_ino));
        }
        for program in programs {
            let path = program.real_path.clone();
            if !plan.shows(&path) {
                let meta = std::fs::metadata(&path)?;
                plan.bind(
                    path.clone(),
                    path,
                    READ_ONLY,
                    false,
                    (meta.dev(), meta.ino()),
                );
            }
        }
        Ok(plan)
    }

    /// A system path, if the host has it: a symlink stays a symlink, the
    /// rest is bound.
    fn system(&mut self, path: &Path, attr: u64) -> Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if meta.is_symlink() {
            self.nodes
                .push((path.to_owned(), Node::Symlink(std::fs::read_link(path)?)));
        } else {
            let id = (meta.dev(), meta.ino());
            self.bind(path.to_owned(), path.to_owned(), attr, meta.is_dir(), id);
        }
        Ok(())
    }

    /// A system path, if the host has it, bound read-only at its path as
    /// what it resolves to (links followed).
    fn followed(&mut self, path: &Path) -> Result<()> {
        let (Ok(real), Ok(meta)) = (std::fs::canonicalize(path), std::fs::metadata(path)) else {
            return Ok(());
        };
        let id = (meta.dev(), meta.ino());
        self.bind(path.to_owned(), real, READ_ONLY, meta.is_dir(), id);
        Ok(())
    }

    fn bind(&mut self, at: PathBuf, source: PathBuf, attr: u64, is_dir: bool, id: (u64, u64)) {
        // A later grant of the same path wins (read-write over read-only
        // is the grants' business; the Landlock wall follows the grants).
        self.nodes.retain(|(p, _)| *p != at);
        self.nodes.push((
            at,
            Node::Bind {
                source,
                attr,
                is_dir,
                id,
            },
        ));
    }

    /// Whether `path` is inside a directory the view binds.
    fn shows(&self, path: &Path) -> bool {
        self.nodes.iter().any(|(at, node)| {
            matches!(node, Node::Bind { is_dir: true, .. }) && path.starts_with(at)
        })
    }

    /// The builder's steps: every directory (parents first), empty file
    /// and symlink, then the binds, shallowest first so that a bind inside
    /// another lands on top of it.
    fn steps(&self) -> Steps {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut made: Vec<(CString, Made)> = Vec::new();
        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL");
        for (path, node) in &self.nodes {
            let rel = relative(path);
            let mut parent = PathBuf::new();
            let parents: Vec<_> = rel
                .parent()
                .into_iter()
                .flat_map(|p| p.components())
                .collect();
            for part in parents {
                parent.push(part);
                if dirs.insert(parent.clone()) {
                    made.push((cstr(&parent), Made::Dir));
                }
            }
            match node {
                Node::Symlink(target) => made.push((cstr(&rel), Made::Symlink(cstr(target)))),
                Node::Tmpfs => {
                    dirs.insert(rel.clone());
                    made.push((cstr(&rel), Made::Tmpfs));
                }
                Node::Dir | Node::Bind { is_dir: true, .. } => {
                    if dirs.insert(rel.clone()) {
                        made.push((cstr(&rel), Made::Dir));
                    }
                }
                Node::Bind { is_dir: false, .. } => made.push((cstr(&rel), Made::File)),
            }
        }
        let mut binds: Vec<_> = (self.nodes.iter())
            .filter_map(|(path, node)| match node {
                Node::Bind {
                    source, attr, id, ..
                } => Some((
                    path.components().count(),
                    cstr(source),
                    cstr(&relative(path)),
                    *attr,
                    *id,
                )),
                _ => None,
            })
            .collect();
        binds.sort_by_key(|(depth, ..)| *depth);
        Steps {
            made,
            binds: binds
                .into_iter()
                .map(|(_, s, t, a, id)| (s, t, a, id))
                .collect(),
        }
    }
}

/// What the builder makes in the root tmpfs.
enum Made {
    Dir,
    Tmpfs,
    File,
    Symlink(CString),
}

/// The owned strings behind the builder's steps.
struct Steps {
    made: Vec<(CString, Made)>,
    binds: Vec<(CString, CString, u64, (u64, u64))>,
}

impl Steps {
    fn steps(&self) -> Vec<crate::sys::MountStep<'_>> {
        use crate::sys::MountStep;
        let made = self.made.iter().map(|(path, what)| match what {
            Made::Dir => MountStep::Dir(path),
            Made::Tmpfs => MountStep::Tmpfs(path),
            Made::File => MountStep::File(path),
            Made::Symlink(target) => MountStep::Symlink { target, at: path },
        });
        let binds = (self.binds.iter()).map(|(source, target, attr, id)| MountStep::Bind {
            source,
            target,
            attr: *attr,
            id: *id,
        });
        made.chain(binds).collect()
    }
}

/// The seccomp program every sandboxed child installs (see
/// [`SECCOMP_DENIED`]). Built once.
pub(crate) fn seccomp_program() -> &'static [libc::sock_filter] {
    static PROGRAM: OnceLock<Vec<libc::sock_filter>> = OnceLock::new();
    PROGRAM.get_or_init(crate::launch::seccomp::program)
}

/// Why children running as `(uid, gid)` cannot use the granted directory
/// `dir` as granted (enter it; read it; write it if read-write), judged by
/// its owner and mode; `None` if they can.
pub(crate) fn unreachable_for(dir: &DirGrant, (uid, gid): (u32, u32)) -> Option<String> {
    let stat = rustix::fs::fstat(&*dir.dir).ok()?;
    let bits = if stat.st_uid == uid {
        stat.st_mode >> 6
    } else if stat.st_gid == gid {
        stat.st_mode >> 3
    } else {
        stat.st_mode
    } & 0o7;
    let need = match dir.access {
        crate::policy::DirAccess::ReadOnly => 0o5,
        crate::policy::DirAccess::ReadWrite => 0o7,
    };
    (bits & need != need).then(|| {
        format!(
            "children run as uid {uid} gid {gid} and cannot {} {} (owner {}, group {}, mode {:o}): \
             give it to them (chown or chmod) or choose their user (--child-user)",
            if need == 0o7 { "write to" } else { "read" },
            dir.host_path.display(),
            stat.st_uid,
            stat.st_gid,
            stat.st_mode & 0o7777,
        )
    })
}

/// `full`, `partial` or `none`.
pub(crate) fn confinement_name(level: Confinement) -> &'static str {
    match level {
        Confinement::Full => "full",
        Confinement::Partial => "partial",
        Confinement::None => "none",
    }
}

mod layers;
#[cfg(test)]
mod tests;

pub use layers::Layers;
