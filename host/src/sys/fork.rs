//! Forking a worker template as a sibling ([`fork_as_sibling`]): a copy
//! of this one-threaded process whose parent is this process's parent,
//! made with `clone3` so that glibc's idea of the thread id stays right,
//! and the proof ([`OneThread`]) that this process has one thread.

use super::clone3::{CLONE_INTO_CGROUP, CloneArgs};
use rustix::process::Pid;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What [`fork_as_sibling`] returns in each of the two processes.
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the calling process: the new process's pid and a pidfd for it.
    Parent(Pid, OwnedFd),
}

/// Where glibc keeps the calling thread's id (`tid` in its thread
/// descriptor, `struct pthread`, at this offset on x86_64 since glibc 2.26;
/// libthread_db reads it there too).
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
const GLIBC_TID_OFFSET: usize = 0x2d0;

/// The address of glibc's copy of this thread's id, checked to hold it.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
fn glibc_tid_slot() -> Option<*mut libc::pid_t> {
    // SAFETY: `pthread_self` is glibc's descriptor of this thread, which
    // spans well over `GLIBC_TID_OFFSET + 4` bytes (about 2 KiB) and lives
    // as long as the thread; reading an aligned `pid_t` inside it is sound.
    unsafe {
        let slot = (libc::pthread_self() as *mut u8).add(GLIBC_TID_OFFSET) as *mut libc::pid_t;
        (slot.read() == rustix::thread::gettid().as_raw_nonzero().get()).then_some(slot)
    }
}

#[cfg(not(all(target_arch = "x86_64", target_env = "gnu")))]
fn glibc_tid_slot() -> Option<*mut libc::pid_t> {
    None
}

/// Whether [`fork_as_sibling`] works in this process (glibc's thread
/// descriptor is where it expects).
pub(crate) fn can_fork_as_sibling() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| glibc_tid_slot().is_some())
}

/// Proof that this process had one thread when it was made, for
/// [`fork_as_sibling`]. Made by [`one_thread`]; neither `Send` nor `Sync`,
/// so it stays on that thread. Hold it only in code that starts no thread
/// (a worker template's loop).
pub(crate) struct OneThread(std::marker::PhantomData<*const ()>);

/// A [`OneThread`], if this process has one thread now.
pub(crate) fn one_thread() -> io::Result<OneThread> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = (status.lines())
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    match threads {
        Some("1") => Ok(OneThread(std::marker::PhantomData)),
        other => Err(io::Error::other(format!(
            "this process has {} threads, not one",
            other.unwrap_or("?")
        ))),
    }
}

/// Forks this process as a sibling: the new process is a copy of this one
/// (memory, descriptors, the calling thread) whose parent is this
/// process's parent (`CLONE_PARENT`), so the parent can wait for it, reap
/// it and read its usage as its own child. With `cgroup`, it starts in that
/// cgroup. This is how a worker template hands its parent host a new
/// worker process (see `worker`).
///
/// Made with `clone3`, as glibc's `fork` makes a child (the kernel writes
/// the child's thread id into glibc's thread descriptor, so `raise` and
/// `pthread_kill` in the child address the child), without running
/// `pthread_atfork` handlers (nothing the template runs registers one
/// that matters: its random-number generators are first used after the
/// fork, in each worker) and without registering glibc's robust-mutex
/// list again (Rust's locks are not robust mutexes). `_one` says this
/// process has one thread, which holds no lock while it calls this.
pub(crate) fn fork_as_sibling(
    _one: &OneThread,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<Forked> {
    let tid_slot = glibc_tid_slot().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "forking a worker needs glibc on x86_64",
        )
    })?;
    let mut pidfd: c_int = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_PARENT
            | libc::CLONE_PIDFD
            | libc::CLONE_CHILD_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64,
        pidfd: &mut pidfd as *mut c_int as u64,
        child_tid: tid_slot as u64,
        // No exit signal: with CLONE_PARENT the child takes this
        // process's (SIGCHLD, to the same parent).
        ..CloneArgs::default()
    };
    if let Some(cgroup) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    // SAFETY: without CLONE_VM the child gets a copy of this process's
    // memory and returns from this very call on its copy of the stack, as
    // from `fork`; `args` is valid for the call. The kernel writes the
    // child's tid into its copy of `tid_slot` (checked above to be glibc's
    // `tid` of this thread) and this process's pidfd into `pidfd`. This
    // process has one thread (`OneThread`), which is here, so no other
    // thread holds a lock the child's copy would find taken.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => {
            // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else
            // owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
            let pid = pid.ok_or_else(|| io::Error::other("clone3 returned a bad pid"))?;
            Ok(Forked::Parent(pid, pidfd))
        }
    }
}
