//! The only `unsafe` code of the host: starting a child process (what it
//! does between `clone` and `exec`), taking inherited descriptors, and
//! loading compiled components.

use rustix::io::{FdFlags, fcntl_setfd};
use rustix::process::{Pid, Resource};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;

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
}

/// The stack the child runs on until `exec`: it only makes system calls.
const CHILD_STACK: usize = 64 << 10;

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
        identity: spec
            .identity
            .map_or((-1, -1), |(uid, gid)| (i64::from(uid), i64::from(gid))),
        seccomp: libc::sock_fprog {
            len: spec.seccomp.map_or(0, |f| f.len() as u16),
            filter: spec
                .seccomp
                .map_or(std::ptr::null_mut(), |f| f.as_ptr().cast_mut()),
        },
        host: std::process::id() as libc::pid_t,
        error: AtomicI32::new(0),
    };
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

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(args)`, the child calling `child(arg)` on the stack `args`
/// names and then exiting; returns the child's pid or `-errno`.
///
/// # Safety
/// As `libc::clone` with CLONE_VM | CLONE_VFORK: `args` must describe a
/// valid stack with a 16-byte aligned top, and `child` must never return
/// into this function's caller (it runs on that stack, sharing memory).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(
    args: &CloneArgs,
    child: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: see the function's contract. The kernel starts the child
    // after the `syscall` instruction with rax = 0 and rsp = the top of its
    // stack (16-byte aligned, so `call` leaves the callee the ABI's
    // alignment); r12 and r13 are kept. The child calls `child(arg)` and
    // exits with its result without returning into Rust code. The parent
    // only sees rax (the pid or -errno), rcx and r11 clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60", // SYS_exit
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Starting a child in a cgroup needs `clone3`, implemented for x86_64
/// only; elsewhere `cgroup` never hands out a cgroup.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_vfork(
    _args: &CloneArgs,
    _child: extern "C" fn(*mut c_void) -> c_int,
    _arg: *mut c_void,
) -> i64 {
    -(libc::ENOSYS as i64)
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

/// Loads a compiled component from `code`, the bytes of a cache entry that
/// [`ComponentCache`](crate::cache::ComponentCache) verified. wasmtime
/// copies them into memory of its own, so nothing done to the file later
/// reaches running code.
pub(crate) fn deserialize_component(
    engine: &wasmtime::Engine,
    code: &[u8],
) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: `Component::deserialize` runs `code` as machine code, so it
    // must be what `Component::serialize` (or `Engine::precompile_component`)
    // of a compatible engine produced, unaltered. The cache passes only the
    // bytes of an entry that it read whole into private memory after opening
    // it with O_NOFOLLOW and checking it is a regular 0600 file of this user
    // with one link, and whose HMAC-SHA256 under the host's secret key (a
    // 0600 file of this user, never in a grant) matches over these very
    // bytes and the entry's cache key, which names the source's SHA-256 and
    // the engine's compatibility hash: only this host's cache wrote them,
    // for this component. wasmtime itself checks the engine version and
    // settings in the header, and copies the bytes before using them.
    unsafe { wasmtime::component::Component::deserialize(engine, code) }
}

/// Loads the compiled component in `code`, a memfd sealed against
/// writing, growing and shrinking (checked) that the parent host filled
/// (see `crate::code`). The memfd is mapped read-only and wasmtime copies
/// the code into memory of its own.
pub(crate) fn deserialize_sealed(
    engine: &wasmtime::Engine,
    code: BorrowedFd<'_>,
) -> anyhow::Result<wasmtime::component::Component> {
    use rustix::fs::SealFlags;
    use rustix::mm::{MapFlags, ProtFlags};
    let needed = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW;
    if !rustix::fs::fcntl_get_seals(code)?.contains(needed) {
        anyhow::bail!("the code's memfd is not sealed against change");
    }
    let len = usize::try_from(rustix::fs::fstat(code)?.st_size)?;
    if len == 0 {
        anyhow::bail!("the code's memfd is empty");
    }
    // SAFETY: a fresh private, read-only mapping of `len` bytes of `code`
    // at an address the kernel picks; it aliases no Rust object.
    let map = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            code,
            0,
        )?
    };
    // SAFETY: the mapping above is `len` readable bytes, live until the
    // `munmap` below, and the memfd is sealed against writes and
    // shrinking, so the bytes cannot change or vanish (no SIGBUS) while
    // the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
    // SAFETY: `Component::deserialize` runs `bytes` as machine code, so it
    // must be what `Engine::precompile_component` or `Component::serialize`
    // of a compatible engine produced, unaltered. The parent host put in
    // this memfd only code it compiled itself or read from an entry of its
    // cache that passed every check of `ComponentCache` (owner, mode, one
    // link, HMAC under the host's key), then sealed it; no worker or guest
    // ever writes it. wasmtime checks the engine's version and settings in
    // the code's header, and copies the bytes before using them.
    let component = unsafe { wasmtime::component::Component::deserialize(engine, bytes) };
    // SAFETY: `map` is the mapping made above, of `len` bytes; `bytes` is
    // not used after this.
    unsafe { rustix::mm::munmap(map, len)? };
    Ok(component?)
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

/// One step of building a sandbox's file system view, relative to its new
/// root (see [`build_sandbox`]).
pub(crate) enum MountStep<'a> {
    /// A directory (one that exists already is fine).
    Dir(&'a CStr),
    /// An empty file, for a file to be bound over.
    File(&'a CStr),
    /// A symbolic link `at` → `target`.
    Symlink {
        /// What the link says.
        target: &'a CStr,
        /// Where it is.
        at: &'a CStr,
    },
    /// The host path `source` (a file or a directory tree) bound at
    /// `target`, with the mount attributes `attr` (`MOUNT_ATTR_*`) on every
    /// mount of the tree.
    Bind {
        /// The host path, resolved in a copy of the host's mounts.
        source: &'a CStr,
        /// Where it appears, relative to the new root.
        target: &'a CStr,
        /// `MOUNT_ATTR_*` flags.
        attr: u64,
        /// The device and inode `source` must be: the directory or file
        /// the policy granted, not whatever the path leads to by then.
        id: (u64, u64),
    },
}

/// What [`build_sandbox`] makes.
pub(crate) struct SandboxSpec<'a> {
    /// For a host without root: the contents of `uid_map` and `gid_map` of
    /// a new user namespace that owns the others.
    pub user_maps: Option<(&'a CStr, &'a CStr)>,
    /// Whether to make a new (empty) network namespace.
    pub net: bool,
    /// An existing directory of the host to stage the new root on while it
    /// is assembled (only in the new mount namespace).
    pub stage: &'a CStr,
    /// The steps, in order: every directory, file and link first, then the
    /// binds (parents before what is bound inside them).
    pub steps: &'a [MountStep<'a>],
}

/// The namespaces of a built sandbox, held open by these descriptors, and
/// its root directory.
#[derive(Debug)]
pub(crate) struct SandboxFds {
    /// The root of the sandbox's file system view.
    pub root: OwnedFd,
    /// Its user namespace, for a host without root.
    pub user: Option<OwnedFd>,
    /// Its mount namespace.
    pub mnt: OwnedFd,
    /// Its network namespace, unless the network is granted.
    pub net: Option<OwnedFd>,
    /// Its IPC namespace.
    pub ipc: OwnedFd,
}

/// What [`sandbox_main`] reads and writes.
struct BuildArgs<'a> {
    spec: &'a SandboxSpec<'a>,
    /// `root`, `user`, `mnt`, `net`, `ipc` as opened by the builder, in
    /// the descriptor table it shares with the host; -1 where none.
    fds: [AtomicI32; 5],
    /// The error number of the step that failed, and which step.
    error: AtomicI32,
    failed_step: AtomicI32,
    /// Set by the builder as its very last step: a builder that died on
    /// the way has not built a sandbox, whatever it stored.
    done: std::sync::atomic::AtomicBool,
    /// A detached copy of each bind's source tree, by step (-1 for the
    /// other steps), opened before the stage hides any path.
    trees: &'a [AtomicI32],
}

const AT_RECURSIVE: c_int = 0x8000;

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Builds a sandbox: new mount, IPC and (unless `spec.net` is false)
/// network namespaces — and for a host without root a user namespace
/// owning them — whose file system view is a read-only tmpfs holding only
/// what `spec.steps` put there, and returns descriptors that keep them
/// alive, for children to enter with `setns`.
///
/// The work is done by a short-lived process made with
/// `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES)`: it shares this host's
/// memory (nothing copied; it only reads `spec`) and its descriptor table
/// (so what it opens is the host's), unshares the namespaces, assembles the
/// tree, opens the namespaces' files, switches its root with `pivot_root`
/// and exits. The host's own namespaces are never touched.
///
/// On failure, the error says which step failed.
pub(crate) fn build_sandbox(spec: &SandboxSpec<'_>) -> io::Result<SandboxFds> {
    let mut stack = vec![0u8; CHILD_STACK];
    let trees: Vec<AtomicI32> = spec.steps.iter().map(|_| AtomicI32::new(-1)).collect();
    let args = BuildArgs {
        spec,
        fds: [const { AtomicI32::new(-1) }; 5],
        error: AtomicI32::new(0),
        failed_step: AtomicI32::new(-1),
        done: std::sync::atomic::AtomicBool::new(false),
        trees: &trees,
    };
    let top = stack.as_mut_ptr_range().end as usize & !15;
    let mut pidfd: c_int = -1;
    // SAFETY: as in `clone_and_exec`: signals are blocked around `clone`; the child
    // runs `sandbox_main` on `stack` (alive until the end of this
    // function), and CLONE_VFORK suspends this thread until it exited, so
    // `args` and `spec` stay alive and unchanged while it reads them; it
    // writes only the atomics of `args`. With CLONE_FILES the descriptors
    // it opens are in this process's table; CLONE_PIDFD stores a pidfd.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            sandbox_main,
            top as *mut c_void,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::CLONE_FILES
                | libc::CLONE_PIDFD
                | libc::SIGCHLD,
            (&raw const args).cast_mut().cast::<c_void>(),
            &raw mut pidfd,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    let _ = pid;
    // SAFETY: `clone` succeeded, so `pidfd` is a new descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let exit = rustix::process::waitid(
        rustix::process::WaitId::PidFd(rustix::fd::AsFd::as_fd(&pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
    let exited_cleanly = matches!(exit, Ok(Some(status)) if status.exit_status() == Some(0));
    drop(stack);
    for tree in &trees {
        let fd = tree.load(Ordering::Acquire);
        if fd >= 0 {
            // SAFETY: a detached tree the builder opened in our shared
            // table and did not close (it failed before attaching it).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    let fds = args.fds.each_ref().map(|fd| {
        let fd = fd.load(Ordering::Acquire);
        // SAFETY: each descriptor the builder stored is one it opened
        // (with close-on-exec) in our shared table and nobody else knows of.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let error = args.error.load(Ordering::Acquire);
    if error == 0 && !(exited_cleanly && args.done.load(Ordering::Acquire)) {
        return Err(io::Error::other(
            "the sandbox builder died before it finished",
        ));
    }
    if error != 0 {
        let step = args.failed_step.load(Ordering::Acquire);
        let err = io::Error::from_raw_os_error(error);
        return Err(io::Error::new(
            err.kind(),
            format!("{} failed: {err}", sandbox_step_name(spec, step)),
        ));
    }
    let [root, user, mnt, net, ipc] = fds;
    let missing = || io::Error::other("the sandbox builder opened no namespace");
    Ok(SandboxFds {
        root: root.ok_or_else(missing)?,
        user,
        mnt: mnt.ok_or_else(missing)?,
        net,
        ipc: ipc.ok_or_else(missing)?,
    })
}

/// Steps of [`sandbox_main`] before and after `spec.steps` (which are
/// numbered from 0), for error messages.
const STEP_USERNS: i32 = -10;
const STEP_UNSHARE: i32 = -9;
const STEP_PRIVATE: i32 = -8;
const STEP_TMPFS: i32 = -7;
const STEP_STAGE: i32 = -6;
const STEP_READ_ONLY: i32 = -5;
const STEP_NSFS: i32 = -4;
const STEP_PIVOT: i32 = -3;

fn sandbox_step_name(spec: &SandboxSpec<'_>, step: i32) -> String {
    let path = |p: &CStr| p.to_string_lossy().into_owned();
    match step {
        STEP_USERNS => "making the user namespace".into(),
        STEP_UNSHARE => "making the mount, IPC and network namespaces".into(),
        STEP_PRIVATE => "making the copied mounts private".into(),
        STEP_TMPFS => "making the root tmpfs".into(),
        STEP_STAGE => format!("staging the root on {}", path(spec.stage)),
        STEP_READ_ONLY => "making the root read-only".into(),
        STEP_NSFS => "opening the namespaces".into(),
        STEP_PIVOT => "pivot_root into the sandbox".into(),
        i => match usize::try_from(i).ok().and_then(|i| spec.steps.get(i)) {
            Some(MountStep::Dir(p)) => format!("making directory /{}", path(p)),
            Some(MountStep::File(p)) => format!("making file /{}", path(p)),
            Some(MountStep::Symlink { at, .. }) => format!("making link /{}", path(at)),
            Some(MountStep::Bind { source, target, .. }) => {
                format!("binding {} at /{}", path(source), path(target))
            }
            None => format!("step {i}"),
        },
    }
}

/// The sandbox builder, until it exits. Like [`child_main`]: no
/// allocation, no lock, only system calls.
extern "C" fn sandbox_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `BuildArgs` that `build_sandbox` keeps alive
    // until this process exited; `spec` and its strings are alive too.
    unsafe {
        let args = &*arg.cast::<BuildArgs<'_>>();
        match sandbox_steps(args) {
            Ok(()) => args.done.store(true, Ordering::Release),
            Err((step, errno)) => {
                args.failed_step.store(step, Ordering::Release);
                args.error.store(errno.max(1), Ordering::Release);
            }
        }
        libc::_exit(0)
    }
}

/// Writes `contents` to the file `path` (a `/proc/self` file).
///
/// # Safety
/// Only from the sandbox builder.
unsafe fn write_file(path: &CStr, contents: &CStr) -> c_int {
    // SAFETY: open/write/close with valid strings.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let bytes = contents.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n == bytes.len() as isize { 0 } else { -1 }
    }
}

/// The steps of [`sandbox_main`], one function each, in this order;
/// `Err((step, errno))` on failure, `step` being the index in `spec.steps`
/// of the mount step that failed or one of the `STEP_*` constants. Like
/// [`child_main`], the steps only make system calls: no allocation, no
/// lock.
///
/// # Safety
/// Only from [`sandbox_main`].
unsafe fn sandbox_steps(args: &BuildArgs<'_>) -> Result<(), (i32, c_int)> {
    let spec = args.spec;
    // SAFETY: we are the sandbox builder (see `build_sandbox`), which every
    // step requires: system calls on valid strings and descriptors this
    // process opened. `root` is the tmpfs it made, whose descriptor stays
    // open (the host takes it, as the sandbox's root, once the builder
    // exited), and `args.trees` has a slot for each of `spec.steps`.
    unsafe {
        if let Some((uid_map, gid_map)) = spec.user_maps {
            make_user_namespace(uid_map, gid_map).map_err(at_step(STEP_USERNS))?;
        }
        unshare_namespaces(spec.net).map_err(at_step(STEP_UNSHARE))?;
        make_mounts_private().map_err(at_step(STEP_PRIVATE))?;
        let root = make_root_tmpfs().map_err(at_step(STEP_TMPFS))?;
        // The host's from now on: it closes it if a later step fails.
        args.fds[0].store(root, Ordering::Release);
        make_entries(spec.steps, root)?;
        detach_bind_sources(spec.steps, args.trees)?;
        stage_root(root, spec.stage).map_err(at_step(STEP_STAGE))?;
        make_root_read_only(root).map_err(at_step(STEP_READ_ONLY))?;
        attach_binds(spec.steps, args.trees, root)?;
        open_namespaces(args).map_err(at_step(STEP_NSFS))?;
        pivot_into(root).map_err(at_step(STEP_PIVOT))?;
    }
    Ok(())
}

/// Pairs an error number with the sandbox builder's `step` that failed,
/// as [`sandbox_steps`] reports it (for `map_err`).
fn at_step(step: i32) -> impl Fn(c_int) -> (i32, c_int) {
    move |errno| (step, errno)
}

/// For a host without root: makes a new user namespace, which will own
/// the others, and maps its ids with `uid_map` and `gid_map` (after
/// denying `setgroups`, as an unprivileged `gid_map` requires).
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn make_user_namespace(uid_map: &CStr, gid_map: &CStr) -> Result<(), c_int> {
    // SAFETY: `unshare` of the builder, and writes of its own `/proc/self`
    // files with valid strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) < 0
            || write_file(c"/proc/self/setgroups", c"deny") < 0
            || write_file(c"/proc/self/uid_map", uid_map) < 0
            || write_file(c"/proc/self/gid_map", gid_map) < 0
        {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// Makes the new mount and IPC namespaces, and a new (empty) network
/// namespace if `net`. The mount namespace starts as a copy of the host's
/// mounts, which [`detach_bind_sources`] resolves the sources in.
///
/// # Safety
/// Only in the sandbox builder: the host's namespaces stay as they are.
unsafe fn unshare_namespaces(net: bool) -> Result<(), c_int> {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
    if net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: `unshare` of the builder (see the contract).
    check_os(unsafe { libc::unshare(flags) })
}

/// Makes every mount copied from the host private, so that nothing done
/// in the new mount namespace may reach the host's mounts.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace.
unsafe fn make_mounts_private() -> Result<(), c_int> {
    // SAFETY: `mount` with valid strings (or null), in the builder's own
    // mount namespace (see the contract).
    check_os(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// Makes the sandbox's root: a new tmpfs (mode 0755) mounted nosuid and
/// nodev, detached (attached nowhere yet); returns its descriptor, opened
/// with close-on-exec in the table the builder shares with the host.
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn make_root_tmpfs() -> Result<c_int, c_int> {
    // SAFETY: the file system context is the descriptor `new_tmpfs` opened,
    // closed once mounted; `fsmount` reads no memory of ours.
    unsafe {
        let fs = new_tmpfs()?;
        let root = libc::syscall(
            libc::SYS_fsmount,
            fs,
            libc::FSMOUNT_CLOEXEC,
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        ) as c_int;
        libc::close(fs);
        if root < 0 {
            return Err(last_errno());
        }
        Ok(root)
    }
}

/// Opens a file system context for a tmpfs with mode 0755 and creates the
/// file system (not mounted yet); returns the context's descriptor, which
/// is closed again on failure.
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn new_tmpfs() -> Result<c_int, c_int> {
    // SAFETY: `fsopen` and `fsconfig` with valid strings (or null) on the
    // context they opened; `close` of that context only.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC) as c_int;
        if fs < 0
            || libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_SET_STRING,
                c"mode".as_ptr(),
                c"0755".as_ptr(),
                0,
            ) < 0
            || libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<c_char>(),
                std::ptr::null::<c_char>(),
                0,
            ) < 0
        {
            let errno = last_errno();
            if fs >= 0 {
                libc::close(fs);
            }
            return Err(errno);
        }
        Ok(fs)
    }
}

/// Makes every directory, file and symbolic link of `steps` in the root
/// tmpfs `root`, in order (binds come later, see [`attach_binds`]).
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_entries(steps: &[MountStep<'_>], root: c_int) -> Result<(), (i32, c_int)> {
    for (i, step) in steps.iter().enumerate() {
        // SAFETY: the builder, with its root tmpfs (see the contract).
        let made = unsafe {
            match step {
                MountStep::Dir(path) => make_dir(root, path),
                MountStep::File(path) => make_file(root, path),
                MountStep::Symlink { target, at } => make_symlink(root, target, at),
                MountStep::Bind { .. } => Ok(()),
            }
        };
        made.map_err(at_step(i as i32))?;
    }
    Ok(())
}

/// Makes the directory `path` (mode 0755) below `root`; one that exists
/// already is fine.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_dir(root: c_int, path: &CStr) -> Result<(), c_int> {
    // SAFETY: `mkdirat` with a valid string, below the builder's tmpfs.
    let r = unsafe { libc::mkdirat(root, path.as_ptr(), 0o755) };
    if r < 0 && last_errno() == libc::EEXIST {
        return Ok(());
    }
    check_os(r)
}

/// Makes the empty file `path` (mode 0644) below `root`, for a file to be
/// bound over. Made without opening it: a writable descriptor, even one a
/// host thread's fork copied for an instant, would keep the tmpfs from
/// becoming read-only (EBUSY).
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_file(root: c_int, path: &CStr) -> Result<(), c_int> {
    // SAFETY: `mknodat` with a valid string, below the builder's tmpfs.
    check_os(unsafe { libc::mknodat(root, path.as_ptr(), libc::S_IFREG | 0o644, 0) })
}

/// Makes the symbolic link `at` → `target` below `root`.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_symlink(root: c_int, target: &CStr, at: &CStr) -> Result<(), c_int> {
    // SAFETY: `symlinkat` with valid strings, below the builder's tmpfs.
    check_os(unsafe { libc::symlinkat(target.as_ptr(), root, at.as_ptr()) })
}

/// Makes a detached copy of the source of every bind of `steps`, with its
/// attributes, into its slot of `trees` (by step), before [`stage_root`]
/// can hide any of them.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace, with `trees`
/// as long as `steps`.
unsafe fn detach_bind_sources(
    steps: &[MountStep<'_>],
    trees: &[AtomicI32],
) -> Result<(), (i32, c_int)> {
    for (i, step) in steps.iter().enumerate() {
        if let MountStep::Bind {
            source, attr, id, ..
        } = step
        {
            // SAFETY: the builder, in its mount namespace (see the
            // contract).
            unsafe { detach_bind_source(&trees[i], source, *attr, *id) }
                .map_err(at_step(i as i32))?;
        }
    }
    Ok(())
}

/// Opens a detached copy of the tree at the host path `source` (a file or
/// a directory tree, not following a final symlink) into `slot`, checks it
/// is the granted `id` (device and inode: the path may no longer lead to
/// what was granted, EXDEV), and sets the mount attributes `attr` on every
/// mount of it.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace.
unsafe fn detach_bind_source(
    slot: &AtomicI32,
    source: &CStr,
    attr: u64,
    id: (u64, u64),
) -> Result<(), c_int> {
    // SAFETY: `open_tree` with a valid string; `fstat` into a zeroed
    // `stat` (all zeroes is valid) of the tree it opened.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | (AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
        ) as c_int;
        if tree < 0 {
            return Err(last_errno());
        }
        slot.store(tree, Ordering::Release);
        let mut stat: libc::stat = std::mem::zeroed();
        check_os(libc::fstat(tree, &mut stat))?;
        if (stat.st_dev, stat.st_ino) != id {
            return Err(libc::EXDEV);
        }
        check_os(set_mount_attr(
            tree,
            attr,
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
        ))
    }
}

/// `mount_setattr` of the mount `fd` (with `flags`, which include
/// `AT_EMPTY_PATH`), setting the `MOUNT_ATTR_*` flags `attr_set`; returns
/// what the system call returns.
///
/// # Safety
/// Only in the sandbox builder, with `fd` a mount it opened.
unsafe fn set_mount_attr(fd: c_int, attr_set: u64, flags: c_int) -> libc::c_long {
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `mount_setattr` with a valid empty string and a `mount_attr`
    // of the size given, on the builder's own mount (see the contract).
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    }
}

/// Attaches the root tmpfs `root` at `stage`, an existing host directory,
/// while the tree is assembled: mounts can only be attached below a mount
/// of this namespace.
///
/// # Safety
/// Only in the sandbox builder, in its new (private) mount namespace, with
/// `root` its root tmpfs.
unsafe fn stage_root(root: c_int, stage: &CStr) -> Result<(), c_int> {
    // SAFETY: `move_mount` with valid strings, in the builder's own mount
    // namespace (see the contract).
    check_os(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            root,
            c"".as_ptr(),
            libc::AT_FDCWD,
            stage.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// Makes the root tmpfs `root` read-only (and nosuid, nodev) now that
/// every entry is in it; the binds attached after keep their own
/// attributes.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_root_read_only(root: c_int) -> Result<(), c_int> {
    let read_only = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: on the builder's root tmpfs (see the contract).
    check_os(unsafe { set_mount_attr(root, read_only, libc::AT_EMPTY_PATH) })
}

/// Attaches the detached copy in `trees` of every bind of `steps` at its
/// target below `root`, in order (parents before what is bound inside
/// them).
///
/// # Safety
/// Only in the sandbox builder, with `root` its staged root tmpfs and
/// `trees` filled by [`detach_bind_sources`].
unsafe fn attach_binds(
    steps: &[MountStep<'_>],
    trees: &[AtomicI32],
    root: c_int,
) -> Result<(), (i32, c_int)> {
    for (i, step) in steps.iter().enumerate() {
        if let MountStep::Bind { target, .. } = step {
            // SAFETY: the builder, with its root and trees (see the
            // contract).
            unsafe { attach_bind(root, &trees[i], target) }.map_err(at_step(i as i32))?;
        }
    }
    Ok(())
}

/// Moves the detached tree in `slot` onto its mount point `target` below
/// `root`, then closes it, whether that worked or not (forgetting it in
/// `slot` first).
///
/// # Safety
/// Only in the sandbox builder, with `root` its staged root tmpfs and
/// `slot` holding a tree it opened.
unsafe fn attach_bind(root: c_int, slot: &AtomicI32, target: &CStr) -> Result<(), c_int> {
    let tree = slot.load(Ordering::Acquire);
    // SAFETY: the builder's own descriptors (see the contract); `at` is
    // closed by `move_tree`, `tree` here.
    unsafe {
        let at = open_mount_point(root, target);
        let attached = if at < 0 {
            Err(last_errno())
        } else {
            move_tree(tree, at)
        };
        // Forget it before closing it: the host must never close a
        // number the table may already have given to someone else.
        slot.store(-1, Ordering::Release);
        libc::close(tree);
        attached
    }
}

/// Opens (`O_PATH`) the mount point `target` below `root`, reached without
/// any symlink or `..`: binds attached before may be writable by others.
/// Returns the descriptor, or -1 with `errno` set.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn open_mount_point(root: c_int, target: &CStr) -> c_int {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `openat2` with a valid string and an `open_how` of the size
    // given.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            target.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        ) as c_int
    }
}

/// Moves the detached tree `tree` onto the mount point `at`, then closes
/// `at`; the error number is `move_mount`'s, taken before the close.
///
/// # Safety
/// Only in the sandbox builder, with `tree` and `at` descriptors it
/// opened.
unsafe fn move_tree(tree: c_int, at: c_int) -> Result<(), c_int> {
    // SAFETY: `move_mount` with valid empty strings on the builder's own
    // descriptors; `close` of `at`, which it owns (see the contract).
    unsafe {
        let moved = check_os(libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            at,
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        ));
        libc::close(at);
        moved
    }
}

/// Opens the files of the namespaces that were made (user with
/// `spec.user_maps`, network with `spec.net`) into `args.fds`, while
/// `/proc` can still be reached (before [`pivot_into`]).
///
/// # Safety
/// Only in the sandbox builder, with [`sandbox_main`]'s `args`.
unsafe fn open_namespaces(args: &BuildArgs<'_>) -> Result<(), c_int> {
    let spec = args.spec;
    for (slot, path, wanted) in [
        (1, c"/proc/self/ns/user", spec.user_maps.is_some()),
        (2, c"/proc/self/ns/mnt", true),
        (3, c"/proc/self/ns/net", spec.net),
        (4, c"/proc/self/ns/ipc", true),
    ] {
        if wanted {
            // SAFETY: `open` with a valid string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(last_errno());
            }
            args.fds[slot].store(fd, Ordering::Release);
        }
    }
    Ok(())
}

/// Makes the staged tmpfs `root` the namespace's root with `pivot_root`
/// and detaches the host's tree under it, so nothing else is left in the
/// namespace.
///
/// # Safety
/// Only in the sandbox builder, last, with `root` its staged root tmpfs:
/// it changes the builder's root and working directory.
unsafe fn pivot_into(root: c_int) -> Result<(), c_int> {
    // SAFETY: `fchdir` to the builder's tmpfs, then `pivot_root` and
    // `umount2` with valid strings, in its own mount namespace.
    unsafe {
        if libc::fchdir(root) < 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0
        {
            return Err(last_errno());
        }
    }
    Ok(())
}
