//! The only `unsafe` code of the host: what a child does between `fork` and
//! `exec`.

use cap_std::fs::Dir;
use rustix::io::{FdFlags, fcntl_setfd};
use rustix::process::{
    Resource, Rlimit, Signal, fchdir, getpid, getppid, set_parent_process_death_signal, setrlimit,
};
use rustix::thread::set_no_new_privs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use tokio::process::Command;

/// Makes the child, before it executes its program:
/// - enter `cwd` with `fchdir` on the already opened directory (never by a
///   path string a guest could race), or `/` when there is none;
/// - keep the descriptors `inherit` open across `exec` (all others are
///   close-on-exec);
/// - ask for SIGKILL when the host thread that started it dies, and exit at
///   once if the host is already gone;
/// - set the resource limits `rlimits` (soft and hard);
/// - set no_new_privs, then restrict itself with the Landlock ruleset
///   `landlock` (see `confine`); failing that, the spawn fails.
///
/// `cwd`, the descriptors of `inherit` and `landlock` must stay open until
/// the command has been spawned.
pub(crate) fn prepare_child(
    cmd: &mut Command,
    cwd: Option<&Dir>,
    inherit: &[RawFd],
    landlock: Option<BorrowedFd<'_>>,
    rlimits: &[(Resource, u64)],
) {
    let cwd_fd = cwd.map(|d| d.as_fd().as_raw_fd());
    let inherit = inherit.to_vec();
    let landlock = landlock.map(|fd| fd.as_raw_fd());
    let rlimits = rlimits.to_vec();
    let host = getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are allowed. It makes raw system calls
    // through rustix and libc (fchdir, chdir, fcntl, prctl, getppid,
    // setrlimit, landlock_restrict_self) and converts error
    // numbers to `io::Error`s, none of which allocates or takes a lock. The file
    // descriptors are valid in the child: the caller keeps `cwd` and
    // `inherit` open until `spawn` returns, and `fork` copied the descriptor
    // table; clearing close-on-exec there does not touch the host's table.
    unsafe {
        cmd.pre_exec(move || {
            match cwd_fd {
                Some(fd) => fchdir(BorrowedFd::borrow_raw(fd))?,
                None => rustix::process::chdir(c"/")?,
            }
            for &fd in &inherit {
                fcntl_setfd(BorrowedFd::borrow_raw(fd), FdFlags::empty())?;
            }
            set_parent_process_death_signal(Some(Signal::KILL))?;
            if getppid() != Some(host) {
                return Err(io::Error::from(rustix::io::Errno::SRCH));
            }
            for &(resource, limit) in &rlimits {
                setrlimit(
                    resource,
                    Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    },
                )?;
            }
            // No setuid/setcap binary can give the child more rights.
            set_no_new_privs(true)?;
            if let Some(ruleset) = landlock
                && libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of descriptor `fd`, which this process's parent host
/// left open for it (a forked worker's channel or directory), and marks it
/// close-on-exec so it goes no further. Each descriptor can be taken once;
/// it must be one named by the parent (on the command line or in the worker
/// specification).
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if fd <= 2 || taken.contains(&fd) {
        return Err(io::Error::other(format!(
            "descriptor {fd} cannot be inherited"
        )));
    }
    // SAFETY: the parent host opened `fd` for this process and keeps it
    // open across `exec`; nothing in this process opened it, and it cannot
    // have been closed and reused because only this function takes
    // inherited descriptors, once each (`TAKEN`); `fcntl_getfd` on the
    // borrowed descriptor first checks that it is open.
    let owned = unsafe {
        rustix::io::fcntl_getfd(BorrowedFd::borrow_raw(fd))?;
        OwnedFd::from_raw_fd(fd)
    };
    taken.push(fd);
    fcntl_setfd(&owned, FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// Loads a compiled component that [`ComponentCache`](crate::cache::ComponentCache)
/// wrote, mapping its code from the file.
pub(crate) fn deserialize_component(
    engine: &wasmtime::Engine,
    path: &std::path::Path,
) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: `Component::deserialize_file` runs the file's machine code, so
    // it must be a component this host serialized and nobody altered: the
    // cache only reads entries it wrote itself (named by the SHA-256 of the
    // source and the engine's compatibility hash, written then renamed) in a
    // directory it checked belongs to this user and is closed to others;
    // wasmtime itself checks the engine version and settings in the header.
    unsafe { wasmtime::component::Component::deserialize_file(engine, path) }
}

/// The Landlock ABI version of the running kernel; 0 without Landlock.
pub(crate) fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag,
    // landlock_create_ruleset only returns the ABI version (or an error); it
    // reads and writes no memory of ours.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}
