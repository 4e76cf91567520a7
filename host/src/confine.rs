//! Kernel confinement of native children with Linux Landlock: the second
//! wall, behind the sandbox of [`crate::sandbox`] (namespaces, identity,
//! seccomp), and the only one left where the sandbox cannot be built.
//!
//! One ruleset is made per [`ProcessCtx`](crate::ProcessCtx) when it is built,
//! from its grants, and every child restricts itself with it (in `sys`)
//! before it executes its program; its descendants inherit the domain. A
//! confined child may:
//!
//! - read and execute below the system directories [`SYSTEM_DIRS`] and read
//!   the system files [`SYSTEM_FILES`] (what dynamically linked programs and
//!   shells need: no other file of `/etc`, nothing of `/home`, `/root`,
//!   `/tmp`, `/proc` or `/sys`);
//! - read, write and execute below the guest's read-write directories; read
//!   and execute below its read-only ones;
//! - read and execute the granted programs and shell wherever they are;
//! - use the devices of [`crate::sandbox::DEVICES`] (read `/dev/zero`,
//!   `/dev/random`, `/dev/urandom`; read and write `/dev/null`, `/dev/full`);
//! - with Landlock ABI 4 and later, neither bind nor connect TCP sockets,
//!   unless the network is allowed;
//! - with ABI 6 and later, neither signal processes nor connect to abstract
//!   Unix sockets outside its own domain.
//!
//! The level is [`Confinement::Full`] when files, TCP (unless allowed) and
//! the signal and abstract-socket scopes are enforced (Landlock ABI 6 and
//! later), `Partial` on older kernels, `None` without Landlock.

use crate::outcome::Confinement;
use crate::policy::DirAccess;
use crate::policy::{DirGrant, ProgramGrant};
use anyhow::{Result, bail};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

/// Directories whose files confined children may read and execute.
/// (`/etc/alternatives` holds only the links Debian's alternatives
/// resolve through, such as `/usr/bin/awk`.)
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/alternatives",
];

/// Single system files confined children may read.
pub const SYSTEM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
];

/// What children granted the network may read besides the system files:
/// name resolution and the CA bundle, as a program needs them to resolve
/// `localhost` or make a TLS call (issue 22, row 8). A directory is read
/// whole; a link is followed (`/etc/resolv.conf` often points into
/// `/run`, which the view does not show).
pub const NETWORK_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates.conf",
];

/// The newest Landlock ABI this host knows.
const ABI_USED: ABI = ABI::V6;

/// A Landlock ruleset, ready for children to restrict themselves with.
#[derive(Debug)]
pub(crate) struct Confiner {
    /// The ruleset; `None` without Landlock.
    pub ruleset: Option<OwnedFd>,
    /// What the ruleset enforces on this kernel.
    pub level: Confinement,
}

impl Confiner {
    /// No confinement.
    pub fn none() -> Confiner {
        Confiner {
            ruleset: None,
            level: Confinement::None,
        }
    }

    /// The ruleset for these grants.
    pub fn new(dirs: &[DirGrant], programs: &[&ProgramGrant], network: bool) -> Result<Confiner> {
        let kernel_abi = crate::sys::landlock_abi();
        if kernel_abi < 1 {
            return Ok(Confiner::none());
        }
        let created = ruleset(dirs, programs, network, Vec::new())?;
        Ok(Confiner {
            ruleset: Option::<OwnedFd>::from(created),
            level: level(kernel_abi),
        })
    }
}

/// What Landlock enforces on a kernel of this ABI.
fn level(kernel_abi: i32) -> Confinement {
    // Full: files, TCP (unless allowed) and the scopes (signals and
    // abstract sockets stay inside the domain), which take ABI 6.
    match kernel_abi {
        abi if abi >= ABI::V6 as i32 => Confinement::Full,
        abi if abi >= 1 => Confinement::Partial,
        _ => Confinement::None,
    }
}

/// The rules every ruleset has: the system directories, files and devices
/// (see the module docs), opened once per process (`O_PATH`, close-on-exec)
/// and kept: a worker template opens them before it forks, so its workers
/// do not. A missing system path (`/lib32`, ...) is simply not granted.
pub fn system_rules() -> &'static [(PathFd, BitFlags<AccessFs>)] {
    static RULES: OnceLock<Vec<(PathFd, BitFlags<AccessFs>)>> = OnceLock::new();
    RULES.get_or_init(|| {
        let read = AccessFs::from_read(ABI_USED);
        let dirs = SYSTEM_DIRS.iter().map(|dir| (*dir, read));
        let files = SYSTEM_FILES.iter().map(|file| match file.ends_with(".d") {
            true => (*file, read),
            false => (*file, AccessFs::ReadFile.into()),
        });
        let devices = crate::sandbox::DEVICES
            .iter()
            .map(|&(dev, writable)| match writable {
                true => (dev, AccessFs::ReadFile | AccessFs::WriteFile),
                false => (dev, AccessFs::ReadFile.into()),
            });
        (dirs.chain(files).chain(devices))
            .filter_map(|(path, access)| Some((PathFd::new(path).ok()?, access)))
            .collect()
    })
}

/// A ruleset for these grants (see the module docs), plus `extra` rules.
fn ruleset(
    dirs: &[DirGrant],
    programs: &[&ProgramGrant],
    network: bool,
    extra: Vec<(PathFd, BitFlags<AccessFs>)>,
) -> Result<landlock::RulesetCreated> {
    let fs_all = AccessFs::from_all(ABI_USED);
    let read: BitFlags<AccessFs> = AccessFs::from_read(ABI_USED);
    let file_read = AccessFs::ReadFile | AccessFs::Execute;
    let mut ruleset = Ruleset::default().handle_access(fs_all)?;
    if !network {
        ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
    }
    ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
    let mut rules = extra;
    if network {
        let files = NETWORK_FILES
            .iter()
            .filter_map(|path| PathFd::new(path).ok());
        rules.extend(files.map(|fd| (fd, read)));
    }
    for program in programs {
        rules.push((PathFd::new(&program.path)?, file_read));
    }
    let mut created = ruleset.create()?;
    for (fd, access) in system_rules() {
        created = created.add_rule(PathBeneath::new(fd.as_fd(), *access))?;
    }
    for (fd, access) in rules {
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    for dir in dirs {
        let access = match dir.access {
            DirAccess::ReadWrite => fs_all,
            DirAccess::ReadOnly => read,
        };
        created = created.add_rule(PathBeneath::new(dir.dir.try_clone()?, access))?;
    }
    Ok(created)
}

/// Confines this process — a forked worker, before its runtime starts and
/// while it has one thread (a Landlock domain binds the thread that
/// enters it and the threads it starts later) — to what its children may
/// reach, plus `read` (its component) and `read_write` (the component
/// cache, its guest's cgroup): the paths its guest, its children and itself
/// need. Returns the level reached, or why it could not confine itself.
pub(crate) fn confine_worker(
    process: &crate::ProcessCtx,
    read: &[&Path],
    read_write: &[&Path],
) -> Result<Confinement> {
    // A worker forked by a worker is under its parent's Landlock already,
    // which keeps /proc from it: then only the caller's order (confine
    // before any thread starts) holds the line.
    match crate::sys::one_thread() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => bail!("a worker confines itself only while it has one thread: {e}"),
    }
    let kernel_abi = crate::sys::landlock_abi();
    if kernel_abi < 1 {
        bail!("this kernel has no Landlock");
    }
    let mut extra = Vec::new();
    for path in read {
        extra.push((PathFd::new(path)?, AccessFs::ReadFile.into()));
    }
    for path in read_write {
        extra.push((PathFd::new(path)?, AccessFs::from_all(ABI_USED)));
    }
    // A worker that may fork runs the worker executable on its components.
    if let (Some(exe), false) = (&process.worker_executable, process.policy.forks.is_empty()) {
        extra.push((PathFd::new(exe)?, AccessFs::ReadFile | AccessFs::Execute));
        for fork in &process.policy.forks {
            extra.push((PathFd::new(&fork.path)?, AccessFs::ReadFile.into()));
        }
    }
    let programs = process.policy.runnable();
    let status =
        ruleset(&process.dirs, &programs, process.policy.network, extra)?.restrict_self()?;
    Ok(match status.ruleset {
        landlock::RulesetStatus::FullyEnforced => level(kernel_abi),
        landlock::RulesetStatus::PartiallyEnforced => Confinement::Partial,
        landlock::RulesetStatus::NotEnforced => Confinement::None,
    })
}
