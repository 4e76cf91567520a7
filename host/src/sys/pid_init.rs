//! A PID namespace per sandbox: its init process, and starting children
//! in it.
//!
//! A PID namespace lives as long as its first process, its init, and the
//! kernel kills every other process of it when the init dies. So the
//! sandbox builder starts a small init for each sandbox (as bubblewrap and
//! Kubernetes' pause container do): it mounts the namespace's own `/proc`
//! in the view, drops every capability, reaps the orphans its namespace
//! hands it, and exits (killing the namespace) when the host does, which
//! it watches through a pidfd. The host's children are not its children:
//! the spawning thread moves its own `pid_for_children` into the namespace
//! for the one `clone` ([`ChildrenIn`]), so each child is still the host's
//! child, waited on and signalled as before, with pid 2, 3... inside.

use super::last_errno;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

/// The init's stack: it only makes system calls.
const INIT_STACK: usize = 64 << 10;

/// Starts the init of the PID namespace the builder's `pid_for_children`
/// names, as a child of the host (`CLONE_PARENT`), and waits until it has
/// mounted `/proc`; returns a pidfd of it, in the descriptor table the
/// builder shares with the host, and its stack, to unmap once it is
/// reaped.
///
/// The init shares the host's memory (`CLONE_VM`) rather than getting a
/// copy of it: a fork would copy every secret of the host, and every SysV
/// segment it has attached, into a process that outlives the call. It runs
/// on a stack of its own that the host never frees, makes only system
/// calls that leave `errno` alone (rustix's), with every signal blocked, so
/// it never runs or touches the host's code or data.
///
/// # Safety
/// Only in the sandbox builder, after it entered the view (`pivot_root`).
pub(super) unsafe fn start_init() -> Result<(c_int, usize), c_int> {
    // SAFETY: plain system calls on descriptors this function opens; the
    // init runs `init_main` on its own stack, never freed, and returns
    // never.
    unsafe {
        let host = libc::syscall(libc::SYS_pidfd_open, libc::getppid(), 0) as c_int;
        if host < 0 {
            return Err(last_errno());
        }
        let mut status = [-1 as c_int; 2];
        let stack = libc::mmap(
            std::ptr::null_mut(),
            INIT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED || libc::pipe2(status.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            let errno = last_errno();
            libc::close(host);
            return Err(errno);
        }
        let top = (stack as usize + INIT_STACK) & !15;
        let fds = (status[1] as usize) << 32 | host as usize;
        let mut pidfd: c_int = -1;
        let pid = libc::clone(
            init_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_PARENT | libc::CLONE_PIDFD | libc::SIGCHLD,
            fds as *mut c_void,
            &raw mut pidfd,
        );
        let errno = last_errno();
        libc::close(status[1]);
        libc::close(host);
        if pid < 0 {
            libc::close(status[0]);
            return Err(errno);
        }
        let mut mounted = 0u8;
        let n = libc::read(status[0], (&raw mut mounted).cast::<c_void>(), 1);
        libc::close(status[0]);
        match (n, mounted) {
            (1, 0) => Ok((pidfd, stack as usize)),
            (n, errno) => {
                end_init_raw(pidfd, stack as usize);
                Err(if n == 1 {
                    c_int::from(errno)
                } else {
                    libc::EIO
                })
            }
        }
    }
}

/// The init, forever: mounts `/proc`, reports, then reaps orphans until
/// the host exits. `arg` packs the status pipe's write end (high half)
/// and the host's pidfd (low half). It shares the host's memory: only
/// rustix calls (which leave `errno` alone) and calls that cannot fail.
extern "C" fn init_main(arg: *mut c_void) -> c_int {
    use rustix::fd::BorrowedFd;
    let (status, host) = (
        (arg as usize >> 32) as c_int,
        (arg as usize & 0xffff_ffff) as c_int,
    );
    // SAFETY: the descriptors packed in `arg` are this process's own (a
    // copy of the builder's table), open until closed here.
    let (status, host) = unsafe { (BorrowedFd::borrow_raw(status), BorrowedFd::borrow_raw(host)) };
    // SAFETY: blocking every signal of this process, which cannot fail;
    // no handler of the host's may ever run here.
    unsafe {
        let all = [!0u64; 1];
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            all.as_ptr(),
            0usize,
            8usize,
        );
    }
    use rustix::mount::{MountFlags, mount};
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mounted = mount(
        "proc",
        "/proc",
        "proc",
        flags,
        c"hidepid=invisible,subset=pid",
    );
    let errno = match mounted {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().clamp(1, 255) as u8,
    };
    let _ = rustix::io::write(status, &[errno]);
    if errno != 0 {
        // SAFETY: ends this process only.
        unsafe { libc::_exit(1) };
    }
    // Nothing of the host's but its pidfd.
    let keep = host.as_raw_fd() as u32;
    // SAFETY: `close_range` of this process's own table, which cannot fail.
    unsafe {
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
    drop_privileges();
    loop {
        let mut watch = [rustix::event::PollFd::new(
            &host,
            rustix::event::PollFlags::IN,
        )];
        let second = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut watch, Some(&second));
        if !watch[0].revents().is_empty() {
            // SAFETY: ends this process only (and so its namespace).
            unsafe { libc::_exit(0) };
        }
        // Orphans of the namespace, each second.
        while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
    }
}

/// Drops every capability and makes the init undumpable: it keeps uid 0
/// (of the host's user namespace) but no power of root's.
fn drop_privileges() {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let _ = rustix::thread::set_no_new_privs(true);
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    let _ = rustix::thread::set_capabilities(None, none);
}

/// Kills the init `pidfd` (and with it every process of its namespace),
/// reaps it and unmaps its `stack`.
fn end_init_raw(pidfd: c_int, stack: usize) {
    // SAFETY: signalling a pidfd this process owns.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            0usize,
            0u32,
        );
    }
    // The init exits only once every process of its namespace is reaped,
    // and those the host started are the host's to reap (perhaps by this
    // very thread, later): so it is reaped on a thread of its own.
    // SAFETY: `pidfd` is this process's, handed to the reaper alone.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
    let reaper = std::thread::Builder::new().name("wasmproc-init-reaper".into());
    let _ = reaper.spawn(move || {
        let reaped = rustix::process::waitid(
            rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&owned)),
            rustix::process::WaitIdOptions::EXITED,
        );
        if reaped.is_ok() {
            // SAFETY: the init's own stack, mapped by `start_init`; the
            // init is gone, and nothing else uses it.
            unsafe { libc::munmap(stack as *mut c_void, INIT_STACK) };
        }
    });
}

/// Kills a sandbox's init (see [`end_init_raw`]).
pub(crate) fn end_init(pidfd: OwnedFd, stack: usize) {
    end_init_raw(std::os::fd::IntoRawFd::into_raw_fd(pidfd), stack);
}

/// While this lives, the children this thread starts are born in another
/// PID namespace (its `pid_for_children`); dropping it moves the thread's
/// back to the host's own.
pub(super) struct ChildrenIn(());

impl ChildrenIn {
    /// Moves this thread's `pid_for_children` into `namespace`.
    pub(super) fn enter(namespace: BorrowedFd<'_>) -> io::Result<ChildrenIn> {
        own_namespace()?;
        // SAFETY: `setns` of a PID namespace changes only where this
        // thread's children are born, until `drop` moves it back.
        if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ChildrenIn(()))
    }
}

impl Drop for ChildrenIn {
    fn drop(&mut self) {
        let own = own_namespace().expect("opened by `enter`");
        // SAFETY: as in `enter`, back to the host's own namespace.
        if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
            // A thread whose next child would be born in a guest's
            // namespace must not go on.
            std::process::abort();
        }
    }
}

/// The host's own PID namespace, opened once.
fn own_namespace() -> io::Result<&'static OwnedFd> {
    static OWN: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = OWN.get() {
        return Ok(fd);
    }
    let fd = rustix::fs::open(
        "/proc/self/ns/pid",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok(OWN.get_or_init(|| fd))
}
