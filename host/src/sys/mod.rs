//! The only `unsafe` code of the host: starting a child process (what it
//! does between `clone` and `exec`), building sandboxes, forking worker
//! templates, taking inherited descriptors, and loading compiled
//! components.
//!
//! Each of those lives in a submodule of its own; this module holds what
//! they share (the child stack's size and the error-number helpers of the
//! code that runs between `clone` and `exec`) and a few small wrappers
//! (reaping a process by pidfd, registering a descriptor with tokio, the
//! Landlock ABI version), and re-exports everything the rest of the crate
//! uses, so that it keeps naming it `crate::sys::NAME`.
//!
//! The crate denies `unsafe_code` everywhere else; `mod sys` alone allows
//! it, for all of these submodules. Every `unsafe` block says why it is
//! sound (`// SAFETY:`) and every `unsafe fn` what its caller must uphold
//! (`# Safety`).

mod clone3;
mod component;
mod fork;
mod inherited;
mod mounts;
mod pid_init;
mod privileges;
mod sandbox;
mod spawn;

pub(crate) use component::{deserialize_sealed, deserialize_sealed_file, with_entry_mapped};
pub(crate) use fork::{Forked, can_fork_as_sibling, fork_as_sibling, one_thread};
pub(crate) use inherited::take_inherited_fd;
pub(crate) use mounts::MountStep;
pub(crate) use privileges::shed_privileges;
pub(crate) use sandbox::{SandboxFds, SandboxSpec, build_sandbox};
pub(crate) use spawn::{Namespaces, SpawnSpec, clone_and_exec};

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// The stack the child runs on until `exec`: it only makes system calls.
const CHILD_STACK: usize = 64 << 10;
/// The error number the last failed system call left in `errno` (EINVAL
/// if there is none). It only reads `errno` (`io::Error` of an OS error is
/// a plain number), so the children before `exec` may call it.
fn last_errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// `Ok` if `ret`, what a raw system call returned, is not negative; else
/// the error number the call left in `errno`. The C convention in a form
/// `?` can pass on, for the steps of the children before `exec`.
fn check_os(ret: impl Into<i64>) -> Result<(), c_int> {
    if ret.into() < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// A rustix call's outcome as [`check_os`] gives it: its error number on
/// failure, its value (if any) dropped.
fn check_rustix<T>(result: rustix::io::Result<T>) -> Result<(), c_int> {
    result.map(|_| ()).map_err(rustix::io::Errno::raw_os_error)
}
/// How a reaped process ended, as `waitid` reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawExit {
    /// It exited with this code.
    Code(i32),
    /// A signal of this number ended it.
    Signal(i32),
}

/// Reaps the process of `pidfd` if it has exited, without waiting, with
/// the resources it used (`waitid`'s fifth argument, which libc's wrapper
/// and rustix leave out).
pub(crate) fn reap_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Option<(RawExit, libc::rusage)>> {
    // SAFETY: both are plain C structs for which all zeroes is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    const P_PIDFD: libc::c_long = 3;
    loop {
        // SAFETY: `info` and `usage` are valid for writes for the call;
        // `pidfd` is an open pidfd borrowed for it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                P_PIDFD,
                libc::c_long::from(pidfd.as_raw_fd()),
                &mut info as *mut libc::siginfo_t,
                libc::c_long::from(libc::WEXITED | libc::WNOHANG),
                &mut usage as *mut libc::rusage,
            )
        };
        if r == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: `info` was filled in by `waitid` (or left zeroed: no child
    // had exited); these accessors read its SIGCHLD fields.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let exit = match info.si_code {
        libc::CLD_EXITED => RawExit::Code(status),
        _ => RawExit::Signal(status),
    };
    Ok(Some((exit, usage)))
}

/// Registers `fd` with the tokio reactor for `interest`. Must be called
/// inside a tokio runtime.
pub(crate) fn watch(fd: OwnedFd, interest: tokio::io::Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns `fd`, so the descriptor stays open and
    // refers to the same file until the `AsyncFd` deregisters it on drop.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
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
