//! Giving up a process's privileges for good: what a forked worker does
//! before its guest's code runs (`worker::WorkerProcess::accept`).

use std::io;

/// Becomes `user` (its uid and gid, with no supplementary group) if given,
/// then drops every capability left and sets `no_new_privs`, so that
/// nothing this process executes can gain one. Checks that it holds: the
/// ids are the user's in every slot (real, effective, saved) and no
/// capability is left.
///
/// Changing ids clears the parent-death signal (the kernel does, on any
/// change of credentials): it is set again, and the parent checked to be
/// the same, so that the process still dies with the host that started
/// it.
///
/// Must be called while the process has one thread (checked when it
/// changes user; a worker's worker, under its parent's Landlock, may not
/// read `/proc` to check, and has no privilege left to shed): glibc's
/// `setgroups`, `setresgid` and `setresuid` reach every thread, but the
/// capability sets and `no_new_privs` are the calling thread's.
pub(crate) fn shed_privileges(user: Option<(u32, u32)>) -> io::Result<()> {
    let parent = rustix::process::getppid();
    if let Some((uid, gid)) = user {
        super::one_thread()?;
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
        let (mut r, mut e, mut s) = (0, 0, 0);
        let (mut rg, mut eg, mut sg) = (0, 0, 0);
        // SAFETY: each pointer is to a live local `uid_t`/`gid_t`.
        let read = unsafe {
            libc::getresuid(&mut r, &mut e, &mut s) == 0
                && libc::getresgid(&mut rg, &mut eg, &mut sg) == 0
        };
        if !read || [r, e, s] != [uid; 3] || [rg, eg, sg] != [gid; 3] {
            return Err(io::Error::other(format!("still not uid {uid} gid {gid}")));
        }
        let kill = Some(rustix::process::Signal::KILL);
        rustix::process::set_parent_process_death_signal(kill)?;
        if rustix::process::getppid() != parent {
            return Err(io::Error::other("the host ended while the worker set up"));
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
