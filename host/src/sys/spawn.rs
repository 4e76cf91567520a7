//! Starting a child process: [`clone_and_exec`] makes it with
//! `CLONE_VM | CLONE_VFORK` (like glibc's `posix_spawn`), and the child,
//! until `exec`, runs each of its steps (signals, session, descriptors,
//! namespaces, working directory, limits, identity, Landlock,
//! capabilities, seccomp) as a function of its own, making only raw system
//! calls: it shares the host's memory, so it must not allocate, lock or
//! unwind.

use super::clone3::{CLONE_INTO_CGROUP, CloneArgs, clone3_vfork};
use super::{CHILD_STACK, check_os, check_rustix, last_errno};
use rustix::process::{Pid, Resource};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Everything a child needs between `clone` and `exec`.
pub(crate) struct SpawnSpec<'a> {
    /// The absolute path of the binary.
    pub program: &'a CStr,
    /// `argv`, from `argv[0]`.
    pub argv: &'a [CString],
    /// The complete environment, as `NAME=value`.
    pub envp: &'a [CString],
    /// The descriptors that become the child's stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    /// The working directory; `None`: `/`.
    pub cwd: Option<BorrowedFd<'a>>,
    /// Descriptors the child keeps open across `exec` (all others close).
    pub inherit: &'a [RawFd],
    /// The Landlock ruleset to restrict the child with.
    pub landlock: Option<BorrowedFd<'a>>,
    /// Resource limits (soft and hard) to set.
    pub rlimits: &'a [(Resource, u64)],
    /// The cgroup v2 directory to start the child in (see `cgroup`).
    pub cgroup: Option<BorrowedFd<'a>>,
    /// The Linux capabilities (a bit per capability number) the child may
    /// keep of those the host has; all others are dropped.
    pub keep_caps: u64,
    /// The namespaces of the guest's sandbox to enter (see `sandbox`).
    pub namespaces: Option<Namespaces<'a>>,
    /// New, empty network and IPC namespaces of the child's own (a forked
    /// worker process of a root host, which needs neither).
    pub own_namespaces: bool,
    /// The user and group id to run as (a root host's children).
    pub identity: Option<(u32, u32)>,
    /// The seccomp filter to install last, just before `exec`.
    pub seccomp: Option<&'a [libc::sock_filter]>,
}

/// The namespaces a sandboxed child enters, as descriptors of `nsfs` files.
#[derive(Clone, Copy)]
pub(crate) struct Namespaces<'a> {
    /// The user namespace (hosts without root).
    pub user: Option<BorrowedFd<'a>>,
    /// The mount namespace: the sandbox's file system view.
    pub mnt: BorrowedFd<'a>,
    /// The network namespace; `None` when the network is granted.
    pub net: Option<BorrowedFd<'a>>,
    /// The IPC namespace.
    pub ipc: BorrowedFd<'a>,
    /// The PID namespace the child is born in (a root host's sandbox).
    pub pid: Option<BorrowedFd<'a>>,
}
/// What [`child_main`] reads: plain values and pointers into memory the
/// parent keeps alive (and does not touch: its thread is suspended) until
/// the child has called `exec` or exited.
struct ChildArgs {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: [RawFd; 3],
    cwd: RawFd,
    inherit: *const RawFd,
    inherit_len: usize,
    landlock: RawFd,
    rlimits: *const (Resource, u64),
    rlimits_len: usize,
    keep_caps: u64,
    /// `user`, `mnt`, `net`, `ipc` descriptors; -1 where there is none.
    namespaces: [RawFd; 4],
    /// `CLONE_NEW*` flags to `unshare` (0: none).
    unshare: c_int,
    /// `(uid, gid)`; `uid` < 0: no change.
    identity: (i64, i64),
    /// The seccomp program (`len` 0: none).
    seccomp: libc::sock_fprog,
    host: libc::pid_t,
    /// Set by the child to the error number of the step that failed.
    error: AtomicI32,
}

/// Starts the child described by `spec` as the leader of a new process
/// group and returns its pid and a pidfd for it.
///
/// The child is created like glibc's `posix_spawn` does, with
/// `clone(CLONE_VM | CLONE_VFORK)`: it shares the host's memory, so nothing
/// is copied however big the host is, and this thread sleeps until the child
/// has called `exec` (or failed). Before `exec` the child, making only raw
/// system calls:
/// - resets every signal handler to the default and unblocks all signals;
/// - starts a session (and process group) of its own, without a
///   controlling terminal;
/// - puts `stdio` on descriptors 0, 1 and 2;
/// - marks every other descriptor close-on-exec, except `inherit`;
/// - enters the guest sandbox's `namespaces` (its own file system view,
///   an empty network, its own IPC objects; see `sandbox`);
/// - enters `cwd` with `fchdir` on the already opened directory (never by
///   a path string a guest could race), or `/`;
/// - sets the resource limits `rlimits` (soft and hard);
/// - joins a session keyring of its own and, with `identity`, becomes that
///   user and group (no supplementary groups), by raw system calls;
/// - asks for SIGKILL when the host thread that started it dies (after the
///   id change, which resets it), and gives up if the host is already gone;
/// - sets no_new_privs, then restricts itself with the Landlock ruleset
///   `landlock` (see `confine`);
/// - drops every Linux capability but `keep_caps` (ambient, inheritable,
///   permitted and effective sets; no_new_privs keeps `exec` from giving
///   any back): a root host's
///   child runs as root without root's powers (it cannot change its uid,
///   reboot, read other users' files, ...);
/// - installs the `seccomp` filter.
///
/// The id change also makes the host's memory (which the child shares
/// until `exec`) non-dumpable, as any set*id call does.
///
/// With `cgroup`, the child is started in that cgroup by `clone3` with
/// CLONE_INTO_CGROUP (moving it there afterwards would cost a slow cgroup
/// migration per spawn).
///
/// A step that fails fails the spawn with that step's error; the child is
/// then reaped before this returns.
pub(crate) fn clone_and_exec(spec: &SpawnSpec<'_>) -> io::Result<(Pid, OwnedFd)> {
    let null_terminated = |strings: &[CString]| -> Vec<*const c_char> {
        (strings.iter().map(|s| s.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = null_terminated(spec.argv);
    let envp = null_terminated(spec.envp);
    let mut stack = vec![0u8; CHILD_STACK];
    let mut args = ChildArgs {
        program: spec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: spec.stdio.map(|fd| fd.as_raw_fd()),
        cwd: spec.cwd.map_or(-1, |d| d.as_raw_fd()),
        inherit: spec.inherit.as_ptr(),
        inherit_len: spec.inherit.len(),
        landlock: spec.landlock.map_or(-1, |fd| fd.as_raw_fd()),
        rlimits: spec.rlimits.as_ptr(),
        rlimits_len: spec.rlimits.len(),
        keep_caps: spec.keep_caps,
        namespaces: match spec.namespaces {
            None => [-1; 4],
            Some(ns) => [
                ns.user.map_or(-1, |fd| fd.as_raw_fd()),
                ns.mnt.as_raw_fd(),
                ns.net.map_or(-1, |fd| fd.as_raw_fd()),
                ns.ipc.as_raw_fd(),
            ],
        },
        unshare: match spec.own_namespaces {
            true => libc::CLONE_NEWNET | libc::CLONE_NEWIPC,
            false => 0,
        },
        identity: spec
            .identity
            .map_or((-1, -1), |(uid, gid)| (i64::from(uid), i64::from(gid))),
        seccomp: libc::sock_fprog {
            len: spec.seccomp.map_or(0, |f| f.len() as u16),
            filter: spec
                .seccomp
                .map_or(std::ptr::null_mut(), |f| f.as_ptr().cast_mut()),
        },
        // In a PID namespace of its own, the child sees no parent (0).
        host: match spec.namespaces.and_then(|ns| ns.pid) {
            Some(_) => 0,
            None => std::process::id() as libc::pid_t,
        },
        error: AtomicI32::new(0),
    };
    let born_in = (spec.namespaces.and_then(|ns| ns.pid))
        .map(super::pid_init::ChildrenIn::enter)
        .transpose()?;
    let mut pidfd: c_int = -1;
    // The stack grows down from its 16-byte aligned top.
    let top = stack.as_mut_ptr_range().end as usize & !15;
    // SAFETY: blocking every signal of this thread (and restoring the old
    // mask after `clone`) keeps the host's signal handlers from running in
    // the child, which shares the host's memory, before it reset them.
    // `clone` (or `clone3_vfork`) runs `child_main` on `stack`, which lives
    // until the end of this function; with CLONE_VFORK this thread only
    // resumes once the child called `exec` or exited, so everything `args`
    // points to (the spec, `argv`, `envp`) stays alive and unchanged while
    // the child reads it, and the child writes only `args.error`.
    // CLONE_PIDFD stores the pidfd into `pidfd`.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = (&raw mut args).cast::<c_void>();
        let (pid, clone_error) = match spec.cgroup {
            None => {
                let pid = libc::clone(
                    child_main,
                    top as *mut c_void,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                    arg,
                    &raw mut pidfd,
                );
                (pid, io::Error::last_os_error())
            }
            Some(cgroup) => {
                let clone_args = CloneArgs {
                    flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64
                        | CLONE_INTO_CGROUP,
                    pidfd: (&raw mut pidfd) as u64,
                    exit_signal: libc::SIGCHLD as u64,
                    stack: stack.as_mut_ptr() as u64,
                    stack_size: (top - stack.as_mut_ptr() as usize) as u64,
                    cgroup: cgroup.as_raw_fd() as u64,
                    ..CloneArgs::default()
                };
                let ret = clone3_vfork(&clone_args, child_main, arg);
                match ret {
                    ..0 => (-1, io::Error::from_raw_os_error(-ret as i32)),
                    _ => (ret as c_int, io::Error::from_raw_os_error(0)),
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(born_in);
    // SAFETY: `clone` succeeded, so `pidfd` is a new descriptor that only we
    // own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(stack);
    let error = args.error.load(Ordering::Acquire);
    if error != 0 {
        // The child has exited (or is about to): collect it.
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(rustix::fd::AsFd::as_fd(&pidfd)),
            rustix::process::WaitIdOptions::EXITED,
        );
        return Err(io::Error::from_raw_os_error(error));
    }
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
    Ok((pid, pidfd))
}
/// The child, until `exec`. It runs on its own stack in the host's memory,
/// with every signal blocked: it must not allocate, lock or unwind, and
/// only reads `arg`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` that `clone_and_exec` keeps alive until this
    // child has called `exec` or exited; its pointers and lengths describe
    // live arrays. Every call below is a system call wrapper (no allocation,
    // no lock), on descriptors the child's copy of the descriptor table
    // holds: `clone_and_exec`'s caller keeps them open until it returns.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let errno = setup_child(args);
        args.error.store(errno.max(1), Ordering::Release);
        libc::_exit(127)
    }
}

/// Drops every capability not in `keep` (a bit per capability number) from
/// this process's ambient, inheritable, permitted and effective sets, for
/// good (see below for the bounding set). rustix's wrappers: raw system
/// calls, no allocation.
fn drop_capabilities(keep: u64) -> rustix::io::Result<()> {
    use rustix::thread::CapabilitySet;
    let mut sets = rustix::thread::capabilities(None)?;
    // The bounding set is left as it is: under no_new_privs (set before,
    // and inherited by every descendant) `execve` never gives a process
    // capabilities beyond its permitted set (the kernel's
    // cap_bprm_creds_from_file), which is `keep` from here on — even for
    // uid 0. Dropping each bounding capability would cost a system call per
    // capability and spawn. Older kernels have no ambient set.
    let _ = rustix::thread::clear_ambient_capability_set();
    let keep = CapabilitySet::from_bits_retain(keep);
    sets.effective &= keep;
    sets.permitted &= keep;
    sets.inheritable &= keep;
    rustix::thread::set_capabilities(None, sets)
}
/// The steps of [`clone_and_exec`] in the child, then `exec`; returns the
/// error number of the step that failed (or of `exec`).
///
/// # Safety
/// Only from [`child_main`], with its `args`.
unsafe fn setup_child(args: &ChildArgs) -> c_int {
    // SAFETY: we are `child_main`, with its `args`, which is what both
    // calls require.
    unsafe {
        match prepare_child(args) {
            Ok(()) => exec_program(args),
            Err(errno) => errno,
        }
    }
}

/// Every step of [`clone_and_exec`]'s child before `exec`, one function
/// each, in this order (which matters: see each step); the first that
/// fails stops the others and gives its error number. Like the whole
/// child, the steps only make system calls: no allocation, no lock.
///
/// # Safety
/// Only from [`setup_child`], with [`child_main`]'s `args`.
unsafe fn prepare_child(args: &ChildArgs) -> Result<(), c_int> {
    // SAFETY: we are `clone_and_exec`'s child before `exec` (see
    // `child_main`), with its `args`: every pointer and length in them
    // describes a live array and every descriptor is open in this child's
    // table, which is what each step below requires.
    unsafe {
        reset_signal_handlers();
        start_session()?;
        install_stdio(args.stdio)?;
        close_other_descriptors(args)?;
        enter_namespaces(args.namespaces)?;
        unshare_namespaces(args.unshare)?;
        enter_cwd(args.cwd)?;
        set_rlimits(args)?;
        join_session_keyring(args.namespaces);
        change_identity(args.identity)?;
        die_with_host(args.host)?;
        restrict_self(args.landlock)?;
        check_rustix(drop_capabilities(args.keep_caps))?;
        install_seccomp(&args.seccomp)
    }
}

/// Puts every signal handler (the host's code, in the host's memory, which
/// the child must not run) back to the default; SIGPIPE, which Rust hosts
/// ignore, too. Other ignored signals stay ignored, as across any exec.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`: the handlers are the
/// whole process's, and the host's would be gone.
unsafe fn reset_signal_handlers() {
    // SAFETY: `sigaction` with valid (or null) pointers to zeroed
    // `sigaction`s, for which all zeroes is valid; this is the child (see
    // the contract).
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Starts a session (and process group) of the child's own: it has no
/// controlling terminal of the host's to steer. A raw system call.
fn start_session() -> Result<(), c_int> {
    check_rustix(rustix::process::setsid())
}

/// Puts the descriptors `stdio` on 0, 1 and 2, without close-on-exec (a
/// descriptor already in place only loses that flag).
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with `stdio` open:
/// it replaces whatever descriptors 0, 1 and 2 were.
unsafe fn install_stdio(stdio: [RawFd; 3]) -> Result<(), c_int> {
    for (target, fd) in stdio.into_iter().enumerate() {
        let target = target as c_int;
        // SAFETY: `fcntl` and `dup2` on descriptors that are open (see the
        // contract); the child's table is its own.
        let ret = unsafe {
            if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        check_os(ret)?;
    }
    Ok(())
}

/// Marks every descriptor from 3 on close-on-exec, then clears the flag on
/// those in `args.inherit`: whatever the host left open without
/// close-on-exec goes no further (close_range needs Linux 5.11; the
/// sandbox needs newer anyway, and a child that cannot be sure of its
/// descriptors is not started).
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with
/// [`child_main`]'s `args` (`inherit` is a live array of `inherit_len`).
unsafe fn close_other_descriptors(args: &ChildArgs) -> Result<(), c_int> {
    // SAFETY: `close_range` only sets flags in the child's own table;
    // `args.inherit.add(i)` stays inside the live `inherit` array (see the
    // contract) and `fcntl` takes any descriptor number.
    unsafe {
        check_os(libc::close_range(
            3,
            c_int::MAX as libc::c_uint,
            libc::CLOSE_RANGE_CLOEXEC as c_int,
        ))?;
        for i in 0..args.inherit_len {
            check_os(libc::fcntl(*args.inherit.add(i), libc::F_SETFD, 0))?;
        }
    }
    Ok(())
}

/// Enters the sandbox's namespaces, `user`, `mnt`, `net` and `ipc` (those
/// that are not -1), in that order. Entering the mount namespace moves the
/// child to the sandbox's root, so the working directory comes after.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with open `nsfs`
/// descriptors (or -1).
unsafe fn enter_namespaces(namespaces: [RawFd; 4]) -> Result<(), c_int> {
    let [user, mnt, net, ipc] = namespaces;
    for (fd, kind) in [
        (user, libc::CLONE_NEWUSER),
        (mnt, libc::CLONE_NEWNS),
        (net, libc::CLONE_NEWNET),
        (ipc, libc::CLONE_NEWIPC),
    ] {
        if fd >= 0 {
            // SAFETY: `setns` on an open descriptor, in the child (see the
            // contract): the host's namespaces stay as they are.
            check_os(unsafe { libc::setns(fd, kind) })?;
        }
    }
    Ok(())
}

/// Makes new namespaces of the kinds in `flags` (0: none) for the child
/// alone.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`.
unsafe fn unshare_namespaces(flags: c_int) -> Result<(), c_int> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: `unshare` of namespaces only (no CLONE_VM or files), in the
    // child (see the contract): the host's stay as they are.
    check_os(unsafe { libc::unshare(flags) })
}

/// Enters the working directory `cwd` with `fchdir` on the already opened
/// directory (never by a path string a guest could race), or `/` if `cwd`
/// is -1. After [`enter_namespaces`]: `/` is then the sandbox's root.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with `cwd` open (or
/// -1).
unsafe fn enter_cwd(cwd: RawFd) -> Result<(), c_int> {
    if cwd >= 0 {
        // SAFETY: `cwd` is open for the whole call (see the contract).
        let cwd = unsafe { BorrowedFd::borrow_raw(cwd) };
        check_rustix(rustix::process::fchdir(cwd))
    } else {
        check_rustix(rustix::process::chdir(c"/"))
    }
}

/// Sets each resource limit of `args.rlimits`, soft and hard alike.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with
/// [`child_main`]'s `args` (`rlimits` is a live array of `rlimits_len`).
unsafe fn set_rlimits(args: &ChildArgs) -> Result<(), c_int> {
    for i in 0..args.rlimits_len {
        // SAFETY: `args.rlimits.add(i)` stays inside the live `rlimits`
        // array (see the contract).
        let (resource, limit) = unsafe { *args.rlimits.add(i) };
        let limit = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        check_rustix(rustix::process::setrlimit(resource, limit))?;
    }
    Ok(())
}

/// With the IPC layer (an `ipc` namespace among `namespaces`), joins a
/// session keyring of its own, so no key of the host's session is the
/// child's to possess (seccomp refuses the key system calls anyway; a full
/// key quota only costs this extra wall, so a failure is ignored).
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`.
unsafe fn join_session_keyring(namespaces: [RawFd; 4]) {
    let [_, _, _, ipc] = namespaces;
    if ipc >= 0 {
        // SAFETY: `keyctl` with a null name makes an anonymous keyring; it
        // reads no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                libc::KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<c_char>(),
            );
        }
    }
}

/// With `identity` `(uid, gid)` (`uid` < 0: none), becomes that user and
/// group with no supplementary groups. Raw system calls: glibc's wrappers
/// would make every thread of the host change ids too (its setxid
/// broadcast), taking locks. Supplementary groups first: they need
/// CAP_SETGID, which the uid change takes away. The id change also makes
/// the host's memory (shared until `exec`) non-dumpable and resets the
/// death signal, which [`die_with_host`] sets after.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`.
unsafe fn change_identity(identity: (i64, i64)) -> Result<(), c_int> {
    let (uid, gid) = identity;
    if uid >= 0 {
        // SAFETY: raw id system calls of this child only; `setgroups` with
        // size 0 reads no memory.
        unsafe {
            check_os(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check_os(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check_os(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        }
    }
    Ok(())
}

/// Asks for SIGKILL when the host thread that started the child dies,
/// then gives up (ESRCH) if the host `host` is already gone: the child's
/// parent is then no longer the host. After [`change_identity`], which
/// resets the death signal.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`.
unsafe fn die_with_host(host: libc::pid_t) -> Result<(), c_int> {
    check_rustix(rustix::process::set_parent_process_death_signal(Some(
        rustix::process::Signal::KILL,
    )))?;
    // SAFETY: `getppid` takes nothing and cannot fail.
    if unsafe { libc::getppid() } != host {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// Sets no_new_privs, so no setuid/setcap binary can give the child more
/// rights (and Landlock and seccomp may be used without privilege), then
/// restricts the child with the Landlock ruleset `landlock` (-1: none; see
/// `confine`).
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with `landlock` open
/// (or -1).
unsafe fn restrict_self(landlock: RawFd) -> Result<(), c_int> {
    check_rustix(rustix::thread::set_no_new_privs(true))?;
    if landlock >= 0 {
        // SAFETY: `landlock_restrict_self` on an open ruleset descriptor,
        // restricting this child only (the host is another thread group).
        check_os(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, landlock, 0) })?;
    }
    Ok(())
}

/// Installs the seccomp filter `seccomp` (`len` 0: none), last before
/// `exec`, once nothing the filter may refuse is left to do.
///
/// # Safety
/// Only in [`clone_and_exec`]'s child, before `exec`, with `seccomp`
/// pointing to a live program of `len` instructions.
unsafe fn install_seccomp(seccomp: &libc::sock_fprog) -> Result<(), c_int> {
    if seccomp.len > 0 {
        // SAFETY: `seccomp` describes a live filter program (see the
        // contract), which the kernel copies; it filters this child only.
        check_os(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                seccomp as *const libc::sock_fprog,
            )
        })?;
    }
    Ok(())
}

/// Unblocks every signal (blocked by [`clone_and_exec`] around `clone`)
/// and calls `execve`; returns the error number if it comes back.
///
/// # Safety
/// Only from [`setup_child`], once [`prepare_child`] succeeded, with
/// [`child_main`]'s `args` (`program`, `argv` and `envp` are live C strings
/// and null-terminated arrays of them).
unsafe fn exec_program(args: &ChildArgs) -> c_int {
    // SAFETY: a zeroed `sigset_t` is valid; `execve` reads live strings and
    // arrays (see the contract). The handlers were reset first
    // (`reset_signal_handlers`), so a signal that arrives before `exec`
    // runs no code of the host's.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
    }
    last_errno()
}
