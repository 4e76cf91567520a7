//! Taking ownership of the descriptors a parent host left open for this
//! process ([`take_inherited_fd`]), each at most once, so that no
//! `OwnedFd` is ever made twice for one descriptor.

use rustix::io::{FdFlags, fcntl_setfd};
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

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
