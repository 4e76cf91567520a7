//! A user and group id of its own for each guest tree.
//!
//! When every guest's children ran as one user (65534), a child of one
//! guest could `prlimit`, renice, pin, signal or read the SysV objects of
//! another guest's children: the kernel's permission checks between
//! processes compare user ids, and they were equal. A root host now leases
//! an id per guest from a range the operator grants ([`DEFAULT_CHILD_UIDS`]
//! unless set), as systemd's `DynamicUser=` and nsjail's per-jail ids do,
//! and its children run as that uid and gid. Then those calls between
//! tenants fail by construction, and `RLIMIT_NPROC`, which the kernel
//! counts per real uid, becomes a limit on the whole guest tree.
//!
//! Two hosts on one machine must never lease the same id. The lease is an
//! exclusive `flock` on a file named after the id in [`LEASE_DIR`], a
//! root-only directory: the kernel drops the lock when the holder's
//! descriptor closes, at the latest when the process dies, so a crashed
//! host leaves no stale lease. Probing starts at a point that varies with
//! the process and time, so concurrent hosts rarely contend.
//!
//! An id is reused once its lease ends. Nothing of the old guest runs then
//! (its cgroup and PID namespace were killed), but files its children
//! left in a shared grant still belong to that id.

use std::fs::File;
use std::io;
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The ids leased to guests unless the operator grants others
/// (`--child-uids`): 65,536 ids from 1,500,000,000. Away from the ids
/// distributions hand out (system users, regular users below 60000,
/// systemd's dynamic users 61184–65519, `/etc/subuid` blocks from 100000
/// on); inside systemd-nspawn's pool of container ranges
/// (524288–1879048191), from which it picks 64K blocks at random: on a
/// machine that runs such containers, grant a range it reserves.
pub const DEFAULT_CHILD_UIDS: RangeInclusive<u32> = 1_500_000_000..=1_500_065_535;

/// Where the leases' lock files live (root only).
pub const LEASE_DIR: &str = "/run/wasmproc/child-uids";

/// An id leased to one guest tree, held while this lives.
#[derive(Debug)]
pub(crate) struct IdLease {
    /// The leased id, used as both uid and gid.
    pub id: u32,
    /// The locked file; closing it ends the lease.
    _lock: File,
}

/// Leases a free id of `range` (see the module docs).
pub(crate) fn lease(range: &RangeInclusive<u32>) -> io::Result<IdLease> {
    if range.is_empty() || *range.start() == 0 {
        return Err(io::Error::other(format!(
            "the child id range {}-{} is empty or holds root",
            range.start(),
            range.end()
        )));
    }
    let dir = lease_dir()?;
    let size = u64::from(range.end() - range.start()) + 1;
    let offset = start_offset() % size;
    for i in 0..size {
        let id = range.start() + ((offset + i) % size) as u32;
        if let Some(lock) = try_lock(&dir.join(id.to_string()))? {
            return Ok(IdLease { id, _lock: lock });
        }
    }
    Err(io::Error::other(format!(
        "every child id of {}-{} is leased to another guest",
        range.start(),
        range.end()
    )))
}

/// The lease directory, made if need be, and checked to be root's alone:
/// anyone else who could write it could hold every id, or remove a lock
/// file and take an id that is in use.
fn lease_dir() -> io::Result<&'static Path> {
    let dir = Path::new(LEASE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != 0 || meta.permissions().mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{LEASE_DIR} must be a directory of root's that no one else can write"
        )));
    }
    Ok(dir)
}

/// The locked file at `path`, or `None` if another holds its lock.
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(File::from(fd))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where probing starts: varies with the process and the time.
fn start_offset() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    RandomState::new().hash_one((std::process::id(), now))
}

/// The user a worker process holding `policy` becomes, on a root host:
/// its guest's (the user its children run as), unless the guest keeps
/// capabilities or runs without the sandbox, or that user is root. The
/// host starts its guest's worker processes as it (`pool`), and a worker
/// becomes it when its specification comes (`worker`).
pub(crate) fn worker_user(policy: &crate::policy::Policy) -> Option<(u32, u32)> {
    let (uid, gid) = policy.child_id;
    let root = rustix::process::geteuid().is_root();
    (root && policy.use_sandbox && policy.keep_caps == 0 && uid != 0 && gid != 0)
        .then_some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_holding_root_or_nothing_is_refused() {
        assert!(lease(&(0..=10)).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=5;
        assert!(lease(&empty).is_err());
    }

    #[test]
    fn two_leases_of_one_range_never_share_an_id_until_one_ends() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let range = 1_400_000_000..=1_400_000_001;
        let a = lease(&range).expect("a first lease");
        let b = lease(&range).expect("a second lease");
        assert_ne!(a.id, b.id);
        assert!(lease(&range).is_err(), "the range is used up");
        let freed = a.id;
        drop(a);
        assert_eq!(lease(&range).expect("a lease after one ended").id, freed);
        drop(b);
    }
}
