//! Giving up a process's privileges for good: what a forked worker does
//! before its guest's code runs (`worker::WorkerProcess::accept`).

use std::io;

/// Becomes `user` (its uid and gid, with no supplementary group) if given,
/// then drops every capability left and sets `no_new_privs`, so that
/// nothing this process executes can gain one. Checks that it holds: the
/// ids are the user's in every slot (real, effective, saved) and no
/// capability is left.
///
/// glibc's `setgroups`, `setresgid` and `setresuid` change the ids of every
/// thread of the process (the kernel's calls change only the caller's), so
/// this holds whatever threads the worker's runtime has started.
pub(crate) fn shed_privileges(user: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = user {
        // SAFETY: plain libc calls with no pointer but `setgroups`' null
        // list of length 0, which the call never reads.
        let failed = unsafe {
            libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
        };
        if failed {
            return Err(io::Error::last_os_error());
        }
        let ids = rustix::process::getuid().as_raw() == uid
            && rustix::process::geteuid().as_raw() == uid
            && rustix::process::getgid().as_raw() == gid
            && rustix::process::getegid().as_raw() == gid;
        if !ids {
            return Err(io::Error::other(format!("still not uid {uid} gid {gid}")));
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let none = rustix::thread::CapabilitySet::empty();
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: none,
            permitted: none,
            inheritable: none,
        },
    )?;
    rustix::thread::set_no_new_privs(true)?;
    let left = rustix::thread::capabilities(None)?;
    if !(left.effective | left.permitted | left.inheritable).is_empty() {
        return Err(io::Error::other("capabilities are left"));
    }
    Ok(())
}
