//! The only `unsafe` code of the host: starting a child process (what it
//! does between `clone` and `exec`), taking inherited descriptors, and
//! loading compiled components.

use cap_std::fs::Dir;
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
    pub cwd: Option<&'a Dir>,
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
/// - joins a new process group of its own;
/// - puts `stdio` on descriptors 0, 1 and 2;
/// - marks every other descriptor close-on-exec, except `inherit`;
/// - enters `cwd` with `fchdir` on the already opened directory (never by
///   a path string a guest could race), or `/`;
/// - asks for SIGKILL when the host thread that started it dies, and
///   gives up if the host is already gone;
/// - sets the resource limits `rlimits` (soft and hard);
/// - sets no_new_privs, then restricts itself with the Landlock ruleset
///   `landlock` (see `confine`);
/// - drops every Linux capability but `keep_caps` (ambient, inheritable,
///   permitted and effective sets; no_new_privs keeps `exec` from giving
///   any back): a root host's
///   child runs as root without root's powers (it cannot change its uid,
///   reboot, read other users' files, ...).
///
/// With `cgroup`, the child is started in that cgroup by `clone3` with
/// CLONE_INTO_CGROUP (moving it there afterwards would cost a slow cgroup
/// migration per spawn).
///
/// A step that fails fails the spawn with that step's error; the child is
/// then reaped before this returns.
pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> io::Result<(Pid, OwnedFd)> {
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
    // SAFETY: `arg` is the `ChildArgs` that `spawn` keeps alive until this
    // child has called `exec` or exited; its pointers and lengths describe
    // live arrays. Every call below is a system call wrapper (no allocation,
    // no lock), on descriptors the child's copy of the descriptor table
    // holds: `spawn`'s caller keeps them open until `spawn` returns.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let errno = setup_child(args);
        args.error.store(errno.max(1), Ordering::Release);
        libc::_exit(127)
    }
}

/// `struct __user_cap_header_struct` of `capget(2)`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct` of `capget(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

/// Drops every capability not in `keep` (a bit per capability number) from
/// this process's ambient, inheritable, permitted and effective sets, for
/// good (see below for the bounding set); returns 0 or the error number.
/// Only raw system calls.
///
/// # Safety
/// Only from [`setup_child`].
unsafe fn drop_capabilities(keep: u64) -> c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY: prctl, capget and capset with valid pointers to local values.
    unsafe {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) < 0 {
            return errno();
        }
        // The bounding set is left as it is: under no_new_privs (set
        // before, and inherited by every descendant) `execve` never gives a
        // process capabilities beyond its permitted set (the kernel's
        // cap_bprm_creds_from_file), which is `keep` from here on — even for
        // uid 0. Dropping each bounding capability would cost a system call
        // per capability and spawn.
        // Older kernels have no ambient set.
        libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for (i, set) in data.iter_mut().enumerate() {
            let keep = (keep >> (32 * i)) as u32;
            set.effective &= keep;
            set.permitted &= keep;
            set.inheritable &= keep;
        }
        if libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) < 0 {
            return errno();
        }
    }
    0
}

/// The steps of [`spawn`] in the child, then `exec`; returns the error
/// number of the step that failed.
///
/// # Safety
/// Only from [`child_main`], with its `args`.
unsafe fn setup_child(args: &ChildArgs) -> c_int {
    let last_error = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    macro_rules! check {
        ($call:expr) => {
            if $call < 0 {
                return last_error();
            }
        };
    }
    // SAFETY: see `child_main`.
    unsafe {
        // Handlers (the host's code, in the host's memory) go back to the
        // default; SIGPIPE, which Rust hosts ignore, too. Other ignored
        // signals stay ignored, as across any exec.
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
        check!(libc::setpgid(0, 0));
        for (target, &fd) in args.stdio.iter().enumerate() {
            let target = target as c_int;
            if fd == target {
                check!(libc::fcntl(fd, libc::F_SETFD, 0));
            } else {
                check!(libc::dup2(fd, target));
            }
        }
        // Whatever the host left open without close-on-exec goes no further.
        // (Older kernels without close_range rely on close-on-exec alone.)
        libc::close_range(
            3,
            c_int::MAX as libc::c_uint,
            libc::CLOSE_RANGE_CLOEXEC as c_int,
        );
        for i in 0..args.inherit_len {
            check!(libc::fcntl(*args.inherit.add(i), libc::F_SETFD, 0));
        }
        if args.cwd >= 0 {
            check!(libc::fchdir(args.cwd));
        } else {
            check!(libc::chdir(c"/".as_ptr()));
        }
        check!(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong
        ));
        if libc::getppid() != args.host {
            return libc::ESRCH;
        }
        for i in 0..args.rlimits_len {
            let (resource, limit) = *args.rlimits.add(i);
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            check!(libc::setrlimit(
                resource as libc::__rlimit_resource_t,
                &limit
            ));
        }
        // No setuid/setcap binary can give the child more rights.
        check!(libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0,
            0,
            0
        ));
        if args.landlock >= 0 {
            check!(libc::syscall(
                libc::SYS_landlock_restrict_self,
                args.landlock,
                0
            ));
        }
        let errno = drop_capabilities(args.keep_caps);
        if errno != 0 {
            return errno;
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        last_error()
    }
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
