//! Kernel confinement of native children with Linux Landlock: the second
//! wall, behind the sandbox of [`crate::launch::sandbox`] (namespaces, identity,
//! seccomp), and the only one left where the sandbox cannot be built.
//!
//! One ruleset is made per `ProcessCtx` when it is built,
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
//! - use the devices of [`DEVICES`] (read `/dev/zero`,
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
use crate::policy::{DirGrant, Policy, ProgramGrant};
use anyhow::{Result, bail};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
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

/// Device nodes children may use: `(path, writable)`.
pub const DEVICES: &[(&str, bool)] = &[
    ("/dev/null", true),
    ("/dev/zero", false),
    ("/dev/full", true),
    ("/dev/random", false),
    ("/dev/urandom", false),
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

impl Default for Confiner {
    fn default() -> Self {
        Confiner::none()
    }
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
    /// `own`: directories of the sandbox's own (its `/proc`, its `/tmp`),
    /// which children may read, and write if `true`.
    pub fn new(
        dirs: &[DirGrant],
        programs: &[&ProgramGrant],
        network: bool,
        own: &[(BorrowedFd<'_>, bool)],
    ) -> Result<Confiner> {
        let kernel_abi = crate::sys::landlock_abi();
        if kernel_abi < 1 {
            return Ok(Confiner::none());
        }
        let mut created = ruleset(dirs, programs, network, Vec::new())?;
        for (dir, writable) in own {
            let access = match writable {
                true => AccessFs::from_all(ABI_USED),
                false => AccessFs::ReadFile | AccessFs::ReadDir,
            };
            created = created.add_rule(PathBeneath::new(dir, access))?;
        }
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
        let devices = DEVICES.iter().map(|&(dev, writable)| match writable {
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
    (policy, dirs, worker_executable): (&Policy, &[DirGrant], Option<&Path>),
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
    // A worker that may fork runs the worker executable, on code handed
    // down in memfds: it never reads its components' files (which its
    // guest's view, where it runs, does not show).
    if let (Some(exe), false) = (worker_executable, policy.forks.is_empty()) {
        extra.push((PathFd::new(exe)?, AccessFs::ReadFile | AccessFs::Execute));
    }
    let programs = policy.runnable();
    let status = ruleset(dirs, &programs, policy.network, extra)?.restrict_self()?;
    Ok(match status.ruleset {
        landlock::RulesetStatus::FullyEnforced => level(kernel_abi),
        landlock::RulesetStatus::PartiallyEnforced => Confinement::Partial,
        landlock::RulesetStatus::NotEnforced => Confinement::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Component;

    #[test]
    fn the_level_for_each_landlock_abi_is_none_partial_or_full() {
        let levels: Vec<Confinement> = (0..=7).map(level).collect();
        use Confinement::{Full, None, Partial};
        assert_eq!(
            levels,
            [
                None, Partial, Partial, Partial, Partial, Partial, Full, Full
            ]
        );
        // What `landlock_abi` gives without Landlock (an error number).
        assert_eq!(level(-1), None);
        assert_eq!(level(i32::MIN), None);
        assert_eq!(level(i32::MAX), Full);
        // Full takes the scopes, which came with ABI 6, the one this host
        // uses.
        assert_eq!(ABI_USED as i32, 6);
        assert_eq!(level(ABI_USED as i32), Full);
    }

    fn lists() -> [(&'static str, &'static [&'static str]); 3] {
        [
            ("SYSTEM_DIRS", SYSTEM_DIRS),
            ("SYSTEM_FILES", SYSTEM_FILES),
            ("NETWORK_FILES", NETWORK_FILES),
        ]
    }

    #[test]
    fn the_system_and_network_paths_are_absolute_and_plain() {
        for (list, paths) in lists() {
            for path in paths {
                let p = Path::new(path);
                assert!(p.is_absolute(), "{list}: {path}");
                assert!(
                    p.components()
                        .skip(1)
                        .all(|c| matches!(c, Component::Normal(_))),
                    "{list}: {path} has `.` or `..`"
                );
                assert!(
                    !path.ends_with('/') && !path.contains("//"),
                    "{list}: {path}"
                );
            }
        }
    }

    #[test]
    fn no_path_is_listed_twice_or_inside_another_listed_one() {
        let all: Vec<&str> = lists()
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let distinct: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a path is listed twice: {all:?}");
        for a in &all {
            for b in &all {
                assert!(
                    a == b || !Path::new(a).starts_with(b),
                    "{a} is inside {b}, listed too"
                );
            }
        }
    }

    #[test]
    fn the_network_files_hold_no_key_material() {
        for path in NETWORK_FILES {
            let p = Path::new(path);
            // Neither in the private keys nor a directory holding them.
            assert!(!p.starts_with("/etc/ssl/private"), "{path}");
            for secret in ["/etc/ssl/private", "/etc/ssl/private/ssl-cert-snakeoil.key"] {
                assert!(!Path::new(secret).starts_with(p), "{path} holds {secret}");
            }
            assert!(!path.ends_with(".key") && !path.ends_with(".pem"), "{path}");
        }
    }

    #[test]
    fn no_list_reaches_secrets_or_the_users_files() {
        let secret = [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssl/private",
            "/root",
            "/home",
            "/tmp",
            "/proc",
            "/sys",
            "/var",
        ];
        for (list, paths) in lists() {
            for path in paths {
                for s in secret {
                    assert!(
                        !Path::new(s).starts_with(path) && !Path::new(path).starts_with(s),
                        "{list}: {path} reaches {s}"
                    );
                }
            }
        }
    }
}
